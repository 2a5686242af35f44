"""Segmentation benchmark: scene prediction and trainer overhead, against baselines in the same run.

Register in ``workbench/bench.py``: ``"tasks.segmentation.bench:bench_scene"``.

On a crop of the Blue Marble mosaic (``data/bluemarble/mosaic.tif``, built with
``workbench data bluemarble`` when missing) around Europe and the Mediterranean
(1024 x 1024 px; 512 x 512 with ``quick``), with a resnet18 Unet (3 bands):

(a) batched + channels_last (:func:`predict_scene`'s engine, batch 64) against one
    window at a time (:func:`predict_scene_naive`'s engine: batch 1, contiguous, a
    read per window) over the SAME windows, the tile-window recipe's (64 px, stride 16,
    averaged), on the 384 px centre of the crop; the two outputs must agree within
    1e-5 (asserted). Random weights, in fp32 on both sides (on a CPU with native bf16 the
    engine would otherwise run in bf16 against the fp32 baseline: the arithmetic, not the
    engine; ``workbench.bench_inference`` measures bf16 against fp32).
(b) the default settings (window 256, overlap 32, batch 16, gaussian) against the
    tile-window recipe (window = the training tile, 64 px, stride 16, batch 1, plain
    averaging: predicting a scene one training-sized window at a time) on the whole crop (a small sub-crop would
    mostly time 256 px windows hanging over its edges); with
    the newest ``runs/segmentation-*`` that has a checkpoint, both are also scored
    (mean IoU, water IoU) against the GSHHS mask over the test tiles with 5-95 %
    water there, and (not ``quick``) the defaults over the whole mosaic as the
    quality goal scores it; without a run, random weights and IoU n/a.
(c) training throughput (tiles/s) of ``workbench.train.Trainer`` against a bare
    PyTorch loop (same model init, optimizer, batch size, steps; no eval; the
    trainer's unavoidable final checkpoint is outside the timed steps): after each
    trainer step a callback runs one bare step on its own copy, so both see the same
    machine load; medians per step. Overhead goal <= 5 %.
(d) a whole tile (:func:`bench_tile`; alone: ``python -m tasks.segmentation.bench [--quick]``): a
    generated 10980 x 10980 4-band uint16 COG and its water mask (2048 px with ``quick``; cached
    in ``data/bench``), predicted by ``segment predict --truth --all-pixels --probabilities`` in a
    subprocess with a random small model, binary and 3-class softmax: peak RSS (goal <= 2 GB) and
    Mpx/s beside the bare model's forward time over the same windows (same batch, no I/O).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from workbench.data import geotiff
from workbench.errors import WorkbenchError

CROP_CENTRE = (45.0, 15.0)   # lat, lon: Europe and the Mediterranean, many coasts


def _mosaic() -> tuple[Path, Path]:
    from workbench import paths

    folder = paths.data_dir() / "bluemarble"
    image, mask = folder / "mosaic.tif", folder / "mosaic_mask.tif"
    if not image.is_file() or not mask.is_file():
        from workbench.cli import main

        print("building the Blue Marble mosaic (workbench data bluemarble)...", flush=True)
        if main(["data", "bluemarble", "--no-progress"]) != 0:
            raise WorkbenchError("could not build data/bluemarble (workbench data bluemarble)")
    return image, mask


def _crop(src: Path, dst: Path, size: int, centre: tuple[float, float] | None = None) -> tuple[Path, tuple[int, int]]:
    info = geotiff.read_info(src)
    lat, lon = centre or CROP_CENTRE
    col, row = ~info.affine * (lon, lat)
    r0 = int(min(max(row - size / 2, 0), info.height - size))
    c0 = int(min(max(col - size / 2, 0), info.width - size))
    win = Window(c0, r0, size, size)
    arr = geotiff.read(src, window=win)
    geotiff.write(dst, arr, geotiff.window_transform(info, win), info.crs, nodata=info.nodata,
                  band_names=info.band_names)
    return dst, (r0, c0)


def _random_run(stats) -> Any:
    from tasks.segmentation.models import build_model
    from workbench.data.contract import legacy_contract

    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", in_channels=3, classes=1).eval()
    return SimpleNamespace(path=Path("random-weights"), name="random resnet18 Unet", model=model, stats=stats,
                           threshold=0.5, bands=None, classes=1, crs=None, in_channels=3, weights="random",
                           contract=legacy_contract(stats),                    # raw RGB, as a run before inputs.json
                           predict_defaults=lambda: {"window": 256, "overlap": 32, "batch_size": 16,
                                                     "blend": "gaussian", "precision": "fp32"})


def _newest_run() -> Any | None:
    try:
        from tasks.segmentation.run import load_run

        return load_run("latest")
    except WorkbenchError:
        return None


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _row(name: str, value, baseline, unit: str, goal: str, ratio=None) -> dict:
    if ratio is None and isinstance(value, float) and isinstance(baseline, float) and baseline:
        ratio = value / baseline
    return {"measure": name, "value": value, "baseline": baseline, "unit": unit, "ratio": ratio, "goal": goal}


# ------------------------------------------------------------------------------ (a) and (b)


def bench_predict(folder: Path, quick: bool, rows: list, notes: list) -> None:
    from tasks.segmentation.predict import labels_of, predict_probabilities
    from tasks.segmentation.scene import score_scene
    from workbench.data.stats import BandStats

    image, mask = _mosaic()
    size = 512 if quick else 1024
    crop, (r0, c0) = _crop(image, folder / "crop.tif", size)
    truth, _ = _crop(mask, folder / "crop_mask.tif", size)
    stats = BandStats([128.0] * 3, [64.0] * 3, ["red", "green", "blue"])
    rand = _random_run(stats)
    notes.append(f"scene: {size}x{size} px crop of data/bluemarble/mosaic.tif (rows {r0}-{r0 + size}, "
                 f"cols {c0}-{c0 + size}; Europe/Mediterranean), resnet18 Unet, 3 bands, "
                 f"{torch.get_num_threads()} torch threads")

    # (a) the tile-window recipe's windows (training tile, stride 16, averaged), batched + channels_last
    # versus one window at a time: per-window overhead is what batching removes, and it dominates
    # at small windows (at 256 px one window already keeps 2 cores busy).
    asize = 256 if quick else 384
    a_crop, _ = _crop(crop, folder / "a.tif", asize)
    predict_probabilities(rand, a_crop, 64, 48, 64, "mean", progress=False)  # warm-up (allocator, kernels)
    fast, t_fast = _timed(predict_probabilities, rand, a_crop, 64, 48, 64, "mean", progress=False)
    slow, t_slow = _timed(predict_probabilities, rand, a_crop, 64, 48, 1, "mean", progress=False, naive=True)
    diff = float(np.abs(fast.probs - slow.probs).max())
    assert fast.plan == slow.plan
    assert diff <= 1e-5, f"batched and one-at-a-time predictions differ by {diff}"
    n = fast.plan.windows
    rows.append(_row(f"(a) batched b64 + channels_last vs 1 window at a time ({n} windows 64/stride 16)",
                     n / t_fast, n / t_slow, "windows/s", ">= 3x"))
    notes.append(f"(a) {asize}x{asize} px centre of the crop; max |difference| of probabilities {diff:.1e} "
                 f"(asserted <= 1e-5); {t_fast:.1f} s vs {t_slow:.1f} s")

    # (b) defaults vs the tile-window recipe, with a trained run when there is one, on the whole crop:
    # a small crop would mostly time 256 px windows hanging over its edges.
    run = _newest_run()
    model_run = run if run is not None and run.in_channels == 3 else rand
    tile = int(getattr(getattr(getattr(model_run, "cfg", None), "data", None), "window", 64) or 64)
    bsize = size
    from workbench.data.catalog import Catalog

    with Catalog() as cat:
        tiles = cat.query(split="test", water_min=0.05, water_max=0.95)
    default, t_def = _timed(predict_probabilities, model_run, crop, 256, 32, 16, "gaussian", progress=False)
    tiled_pred, t_tiled = _timed(predict_probabilities, model_run, crop, tile, tile - 16, 1, "mean",
                               progress=False, naive=True)
    rows.append(_row(f"(b) defaults 256/32/b16 vs tile-window recipe {tile}/stride 16/b1 ({bsize} px, seconds)", t_def,
                     t_tiled, "s", ">= 20x", ratio=t_tiled / t_def))
    notes.append(f"(b) the whole {bsize}x{bsize} px crop: {default.plan.windows} windows vs "
                 f"{tiled_pred.plan.windows} windows")
    if run is None or model_run is rand:
        rows.append(_row("(b) mean IoU vs GSHHS, defaults vs tile-window recipe", None, None, "",
                         "n/a (no trained run)"))
        notes.append("(b) no runs/segmentation-* with a checkpoint (or not 3 bands): random weights, IoU n/a")
        return
    scores = []
    for name, pred in (("defaults", default), ("tile-window", tiled_pred)):
        out = folder / f"pred_{name}.tif"
        geotiff.write(out, labels_of(pred, run.threshold), pred.info.affine, pred.info.crs, nodata=255)
        scores.append(score_scene(out, truth, tiles))
    d, s = scores
    rows.append(_row(f"(b) mean IoU vs GSHHS ({d['tiles_scored']} test tiles, 5-95 % water): defaults vs tile-window",
                     d["mean_iou"], s["mean_iou"], "IoU", "defaults >= tile-window"))
    rows.append(_row("(b) water IoU: defaults vs tile-window", d["iou_water"], s["iou_water"], "IoU", ""))
    notes.append(f"(b) run {run.path.name} ({run.weights} weights, threshold {run.threshold:g}); tiles clipped "
                 "to the sub-crop count where they overlap it")
    if not quick:  # the quality goal's own scoring: defaults over the whole mosaic
        whole = folder / "mosaic_pred.tif"
        from tasks.segmentation.predict import predict_scene

        res = predict_scene(run, image, whole, progress=False)
        m = score_scene(whole, mask, tiles)
        rows.append(_row(f"(b) whole mosaic, defaults: mean IoU ({m['tiles_scored']} test tiles, 5-95 % water)",
                         m["mean_iou"], None, "IoU", "quality goal"))
        notes.append(f"(b) whole mosaic {res['width']}x{res['height']}: {res['windows']} windows in "
                     f"{res['seconds']:.0f} s; water IoU {m['iou_water']:.4f}, land IoU {m['iou_land']:.4f}")


# ------------------------------------------------------------------------------ (c)


class _Tiles(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, size: int = 64):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.masks = (self.images[:, :1] > 0.3).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i]}


def _loss(model, batch):
    logits = model(batch["image"])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["mask"]), {}


class _StepClock:
    """Trainer callback: the time of every optimizer step's end."""

    def __init__(self):
        self.times: list[float] = []

    def __getattr__(self, name):  # every other hook: nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, trainer) -> None:
        self.times.append(time.perf_counter())


