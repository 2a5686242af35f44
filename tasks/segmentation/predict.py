"""Sliding-window prediction over a whole GeoTIFF scene of any size.

    from tasks.segmentation.run import load_run
    from tasks.segmentation.predict import predict_scene

    run = load_run("segmentation-default")
    predict_scene(run, "scene.tif", "scene_mask.tif", prob_path="scene_prob.tif")

How: the scene is read in row strips (one windowed read per strip of ``window``
rows, never the whole scene at once); each strip is normalised with the run's band
statistics (nodata pixels set to 0 as in training) and cut into ``window`` x
``window`` patches every ``window - overlap`` px, the last row/column snapped to
the scene edge; patches are batched (``batch_size``) and run through the model
under ``torch.inference_mode`` in channels_last layout (bf16 autocast on CUDA);
probabilities (sigmoid, or softmax for several classes) are blended where windows
overlap with a gaussian (centre-weighted, sigma = window / 8) or uniform
(``mean``) weight. A scene smaller than the window is padded by reflection and the
result cropped.

Memory does not grow with the scene: :func:`predict_scene` keeps float32 accumulators
only for the rows a window may still add to (one window row plus the overlap band,
``_OpenRows``) and, as each window row completes, writes the finished rows out through
``workbench.data.geotiff.RasterWriter``; GDAL's block cache is capped (``GDAL_CACHE_MB``).
The additions per pixel are those of scene-sized accumulators in the same order, so the
mask is the same bit for bit as :func:`predict_probabilities`' (which holds the whole
scene, for catalog tiles and the bench). The summary counts pixels and km^2 per class.

Output: a uint8 mask Cloud-Optimised GeoTIFF (internal overviews) on the input's grid
(same CRS and transform): 0 land/background, 1 water (binary models, ``p > threshold``
with the run's threshold) or the class index (several classes); 255 = nodata where any
input band is nodata (or NaN). Optionally a float32 probability COG (one band for a
binary model: the water probability; one per class otherwise; NaN = nodata). Both are
written atomically (a temporary file renamed once it reads back).

:func:`predict_scene_naive` is the simple way (one window at a time, batch 1,
contiguous layout, a read per window) over the very same windows and blending: the
bench compares the two. :func:`write_masks` turns predictions on catalog tiles
into pseudo-masks so classified or generated tiles can join a segmentation
experiment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from workbench.data import geotiff
from workbench.data.augment import dihedral, inverse_transform
from workbench.errors import WorkbenchError
from workbench.inference import ModelRunner, device_of

BLENDS = ("gaussian", "mean")
# test-time augmentation: the D4 transforms (workbench.data.augment numbering) each window is seen under
TTA = {"none": (0,), "flips": (0, 4, 6, 2), "d4": tuple(range(8))}
NODATA = 255


# ------------------------------------------------------------------------------ planning


def output_stride(model: torch.nn.Module) -> int:
    """The factor every input side must be a multiple of (32 for most encoders)."""
    spec = dict(getattr(model, "workbench_spec", {}) or {})
    if "encoder_depth" in spec:
        return 2 ** int(spec["encoder_depth"])
    if spec.get("arch") in ("AttentionUNet", "UNet3Plus") and spec.get("encoder") in (None, "plain", "none"):
        filters = spec.get("filters") or (64, 128, 256, 512, 1024)
        return 2 ** (len(filters) - 1)
    return 32


def blend_weight(height: int, width: int, blend: str) -> np.ndarray:
    """(H, W) float32 weight of one window's pixels: gaussian (sigma = side / 8, floored) or uniform."""
    if blend not in BLENDS:
        raise WorkbenchError(f"blend {blend!r}: expected one of {', '.join(BLENDS)}")
    if blend == "mean":
        return np.ones((height, width), np.float32)

    def g(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        return np.exp(-0.5 * (x / (n / 8)) ** 2)

    w = np.outer(g(height), g(width))
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    win_h: int
    win_w: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    window: int
    overlap: int

    @property
    def windows(self) -> int:
        return len(self.rows) * len(self.cols)


def _offsets(length: int, size: int, step: int) -> tuple[int, ...]:
    if length <= size:
        return (0,)
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return tuple(starts)


def plan_windows(height: int, width: int, window: int, overlap: int, stride: int = 32) -> Plan:
    """Window offsets covering a ``height`` x ``width`` scene (see module docstring)."""
    if window < stride or window % stride:
        lo, hi = max(stride, window // stride * stride), (window // stride + 1) * stride
        raise WorkbenchError(f"window {window} px is not a multiple of the model's output stride {stride}: "
                             f"use {lo} or {hi}")
    if not 0 <= overlap < window:
        raise WorkbenchError(f"overlap {overlap} px must be >= 0 and smaller than the window ({window} px)")
    up = lambda n: -(-n // stride) * stride  # noqa: E731
    win_h, win_w = min(window, up(height)), min(window, up(width))  # small scenes: no needless padding
    step = window - overlap
    return Plan(height, width, win_h, win_w, _offsets(height, win_h, step), _offsets(width, win_w, step),
                window, overlap)


# ------------------------------------------------------------------------------ scene access


def open_input(run: Any, path: str | Path, bands: Sequence[str] | None = None, scale: float | None = None,
               offset: float | None = None, warn: bool = True, scl_nodata: Sequence[int] | None = None) -> Any:
    """The input brought to the run's input contract (``workbench.data.contract.open_scene``):
    any raster GDAL reads, a SAFE folder or a STAC item; ``read(window)`` gives normalised windows."""
    from workbench.data.contract import open_scene

    return open_scene(run.contract, run.stats, path, run=getattr(run, "name", "?"), bands=bands, scale=scale,
                      offset=offset, warn=warn, scl_nodata=scl_nodata)


def describe_inputs(scene: Any) -> str:
    """``B04 B03 B02 B08 as reflectance (the file's scale/offset)``: what a summary says was read."""
    stack = scene.stack
    sources = sorted({r.source for r in stack.radiometry})
    return f"{' '.join(stack.names)} as {stack.units} ({'; '.join(sources)})"


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph <= 0 and pw <= 0:
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, max(ph, 0)), (0, max(pw, 0))], mode="reflect")


