"""Import a folder of the user's own GeoTIFFs into the catalog.

Layouts (``mode``), detected when not given:

- ``pairs``: images with optional water masks on the same grid --
  ``X.tif`` + ``X_mask.tif`` side by side, or ``images/X.tif`` + ``masks/X.tif``
  (``masks/X_mask.tif`` also works), or any ``--pattern "IMAGE,MASK"`` with a
  ``{name}`` placeholder, e.g. ``"scenes/{name}.tif,labels/{name}_water.tif"``.
  The layout of the older Earth Engine Drive exports (made outside the workbench) is a
  pairs variant:
  ``Original_Image_{i}.tif`` + ``Masked_Image_{i}.tif`` (anywhere under the folder),
  where the masked file is a copy of the image with WATER PIXELS SET TO 0 in all bands.
  A real mask is derived from it and written beside the image as
  ``Original_Image_{i}_water_mask.tif``: 1 where every band of the masked copy is 0
  and the image is not, 0 elsewhere, and 255 (declared nodata) where the image
  itself is all 0 (outside the export footprint).
- ``classes``: ``DIR/<class>/*.tif``, label = the folder name (classification tiles).

Every file is read completely and every mask checked against its image's grid
BEFORE the catalog is touched; then all rows go in with one transaction, so a bad
file leaves the catalog exactly as it was, and a re-import adds nothing (paths are
unique). Attributes come from the files: centre and bounds reprojected to
EPSG:4326, GSD in metres, band names, water fraction from the mask (nodata
ignored), date and cloud cover from GeoTIFF tags when present. Splits are
fixed-size blocks on the ground (``splits.ground_splits``) unless one split is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.catalog import Catalog, Tile
from workbench.data.sources.scenes import label_of, water_fraction_of  # noqa: F401 (re-exported)
from workbench.data.splits import DEFAULT_FRACTIONS, SPLITS, ground_splits
from workbench.data.tags import CLOUD_TAGS, DATE_TAGS, cloud_from_tags, date_from_tags  # noqa: F401 (re-exported)
from workbench.errors import WorkbenchError

MODES = ("pairs", "classes")
IMPORT_SOURCES = ("folder", "earthengine")
TIF_SUFFIXES = (".tif", ".tiff")
EE_IMAGE, EE_MASKED = "Original_Image_", "Masked_Image_"
DERIVED_SUFFIX = "_water_mask"
MASK_NODATA = 255
MAX_MASKED_MISMATCH = 0.01     # share of non-water pixels a "masked copy" may differ from its image

@dataclass
class Item:
    """One image to import, with what will give it a mask or a label."""

    image: Path
    mask: Path | None = None
    masked_copy: Path | None = None      # EE layout: the image with water set to 0
    label: str | None = None

    @property
    def derived_mask(self) -> Path:
        return self.image.with_name(self.image.stem + DERIVED_SUFFIX + ".tif")


@dataclass
class ImportResult:
    root: Path
    mode: str
    source: str
    layout: str
    found: int = 0
    added: list[Tile] = field(default_factory=list)
    already: int = 0
    derived_masks: int = 0
    block_deg: float | None = None
    unplaced: int = 0
    chipped: int = 0                    # images / scenes cut into chips
    radiometry: str = ""
    duplicates: int = 0                 # links (or paths) to a file already in this import


# ---- finding the files -----------------------------------------------------------------------

def _is_tif(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in TIF_SUFFIXES and not p.name.startswith(".")


def _tifs(folder: Path, recursive: bool = False) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in files if _is_tif(p)), key=_natural_key)


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def _stem_without(p: Path, prefix: str) -> str:
    return p.stem[len(prefix):]


def detect_layout(root: Path) -> str:
    """``earthengine``, ``images-masks``, ``side-by-side`` or ``classes``."""
    names = [p.name for p in _tifs(root, recursive=True)]
    if any(n.startswith(EE_IMAGE) for n in names) and any(n.startswith(EE_MASKED) for n in names):
        return "earthengine"
    if (root / "images").is_dir():
        return "images-masks"
    top = _tifs(root)
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _tifs(d)]
    has_masks = any(p.stem.endswith("_mask") for d in subdirs for p in _tifs(d))
    if subdirs and not top and not has_masks:      # folders of pairs are pairs, not classes
        return "classes"
    return "side-by-side"


def find_items(root: str | Path, mode: str | None = None, pattern: str | None = None) -> tuple[str, str, list[Item]]:
    """(mode, layout, items) for a folder; a folder with nothing to import is an error."""
    root = Path(root)
    if not root.exists():
        raise WorkbenchError(f"{root}: no such directory")
    if not root.is_dir():
        raise WorkbenchError(f"{root}: not a directory (give the folder that holds the GeoTIFFs)")
    if mode is not None and mode not in MODES:
        raise WorkbenchError(f"--mode {mode!r}: unknown (known: {', '.join(MODES)})")
    if pattern:
        if mode == "classes":
            raise WorkbenchError("--pattern applies to --mode pairs, not classes")
        mode, layout, items = "pairs", "pattern", _pattern_items(root, pattern)
    else:
        layout = detect_layout(root)
        if mode == "classes" or (mode is None and layout == "classes"):
            mode, layout, items = "classes", "classes", _class_items(root)
        else:
            if layout == "classes":        # --mode pairs on class folders: images anywhere below
                layout = "side-by-side"
            mode = "pairs"
            items = {"earthengine": _ee_items, "images-masks": _images_masks_items,
                     "side-by-side": _side_by_side_items}[layout](root)
    if not items:
        raise WorkbenchError(f"{root}: no GeoTIFFs (*.tif) to import")
    return mode, layout, items


def _side_by_side_items(root: Path) -> list[Item]:
    files = [p for p in _tifs(root, recursive=True) if not p.stem.endswith(DERIVED_SUFFIX)]
    by_path = set(files)
    masks = {p.with_name(p.stem + "_mask" + p.suffix) for p in files} & by_path
    items = []
    for p in files:
        if p in masks:
            continue
        if p.stem.endswith("_mask"):
            image = [p.with_name(p.stem[:-5] + s) for s in TIF_SUFFIXES]
            raise WorkbenchError(f"{p}: a mask without its image ({image[0].name} not found)")
        m = p.with_name(p.stem + "_mask" + p.suffix)
        items.append(Item(image=p, mask=m if m in masks else None))
    return items


def _images_masks_items(root: Path) -> list[Item]:
    images = [p for p in _tifs(root / "images", recursive=True) if not p.stem.endswith(DERIVED_SUFFIX)]
    mask_dir = root / "masks"
    items = []
    for p in images:
        rel = p.relative_to(root / "images")
        candidates = [mask_dir / rel, mask_dir / rel.with_name(rel.stem + "_mask" + rel.suffix)]
        items.append(Item(image=p, mask=next((c for c in candidates if c.is_file()), None)))
    return items


def _ee_items(root: Path) -> list[Item]:
    files = _tifs(root, recursive=True)
    originals = {_stem_without(p, EE_IMAGE): p for p in files
                 if p.name.startswith(EE_IMAGE) and not p.stem.endswith(DERIVED_SUFFIX)}
    masked = {_stem_without(p, EE_MASKED): p for p in files if p.name.startswith(EE_MASKED)}
    for key, p in masked.items():
        if key not in originals:
            raise WorkbenchError(f"{p}: a masked image without its original ({EE_IMAGE}{key}.tif not found)")
    return [Item(image=p, masked_copy=masked.get(key)) for key, p in originals.items()]


def _class_items(root: Path) -> list[Item]:
    items = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            items += [Item(image=p, label=d.name) for p in _tifs(d)
                      if not p.stem.endswith("_mask") and not p.stem.endswith(DERIVED_SUFFIX)]
    return items


def _pattern_items(root: Path, pattern: str) -> list[Item]:
    image_tpl, _, mask_tpl = (s.strip() for s in pattern.partition(","))
    if "{name}" not in image_tpl or (mask_tpl and "{name}" not in mask_tpl):
        raise WorkbenchError(f"--pattern {pattern!r}: expected IMAGE[,MASK] templates with {{name}}, "
                             "e.g. 'images/{name}.tif,masks/{name}_mask.tif'")
    parts = [re.escape(p) for p in image_tpl.split("{name}")]
    regex = re.compile("^" + "(?P<name>.+?)".join(parts) + "$")
    masks = set()
    found = []
    for p in _tifs(root, recursive=True):
        m = regex.match(p.relative_to(root).as_posix())
        if m:
            found.append((p, m.group("name")))
    if mask_tpl:
        masks = {(root / mask_tpl.format(name=name)).resolve() for _, name in found}
    items = []
    for p, name in found:
        if p.resolve() in masks:
            continue
        mask = None
        if mask_tpl:
            mask = root / mask_tpl.format(name=name)
            if not mask.is_file():
                raise WorkbenchError(f"{mask}: no such mask for {p} (--pattern {pattern!r})")
        items.append(Item(image=p, mask=mask))
    return items


# ---- reading and checking ----------------------------------------------------------------------

@dataclass
class _Checked:
    item: Item
    info: object                     # geotiff.RasterInfo of the image
    tags: dict
    mask_info: object | None = None


def _check(item: Item, mask_classes: int = 2) -> _Checked:
    """Read every block of the image and its mask / masked copy; masks must share the grid."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from workbench.data import geotiff

    with warnings.catch_warnings():          # a plain TIFF is allowed; we say so once, in the summary
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        info = geotiff.read_info(item.image, verify=True)
        with geotiff.open_raster(item.image) as ds:
            tags = {k.upper(): v for k, v in ds.tags().items()}
        checked = _Checked(item=item, info=info, tags=tags)
        for other in (item.mask, item.masked_copy):
            if other is not None:
                other_info = geotiff.read_info(other, verify=True)
                geotiff.require_same_grid(info, other_info)
                checked.mask_info = other_info
    if item.masked_copy is not None and checked.mask_info.count != info.count:
        raise WorkbenchError(f"{item.masked_copy}: has {checked.mask_info.count} bands, "
                             f"{item.image} has {info.count}: not a masked copy of it")
    if item.mask is not None and checked.mask_info.count != 1:
        raise WorkbenchError(f"{item.mask}: a mask must have one band, it has {checked.mask_info.count}")
    if item.mask is not None:
        from workbench.data.sources.scenes import check_mask_values

        check_mask_values(item.mask, mask_classes)
    return checked


