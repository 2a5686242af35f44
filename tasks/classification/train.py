"""``train(cfg)``: one classification run, from a labelled catalog query to a scored test split.

    from tasks.classification.config import load_config
    from tasks.classification.train import train
    summary = train(load_config("water-coast-land", ["train.epochs=2"]))

Steps: tiles per split (filters + the catalog's geographic ``split`` column), labels and the
class order, band statistics on the train tiles, one random crop per tile per epoch with
flips / quarter turns, the shared trainer (with the linear-probe / staged-unfreezing hook
when ``finetune`` asks for it), then with the best weights: tile-level test metrics, the
confusion matrix and example PNGs, and the report table.

Run-dir contract (``runs/classification-<name>-<time>/``): ``config.yaml``, ``band_stats.json``,
``classes.json`` (class order, label source and thresholds, bands), ``tiles.json``,
``checkpoints/best.safetensors``, ``metrics.json`` (test), ``plots/*.png``.
``runs/latest-classification`` names the last finished run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError

from .config import ClassificationConfig

log = logging.getLogger(__name__)

TASK = "classification"


def make_loss_fn(labels: torch.Tensor, cfg: ClassificationConfig, weights: torch.Tensor | None):
    """Cross-entropy on each crop's tile label, with label smoothing and mixup as configured."""
    smoothing, alpha, prob = cfg.loss.label_smoothing, cfg.loss.mixup_alpha, cfg.loss.mixup_prob
    beta = torch.distributions.Beta(alpha, alpha) if alpha > 0 else None

    def loss_fn(model, batch):
        x = batch["image"]
        y = labels.to(x.device)[batch["tile"].long()]
        w = None if weights is None else weights.to(x.device)
        if beta is not None and float(torch.rand(())) < prob:
            lam = float(beta.sample())
            perm = torch.randperm(x.shape[0], device=x.device)
            logits = model(lam * x + (1 - lam) * x[perm])
            loss = lam * F.cross_entropy(logits, y, weight=w, label_smoothing=smoothing) + \
                (1 - lam) * F.cross_entropy(logits, y[perm], weight=w, label_smoothing=smoothing)
            return loss, {}
        return F.cross_entropy(model(x), y, weight=w, label_smoothing=smoothing), {}

    return loss_fn


def make_evaluate_fn(labels: torch.Tensor, classes: list[str]):
    """Crop-level loss, accuracy and macro-F1 on the validation tiles (summed over processes)."""
    from workbench.metrics import ConfusionMatrix, metrics_from_matrix

    def evaluate(model, loader, accelerator) -> dict[str, float]:
        cm = ConfusionMatrix(len(classes), device=accelerator.device)
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            logits = model(batch["image"]).float()
            y = labels.to(logits.device)[batch["tile"].long()]
            keep = y >= 0
            if keep.any():
                loss = F.cross_entropy(logits[keep], y[keep], reduction="sum")
                total += torch.stack([loss.double(), keep.sum().double()])
            cm.update(logits.argmax(1), y, keep)
        matrix = accelerator.reduce(cm.matrix, "sum")
        total = accelerator.reduce(total, "sum")
        m = metrics_from_matrix(matrix, classes)
        nan = float("nan")
        return {"val/loss": float(total[0] / total[1].clamp(min=1)),
                "val/accuracy": nan if m["overall_accuracy"] is None else m["overall_accuracy"],
                "val/macro_f1": nan if m["mean_f1"] is None else m["mean_f1"]}

    return evaluate


def resolve_resume_config(resume: str | Path, overrides: list[str] | None = None) -> ClassificationConfig:
    from workbench.config import deep_merge, parse_overrides
    from workbench.train.run_dir import RunDir

    from .config import config_from_dict

    return config_from_dict(deep_merge(RunDir.open(resume).read_config(), parse_overrides(overrides)))


def _select(cfg: ClassificationConfig, catalog, query_override: dict | None):
    from workbench.data.catalog import open_existing

    from .data import select_tiles

    if query_override and query_override.get("split") is not None:
        raise WorkbenchError("classify train takes its train/val/test tiles from the split column: drop --split "
                             "(or set data.train_split / data.val_split / data.test_split)")
    d = cfg.data
    query = d.query(query_override)
    with open_existing(catalog or d.catalog) as cat:
        train_tiles = select_tiles(cat, query, d.train_split, cfg)
        val_tiles = select_tiles(cat, query, d.val_split, cfg)
        try:
            test_tiles = select_tiles(cat, query, d.test_split, cfg)
        except WorkbenchError as exc:
            log.warning("no test metrics: %s", exc)
            test_tiles = []
        return query, str(cat.path), train_tiles, val_tiles, test_tiles