# ------------------------------------------------------------------------------ the model


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


class _Runner:
    """Probabilities for a batch (``workbench.inference.ModelRunner``: channels_last,
    inference_mode, bf16 autocast on CUDA), averaged over test-time augmentation.

    With several ``transforms`` each batch is run once per transform and the probabilities,
    transformed back, are averaged: a model trained with dihedral augmentation has no preferred
    orientation, so its errors under the 4 or 8 views partly cancel.
    """

    def __init__(self, model: torch.nn.Module, channels_last: bool, transforms: Sequence[int] = (0,),
                 precision: str | None = None):
        self.runner = ModelRunner(model, channels_last=channels_last, precision=precision)
        self.transforms = tuple(transforms)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.transforms == (0,):
            return self._run(x)
        total = None
        for t in self.transforms:
            p = dihedral(self._run(np.ascontiguousarray(dihedral(x, t))), inverse_transform(t))
            total = p.copy() if total is None else total + p
        return total / len(self.transforms)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return _probabilities(self.runner(x)).contiguous().numpy()


# ------------------------------------------------------------------------------ the engine

GDAL_CACHE_MB = 128     # GDAL's block cache while predicting (its default: 5 % of the machine's memory)


@dataclass
class Prediction:
    probs: np.ndarray | None   # (C, H, W) float32 blended probabilities (C = 1 binary); None when streamed
    valid: np.ndarray | None   # (H, W) bool; None when streamed
    info: Any                  # RasterInfo of the input
    plan: Plan
    seconds: float
    batch_size: int
    blend: str
    tta: str = "none"
    inputs: str = ""           # which of the input's bands were read, in which units


def precision_of(run: Any, naive: bool = False) -> str:
    """``bf16`` or ``fp32``: the run's ``predict.precision`` on its model's device; the naive
    baseline stays fp32, so the bench compares the engine, not the arithmetic."""
    from workbench.inference import resolve_precision

    d = run.predict_defaults() if hasattr(run, "predict_defaults") else {}
    return "fp32" if naive else resolve_precision(str(d.get("precision", "auto")), device_of(run.model))


