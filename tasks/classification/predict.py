"""Classify with a run: catalog tiles (``predict_catalog``) or a whole scene (``predict_scene``).

``predict_catalog``: classify catalog tiles with a run and write the result back to the catalog.

Each selected tile gets ``pred_label``, ``pred_score`` (softmax probability of that class)
and ``model_id`` (the run's folder name) in one transaction, and the run keeps a CSV of
what it wrote (``predictions/catalog-<time>.csv``). That is what lets another task pick
tiles by predicted class: ``workbench segment train --where "pred_label = 'coast' AND
pred_score > 0.9"``.

``predict_scene``: a whole scene of any size and form (a GeoTIFF / COG / VRT, a Sentinel-2
``.SAFE`` folder, a STAC item, any GDAL path) classified window by window, one class per window
of the run's tile side (``data.size``): the classifier was trained on tiles of that side, so
that is the ground one of its labels describes. The scene is brought to the run's input
contract (``workbench.data.contract.open_scene``: bands by name, reflectance units, or a
one-line refusal before anything is written), cut into a grid of windows every ``stride`` px
(default: the window side; the last row/column snapped to the scene edge), read one strip of
window rows at a time (``workbench.inference``) and batched through the model. A window with
fewer than half of its pixels valid (nodata, NaN, SCL cloud) gets no class: a label drawn
mostly from zero-filled pixels says nothing about the ground.

Output: a uint8 GeoTIFF with one pixel per window (the scene's CRS, its transform scaled by
the stride, ``WindowGrid.transform``), the class index or 255 = no class, band description
``class`` and tags ``CLASSES`` (the names in index order), ``run``, ``size``, ``stride``;
optionally a float32 GeoTIFF of the softmax probabilities (one band per class, NaN where no
class). Both are written atomically (``workbench.data.geotiff.write``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench import distributed
from workbench.errors import WorkbenchError
from workbench.files import replacing

NO_CLASS = 255
MIN_VALID = 0.5          # a window needs at least this share of valid pixels to get a class


def predict_catalog(run_ref: str | Path, query: dict, catalog: str | Path | None = None, batch_size: int = 256,
                    device: str | None = None, dry_run: bool = False, progress: bool = True) -> dict:
    """Predict every tile ``query`` selects (default: the run's ``data.source``); returns counts,
    the CSV path and, where tiles carry labels of the run's classes, the metrics against them.
    Under torchrun / accelerate launch each rank classifies its share (:func:`_score_sharded`) and
    the main rank alone writes; the others return ``{"main": False}``."""
    with distributed.session() as ranks:
        return _predict_catalog(run_ref, query, catalog, batch_size, device, dry_run, progress, ranks)


def _predict_catalog(run_ref, query, catalog, batch_size, device, dry_run, progress, ranks) -> dict:
    from workbench.data.catalog import open_existing
    from workbench.data.contract import tile_positions
    from workbench.devices import resolve_device
    from workbench.train.run_steps import config_reading

    from .evaluate import score_tiles
    from .run import check_bands, load_run

    dev = distributed.rank_device(resolve_device(device, "--device"), ranks)
    run = load_run(run_ref, dev)
    if not query and run.cfg.data.source:
        query = {"source": run.cfg.data.source}
    with open_existing(catalog, read_only=dry_run or not ranks.is_main) as cat:  # only the main rank writes
        tiles = cat.query(**query)
        if not tiles:
            shown = ", ".join(f"{k}={v!r}" for k, v in query.items()) or "no filters"
            raise WorkbenchError(f"no tiles match the query ({shown}) in {cat.path}")
        check_bands(tiles, run)
        cfg = config_reading(run.cfg, tile_positions(run.contract, tiles, run=run.name))
        if ranks.world == 1:
            result = score_tiles(run.model, tiles, cfg, run.stats, run.classes, dev, batch_size, progress=progress)
        else:
            result = _score_sharded(run, tiles, cfg, dev, batch_size, progress, ranks)
            if result is None:              # not the main rank: its share is in the main rank's hands
                return {"run": str(run.path), "rank": ranks.rank, "main": False}
        rows = [(t.id, run.classes[int(p)], float(s)) for t, p, s in zip(tiles, result["pred"], result["score"])]
        if not dry_run:
            cat.set_predictions(rows, model_id=run.name)
    csv_path = None if dry_run else _write_csv(run.path, tiles, rows)
    counts = {c: sum(1 for _, label, _ in rows if label == c) for c in run.classes}
    return {"run": str(run.path), "model_id": run.name, "tiles": len(rows), "counts": counts,
            "mean_score": sum(s for _, _, s in rows) / len(rows), "csv": csv_path, "written": not dry_run,
            "metrics": _unseen_metrics(run, tiles, result), "classes": run.classes, "main": True}


def _score_sharded(run, tiles, cfg, dev, batch_size: int, progress: bool, ranks) -> dict | None:
    """Each rank classifies its share of the tiles (every N-th by the query's order) and writes it
    to a shard file (atomically) under the run's ``predictions/``; after a barrier the main rank
    reads every shard and returns the predictions of all tiles in the query's order (None on the
    other ranks), so the catalog and the CSV are written by one process, once."""
    import hashlib
    import json
    import shutil

    from workbench.files import write_json_atomic

    from .evaluate import score_tiles

    mine = distributed.share(tiles, ranks)
    key = hashlib.sha256(json.dumps([run.name, ranks.world, [t.id for t in tiles]]).encode()).hexdigest()[:12]
    shards = run.path / "predictions" / f".shards-{key}"
    if mine:
        part = score_tiles(run.model, mine, cfg, run.stats, run.classes, dev, batch_size,
                           progress=progress and ranks.is_main)
        shard = {"ids": [t.id for t in mine], "pred": part["pred"].tolist(), "score": part["score"].tolist(),
                 "labels": part["labels"].tolist()}
    else:
        shard = {"ids": [], "pred": [], "score": [], "labels": []}
    write_json_atomic(shards / f"rank-{ranks.rank}.json", shard)
    distributed.barrier()
    if not ranks.is_main:
        return None
    got: dict[int, tuple[int, float, int]] = {}
    for r in range(ranks.world):
        d = json.loads((shards / f"rank-{r}.json").read_text())
        got.update((i, (p, s, lab)) for i, p, s, lab in zip(d["ids"], d["pred"], d["score"], d["labels"]))
    shutil.rmtree(shards, ignore_errors=True)
    missing = [t.id for t in tiles if t.id not in got]
    if missing:
        raise WorkbenchError(f"{shards}: no prediction for {len(missing)} tile(s) (first id {missing[0]}); is the "
                             "run folder on storage every node shares?")
    pred, score, labels = zip(*(got[t.id] for t in tiles))
    return {"pred": torch.tensor(pred), "score": torch.tensor(score, dtype=torch.float32),
            "labels": torch.tensor(labels)}


def _unseen_metrics(run, tiles, result) -> dict | None:
    """Metrics against the labels of the predicted tiles the run neither trained on nor selected its
    checkpoint with (its tiles.json train and val ids): a score on seen tiles would flatter it."""
    from workbench.metrics import ConfusionMatrix

    from .run import json_file

    seen_file = run.path / "tiles.json"
    seen = set()
    if seen_file.is_file():
        info = json_file(seen_file)
        seen = set(info.get("train", [])) | set(info.get("val", []))
    keep = torch.tensor([t.id not in seen for t in tiles]) & (result["labels"] >= 0)
    if not bool(keep.any()):
        return None
    cm = ConfusionMatrix(len(run.classes))
    cm.update(result["pred"], result["labels"], keep)
    return {**cm.compute(run.classes), "tiles": int(keep.sum())}


def _write_csv(run_path: Path, tiles, rows) -> str:
    out = run_path / "predictions" / f"catalog-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    with replacing(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "pred_label", "pred_score"])
        for t, (tid, label, score) in zip(tiles, rows):
            w.writerow([tid, t.path, t.label or "", label, f"{score:.6f}"])
    return str(out)


# ---- a whole scene ------------------------------------------------------------------------------

def predict_scene(run: Any, input_path: str | Path, out_path: str | Path, prob_path: str | Path | None = None,
                  stride: int | None = None, batch_size: int = 64, progress: bool = True,
                  bands: Sequence[str] | None = None, scale: float | None = None, offset: float | None = None,
                  scl_nodata: Sequence[int] | None = None) -> dict:
    """Classify every ``run.cfg.data.size`` px window of a scene and write the class map (and
    optionally the probabilities); see the module docstring. ``bands`` / ``scale`` / ``offset``
    say what an input that does not say so itself is; ``scl_nodata``: the SCL classes that are
    no ground. Returns the summary (counts per class, the grid, what was read)."""
    from workbench.data.contract import open_scene
    from workbench.inference import ModelRunner, device_of, plan_grid, read_strips
    from workbench.progress import progress as progress_bar

    if batch_size < 1:
        raise WorkbenchError(f"batch size must be at least 1, got {batch_size}")
    if len(run.classes) >= NO_CLASS:
        raise WorkbenchError(f"run {run.name}: {len(run.classes)} classes do not fit a uint8 map with "
                             f"{NO_CLASS} = no class")
    t0 = time.perf_counter()
    scene = open_scene(run.contract, run.stats, input_path, run=run.name, bands=bands, scale=scale, offset=offset,
                       scl_nodata=scl_nodata, warn=progress)
    try:
        info = scene.info
        grid = plan_grid(info.height, info.width, int(run.cfg.data.size), stride, where=info.path)
        # predict.precision of the run's config (``--precision`` overrides it): auto = bf16 where native
        runner = ModelRunner(run.model, precision=getattr(getattr(run.cfg, "predict", None), "precision", "auto"))
        k, size = len(run.classes), grid.size
        probs = np.full((k, *grid.shape), np.nan, np.float32)
        known = np.zeros(grid.shape, bool)
        batch = np.empty((batch_size, len(scene.bands), size, size), np.float32)
        where: list[tuple[int, int]] = []

        def flush() -> None:
            p = torch.softmax(runner(batch[:len(where)]), dim=1).numpy()
            for (i, j), pi in zip(where, p):
                probs[:, i, j] = pi
            bar.update(len(where))
            where.clear()

        bar = progress_bar(total=grid.windows, desc="classify", unit="win", enabled=progress)
        try:
            for i, _, x, valid in read_strips(scene.read, grid):
                for j, c in enumerate(grid.cols):
                    if valid[:, c:c + size].mean() < MIN_VALID:
                        bar.update(1)
                        continue
                    known[i, j] = True
                    batch[len(where)] = x[:, :, c:c + size]
                    where.append((i, j))
                    if len(where) == batch_size:
                        flush()
            if where:
                flush()
        finally:
            bar.close()
        inputs = _describe_inputs(scene)
        device = str(device_of(run.model))
    finally:
        scene.close()
    labels = np.full(grid.shape, NO_CLASS, np.uint8)
    if known.any():
        labels[known] = probs[:, known].argmax(axis=0).astype(np.uint8)
    seconds = time.perf_counter() - t0
    return _write_scene(run, info, grid, labels, probs, out_path, prob_path) | {
        "inputs": inputs, "seconds": seconds, "windows_per_s": grid.windows / max(seconds, 1e-9), "device": device,
        "batch_size": batch_size, "precision": runner.precision}


def _describe_inputs(scene: Any) -> str:
    """``B02 B03 B04 B08 as reflectance (the file's scale/offset)``: what the summary says was read."""
    stack = scene.stack
    return f"{' '.join(stack.names)} as {stack.units} ({'; '.join(sorted({r.source for r in stack.radiometry}))})"


def _write_scene(run: Any, info: Any, grid: Any, labels: np.ndarray, probs: np.ndarray, out_path, prob_path) -> dict:
    from workbench.data import geotiff

    transform = grid.transform(info.affine)
    run_path = str(Path(run.path).resolve())
    tags = {"CLASSES": ",".join(run.classes), "run": run_path, "size": grid.size, "stride": grid.stride,
            "input": info.path}
    out = geotiff.write(out_path, labels, transform, info.crs, nodata=NO_CLASS, band_names=["class"], tags=tags)
    prob_out = None
    if prob_path:
        prob_out = geotiff.write(prob_path, probs, transform, info.crs, nodata=float("nan"),
                                 band_names=[f"p_{c}" for c in run.classes], tags=tags)
    counts = {c: int((labels == i).sum()) for i, c in enumerate(run.classes)}
    return {"run": run_path, "input": info.path, "out": str(out), "probabilities": str(prob_out) if prob_out
            else None, "classes": list(run.classes), "counts": counts, "no_class": int((labels == NO_CLASS).sum()),
            "windows": grid.windows, "rows": grid.shape[0], "cols": grid.shape[1], "size": grid.size,
            "stride": grid.stride, "width": info.width, "height": info.height, "crs": info.crs,
            "transform": list(transform)[:6]}