def derive_water_mask(image: str | Path, masked: str | Path, out: str | Path | None = None):
    """The 0/1 water mask of an EE 'Masked_Image' (water set to 0 in all bands) and its image.

    1 where all bands of ``masked`` are 0 and ``image`` is not all 0; 0 elsewhere;
    ``MASK_NODATA`` where the image itself is all 0. Written (atomically) to ``out``
    if given. Returns (mask array, output path or None).
    """
    import numpy as np

    from workbench.data import geotiff

    img = geotiff.read(image)
    msk = geotiff.read(masked)
    if img.shape != msk.shape:
        raise WorkbenchError(f"{masked}: shape {msk.shape} differs from {image} {img.shape}")
    image_empty = ~np.any(img != 0, axis=0)
    masked_zero = ~np.any(msk != 0, axis=0)
    water = masked_zero & ~image_empty
    kept = ~masked_zero & ~image_empty
    if kept.any():
        differ = np.any(msk != img, axis=0) & kept
        if differ.sum() > MAX_MASKED_MISMATCH * kept.sum():
            raise WorkbenchError(f"{masked}: {100 * differ.sum() / kept.sum():.1f} % of its non-zero pixels "
                                 f"differ from {Path(image).name}: not a water-masked copy of it")
    out_mask = water.astype(np.uint8)
    out_mask[image_empty] = MASK_NODATA
    written = None
    if out is not None:
        info = geotiff.read_info(image)
        written = geotiff.write(out, out_mask, info.affine, info.crs, nodata=MASK_NODATA,
                                band_names=["water"], tags={"DERIVED_FROM": Path(masked).name,
                                                            "VALUES": "1 water, 0 not water, 255 no data"})
    return out_mask, written