def _settings(run: Any, window, overlap, batch_size, blend, tta) -> tuple[int, int, int, str, str]:
    d = run.predict_defaults() if hasattr(run, "predict_defaults") else {}
    tta = str(tta if tta is not None else d.get("tta", "none"))
    if tta not in TTA:
        raise WorkbenchError(f"tta {tta!r}: expected one of {', '.join(TTA)}")
    window = int(window if window is not None else d.get("window", 256))
    overlap = int(overlap if overlap is not None else d.get("overlap", 32))
    batch_size = int(batch_size if batch_size is not None else d.get("batch_size", 16))
    blend = str(blend if blend is not None else d.get("blend", "gaussian"))
    if batch_size < 1:
        raise WorkbenchError(f"batch size must be >= 1, got {batch_size}")
    if blend not in BLENDS:
        raise WorkbenchError(f"blend {blend!r}: expected one of {', '.join(BLENDS)}")
    return window, overlap, batch_size, blend, tta


def predict_probabilities(run: Any, input_path: str | Path, window: int | None = None, overlap: int | None = None,
                          batch_size: int | None = None, blend: str | None = None, progress: bool = True,
                          naive: bool = False, tta: str | None = None, bands: Sequence[str] | None = None,
                          scale: float | None = None, offset: float | None = None,
                          scl_nodata: Sequence[int] | None = None) -> Prediction:
    """Blended probabilities over a whole scene, held in memory (no file written): for catalog
    tiles (pseudo-masks) and the bench; :func:`predict_scene` streams instead. ``bands`` names the
    input's bands when it carries no names; ``scale`` / ``offset`` say how its values become
    reflectance when it does not (``workbench.data.radiometry``)."""
    window, overlap, batch_size, blend, tta = _settings(run, window, overlap, batch_size, blend, tta)
    if naive:
        batch_size = 1
    scene = open_input(run, input_path, bands=bands, scale=scale, offset=offset, warn=progress, scl_nodata=scl_nodata)
    try:
        pred = _predict(run, scene, window, overlap, batch_size, blend, progress, naive, tta)
        pred.inputs = describe_inputs(scene)
        return pred
    finally:
        scene.close()