def bench_trainer(folder: Path, quick: bool, rows: list, notes: list) -> None:
    from tasks.segmentation.models import build_model
    from workbench.train import FunctionTask, Trainer
    from workbench.train.config import TrainConfig

    batch, warm = 16, 2
    steps = 8 if quick else 14
    data = _Tiles(n=batch * steps)
    torch.manual_seed(0)
    init = build_model("Unet", "resnet18", in_channels=3, classes=1)
    cfg = TrainConfig(epochs=1, max_steps=steps, batch_size=batch, lr=1e-3, cpu=not torch.cuda.is_available(),
                      mixed_precision="no", trackers=["none"], log_every_steps=10_000, seed=0,
                      monitor="train/loss")

    class Interleaved(_StepClock):
        """After every trainer step, one bare-loop step on its own copy: both see the same machine load."""

        def __init__(self):
            super().__init__()
            self.model = copy.deepcopy(init).train()
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True,
                                                 generator=torch.Generator().manual_seed(0))
            self.batches = iter(loader)
            self.ours: list[float] = []
            self.bare: list[float] = []
            self.resumed = None

        def on_step_end(self, trainer) -> None:
            t0 = time.perf_counter()
            if self.resumed is not None:
                self.ours.append(t0 - self.resumed)
            loss, _ = _loss(self.model, next(self.batches))
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            t1 = time.perf_counter()
            self.bare.append(t1 - t0)
            self.resumed = t1

    clock = Interleaved()
    trainer = Trainer(FunctionTask(copy.deepcopy(init), _loss, name="bench"), cfg, data, None, name="trainer",
                      callbacks=[clock], runs_root=folder / "runs")
    try:
        trainer.fit()
    finally:
        trainer.close()
    ours = sorted(clock.ours[warm:])
    bare = sorted(clock.bare[warm:])
    t, b = batch / float(np.median(ours)), batch / float(np.median(bare))
    rows.append(_row(f"(c) Trainer vs bare PyTorch loop (resnet18 Unet, 64 px, batch {batch})", t, b, "tiles/s",
                     "overhead <= 5 %", ratio=t / b))
    notes.append(f"(c) trainer overhead {100 * (b / t - 1):+.1f} % per step (median of steps {warm + 2}-{steps}; "
                 f"each trainer step followed by one bare step, so both see the same load; "
                 f"{'GPU' if not cfg.cpu else 'CPU'})")