def water_fraction(path: str | Path) -> float | None:
    """Share of valid mask pixels that are water (> 0), nodata ignored; None if no valid pixel."""
    import numpy as np

    from workbench.data import geotiff

    water = valid = 0
    with geotiff.open_raster(path) as ds:
        nodata = ds.nodata
        for _, window in ds.block_windows(1):
            block = ds.read(1, window=window)
            ok = np.ones(block.shape, bool) if nodata is None else ~np.isclose(block, nodata, equal_nan=True)
            if np.issubdtype(block.dtype, np.floating):
                ok &= ~np.isnan(block)
            valid += int(ok.sum())
            water += int(((block > 0) & ok).sum())
    return water / valid if valid else None


def _tile(checked: _Checked, source: str, mask_path: Path | None, wf: float | None) -> Tile:
    info, item = checked.info, checked.item
    from workbench.data.scene import date_from_name

    lonlat = None
    if info.crs:
        w, s, e, n = info.lonlat_bounds()
        if not all(math.isfinite(v) for v in (w, s, e, n)) or not (-180.5 <= w <= e <= 180.5 and
                                                                  -90.5 <= s <= n <= 90.5):
            raise WorkbenchError(f"{item.image}: lies at lon {w:g}..{e:g}, lat {s:g}..{n:g}, not on the Earth: "
                                 "check its CRS and geotransform")
        lonlat = dict(lon=(w + e) / 2, lat=(s + n) / 2, west=w, south=s, east=e, north=n)
    label = item.label
    if label is None and wf is not None:
        label = label_of(wf)
    extra = {"imported_from": str(item.image.resolve())}
    if item.masked_copy is not None:
        extra["masked_copy"] = str(item.masked_copy.resolve())
    return Tile(path=str(item.image.resolve()), mask_path=str(mask_path.resolve()) if mask_path else None,
                source=source, crs=info.crs, width=info.width, height=info.height,
                gsd=info.gsd_metres() if info.crs else None,
                date=date_from_tags(checked.tags) or date_from_name(item.image.name),
                scene_id=checked.tags.get("SCENE_ID") or checked.tags.get("PRODUCT_ID"),
                cloud_cover=cloud_from_tags(checked.tags),
                bands=list(info.band_names), water_fraction=wf, label=label, extra=extra,
                **(lonlat or {}))