class _OpenRows:
    """The blend accumulators of the scene rows a window may still add to.

    Why it is enough: windows are added in scene order, row of windows after row of windows, so
    once the next window to add starts at row ``r`` no later window touches a row above ``r``.
    :meth:`finish` hands those rows out (blended probabilities and valid map) and shifts the rest
    up, so what stays in memory is the window height plus the overlap band (a batch that spans
    several window rows of a narrow scene grows it for that batch). Every pixel gets the same
    float32 products and sums in the same order as in scene-sized accumulators, so the map is
    the same bit for bit; ``keep=True`` is that scene-sized case (nothing handed out before the end).
    """

    def __init__(self, classes: int, plan: Plan, weight: np.ndarray, keep: bool = False):
        self.plan, self.weight, self.base = plan, weight, 0
        rows = plan.height if keep else min(plan.height, plan.win_h + plan.window - plan.overlap)
        self.acc = np.zeros((classes, rows, plan.width), np.float32)
        self.wsum = np.zeros((rows, plan.width), np.float32)
        self.valid = np.zeros((rows, plan.width), bool)

    def _at(self, r: int, h: int) -> int:
        """Index of scene row ``r`` in the buffers, grown to hold ``h`` rows from there."""
        lo = r - self.base
        grow = lo + h - self.wsum.shape[0]
        if grow > 0:
            self.acc = np.concatenate([self.acc, np.zeros((self.acc.shape[0], grow, self.plan.width), np.float32)], 1)
            self.wsum = np.concatenate([self.wsum, np.zeros((grow, self.plan.width), np.float32)])
            self.valid = np.concatenate([self.valid, np.zeros((grow, self.plan.width), bool)])
        return lo

    def set_valid(self, r: int, c: int, ok: np.ndarray) -> None:
        h, w = ok.shape
        lo = self._at(r, h)
        self.valid[lo:lo + h, c:c + w] = ok

    def add(self, p: np.ndarray, r: int, c: int) -> None:
        h, w = min(self.plan.win_h, self.plan.height - r), min(self.plan.win_w, self.plan.width - c)
        lo = self._at(r, h)
        self.acc[:, lo:lo + h, c:c + w] += p[:, :h, :w] * self.weight[:h, :w]
        self.wsum[lo:lo + h, c:c + w] += self.weight[:h, :w]

    def finish(self, upto: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(first row, probabilities (C, n, W), valid (n, W)) of the rows above ``upto``, now final."""
        n = min(upto, self.plan.height) - self.base
        if n <= 0:
            return None
        row = self.base
        if row == 0 and n == self.wsum.shape[0]:          # everything at once: no copies
            np.divide(self.acc, np.maximum(self.wsum, 1e-12), out=self.acc)
            out = (row, self.acc, self.valid)
        else:
            out = (row, self.acc[:, :n] / np.maximum(self.wsum[:n], 1e-12), self.valid[:n].copy())
            keep = self.wsum.shape[0] - n
            self.acc[:, :keep] = self.acc[:, n:]
            self.wsum[:keep] = self.wsum[n:]
            self.valid[:keep] = self.valid[n:]
            self.acc[:, keep:] = 0
            self.wsum[keep:] = 0
            self.valid[keep:] = False
        self.base += n
        return out


Emit = Callable[[int, np.ndarray, np.ndarray], None]


def _predict(run, scene: Any, window, overlap, batch_size, blend, progress, naive, tta="none",
             emit: Emit | None = None) -> Prediction:
    """Run the windows; with ``emit``, hand every finished band of rows to ``emit(row, probs, valid)``
    as it completes (nothing scene-sized is kept), else return the whole scene's probabilities."""
    t0 = time.perf_counter()
    info = scene.info
    H, W = info.height, info.width
    plan = plan_windows(H, W, window, overlap, output_stride(run.model))
    wh, ww = plan.win_h, plan.win_w
    classes = int(getattr(run, "classes", 1) or 1)
    rows = _OpenRows(classes, plan, blend_weight(wh, ww, blend), keep=emit is None)
    runner = _Runner(run.model, channels_last=not naive, transforms=TTA[tta], precision=precision_of(run, naive))
    whole: list[tuple[int, np.ndarray, np.ndarray]] = []
    out = emit if emit is not None else (lambda *block: whole.append(block))

    def finish(upto: int) -> None:
        block = rows.finish(upto)
        if block is not None:
            out(*block)

    from workbench.progress import progress as progress_bar

    bar = progress_bar(total=plan.windows, desc="predict (naive)" if naive else "predict", unit="win",
                       enabled=progress)
    try:
        if naive:
            for r in plan.rows:
                for c in plan.cols:
                    h, w = min(wh, H - r), min(ww, W - c)
                    x, ok = scene.read(Window(c, r, w, h))
                    rows.set_valid(r, c, ok)
                    for p in runner(_pad_to(x, wh, ww)[None]):
                        rows.add(p, r, c)
                    bar.update(1)
                if emit is not None:
                    finish(r)
        else:
            batch = np.empty((batch_size, len(scene.bands), wh, ww), np.float32)
            where: list[tuple[int, int]] = []

            def run_batch() -> None:
                for p, (r, c) in zip(runner(batch[:len(where)]), where):
                    rows.add(p, r, c)
                bar.update(len(where))
                where.clear()

            for r, strip, ok in _strips(scene, plan):
                if emit is not None:                  # rows above this window row and any pending window
                    finish(where[0][0] if where else r)
                rows.set_valid(r, 0, ok)
                for c in plan.cols:
                    batch[len(where)] = strip[:, :, c:c + ww]
                    where.append((r, c))
                    if len(where) == batch_size:
                        run_batch()
                        if emit is not None:
                            finish(r)
            if where:
                run_batch()
        finish(H)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if emit is not None:
        return Prediction(None, None, info, plan, seconds, batch_size, blend, tta)
    (_, probs, valid), = whole
    return Prediction(probs, valid, info, plan, seconds, batch_size, blend, tta)


def _strips(scene: Any, plan: Plan) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row offset, normalised strip padded to (B, win_h, >= win_w), its (h, W) valid map), the
    next strip read ahead in a thread."""
    H, W, wh, ww = plan.height, plan.width, plan.win_h, plan.win_w

    def load(r: int) -> tuple[int, np.ndarray, np.ndarray]:
        h = min(wh, H - r)
        x, ok = scene.read(Window(0, r, W, h))
        return r, _pad_to(x, wh, ww), ok

    with ThreadPoolExecutor(1, thread_name_prefix="wb-read") as pool:
        pending = pool.submit(load, plan.rows[0])
        for i in range(len(plan.rows)):
            current = pending.result()
            if i + 1 < len(plan.rows):
                pending = pool.submit(load, plan.rows[i + 1])
            yield current


# ------------------------------------------------------------------------------ outputs


def _labels(probs: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    if probs.shape[0] == 1:
        labels = (probs[0] > threshold).astype(np.uint8)
    else:
        labels = probs.argmax(axis=0).astype(np.uint8)
    labels[~valid] = NODATA
    return labels


def labels_of(pred: Prediction, threshold: float = 0.5) -> np.ndarray:
    """uint8 (H, W) labels: ``p > threshold`` (binary) or argmax; 255 where the input is nodata."""
    return _labels(pred.probs, pred.valid, threshold)


def class_names(run: Any, classes: int) -> list[str]:
    """The names of a run's label values (land, water for binary and 2-class models)."""
    cfg = getattr(run, "cfg", None)
    names = list(getattr(cfg, "class_names", None) or [])
    if len(names) < max(classes, 2):
        names = ["land", "water"] if classes <= 2 else [f"class{i}" for i in range(classes)]
    return names[:max(classes, 2)]