# ------------------------------------------------------------------------------ (d) a whole tile


TILE_BANDS = ("B02", "B03", "B04", "B08")
TILE_FILTERS = (16, 32, 64, 128)        # a small plain AttentionUNet: the bench times the streaming, not a big model


def tile_scene(folder: Path, size: int, height: int | None = None) -> tuple[Path, Path]:
    """A ``size`` x ``size`` (or ``height``) 4-band uint16 Sentinel-2-like COG (10 m, UTM 33N, DN with nodata 0
    on a 16 px left edge) and its water mask, made once and cached in ``folder``. Written in
    strips of 512 rows through ``geotiff.RasterWriter``: a 10980 px tile never sits in memory."""
    height = height or size
    name = f"s2_tile_{size}" if height == size else f"s2_tile_{size}x{height}"
    image, mask = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    if image.is_file() and mask.is_file():
        return image, mask
    from rasterio.transform import from_origin

    grid = dict(width=size, height=height, affine=from_origin(300_000.0, 5_000_040.0, 10.0, 10.0), crs="EPSG:32633")
    water_dn = np.array([700, 600, 500, 300], np.float32)[:, None, None]
    land_dn = np.array([900, 1200, 1300, 3000], np.float32)[:, None, None]
    with geotiff.RasterWriter(image, count=4, dtype="uint16", nodata=0, band_names=TILE_BANDS, **grid) as img, \
            geotiff.RasterWriter(mask, count=1, dtype="uint8", nodata=255, band_names=["water"], **grid) as msk:
        for r in range(0, height, 512):
            h = min(512, height - r)
            yy, xx = np.mgrid[r:r + h, 0:size].astype(np.float32)
            field = np.sin(xx / 300) + np.cos(yy / 410) + np.sin((xx + yy) / 170)   # lakes, rivers, coasts
            water = field > 1.0
            rng = np.random.default_rng(r)
            dn = np.where(water[None], water_dn, land_dn) * rng.normal(1.0, 0.08, (4, h, size)).astype(np.float32)
            dn = dn.clip(1, 10000).astype(np.uint16)
            labels = water.astype(np.uint8)
            dn[:, :, :16], labels[:, :16] = 0, 255
            img.write(dn, row_off=r)
            msk.write(labels, row_off=r)
    return image, mask


