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
Both masks are read in blocks of rows (``SCORE_ROWS``, with a ``band_px`` halo for the
class-edge band), never whole: scoring a 10980 x 10980 tile holds a few blocks.

Where the errors lie: ``boundary`` splits the scored pixels at the truth's class edges. The
band is every valid truth pixel with a valid pixel of another class within ``band_px``
(Chebyshev distance, default 1: the 8 neighbours). Reported: the band's share of the scored
pixels, its share of the wrong ones, and the mean IoU of the pixels outside it. At 7.4 km
Blue Marble pixels a coastline pixel is a mix of land and water whose label (the majority of
its area) no colour can settle, so a model whose misses are mostly in the band is close to
what the data allows, and one whose misses are outside it misreads whole regions.

This is how the quality goal is scored: the test-split tiles of the Blue Marble
catalog with 5-95 % water, prediction over ``data/bluemarble/mosaic.tif`` against
``data/bluemarble/mosaic_mask.tif``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def class_edges(truth: np.ndarray, valid: np.ndarray, band_px: int = 1) -> np.ndarray:
    """Valid pixels with a valid pixel of another class within ``band_px`` (Chebyshev); no wrap-around."""
    h, w = truth.shape
    band = np.zeros(truth.shape, bool)
    for dy in range(-band_px, band_px + 1):
        for dx in range(-band_px, band_px + 1):
            if dy == 0 and dx == 0:
                continue
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            band[yd, xd] |= (truth[ys, xs] != truth[yd, xd]) & valid[ys, xs]
    return band & valid


def boundary_breakdown(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, band_px: int = 1,
                       known: np.ndarray | None = None) -> dict:
    """How the ``valid`` (scored) pixels and their errors split between the class-edge band and
    the rest. ``known``: the pixels that count as neighbours (default ``valid``), so that a
    tile's edge pixel next to another class just outside the tile is still in the band."""
    band = class_edges(truth, valid if known is None else known, band_px) & valid
    wrong = (pred != truth) & valid
    n, n_wrong = int(valid.sum()), int(wrong.sum())
    return {"band_px": band_px, "pixel_share": float(band.sum() / n) if n else None,
            "error_share": float((wrong & band).sum() / n_wrong) if n_wrong else None,
            "errors": n_wrong, "errors_in_band": int((wrong & band).sum()),
            "mean_iou_outside": _land_water_metrics(pred, truth, valid & ~band)["mean_iou"]}