class _Counts:
    """Pixels and ground area per label, added up block by block as the mask streams out."""

    def __init__(self, info: Any, classes: int):
        self.info, self.labels = info, max(classes, 2)
        self.pixels = np.zeros(256, np.int64)
        self.m2 = np.zeros(256, np.float64)
        self.has_area = bool(info.crs)

    def add(self, row: int, labels: np.ndarray) -> None:
        n = np.bincount(labels.ravel(), minlength=256)
        self.pixels += n
        if self.has_area:
            area = self.info.pixel_area_m2(np.arange(row, row + labels.shape[0]))
            if np.all(area == area[0]):
                self.m2 += n * float(area[0])
            else:                              # geographic CRS: the pixel shrinks towards the poles
                self.m2 += np.bincount(labels.ravel(), weights=np.repeat(area, labels.shape[1]), minlength=256)

    def summary(self, names: Sequence[str]) -> dict:
        km2 = lambda i: float(self.m2[i] / 1e6) if self.has_area else None  # noqa: E731
        return {"class_pixels": {names[i]: int(self.pixels[i]) for i in range(self.labels)},
                "areas_km2": {names[i]: km2(i) for i in range(self.labels)},
                "valid_pixels": int(self.pixels[:self.labels].sum()), "nodata_pixels": int(self.pixels[NODATA])}