def tile_run(folder: Path, classes: int) -> Path:
    """A run folder with a random small model for ``TILE_BANDS``, as ``segment predict --run`` loads it."""
    import json

    from tasks.segmentation.config import config_from_dict
    from tasks.segmentation.models import build_model
    from workbench.config import dump_yaml
    from workbench.data.stats import BandStats
    from workbench.train.checkpoint import save_checkpoint, with_prefix

    run = folder / f"segmentation-bench{classes}-20240101-000000"
    if (run / "threshold.json").is_file():
        return run
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    kwargs = {"filters": list(TILE_FILTERS)}
    cfg = config_from_dict({"name": "bench", "model": {"arch": "AttentionUNet", "encoder": None, "classes": classes,
                                                        "kwargs": kwargs},
                            "predict": {"window": 256, "overlap": 32, "batch_size": 16}})
    dump_yaml(cfg, run / "config.yaml")
    torch.manual_seed(classes)
    model = build_model("AttentionUNet", None, in_channels=len(TILE_BANDS), classes=classes, **kwargs)
    save_checkpoint(run / "checkpoints" / "best.safetensors", with_prefix("model", model.state_dict()), {"step": 1})
    BandStats([1000.0] * 4, [500.0] * 4, list(TILE_BANDS)).save(run / "band_stats.json")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "select": "iou"}))
    return run