# ---- the import ----------------------------------------------------------------------------------

def import_folder(catalog: Catalog, root: str | Path, source: str | None = None, mode: str | None = None,
                  pattern: str | None = None, split: str = "auto", block_deg: float | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, progress: bool = False,
                  log: Callable[[str], None] | None = None, chip_size: int | None = None,
                  chips_root: str | Path | None = None, mask_classes: int = 2) -> ImportResult:
    """Check every file, derive EE masks, cut images larger than ``chip_size`` into chips
    (``workbench.data.sources.scenes``, under ``chips_root``), then add all new tiles in one
    transaction (chips written by a failed import are removed)."""
    root = Path(root)
    _check_options(source, split, block_deg)
    mode, layout, items = find_items(root, mode, pattern)
    source = source or ("earthengine" if layout == "earthengine" else "folder")
    result = ImportResult(root=root, mode=mode, source=source, layout=layout, found=len(items))

    known = _known_paths(catalog, [it.image for it in items]) | catalog.chipped_scenes([it.image for it in items])
    unique: dict[str, Item] = {}
    for it in items:                     # two symlinks to one file are one tile, and counted so
        unique.setdefault(str(it.image.resolve()), it)
    result.duplicates = len(items) - len(unique)
    todo = [it for key, it in unique.items() if key not in known]
    result.already = len(unique) - len(todo)
    if not todo:
        return result

    from workbench.progress import progress as progress_bar

    bar = progress_bar(total=len(todo), desc="checking", unit="tile", enabled=progress)
    checked = []
    try:
        for it in todo:                                  # phase 1: read everything, write nothing
            checked.append(_check(it, mask_classes))
            bar.update(1)
    finally:
        bar.close()
    large = [c for c in checked if chip_size and max(c.info.width, c.info.height) > chip_size]
    small = [c for c in checked if c not in large]
    radiometry = check_units([c.item.image for c in small]) if small else {}

    tiles, written = [], []
    with removed_on_failure(written):
        for c in checked:                                # phase 2: derived masks, chips, attributes
            mask_path = c.item.mask
            if c.item.masked_copy is not None:
                mask_path = c.item.derived_mask
                existed = mask_path.exists()
                derive_water_mask(c.item.image, c.item.masked_copy, mask_path)
                if not existed:  # ours: removed again if the import fails
                    written.append(mask_path)
                result.derived_masks += 1
            if c in large:
                from workbench.data.sources import scenes

                out = scenes.default_out(Path(chips_root or root / ".chips"), str(c.item.image), None)
                chipped = scenes.chip_scene(c.item.image, out, mask=mask_path, chip_size=chip_size, source=source,
                                            progress=progress, log=log, mask_classes=mask_classes)
                written += chipped.written
                tiles += chipped.tiles
                result.chipped += 1
                continue
            wf = water_fraction(mask_path) if mask_path is not None else None
            tile = _tile(c, source, mask_path, wf)
            tile.extra["radiometry"] = radiometry[str(c.item.image)]
            tiles.append(tile)
        add_with_splits(catalog, tiles, result, split=split, block_deg=block_deg, fractions=fractions)
    return result