def _stream(run: Any, scene: Any, out_path, prob_path, window, overlap, batch_size, blend, progress, naive,
            tta) -> dict:
    """Predict ``scene`` and write the mask (and probabilities) band of rows by band of rows as
    they complete, as Cloud-Optimised GeoTIFFs (``geotiff.RasterWriter``), GDAL's block cache
    capped at ``GDAL_CACHE_MB``; returns the summary."""
    import contextlib

    import rasterio

    info = scene.info
    classes = int(getattr(run, "classes", 1) or 1)
    tags = {"run": str(getattr(run, "path", "")), "window": window, "overlap": overlap, "blend": blend, "tta": tta,
            "threshold": run.threshold}
    grid = dict(width=info.width, height=info.height, affine=info.affine, crs=info.crs, tags=tags)
    counts = _Counts(info, classes)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), contextlib.ExitStack() as files:
        mask = files.enter_context(geotiff.RasterWriter(
            out_path, count=1, dtype="uint8", nodata=NODATA, band_names=["water"] if classes == 1 else ["class"],
            **grid))
        probs_out = None
        if prob_path:
            names = ["p_water"] if classes == 1 else [f"p_class_{i}" for i in range(classes)]
            probs_out = files.enter_context(geotiff.RasterWriter(
                prob_path, count=classes, dtype="float32", nodata=float("nan"), band_names=names,
                overview_resampling="average", **grid))

        def write(row: int, probs: np.ndarray, valid: np.ndarray) -> None:
            labels = _labels(probs, valid, run.threshold)
            mask.write(labels, row_off=row)
            counts.add(row, labels)
            if probs_out is not None:
                probs[:, ~valid] = np.nan
                probs_out.write(probs, row_off=row)

        # Blocks are written in a thread while the model runs on the next windows (GDAL releases
        # the GIL); at most one block waits, so memory stays bounded and the order is kept.
        writing = files.enter_context(ThreadPoolExecutor(1, thread_name_prefix="wb-write"))
        pending: list = []

        def emit(row: int, probs: np.ndarray, valid: np.ndarray) -> None:
            if pending:
                pending.pop().result()
            pending.append(writing.submit(write, row, probs, valid))

        pred = _predict(run, scene, window, overlap, batch_size, blend, progress, naive, tta, emit=emit)
        if pending:
            pending.pop().result()
    names = class_names(run, classes)
    c = counts.summary(names)
    result = {
        "input": info.path, "out": str(mask.path), "probabilities": str(probs_out.path) if probs_out else None,
        "width": info.width, "height": info.height, "crs": info.crs,
        "window": pred.plan.window, "window_used": [pred.plan.win_h, pred.plan.win_w], "overlap": pred.plan.overlap,
        "batch_size": pred.batch_size, "blend": pred.blend, "tta": pred.tta, "windows": pred.plan.windows,
        "seconds": pred.seconds, "windows_per_s": pred.plan.windows / max(pred.seconds, 1e-9),
        **c, "threshold": run.threshold, "naive": naive, "device": str(device_of(run.model)),
        "precision": precision_of(run, naive),
        "inputs": describe_inputs(scene),
    }
    if classes <= 2:
        result["water_fraction"] = c["class_pixels"][names[1]] / c["valid_pixels"] if c["valid_pixels"] else None
    return result


def predict_scene(run: Any, input_path: str | Path, out_path: str | Path, prob_path: str | Path | None = None,
                  window: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                  blend: str | None = None, progress: bool = True, tta: str | None = None,
                  bands: Sequence[str] | None = None, scale: float | None = None, offset: float | None = None,
                  scl_nodata: Sequence[int] | None = None, naive: bool = False, out_crs: str | None = None) -> dict:
    """Predict a whole scene and write the mask (and optionally probabilities) as COGs, streamed
    (memory does not grow with the scene); returns a summary with pixels and km^2 per class.

    A scene whose pixels are not the run's (another size, degrees) is predicted on a model grid at
    the run's resolution (``open_scene``) and the outputs resampled back onto the scene's own grid
    (nearest for the mask, bilinear for probabilities, ``warp.resample_to``), or onto ``out_crs``.

    ``window``/``overlap``/``batch_size``/``blend``/``tta`` default to the run's ``predict`` config
    (256 / 32 / 16 / gaussian / none); ``naive``: one window at a time (the bench's baseline)."""
    from workbench.data import warp

    window, overlap, batch_size, blend, tta = _settings(run, window, overlap, batch_size, blend, tta)
    if naive:
        batch_size = 1
    scene = open_input(run, input_path, bands=bands, scale=scale, offset=offset, warn=progress, scl_nodata=scl_nodata)
    try:
        out_grid = warp.target_grid(scene.scene_info, out_crs)   # a bad --out-crs stops before any work
        if not scene.warped and out_grid is scene.scene_info:
            return _stream(run, scene, out_path, prob_path, window, overlap, batch_size, blend, progress, naive, tta)
        return _stream_resampled(run, scene, out_grid, out_path, prob_path, window, overlap, batch_size, blend,
                                 progress, naive, tta)
    finally:
        scene.close()