# Runs a command as its own child and reports that child's peak RSS (RUSAGE_CHILDREN of this
# wrapper holds exactly that one process), its wall time and its output.
_WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[2:], capture_output=True, text=True)
json.dump({"rc": p.returncode, "wall_s": time.perf_counter() - t0, "stdout": p.stdout, "stderr": p.stderr[-4000:],
           "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}, open(sys.argv[1], "w"))
"""


def _measured(folder: Path, argv: list[str], name: str) -> dict:
    import json
    import subprocess
    import sys

    report = folder / f"{name}.json"
    subprocess.run([sys.executable, "-c", _WRAPPER, str(report), *argv], check=True)
    res = json.loads(report.read_text())
    if res["rc"] != 0:
        raise WorkbenchError(f"{name}: exit {res['rc']}: {res['stderr'].strip()[-400:]}")
    return res


def bare_forward(run_path: str, windows: int, batch_size: int, window: int = 256) -> float:
    """Seconds of the model alone (``workbench.inference.ModelRunner``, as predict runs it, in the
    same precision) over ``windows`` random windows in batches of ``batch_size``: no reading,
    blending or writing."""
    from tasks.segmentation.predict import precision_of
    from tasks.segmentation.run import load_run
    from workbench.inference import ModelRunner

    run = load_run(run_path)
    runner = ModelRunner(run.model, precision=precision_of(run))      # the arithmetic predict uses
    x = np.random.default_rng(0).normal(0, 1, (batch_size, run.in_channels, window, window)).astype(np.float32)
    runner(x[:1])                                                    # warm-up
    t0 = time.perf_counter()
    for start in range(0, windows, batch_size):
        runner(x[:min(batch_size, windows - start)])
    return time.perf_counter() - t0


def bench_tile(folder: Path, quick: bool, rows: list, notes: list, cache: Path | None = None) -> None:
    """(d) ``segment predict --truth --all-pixels --probabilities`` on a whole generated tile in a
    subprocess: its peak RSS and Mpx/s beside the bare model over the same windows."""
    import json
    import sys

    from workbench import paths

    size = 2048 if quick else 10980
    cache = cache or paths.data_dir() / "bench"
    image, truth = tile_scene(cache, size)
    notes.append(f"(d) {size}x{size} px 4-band uint16 COG (cached in {cache}), random AttentionUNet "
                 f"{list(TILE_FILTERS)}, window 256 / overlap 32 / batch 16, {torch.get_num_threads()} torch threads")
    for classes in (1, 3):
        run = tile_run(folder, classes)
        out, prob = folder / f"tile{classes}_mask.tif", folder / f"tile{classes}_prob.tif"
        res = _measured(folder, [sys.executable, "-m", "workbench", "segment", "predict", "--run", str(run),
                                 "--input", str(image), "--out", str(out), "--probabilities", str(prob),
                                 "--truth", str(truth), "--all-pixels", "--no-progress", "--json"],
                        f"predict{classes}")
        summary = json.loads(res["stdout"].strip().splitlines()[-1])
        code = (f"from tasks.segmentation.bench import bare_forward; "
                f"print(bare_forward({str(run)!r}, {summary['windows']}, {summary['batch_size']}))")
        bare = _measured(folder, [sys.executable, "-c", code], f"bare{classes}")
        t_bare = float(bare["stdout"].strip().splitlines()[-1])
        mpx = size * size / 1e6
        kind = "binary" if classes == 1 else f"{classes}-class softmax"
        iou = summary["score"]["mean_iou"]
        rows.append(_row(f"(d) {size} px tile, {kind}, --truth --probabilities: peak RSS", res["maxrss_mb"], None,
                         "MB", "<= 2048 MB"))
        rows.append(_row(f"(d) {size} px tile, {kind}: predict vs bare model, same windows", mpx / summary["seconds"],
                         mpx / t_bare, "Mpx/s", ">= 0.9"))
        notes.append(f"(d) {kind}: {summary['windows']} windows, predict {summary['seconds']:.1f} s, bare model "
                     f"{t_bare:.1f} s, whole command (COGs, scoring) {res['wall_s']:.1f} s "
                     f"({mpx / res['wall_s']:.2f} Mpx/s); mean IoU vs truth {'n/a' if iou is None else f'{iou:.3f}'} "
                     f"(random weights); bare model's own peak RSS {bare['maxrss_mb']:.0f} MB")


# ------------------------------------------------------------------------------ entry point


def bench_scene(quick: bool = False):
    from workbench.bench import BenchResult

    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wb-bench-seg-") as tmp:
        bench_predict(Path(tmp), quick, rows, notes)
        bench_trainer(Path(tmp), quick, rows, notes)
        bench_tile(Path(tmp), quick, rows, notes)
    return BenchResult("Segmentation: scene prediction and trainer overhead (higher value is better unless unit s)",
                       rows, notes)


def bench_whole_tile(quick: bool = False):
    """(d) alone: ``python -m tasks.segmentation.bench [--quick]``."""
    from workbench.bench import BenchResult

    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wb-bench-tile-") as tmp:
        bench_tile(Path(tmp), quick, rows, notes)
    return BenchResult("Segmentation: a whole tile streamed (peak RSS, Mpx/s vs the bare model)", rows, notes)


if __name__ == "__main__":
    import sys

    from workbench.bench import format_table

    result = bench_whole_tile(quick="--quick" in sys.argv[1:])
    print(result.title)
    print(format_table(result.rows))
    for note in result.notes:
        print(f"  - {note}")