@contextmanager
def removed_on_failure(written: list[Path]):
    """The files an import wrote (chips, appended to ``written`` as they come) are removed when
    anything fails before its catalog transaction commits: a failed import leaves nothing behind."""
    try:
        yield written
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def _check_options(source: str | None, split: str, block_deg: float | None) -> None:
    if source is not None and source not in IMPORT_SOURCES:
        raise WorkbenchError(f"--source {source!r}: unknown (known: {', '.join(IMPORT_SOURCES)})")
    if split != "auto" and split not in SPLITS:
        raise WorkbenchError(f"--split {split!r}: unknown (known: auto, {', '.join(SPLITS)})")
    if block_deg is not None and not (math.isfinite(block_deg) and 0 < block_deg <= 180):
        raise WorkbenchError(f"--block-size {block_deg}: must be a positive number of degrees (at most 180)")


def import_scene(catalog: Catalog, scene: str | Path, mask: str | Path | None = None, *,
                 chips_root: str | Path, chip_size: int = 256, source: str | None = None, split: str = "auto",
                 block_deg: float | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 bands: Sequence[str] | None = None, scale: float | None = None, offset: float | None = None,
                 scl_nodata: Sequence[int] | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None, mask_classes: int = 2) -> ImportResult:
    """One scene (any input ``inputs.describe`` opens) and its mask, cut into chips under
    ``chips_root/<scene>-<hash>`` and added in one transaction; a scene imported before is skipped."""
    from workbench.data.inputs import describe, is_gdal_path
    from workbench.data.sources import scenes

    _check_options(source, split, block_deg)
    source = source or "folder"
    text = str(scene)
    key = text if is_gdal_path(text) else str(Path(text).resolve())
    result = ImportResult(root=Path(text), mode="scene", source=source, layout="scene", found=1)
    if catalog.chipped_scenes([key]):
        result.already = 1
        return result
    info = describe(key, bands=bands)
    out = scenes.default_out(Path(chips_root), key, info.scene_id)
    chipped = scenes.chip_scene(info, out, mask=mask, chip_size=chip_size, bands=bands, scale=scale, offset=offset,
                                scl_nodata=scl_nodata, source=source, progress=progress, log=log,
                                mask_classes=mask_classes)
    with removed_on_failure(chipped.written):
        if not chipped.tiles:
            raise WorkbenchError(f"{text}: no chip of {chip_size} px holds a valid pixel")
        add_with_splits(catalog, chipped.tiles, result, split=split, block_deg=block_deg, fractions=fractions)
    result.chipped = 1
    result.radiometry = chipped.radiometry
    return result


def scene_products(root: str | Path) -> list[Path]:
    """The scene products directly in a folder: Sentinel-2 ``.SAFE`` folders and STAC item JSONs
    (``inputs.inputs_in`` less the plain rasters, which a folder import reads as it always has)."""
    from workbench.data.inputs import inputs_in

    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in inputs_in(root) if p.is_dir() or p.suffix.lower() == ".json"]


