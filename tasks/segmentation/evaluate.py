"""Scoring a segmentation model on catalog tiles, and ``evaluate_run`` (``workbench segment eval``).

    from tasks.segmentation.evaluate import evaluate_run
    metrics = evaluate_run("segmentation-water-20250101-120000", split="test",
                           query={"water_min": 0.05, "water_max": 0.95})

Tiles are cut into the run's grid windows (``data.window``, stride ``data.eval_stride``),
normalised with the run's ``band_stats.json``, predicted with the run's best weights (EMA
when present) and the run's threshold (``threshold.json``, binary models), and scored with a
pixel confusion matrix; nodata pixels (and mask value 255) never count. Tiles and datasets
come from ``data.py``, the run from ``run.py``; training imports this module, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

from .config import SegmentationConfig
from .data import base_query, batch_valid, context_of, eval_dataset, open_catalog, query_split


def _batches(ds, batch_size: int):
    n = len(ds)
    for start in range(0, n, batch_size):
        yield ds.__getitems__(list(range(start, min(n, start + batch_size))))


def _forward(model, image: torch.Tensor) -> torch.Tensor:
    out = model(image)
    if isinstance(out, dict):  # a model left in train mode (UNet3Plus): the main output
        out = out["out"]
    return out.float()


@torch.no_grad()
def scan_thresholds(model, ds, cfg: SegmentationConfig, device, batch_size: int) -> dict:
    """``ThresholdScan`` over ``ds`` at ``eval.thresholds``, best by ``eval.select`` (binary models)."""
    from .metrics import ThresholdScan

    scan = ThresholdScan(cfg.eval.thresholds, skip_empty_tiles=cfg.eval.skip_empty_tiles, device=device)
    for batch in _batches(ds, batch_size):
        probs = torch.sigmoid(_forward(model, batch["image"].to(device)))[:, 0]
        scan.update(probs, batch["mask"].to(device), batch_valid(batch).to(device))
    return scan.result(cfg.eval.select, cfg.class_names)


@torch.no_grad()
def score_dataset(model, ds, cfg: SegmentationConfig, device, batch_size: int, threshold: float = 0.5,
                  keep_examples: int = 0) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on every window of ``ds`` and up to ``keep_examples`` windows for a
    panel (windows holding both classes first)."""
    from .metrics import ConfusionMatrix

    classes = max(2, cfg.model.classes)
    cm = ConfusionMatrix(classes, device=device, skip_empty_tiles=cfg.eval.skip_empty_tiles)
    mixed: list[dict] = []
    other: list[dict] = []
    for batch in _batches(ds, batch_size):
        out = _forward(model, batch["image"].to(device))
        if cfg.binary:
            pred = (torch.sigmoid(out[:, 0]) > threshold).long()
        else:
            pred = out.argmax(dim=1)
        target = batch["mask"].to(device)
        valid = batch_valid(batch).to(device)
        cm.update(pred, target, valid)
        if keep_examples and len(mixed) < keep_examples:
            for i in range(len(pred)):
                t = target[i][valid[i]]
                is_mixed = t.numel() > 0 and bool((t == 0).any()) and bool((t != 0).any())
                bucket = mixed if is_mixed else other
                if len(bucket) < keep_examples:
                    bucket.append({"image": batch["image"][i].numpy(), "truth": target[i].cpu().numpy(),
                                   "pred": pred[i].cpu().numpy(), "valid": valid[i].cpu().numpy(),
                                   "tile": int(batch["tile"][i])})
    metrics = cm.compute(cfg.class_names)
    return metrics, (mixed + other)[:keep_examples]


# --------------------------------------------------------------------------- a finished run

def evaluate_run(run_ref: str | Path, split: str | None = "test", query: dict | None = None,
                 catalog: str | Path | None = None, threshold: float | None = None,
                 batch_size: int | None = None, catalog_immutable: bool = False) -> dict:
    """Re-score a run on ``split`` (or on ``query["split"]``) of the tiles its config selects,
    narrowed by ``query`` (``Catalog.query`` filters; ``where`` replaces the run's own); the
    catalog is read only (``catalog_immutable``: see ``Catalog``)."""
    from .run import load_run

    loaded = load_run(run_ref)
    cfg: SegmentationConfig = loaded.cfg
    q = base_query(cfg, None)
    tiles_file = Path(loaded.path) / "tiles.json"
    if tiles_file.is_file():  # the filters the run was trained with (CLI ones included)
        import json

        q = {k: v for k, v in (json.loads(tiles_file.read_text()).get("query") or {}).items() if k != "split"}
    for key, value in (query or {}).items():
        if value is not None:
            q[key] = value
    q.setdefault("split", split or cfg.data.test_split)
    with open_catalog(cfg, catalog, catalog_immutable) as cat:
        tiles = query_split(cat, {k: v for k, v in q.items() if k != "split"}, q["split"], required=False)
        sources = context_of(cat, tiles, cfg)  # the tiles, or their block mosaics (data.context: block)
    if not tiles:
        shown = ", ".join(f"{k}={v!r}" for k, v in q.items())
        raise WorkbenchError(f"no tiles with a mask match the query ({shown})")
    t = loaded.threshold if threshold is None else float(threshold)
    if not 0.0 < t < 1.0:
        raise WorkbenchError(f"--threshold {t:g}: must be between 0 and 1")
    model = loaded.model
    device = next(model.parameters()).device
    model.eval()
    from workbench.data.contract import tile_positions
    from workbench.train.run_steps import config_reading

    cfg = config_reading(cfg, tile_positions(loaded.contract, tiles, run=loaded.name))
    ds = eval_dataset(sources, cfg, loaded.stats)
    metrics, _ = score_dataset(model, ds, cfg, device, batch_size or cfg.train.eval_batch_size or
                               cfg.train.batch_size, t)
    return {"run": str(loaded.path), "query": {k: v for k, v in q.items()}, "tiles": len(tiles),
            "threshold": t if cfg.binary else None, **metrics}


def result_line(metrics: dict[str, Any]) -> str:
    per = {r["name"]: r for r in metrics.get("per_class", [])}
    water = per.get("water", {}).get("iou")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"{metrics.get('tiles', 0)} tiles, {metrics.get('pixels', 0)} pixels: mean IoU "
            f"{fmt(metrics.get('mean_iou'))}, water IoU {fmt(water)}")