def _stream_resampled(run: Any, scene: Any, out_grid: Any, out_path, prob_path, *settings) -> dict:
    """Predict on the model grid into temporary files beside the outputs, then resample them onto
    ``out_grid``; the temporaries are removed whatever happens."""
    import os

    from workbench.data import warp

    def temp(p) -> Path | None:
        return None if p is None else Path(p).with_name(f".{Path(p).name}.model-{os.getpid()}.tif")

    tmp_mask, tmp_prob = temp(out_path), temp(prob_path)
    try:
        res = _stream(run, scene, tmp_mask, tmp_prob, *settings)
        res["out"] = str(warp.resample_to(tmp_mask, out_grid, out_path, "nearest"))
        if prob_path:
            res["probabilities"] = str(warp.resample_to(tmp_prob, out_grid, prob_path, "bilinear"))
    finally:
        for p in (tmp_mask, tmp_prob):
            if p is not None:
                p.unlink(missing_ok=True)
    model = scene.info
    res.update(width=out_grid.width, height=out_grid.height, crs=out_grid.crs,
               model_grid={"crs": model.crs, "width": model.width, "height": model.height,
                           "pixel": abs(model.affine.a)})
    return res


def predict_scene_naive(run: Any, input_path: str | Path, out_path: str | Path, prob_path: str | Path | None = None,
                        window: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                        blend: str | None = None, progress: bool = True) -> dict:
    """The simple way, for the bench: one window at a time (batch 1, a read per window,
    contiguous layout), same windows and blending as :func:`predict_scene`. ``batch_size`` is ignored."""
    return predict_scene(run, input_path, out_path, prob_path, window, overlap, 1, blend, progress, naive=True)


# ------------------------------------------------------------------------------ pseudo-masks


def pseudo_mask_path(tile_path: str | Path) -> Path:
    p = Path(tile_path)
    return p.with_name(f"{p.stem}_pseudo_mask.tif")


def write_masks(run: Any, catalog: Any, tiles: Sequence[Any], min_confidence: float = 0.9,
                progress: bool = True) -> int:
    """Predict each catalog tile and write ``<tile>_pseudo_mask.tif`` beside it (pixels with
    confidence ``max(p, 1 - p)`` (or the top class probability) below ``min_confidence`` are
    255 = nodata), then set every tile's ``mask_path`` and ``water_fraction`` in one catalog
    transaction. Returns the number of tiles updated."""
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise WorkbenchError(f"min confidence {min_confidence}: expected a number between 0 and 1")
    from workbench.progress import progress as progress_bar

    truth = [t for t in tiles if t.mask_path and Path(t.mask_path) != pseudo_mask_path(t.path)]
    if truth:
        raise WorkbenchError(f"{truth[0].path}: has a mask of its own ({truth[0].mask_path}); pseudo-masks never "
                             f"replace a tile's mask ({len(truth)} such tile(s)): narrow the filters, e.g. "
                             "--where \"mask_path IS NULL\"")
    changes = []
    for tile in progress_bar(list(tiles), desc="pseudo-masks", unit="tile", enabled=progress):
        if tile.id is None:
            raise WorkbenchError(f"{tile.path}: tile has no catalog id")
        pred = predict_probabilities(run, tile.path, progress=False)
        labels = labels_of(pred, run.threshold)
        p = pred.probs
        conf = np.maximum(p[0], 1 - p[0]) if p.shape[0] == 1 else p.max(axis=0)
        labels[conf < float(min_confidence)] = NODATA
        out = geotiff.write(pseudo_mask_path(tile.path), labels, pred.info.affine, pred.info.crs, nodata=NODATA,
                            cog=True, band_names=["water"] if p.shape[0] == 1 else ["class"],
                            tags={"run": str(getattr(run, "path", "")), "min_confidence": min_confidence,
                                  "pseudo": 1})
        known = int((labels != NODATA).sum())
        water = float((labels == 1).sum() / known) if known else None
        changes.append((tile.id, {"mask_path": str(out), "water_fraction": water}))
    if changes:
        catalog.update_many(changes)
    return len(changes)
