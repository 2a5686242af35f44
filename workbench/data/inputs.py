"""The one way to open a user's scene: any raster GDAL reads, a Sentinel-2 SAFE folder, a STAC item.

    scene = describe("S2B_MSIL2A_....SAFE")            # or x.tif, x.vrt, item.json, /vsicurl/..., SENTINEL2_L2A:...
    scene.names                                        # ['B02', 'B03', 'B04', 'B08', 'B05', ...]
    with scene.open(["B04", "B03", "B02", "B08"]) as stack:
        reflectance, valid = stack.read(window)        # float32 (4, h, w) on the finest band's grid

:func:`describe` only reads headers and metadata; it names every band canonically
(:mod:`workbench.data.bands`), finds how its numbers become reflectance
(:mod:`workbench.data.radiometry`), and keeps the scene's date, id and its Sentinel-2 SCL
band. :meth:`SceneInput.open` gives a :class:`Stack`: the chosen bands on one pixel grid (the
finest of them; coarser bands, e.g. 20 m B11 or SCL beside 10 m B02, are resampled on the fly
through a ``WarpedVRT``), read window by window, converted to reflectance, with nodata, NaN
and the SCL classes of :data:`SCL_INVALID` (no data, saturated, cloud shadow, clouds,
cirrus) marked invalid.

SAFE folders and STAC items are read by :mod:`workbench.data.sources.safe` and
:mod:`workbench.data.sources.stac`; everything else goes to rasterio as given, so
``/vsicurl/``, ``/vsis3/``, VRTs and GDAL subdatasets work as GDAL opens them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from workbench.data import bands as band_names
from workbench.data.radiometry import declared
from workbench.data.scene import (  # noqa: F401 (re-exported)
    SCL_CLASSES,
    SCL_INVALID,
    BandSource,
    SceneInput,
    Stack,
    date_from_name,
    is_gdal_path,
    open_dataset,
)
from workbench.errors import WorkbenchError


def describe(path: str | Path, bands: Sequence[str] | None = None) -> SceneInput:
    """Name the bands of any input (see the module docstring); ``bands`` names them in order
    when the input carries no names of its own. A path that is neither here nor a GDAL path is
    a one-line error."""
    text = str(path)
    from workbench.data.sources.stac import split_item_ref

    base, item_id = split_item_ref(text)               # ITEMS.json#<id>: an item of an item collection
    in_collection = item_id is not None
    p = Path(base)
    if not is_gdal_path(text) and not p.exists():
        raise WorkbenchError(f"{text}: no such file or folder")
    if in_collection:
        from workbench.data.sources import stac

        scene = stac.read_item(text)
    elif p.is_dir():
        from workbench.data.sources import safe

        if safe.is_safe(p):
            scene = safe.read_safe(p)
        else:
            raise WorkbenchError(f"{text}: a folder that is not a Sentinel-2 .SAFE product (no MTD_MSIL2A.xml); "
                                 "give one of its GeoTIFFs, or `data import` the folder")
    elif text.lower().endswith(".json") or (is_gdal_path(text) and text.lower().split("?")[0].endswith(".json")):
        from workbench.data.sources import stac

        scene = stac.read_item(text)
    else:
        scene = describe_raster(text)
    if bands:
        scene.rename(bands)
    return scene

def describe_raster(path: str) -> SceneInput:
    """One raster file (GeoTIFF, COG, VRT, JP2, a GDAL subdataset or remote path)."""
    with open_dataset(path) as ds:
        tags = {k.upper(): v for k, v in ds.tags().items()}
        if not ds.count:
            subs = list(ds.subdatasets or [])
            if subs:
                raise WorkbenchError(f"{path}: holds subdatasets, not bands; give one of them, e.g. {subs[0]}")
            raise WorkbenchError(f"{path}: has no bands")
        names = band_names.canonical_names(list(ds.descriptions))
        res = abs(ds.transform.e) if ds.transform else None
        nodata = ds.nodata
        if nodata is None and ds.driver == "SENTINEL2" and tags.get("SPECIAL_VALUE_NODATA") is not None:
            nodata = float(tags["SPECIAL_VALUE_NODATA"])      # GDAL's SENTINEL2 driver declares none; L2A DN 0
        out = []
        for i, name in enumerate(names):
            out.append(BandSource(name=name, path=path, index=i + 1, radiometry=declared(ds, i + 1, tags, name),
                                  nodata=nodata, description=ds.descriptions[i] or "", resolution=res))
    scl = None
    if band_names.SCL in names:
        scl = out.pop(names.index(band_names.SCL))
    from workbench.data.tags import cloud_from_tags, date_from_tags

    # GDAL's SENTINEL2 driver gives PRODUCT_START_TIME and PRODUCT_URI (``....SAFE``)
    date = date_from_tags(tags) or date_from_name(tags.get("PRODUCT_START_TIME", "")) or date_from_name(Path(path).name)
    uri = tags.get("PRODUCT_URI")
    uri = uri[:-5] if uri and uri.upper().endswith(".SAFE") else uri
    return SceneInput(path=path, kind="raster", bands=out, date=date,
                      scene_id=tags.get("SCENE_ID") or tags.get("PRODUCT_ID") or tags.get("SYSTEM:INDEX") or uri,
                      scl=scl, tags=tags, cloud_cover=cloud_from_tags(tags))


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


def inputs_in(folder: str | Path) -> list[Path]:
    """The scenes directly in a folder that :func:`describe` opens: rasters (``.tif .tiff .vrt
    .jp2``; masks ``*_mask.tif`` and the assets of the folder's STAC items left out), ``.SAFE``
    products and STAC item JSONs."""
    from workbench.data.sources import safe

    folder = Path(folder)
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    items = [p for p in entries if p.is_file() and p.suffix.lower() == ".json" and _says_stac_item(p)]
    assets = {a for item in items for a in _local_assets(item)}
    out = []
    for p in entries:
        if (p.is_dir() and safe.is_safe(p)) or p in items:
            out.append(p)
        elif p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.stem.endswith("_mask") \
                and p.resolve() not in assets:
            out.append(p)
    return out


def is_folder_input(path: str | Path) -> bool:
    """A folder of scenes (not a ``.SAFE`` product, which is one scene in a folder)."""
    from workbench.data.sources import safe

    return Path(path).is_dir() and not safe.is_safe(Path(path))


def _local_assets(item: Path) -> set[Path]:
    import json

    doc = json.loads(item.read_text())
    hrefs = [a.get("href") for a in (doc.get("assets") or {}).values() if isinstance(a, dict)]
    return {(item.parent / h).resolve() for h in hrefs if isinstance(h, str) and "://" not in h}


def _says_stac_item(path: Path) -> bool:
    import json

    try:
        doc = json.loads(path.read_text()) if path.stat().st_size < 16 << 20 else None
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "stac_version" in doc


def refuse_overwrite(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Outputs never replace inputs, nor each other: one line naming the two flags that collide."""
    def key(p):
        return str(Path(p).resolve()) if p and "://" not in str(p) and not str(p).startswith("/vsi") else None

    seen: dict[str, str] = {key(v): k for k, v in inputs.items() if key(v)}
    for flag, path in outputs.items():
        k = key(path)
        if k is None:
            continue
        if k in seen:
            raise WorkbenchError(f"{flag} {path}: the same file as {seen[k]}; an output never replaces an input "
                                 "or another output")
        seen[k] = flag
