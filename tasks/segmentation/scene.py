"""Score a predicted scene mask against the truth mask, over whole scene or over catalog tiles.

    score_scene("mosaic_pred.tif", "data/bluemarble/mosaic_mask.tif", tiles=catalog.query(split="test",
                water_min=0.05, water_max=0.95))

Both masks must share one pixel grid (``require_same_grid``). With ``tiles`` (catalog
rows), only the pixels inside each tile's footprint count: the tile's bounds (in the
scene's CRS) give the pixel window in the scene (``rasterio.windows.from_bounds``,
rounded to whole pixels, clipped to the scene); tiles are also filtered by the
truth water fraction of their window (``water_min`` <= fraction <= ``water_max``;
``None`` disables a side). Pixels that are nodata in either mask (255, or the file's
nodata value) never count. Scoring goes through ``ConfusionMatrix(2)``: class 0 land
(background), class 1 water. Overlapping tile windows are counted once.

This is how the quality goal is scored: the test-split tiles of the Blue Marble
catalog with 5-95 % water, prediction over ``data/bluemarble/mosaic.tif`` against
``data/bluemarble/mosaic_mask.tif``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workbench.data import geotiff
from workbench.errors import WorkbenchError

CLASS_NAMES = ("land", "water")


def tile_window(tile: Any, info: Any) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of a catalog tile in the scene's pixel grid (clipped), or None if outside."""
    from rasterio.windows import from_bounds

    bounds = (tile.west, tile.south, tile.east, tile.north)
    if any(v is None for v in bounds):
        raise WorkbenchError(f"{tile.path}: catalog row has no bounds")
    if tile.crs and info.crs:
        import rasterio.crs
        from rasterio.warp import transform_bounds

        if rasterio.crs.CRS.from_user_input(tile.crs) != rasterio.crs.CRS.from_user_input(info.crs):
            bounds = transform_bounds(tile.crs, info.crs, *bounds)
    win = from_bounds(*bounds, transform=info.affine)
    r0, c0 = int(round(win.row_off)), int(round(win.col_off))
    r1, c1 = int(round(win.row_off + win.height)), int(round(win.col_off + win.width))
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, info.height), min(c1, info.width)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, r1, c0, c1


def _valid(a: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = a != 255
    if nodata is not None and not np.isnan(nodata):
        ok &= a != nodata
    return ok


def score_scene(pred_path: str | Path, truth_path: str | Path, tiles: Sequence[Any] | None = None,
                water_min: float | None = 0.05, water_max: float | None = 0.95) -> dict:
    """Metrics (``ConfusionMatrix.compute`` with classes land/water) plus ``tiles_scored``,
    ``tiles_outside`` and ``tiles_filtered``; see the module docstring."""
    import torch

    from tasks.segmentation.metrics import ConfusionMatrix

    pinfo = geotiff.read_info(pred_path)
    tinfo = geotiff.read_info(truth_path)
    geotiff.require_same_grid(tinfo, pinfo)
    pred = geotiff.read(pred_path, bands=[1])[0]
    truth = geotiff.read(truth_path, bands=[1])[0]
    valid = _valid(pred, pinfo.nodata) & _valid(truth, tinfo.nodata)
    scored = outside = filtered = 0
    if tiles is not None:
        region = np.zeros(valid.shape, bool)
        for tile in tiles:
            w = tile_window(tile, tinfo)
            if w is None:
                outside += 1
                continue
            r0, r1, c0, c1 = w
            t, ok = truth[r0:r1, c0:c1], valid[r0:r1, c0:c1]
            n = int(ok.sum())
            frac = float((t[ok] == 1).sum() / n) if n else None
            if frac is None or (water_min is not None and frac < water_min) or \
                    (water_max is not None and frac > water_max):
                filtered += 1
                continue
            region[r0:r1, c0:c1] = True
            scored += 1
        valid &= region
    cm = ConfusionMatrix(2, device="cpu")
    cm.update(torch.from_numpy(pred.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None],
              torch.from_numpy(valid)[None])
    metrics = cm.compute(list(CLASS_NAMES))
    metrics.update(pred=str(pred_path), truth=str(truth_path), tiles_scored=scored if tiles is not None else None,
                   tiles_outside=outside, tiles_filtered=filtered,
                   iou_water=metrics["per_class"][1]["iou"], iou_land=metrics["per_class"][0]["iou"])
    return metrics
