"""Which scenes an input names: one scene, a folder of them, a text list, or a STAC collection.

    scenes = scenes_of("scenes.txt")          # or a folder, collection.json, items.json, catalog.json
    [(s.name, s.path) for s in scenes]        # ('T33TUL_20230415', '/data/T33TUL_20230415.tif'), ...

Why one module: every verb that maps many scenes (``segment predict``, ``classify
predict``) must agree on what a batch is, on each scene's output name and on its order (the
order decides which process of a many-process batch takes which scene, see
:mod:`workbench.distributed`). Each scene is still opened by the one scene reader,
:func:`workbench.data.inputs.describe`; this module only lists them.

- a folder: :func:`workbench.data.inputs.inputs_in` (rasters, ``.SAFE`` products, STAC items);
- a text file (``.txt`` / ``.lst``): one path per line, relative to the list's folder, or a
  GDAL path (``/vsicurl/...``, ``SENTINEL2_L2A:...``) kept as written; blank lines and ``#``
  comment lines skipped. A local file that is missing is refused naming the line;
- a STAC Catalog or Collection (read with pystac, child catalogs included): each item is one
  scene, opened from its own file; a STAC ItemCollection (a GeoJSON FeatureCollection of
  items, what a STAC API search returns): each item is ``FILE.json#<item id>``, which the
  STAC reader opens from inside that one file.

Each scene gets a name (the file's stem, a ``.SAFE`` product's name, a STAC item's id) that
becomes its output's name; two scenes with one name are refused before anything runs, so no
output is ever written twice by a batch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.data.inputs import inputs_in, is_folder_input
from workbench.data.scene import is_gdal_path
from workbench.errors import WorkbenchError

LIST_SUFFIXES = (".txt", ".lst")
STAC_GROUPS = ("Catalog", "Collection", "FeatureCollection")


@dataclass(frozen=True)
class Scene:
    path: str       # what the scene reader opens (a path, a GDAL path or FILE.json#item-id)
    name: str       # the stem of its outputs (<name>_mask.tif)


def is_many(path: str | Path) -> bool:
    """Whether ``--input`` names several scenes (a folder, a list, a STAC group), not one scene."""
    p = Path(str(path))
    if is_folder_input(p):
        return True
    if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
        return True
    return p.is_file() and p.suffix.lower() == ".json" and _stac_type(p) in STAC_GROUPS


def scenes_of(path: str | Path, suffix: str = "_mask.tif") -> list[Scene]:
    """The scenes ``path`` names (see the module docstring), sorted by path, names unique
    (``suffix``: what ends each output's name, for the message naming two that would collide)."""
    p = Path(str(path))
    if is_folder_input(p):
        scenes = [Scene(str(s.absolute()), scene_name(s)) for s in inputs_in(p)]
    elif p.suffix.lower() in LIST_SUFFIXES:
        scenes = _listed(p)
    else:
        scenes = _stac_items(p)
    if not scenes:
        raise WorkbenchError(f"{p}: no scene to predict (GeoTIFF/VRT/JP2, .SAFE folder or STAC item)")
    scenes.sort(key=lambda s: s.path)
    _refuse_same_names(p, scenes, suffix)
    return scenes


def scene_name(path: str | Path) -> str:
    """The stem of a scene's outputs: the file's stem (``T33TUL.tif`` -> ``T33TUL``, a product
    ``X.SAFE`` -> ``X``), for a GDAL subdataset the product's; characters a file name should not
    hold become ``_``."""
    text = str(path).split("?", 1)[0].rstrip("/")
    if ":" in text and "://" not in text and not text.startswith("/"):   # SENTINEL2_L2A:/p/X.SAFE/MTD.xml:10m:...
        parts = [q for q in text.split(":") if "/" in q]
        text = str(Path(parts[0]).parent) if parts else text
    return _safe_name(Path(text).stem)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text).strip(".") or "scene"


def _listed(path: Path) -> list[Scene]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path}: cannot be read as a list of scenes ({getattr(exc, 'strerror', exc)})") from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if is_gdal_path(text):
            out.append(Scene(text, scene_name(text)))
            continue
        scene = Path(text) if Path(text).is_absolute() else path.parent / text
        if not scene.exists():
            raise WorkbenchError(f"{path}:{n}: {text}: no such file or folder")
        out.append(Scene(str(scene.absolute()), scene_name(scene)))
    return out


def _stac_type(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text()) if path.stat().st_size < 256 << 20 else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    kind = doc.get("type")
    if kind == "FeatureCollection":         # an empty one is an empty search: no scene, said so
        features = doc.get("features")
        return kind if features == [] or any(isinstance(f, dict) and "stac_version" in f for f in features or []) \
            or "stac_version" in doc else None
    return kind if kind in ("Catalog", "Collection") and "stac_version" in doc else None


def _stac_items(path: Path) -> list[Scene]:
    import pystac

    kind = _stac_type(path)
    try:
        if kind == "FeatureCollection":
            group = pystac.ItemCollection.from_file(str(path.absolute()))
            return [Scene(f"{path.absolute()}#{item.id}", _safe_name(item.id)) for item in group]
        cat = pystac.read_file(str(path.absolute()))
        items = list(cat.get_items(recursive=True))
    except RecursionError:
        raise WorkbenchError(f"{path}: nested too deeply to be a STAC {kind or 'catalog'}") from None
    except (pystac.STACError, OSError, KeyError, TypeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: not a STAC {kind or 'catalog'} pystac can read ({msg})") from None
    out = []
    for item in items:
        href = item.get_self_href()
        if not href:
            raise WorkbenchError(f"{path}: item {item.id} has no file of its own (no self link)")
        out.append(Scene(href, _safe_name(item.id)))
    return out


def _refuse_same_names(where: Path, scenes: list[Scene], suffix: str) -> None:
    seen: dict[str, str] = {}
    for s in scenes:
        key = s.name.lower()                   # case-insensitive file systems would merge them
        if key in seen:
            raise WorkbenchError(f"{where}: {seen[key]} and {s.path} would both be written as {s.name}{suffix}; "
                                 "rename one (or list them in two batches)")
        seen[key] = s.path