def train(cfg: ClassificationConfig, resume: str | Path | None = None, catalog: str | Path | None = None,
          query_override: dict | None = None, runs_root: str | Path | None = None, verbose: bool = True) -> dict:
    """Train, then score the test split with the best weights; returns the run summary."""
    from workbench.data.dataset import passthrough_collate
    from workbench.train.run_dir import write_latest
    from workbench.train.seeding import seed_everything
    from workbench.train.trainer import Trainer

    from . import data as D
    from .finetune import make_epoch_hook, param_groups
    from .models import build_classifier, count_parameters

    t_start = time.perf_counter()
    query, catalog_path, train_tiles, val_tiles, test_tiles = _select(cfg, catalog, query_override)
    classes = D.class_names(cfg, train_tiles)
    train_labels = D.label_indices(train_tiles, cfg, classes)
    val_labels = D.label_indices(val_tiles, cfg, classes)
    counts = D.class_counts(train_labels, len(classes))
    stats = _band_stats(cfg, train_tiles, resume, runs_root)

    train_ds = D.train_dataset(train_tiles, cfg, stats)
    val_ds = D.eval_dataset(val_tiles, cfg, stats)
    seed_everything(cfg.train.seed)
    model = build_classifier(cfg.model, train_ds.channels, len(classes), cfg.data.size)
    model.freeze_norm = cfg.finetune.freeze_norm
    weights = None
    if cfg.loss.class_weights == "balanced":
        c = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
        weights = c.sum() / (len(classes) * c)
    groups = param_groups(model, cfg.train.weight_decay, cfg.finetune)
    hook = make_epoch_hook(model, cfg.finetune, cfg.train.lr * cfg.finetune.backbone_lr_scale) \
        if cfg.finetune.staged or cfg.finetune.warmup_epochs else None

    trainer = Trainer(model, cfg.train, train_ds, val_ds, loss_fn=make_loss_fn(train_labels, cfg, weights),
                      evaluate_fn=make_evaluate_fn(val_labels, classes), task=TASK, name=cfg.name, config=cfg,
                      param_groups=groups, on_epoch_start=hook, resume=resume, collate_fn=passthrough_collate,
                      runs_root=runs_root)
    run = trainer.run
    if trainer.is_main:
        stats.save(run.path / "band_stats.json")
        run.write_json("classes.json", {"classes": classes, "labels": cfg.data.labels,
                                        "land_max": cfg.data.land_max, "water_min": cfg.data.water_min,
                                        "bands": cfg.data.bands, "in_chans": train_ds.channels,
                                        "train_counts": counts.tolist(), "parameters": count_parameters(model)})
        run.write_json("tiles.json", {"catalog": catalog_path, "query": query,
                                      "train": [t.id for t in train_tiles], "val": [t.id for t in val_tiles],
                                      "test": [t.id for t in test_tiles]})
    try:
        summary = trainer.fit()
        if trainer.is_main:
            summary = _after_fit(trainer, cfg, stats, classes, test_tiles, summary, verbose)
            summary["total_time_s"] = round(time.perf_counter() - t_start, 1)
            run.update_summary(total_time_s=summary["total_time_s"], test=summary.get("test_short"))
            write_latest(run.path, TASK)
            if verbose:
                print(run_table(summary))
    finally:
        trainer.close()
    return summary


def _band_stats(cfg: ClassificationConfig, tiles, resume, runs_root):
    from workbench.data.stats import BandStats, compute_band_stats
    from workbench.train.run_dir import RunDir

    from .data import bands0

    if resume is not None:
        saved = RunDir.open(resume, runs_root).path / "band_stats.json"
        if saved.is_file():
            return BandStats.load(saved)
    return compute_band_stats(tiles, bands=bands0(cfg), max_tiles=cfg.data.stats_max_tiles, seed=cfg.train.seed,
                              split=None)


def _after_fit(trainer, cfg: ClassificationConfig, stats, classes, test_tiles, summary: dict, verbose: bool) -> dict:
    from workbench.train.checkpoint import load_weights

    from .evaluate import score_tiles, write_report

    run = trainer.run
    model = trainer.inference_model()
    if run.best_checkpoint.is_file():
        load_weights(run.best_checkpoint, model, prefer_ema=True)
    out = dict(summary)
    if not test_tiles:
        run.write_json("metrics.json", {"split": cfg.data.test_split, "tiles": 0})
        return out
    bs = cfg.train.eval_batch_size or cfg.train.batch_size
    result = score_tiles(model, test_tiles, cfg, stats, classes, trainer.accelerator.device, bs)
    metrics = {"split": cfg.data.test_split, "checkpoint": "best", **result["metrics"]}
    run.write_json("metrics.json", metrics)
    write_report(run, result, classes, title=f"{run.name} {cfg.data.test_split}", verbose=verbose)
    out["test"] = metrics
    out["test_short"] = short_metrics(metrics)
    return out


def short_metrics(m: dict) -> dict:
    return {"macro_f1": m.get("mean_f1"), "accuracy": m.get("overall_accuracy"), "weighted_f1": m.get("weighted_f1"),
            "tiles": m.get("tiles")}


def run_table(summary: dict) -> str:
    from workbench.train.run_dir import fmt, summary_table

    t = summary.get("test_short") or {}
    return summary_table(summary, [("test tiles", str(t.get("tiles", "-"))), ("test accuracy", fmt(t.get("accuracy"))),
                                   ("test macro-F1", fmt(t.get("macro_f1"))),
                                   ("test weighted-F1", fmt(t.get("weighted_f1")))])