def _land_water_metrics(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """``ConfusionMatrix(2).compute`` (land, water) over the pixels where ``mask`` is true."""
    import torch

    from tasks.segmentation.metrics import ConfusionMatrix

    cm = ConfusionMatrix(2, device="cpu")
    cm.update(torch.from_numpy(pred.astype(np.int64))[None], torch.from_numpy(truth.astype(np.int64))[None],
              torch.from_numpy(mask)[None])
    return cm.compute(list(CLASS_NAMES))


SCORE_ROWS = 512     # rows of both masks read at a time: memory does not grow with the scene


def _read_pair(pred_path, truth_path, pinfo, tinfo, r0: int, r1: int, c0: int, c1: int):
    """Prediction, truth and their jointly valid pixels over rows r0:r1, cols c0:c1."""
    from rasterio.windows import Window

    win = Window(c0, r0, c1 - c0, r1 - r0)
    pred = geotiff.read(pred_path, win, bands=[1])[0]
    truth = geotiff.read(truth_path, win, bands=[1])[0]
    return pred, truth, _valid(pred, pinfo.nodata) & _valid(truth, tinfo.nodata)


def _row_blocks(r0: int, r1: int, rows: int):
    return ((a, min(a + rows, r1)) for a in range(r0, r1, rows))


def _update(cm: Any, pred: np.ndarray, truth: np.ndarray, where: np.ndarray) -> None:
    import torch

    cm.update(torch.from_numpy(pred[where])[None], torch.from_numpy(truth[where])[None])


def score_scene(pred_path: str | Path, truth_path: str | Path, tiles: Sequence[Any] | None = None,
                water_min: float | None = 0.05, water_max: float | None = 0.95, band_px: int = 1,
                rows: int = SCORE_ROWS) -> dict:
    """Metrics (``ConfusionMatrix.compute`` with classes land/water) plus ``tiles_scored``,
    ``tiles_outside``, ``tiles_filtered`` and ``boundary``; see the module docstring.

    Both masks are read ``rows`` rows at a time (with ``band_px`` rows of halo above and below
    for the class-edge band), so scoring a 10980 x 10980 tile holds a few blocks, never the
    masks; the counts are those of the whole arrays (:func:`boundary_breakdown`)."""
    from tasks.segmentation.metrics import ConfusionMatrix

    pinfo = geotiff.read_info(pred_path)
    tinfo = geotiff.read_info(truth_path)
    geotiff.require_same_grid(tinfo, pinfo)
    H, W = tinfo.height, tinfo.width
    rows = max(int(rows), 1)
    scored = outside = filtered = 0
    regions: list[tuple[int, int, int, int]] | None = None
    if tiles is not None:
        regions = []
        for tile in tiles:
            w = tile_window(tile, tinfo)
            if w is None:
                outside += 1
                continue
            r0, r1, c0, c1 = w
            n = water = 0
            for a, b in _row_blocks(r0, r1, rows):
                _, t, ok = _read_pair(pred_path, truth_path, pinfo, tinfo, a, b, c0, c1)
                n += int(ok.sum())
                water += int((t[ok] == 1).sum())
            frac = water / n if n else None
            if frac is None or (water_min is not None and frac < water_min) or \
                    (water_max is not None and frac > water_max):
                filtered += 1
                continue
            regions.append(w)
            scored += 1
    everything, off_band = ConfusionMatrix(2, device="cpu"), ConfusionMatrix(2, device="cpu")
    n = n_wrong = n_band = wrong_in_band = 0
    for a, b in _row_blocks(0, H, rows):
        lo, hi = max(a - band_px, 0), min(b + band_px, H)
        pred, truth, known = _read_pair(pred_path, truth_path, pinfo, tinfo, lo, hi, 0, W)
        band = class_edges(truth, known, band_px)[a - lo:b - lo]
        pred, truth, valid = pred[a - lo:b - lo], truth[a - lo:b - lo], known[a - lo:b - lo]
        if regions is not None:
            region = np.zeros(valid.shape, bool)
            for r0, r1, c0, c1 in regions:
                if r0 < b and r1 > a:
                    region[max(r0, a) - a:min(r1, b) - a, c0:c1] = True
            valid &= region
        band &= valid
        wrong = (pred != truth) & valid
        n, n_wrong = n + int(valid.sum()), n_wrong + int(wrong.sum())
        n_band, wrong_in_band = n_band + int(band.sum()), wrong_in_band + int((wrong & band).sum())
        _update(everything, pred, truth, valid)
        _update(off_band, pred, truth, valid & ~band)
    metrics = everything.compute(list(CLASS_NAMES))
    boundary = {"band_px": band_px, "pixel_share": n_band / n if n else None,
                "error_share": wrong_in_band / n_wrong if n_wrong else None, "errors": n_wrong,
                "errors_in_band": wrong_in_band, "mean_iou_outside": off_band.compute(list(CLASS_NAMES))["mean_iou"]}
    metrics.update(pred=str(pred_path), truth=str(truth_path), tiles_scored=scored if tiles is not None else None,
                   tiles_outside=outside, tiles_filtered=filtered,
                   iou_water=metrics["per_class"][1]["iou"], iou_land=metrics["per_class"][0]["iou"],
                   boundary=boundary)
    return metrics


def format_boundary(b: dict) -> str:
    """One line for the table's foot: where the errors are."""
    if b.get("error_share") is None:
        return f"class edges (within {b['band_px']} px): no errors"
    outside = b["mean_iou_outside"]
    return (f"class edges (within {b['band_px']} px): {100 * b['pixel_share']:.1f} % of pixels, "
            f"{100 * b['error_share']:.1f} % of errors; mean IoU elsewhere "
            f"{'n/a' if outside is None else f'{outside:.4f}'}")
