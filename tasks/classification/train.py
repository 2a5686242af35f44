"""``train(cfg)``: one classification run, from a labelled catalog query to a scored test split.

    from tasks.classification.config import load_config
    from tasks.classification.train import train
    summary = train(load_config("water-coast-land", ["train.epochs=2"]))

Steps: tiles per split (filters + the catalog's geographic ``split`` column), labels and the
class order, band statistics on the train tiles, one random crop per tile per epoch with
flips / quarter turns, the shared trainer driving ``task.ClassificationTask`` (with the
linear-probe / staged-unfreezing callback when ``finetune`` asks for it), then with the best
weights: tile-level test metrics, the confusion matrix and example PNGs, and the report table.
The steps every task shares (resume, band statistics, tiles.json, best reload, the end of a
run) are ``workbench.train.run_steps``.

Run-dir contract (``runs/classification-<name>-<time>/``): ``config.yaml``, ``band_stats.json``,
``classes.json`` (class order, label source and thresholds, bands), ``tiles.json``,
``checkpoints/best.safetensors``, ``metrics.json`` (test), ``plots/*.png``.
``runs/latest-classification`` names the last finished run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from workbench.errors import WorkbenchError

from .config import ClassificationConfig

log = logging.getLogger(__name__)


def resolve_resume_config(resume: str | Path, overrides: list[str] | None = None) -> ClassificationConfig:
    """The config of a run being resumed (its config.yaml), with ``--set`` overrides on top."""
    from workbench.train.run_steps import resume_config

    from .config import config_from_dict
    from .task import ClassificationTask

    return resume_config(resume, overrides, config_from_dict, task=ClassificationTask.name)


def _select(cfg: ClassificationConfig, catalog, query_override: dict | None, resume: str | Path | None = None,
            immutable: bool = False):
    from workbench.data.catalog import open_existing
    from workbench.train.run_steps import refuse_split_filter, resumed_query

    from .data import select_tiles

    refuse_split_filter(query_override, "classify train")
    d = cfg.data
    query = resumed_query(resume, d.query(query_override), query_override)
    with open_existing(catalog or d.catalog, read_only=True, immutable=immutable) as cat:
        train_tiles = select_tiles(cat, query, d.train_split, cfg)
        val_tiles = select_tiles(cat, query, d.val_split, cfg)
        try:
            test_tiles = select_tiles(cat, query, d.test_split, cfg)
        except WorkbenchError as exc:
            log.warning("no test metrics: %s", exc)
            test_tiles = []
        return query, str(cat.path), train_tiles, val_tiles, test_tiles


def train(cfg: ClassificationConfig, resume: str | Path | None = None, catalog: str | Path | None = None,
          query_override: dict | None = None, runs_root: str | Path | None = None, verbose: bool = True,
          catalog_immutable: bool = False) -> dict:
    """Train, then score the test split with the best weights; returns the run summary. The catalog
    is only read (``catalog_immutable``: the user's word that it does not change, see ``Catalog``)."""
    from workbench.data.contract import FILE as INPUTS_FILE
    from workbench.data.dataset import passthrough_collate
    from workbench.train.run_steps import (
        band_stats_for,
        check_resumed_tiles,
        finish_run,
        input_contract_for,
        pretrained_stats,
        write_tiles_json,
    )
    from workbench.train.trainer import Trainer

    from . import data as D
    from .losses import balanced_class_weights
    from .models import count_parameters
    from .task import ClassificationTask

    t_start = time.perf_counter()
    d = cfg.data
    if resume is not None:  # one run for the config, the tile selection and the checkpoint
        from workbench.train.run_dir import RunDir

        resume = RunDir.open(resume, runs_root, task=ClassificationTask.name).path
    query, catalog_path, train_tiles, val_tiles, test_tiles = _select(
        cfg, catalog, query_override, resume, catalog_immutable)
    check_resumed_tiles(resume, {"train": train_tiles, "val": val_tiles, "test": test_tiles})
    classes = D.class_names(cfg, train_tiles)
    train_labels = D.label_indices(train_tiles, cfg, classes)
    val_labels = D.label_indices(val_tiles, cfg, classes)
    counts = D.class_counts(train_labels, len(classes))
    stats = band_stats_for(train_tiles, bands=D.bands0(cfg), max_tiles=d.stats_max_tiles, seed=cfg.train.seed,
                           resume=resume, runs_root=runs_root, task=ClassificationTask.name, indices=d.indices)
    contract = input_contract_for(train_tiles, bands=D.bands0(cfg), resume=resume, runs_root=runs_root,
                                  task=ClassificationTask.name, indices=d.indices)
    stats = pretrained_stats(stats, contract, cfg.model.weight_layout, resume)

    train_ds = D.train_dataset(train_tiles, cfg, stats)
    val_ds = D.eval_dataset(val_tiles, cfg, stats)
    weights = balanced_class_weights(counts, len(classes)) if cfg.loss.class_weights == "balanced" else None
    task = ClassificationTask(cfg, classes, train_ds.channels, train_labels, val_labels, weights,
                              band_names=contract.channel_names)
    trainer = Trainer(task, cfg.train, train_ds, val_ds, name=cfg.name, config=cfg, resume=resume,
                      collate_fn=passthrough_collate, runs_root=runs_root)
    run = trainer.run
    if trainer.is_main:
        stats.save(run.path / "band_stats.json")
        contract.save(run.path / INPUTS_FILE)
        run.write_json("classes.json", {"classes": classes, "labels": d.labels,
                                        "land_max": d.land_max, "water_min": d.water_min,
                                        "bands": d.bands, "in_chans": train_ds.channels,
                                        "train_counts": counts.tolist(), "parameters": count_parameters(task.model)})
        write_tiles_json(run, catalog=catalog_path, query=query,
                         splits={"train": d.train_split, "val": d.val_split, "test": d.test_split},
                         tiles={"train": train_tiles, "val": val_tiles, "test": test_tiles})
    try:
        summary = trainer.fit()
        if trainer.is_main:
            summary = _after_fit(trainer, cfg, stats, classes, test_tiles, summary, verbose)
            finish_run(trainer, summary, run_table if verbose else None, started=t_start,
                       test=summary.get("test_short"))
    finally:
        trainer.close()
    return summary


def _after_fit(trainer, cfg: ClassificationConfig, stats, classes, test_tiles, summary: dict, verbose: bool) -> dict:
    from workbench.train.run_steps import reload_best

    from .evaluate import score_tiles, write_report

    run = trainer.run
    model = reload_best(trainer)
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