def import_scenes(catalog: Catalog, root: str | Path, *, chips_root: str | Path, chip_size: int = 256,
                  source: str | None = None, split: str = "auto", block_deg: float | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, scl_nodata: Sequence[int] | None = None,
                  progress: bool = False, log: Callable[[str], None] | None = None) -> ImportResult:
    """Every SAFE folder and STAC item in ``root`` (no masks: for prediction, classification or
    pseudo-masks), cut into chips; all of them go in with one transaction, or none (the chips
    already written are removed), and scenes imported before are skipped."""
    from workbench.data.inputs import describe
    from workbench.data.sources import scenes

    _check_options(source, split, block_deg)
    source = source or "folder"
    products = scene_products(root)
    result = ImportResult(root=Path(root), mode="scenes", source=source, layout="scene products",
                          found=len(products))
    known = catalog.chipped_scenes(products)
    todo = [p for p in products if str(p.resolve()) not in known]
    result.already = len(products) - len(todo)
    tiles, written = [], []
    with removed_on_failure(written):
        for p in todo:
            key = str(p.resolve())
            info = describe(key)
            out = scenes.default_out(Path(chips_root), key, info.scene_id)
            chipped = scenes.chip_scene(info, out, chip_size=chip_size, scl_nodata=scl_nodata, source=source,
                                        progress=progress, log=log)
            written += chipped.written
            tiles += chipped.tiles
            result.chipped += 1
        if tiles:
            add_with_splits(catalog, tiles, result, split=split, block_deg=block_deg, fractions=fractions)
    return result


def check_units(images: Sequence[Path], per_file: int = 64, max_files: int = 256) -> dict[str, list[dict]]:
    """Each image's radiometry (``radiometry.of_dataset``), checked against the values of the whole
    import pooled per kind of radiometry (one dark chip does not make a dataset): uint16 DN that
    never go below 1000 carry an undeclared offset, float "reflectance" far above 1 is DN."""
    import numpy as np

    from workbench.data import geotiff
    from workbench.data.radiometry import check_values, of_dataset, sample_values

    found: dict[str, list[dict]] = {}
    pools: dict[tuple, list] = {}
    step = max(1, len(images) // max_files)
    for i, path in enumerate(images):
        with geotiff.open_raster(path) as ds:
            rad = of_dataset(ds)
            found[str(path)] = [r.to_dict() for r in rad]
            if i % step:
                continue
            key = (ds.dtypes[0], ds.count, tuple(r.source for r in rad), ds.nodata)
            vals = sample_values(ds, range(1, ds.count + 1), per_file)
            pools.setdefault(key, [rad, path, []])[2].append(vals.reshape(ds.count, -1))
    for (dtype, _count, _src, nodata), (rad, path, parts) in pools.items():
        vals = np.concatenate(parts, axis=1)[:, :, None]
        ok = np.ones(vals.shape[1:], bool)
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            ok &= ~(vals == np.asarray(nodata).astype(vals.dtype)).any(axis=0)
        if vals.dtype.kind == "f":
            ok &= ~np.isnan(vals).any(axis=0)
        check_values(vals, ok, rad, f"{path} (and the other {dtype} files of this import)")
    return found


def add_with_splits(catalog: Catalog, tiles: list[Tile], result: ImportResult, *, split: str,
                    block_deg: float | None, fractions: Sequence[float]) -> None:
    """Give the new tiles their splits and add them in one transaction (phase 3)."""
    if split == "auto":
        points = [(t.lon, t.lat) if t.lon is not None else None for t in tiles]
        splits, blocks, size = ground_splits(points, block_deg=block_deg, fractions=fractions,
                                             fallback_keys=[Path(t.path).name for t in tiles])
        result.block_deg = size
        for t, s, b in zip(tiles, splits, blocks):
            t.split = s
            if b is not None:
                t.extra["block_deg"] = size
                t.extra["block"] = list(b)
    else:
        for t in tiles:
            t.split = split
    result.unplaced = sum(t.lon is None for t in tiles)
    catalog.add_tiles(tiles)
    result.added = tiles


def _known_paths(catalog: Catalog, paths: list[Path]) -> set[str]:
    """Which of these images the catalog already has (absolute resolved paths)."""
    return {str(Path(k).resolve()) for k in catalog.existing_paths(paths)}
