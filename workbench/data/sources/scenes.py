"""Cut a whole scene (and its water mask) into catalog chips.

    chips = chip_scene("S2B_MSIL2A_....SAFE", mask="water.tif", out=home / "data/scenes/T33TUL-20230415")

Any input :func:`workbench.data.inputs.describe` opens (GeoTIFF, COG, VRT, SAFE folder, STAC
item, GDAL paths) is read window by window (memory bounded by one chip row, whatever the
scene's size) and written as **chips**: GeoTIFFs of ``chip_size`` px on the scene's grid (the
finest band's; 20 m Sentinel-2 bands resampled to it), the last row and column of chips
snapped to the scene's edge so every chip has the full size. Chips, not windows into the
scene, because a chip is a self-contained tile every task reads the same way as an exported
one, fast, whatever the scene's format (a JP2 in a SAFE folder is slow to window into); the
scene itself is never written to.

Each chip keeps the scene's own values and dtype, with its radiometry *declared* (GDAL
scale/offset: ``reflectance = value * scale + offset``, e.g. 0.0001 / -0.1 for a SAFE of
baseline 04.00+), canonical band names, nodata (0 for integer DN, NaN for floats that had
none) where the scene is nodata or its SCL says no data, saturated, cloud shadow, cloud or
cirrus; the mask chip holds the mask's values with 255 where either is invalid. Chips with no
valid pixel are left out. A scene whose units cannot be told (``radiometry.check_values``),
a mask on another grid, or a mask with more than one band is refused before anything is written.

The tiles returned are not yet in the catalog: the import adds them (with every other tile of
the import) in one transaction, and removes the chips it wrote when anything fails.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from workbench.data import geotiff
from workbench.data.catalog import Tile
from workbench.data.radiometry import check_values
from workbench.data.scene import SceneInput
from workbench.errors import WorkbenchError

DEFAULT_CHIP = 256
MASK_NODATA = 255


@dataclass
class ChippedScene:
    scene: str
    out: Path
    tiles: list[Tile]
    written: list[Path]
    skipped_empty: int
    radiometry: str


def chip_offsets(length: int, chip: int) -> list[int]:
    """Chip starts along one axis: every ``chip`` px, the last one snapped to the edge."""
    if length <= chip:
        return [0]
    starts = list(range(0, length - chip + 1, chip))
    if starts[-1] + chip < length:
        starts.append(length - chip)
    return starts


def default_out(root: Path, scene_path: str, scene_id: str | None) -> Path:
    """``root/<scene id or file stem>-<8 hex of the absolute path>``: one folder per scene."""
    name = scene_id or Path(str(scene_path).rstrip("/")).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "scene"
    digest = hashlib.sha256(str(Path(scene_path).resolve() if "://" not in scene_path else scene_path).encode())
    return root / f"{name}-{digest.hexdigest()[:8]}"


def check_mask_values(mask_path: str | Path, classes: int = 2) -> None:
    """Refuse a mask whose values are not classes ``0 .. classes-1`` or its nodata (255 when the
    file declares none): a 7 or a 200 in a water mask would otherwise count as water, and train a
    binary model on targets it cannot mean. Read block by block, so any size is fine."""
    import numpy as np

    if not 2 <= int(classes) <= MASK_NODATA:
        raise WorkbenchError(f"--mask-classes {classes}: must be between 2 and {MASK_NODATA}")
    found: set = set()
    with geotiff.open_raster(mask_path) as ds:
        nodata = ds.nodata if ds.nodata is not None else MASK_NODATA
        for _, window in ds.block_windows(1):
            block = ds.read(1, window=window)
            if block.dtype.kind == "f":
                block = block[~np.isnan(block)]
            values = np.unique(block)
            found.update(values[(values != nodata)].tolist())
            if len(found) > 1000:
                break
    bad = sorted(v for v in found if v != int(v) or not 0 <= v < int(classes))
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:6]) + (" ..." if len(bad) > 6 else "")
        raise WorkbenchError(f"{mask_path}: mask values {shown} are not classes 0..{int(classes) - 1} "
                             f"(0 land, 1 water; nodata {nodata:g}); set the file's nodata, or give "
                             "--mask-classes N for an N-class mask")


def _check_mask(stack, mask_path: Path, classes: int = 2) -> geotiff.RasterInfo:
    info = geotiff.read_info(mask_path)
    if info.count != 1:
        raise WorkbenchError(f"{mask_path}: a mask must have one band, it has {info.count}")
    check_mask_values(mask_path, classes)
    why = geotiff.same_grid(stack.info, info)
    if why:
        raise WorkbenchError(f"{mask_path}: mask is not on the grid of {stack.scene.path} ({why}; the grid is that "
                             f"of its finest band{'s' if len(stack.bands) > 1 else ''})")
    return info


def chip_scene(scene_path: str | Path | SceneInput, out: Path, mask: str | Path | None = None,
               chip_size: int = DEFAULT_CHIP, bands: Sequence[str] | None = None, scale: float | None = None,
               offset: float | None = None,
               scl_nodata: Sequence[int] | None = None, source: str = "folder", progress: bool = False,
               log: Callable[[str], None] | None = None, mask_classes: int = 2) -> ChippedScene:
    """Write the chips of one scene (a path, or what ``inputs.describe`` made of it) under ``out``
    and return their catalog rows (see module docs)."""
    from workbench.data.inputs import describe
    from workbench.progress import progress as progress_bar

    if chip_size < 16:
        raise WorkbenchError(f"--chip-size {chip_size}: must be at least 16 px")
    scene = scene_path if isinstance(scene_path, SceneInput) else describe(scene_path, bands=bands)
    from workbench.data.scene import SCL_INVALID

    with scene.open(scale=scale, offset=offset, scl_nodata=SCL_INVALID if scl_nodata is None else scl_nodata) as stack:
        check_values(*stack.sample(), stack.radiometry, str(stack.scene.path))
        mask_info = _check_mask(stack, Path(mask), mask_classes) if mask is not None else None
        rows, cols = chip_offsets(stack.height, chip_size), chip_offsets(stack.width, chip_size)
        ch, cw = min(chip_size, stack.height), min(chip_size, stack.width)
        fill = _fill_value(stack)
        scales = [r.affine()[0] if r.scale is not None else 1.0 for r in stack.radiometry]
        offsets = [r.affine()[1] if r.scale is not None else 0.0 for r in stack.radiometry]
        radiometry = [r.to_dict() for r in stack.radiometry]
        tags = {k: v for k, v in {"SCENE_ID": scene.scene_id, "DATE_ACQUIRED": scene.date,
                                  "SOURCE_SCENE": str(scene.path)}.items() if v}
        written: list[Path] = []
        tiles: list[Tile] = []
        empty = 0
        bar = progress_bar(total=len(rows) * len(cols), desc="chips", unit="chip", enabled=progress)
        mask_ds = geotiff.open_raster(mask) if mask is not None else None
        try:
            for r in rows:
                for c in cols:
                    bar.update(1)
                    win = Window(c, r, cw, ch)
                    raw = stack.read_raw(win)
                    bad = stack.invalid(raw, win)
                    m = None
                    if mask_ds is not None:
                        m = mask_ds.read(1, window=win)
                        if mask_info.nodata is not None and not math.isnan(mask_info.nodata):
                            bad |= m == np.asarray(mask_info.nodata).astype(m.dtype)
                    if bad.all():
                        empty += 1
                        continue
                    if bad.any():
                        raw[:, bad] = fill
                    stem = f"r{r:05d}_c{c:05d}"
                    transform = geotiff.window_transform(stack.info, win)
                    crs = stack.crs.to_string() if stack.crs else None
                    img_path = geotiff.write(out / f"{stem}.tif", raw, transform, crs, nodata=fill,
                                             band_names=stack.names, tags=tags, scales=scales, offsets=offsets)
                    written.append(img_path)
                    mask_path = None
                    if m is not None:
                        mm = np.where(bad, MASK_NODATA, m).astype(np.uint8)
                        mask_path = geotiff.write(out / f"{stem}_mask.tif", mm, transform, crs, nodata=MASK_NODATA,
                                                  band_names=["water"], tags=tags)
                        written.append(mask_path)
                    tiles.append(_tile(img_path, mask_path, source, scene, (r, c), radiometry,
                                       water_fraction_of(mm) if m is not None else None))
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
            if mask_ds is not None:
                mask_ds.close()
        rad_text = "; ".join(sorted({r.source for r in stack.radiometry}))
    if log:
        log(f"{scene.path}: {len(tiles)} chips of {chip_size} px in {out}" +
            (f" ({empty} without a valid pixel left out)" if empty else ""))
    return ChippedScene(str(scene.path), out, tiles, written, empty, rad_text)


def water_fraction_of(mask, nodata: float = MASK_NODATA) -> float | None:
    """``water_fraction`` of a mask array in memory (values > 0 are water; ``nodata`` ignored)."""
    ok = mask != nodata
    n = int(ok.sum())
    return float(((mask > 0) & ok).sum() / n) if n else None


def label_of(water_fraction: float) -> str:
    """The label an imported tile with a mask gets: land below 5 % water, water above 95 %, else coast."""
    return "land" if water_fraction < 0.05 else "water" if water_fraction > 0.95 else "coast"


def _fill_value(stack) -> float:
    """The chips' nodata: the bands' own (when they agree), else 0 (integers) or NaN (floats)."""
    own = {b.nodata for b in stack.bands}
    if len(own) == 1 and None not in own:
        return own.pop()
    return float("nan") if stack.dtype.kind == "f" else 0


def _tile(path: Path, mask_path: Path | None, source: str, scene, chip: tuple[int, int], radiometry: list,
          wf: float | None) -> Tile:
    info = geotiff.read_info(path)
    lonlat = {}
    if info.crs:
        w, s, e, n = info.lonlat_bounds()
        lonlat = dict(lon=(w + e) / 2, lat=(s + n) / 2, west=w, south=s, east=e, north=n)
    label = None if wf is None else label_of(wf)
    extra = {"imported_from": str(scene.path), "chip": list(chip), "radiometry": radiometry}
    return Tile(path=str(path.resolve()), mask_path=str(mask_path.resolve()) if mask_path else None, source=source,
                crs=info.crs, width=info.width, height=info.height, gsd=info.gsd_metres() if info.crs else None,
                date=scene.date, cloud_cover=scene.cloud_cover, bands=list(info.band_names), water_fraction=wf,
                label=label, scene_id=scene.scene_id, extra=extra, **lonlat)
