"""``predict_catalog``: classify catalog tiles with a run and write the result back to the catalog.

Each selected tile gets ``pred_label``, ``pred_score`` (softmax probability of that class)
and ``model_id`` (the run's folder name) in one transaction, and the run keeps a CSV of
what it wrote (``predictions/catalog-<time>.csv``). That is what lets another task pick
tiles by predicted class: ``workbench segment train --where "pred_label = 'coast' AND
pred_score > 0.9"``.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch

from workbench.errors import WorkbenchError


def predict_catalog(run_ref: str | Path, query: dict, catalog: str | Path | None = None, batch_size: int = 256,
                    device: str | None = None, dry_run: bool = False, progress: bool = True) -> dict:
    """Predict every tile ``query`` selects (default: the run's ``data.source``); returns counts,
    the CSV path and, where tiles carry labels of the run's classes, the metrics against them."""
    from workbench.data.catalog import open_existing
    from workbench.data.contract import tile_positions
    from workbench.train.run_steps import config_reading

    from .evaluate import score_tiles
    from .run import check_bands, load_run

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = load_run(run_ref, dev)
    if not query and run.cfg.data.source:
        query = {"source": run.cfg.data.source}
    with open_existing(catalog) as cat:
        tiles = cat.query(**query)
        if not tiles:
            shown = ", ".join(f"{k}={v!r}" for k, v in query.items()) or "no filters"
            raise WorkbenchError(f"no tiles match the query ({shown}) in {cat.path}")
        check_bands(tiles, run)
        cfg = config_reading(run.cfg, tile_positions(run.contract, tiles, run=run.name))
        result = score_tiles(run.model, tiles, cfg, run.stats, run.classes, dev, batch_size, progress=progress)
        rows = [(t.id, run.classes[int(p)], float(s)) for t, p, s in zip(tiles, result["pred"], result["score"])]
        if not dry_run:
            cat.set_predictions(rows, model_id=run.name)
    csv_path = None if dry_run else _write_csv(run.path, tiles, rows)
    counts = {c: sum(1 for _, label, _ in rows if label == c) for c in run.classes}
    return {"run": str(run.path), "model_id": run.name, "tiles": len(rows), "counts": counts,
            "mean_score": sum(s for _, _, s in rows) / len(rows), "csv": csv_path, "written": not dry_run,
            "metrics": _unseen_metrics(run, tiles, result), "classes": run.classes}


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "pred_label", "pred_score"])
        for t, (tid, label, score) in zip(tiles, rows):
            w.writerow([tid, t.path, t.label or "", label, f"{score:.6f}"])
    os.replace(tmp, out)
    return str(out)
