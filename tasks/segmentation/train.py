"""``train(cfg)``: one segmentation run, from a catalog query to a scored test split.

    from tasks.segmentation.config import load_config
    from tasks.segmentation.train import train
    summary = train(load_config("water", ["train.max_steps=50"]))

Steps: select tiles per split (``cfg.data.source``/``where`` plus CLI filters, split from the
catalog's ``split`` column), check the masks and count classes, band statistics on the train
tiles, random windows (+ flips / quarter turns) for training and a grid for validation, fit
with the shared trainer driving ``task.SegmentationTask``, then with the best weights:
threshold scan on val (binary), test metrics, plots and the per-class table. The steps every
task shares (the ``--split`` refusal, resume, band statistics, tiles.json, best reload, the
end of a run) are ``workbench.train.run_steps``. With ``data.context: block`` the windows (train, val
and test) come from mosaics of the split blocks the tiles pick (``context_of``), so they can
be larger than a tile; band statistics and the class counts still come from the tiles.

Run-dir contract (``runs/segmentation-<name>-<time>/``): ``config.yaml``, ``band_stats.json``,
``tiles.json`` (train/val/test tile ids and the query), ``threshold.json``,
``checkpoints/best.safetensors``, ``metrics.json`` (test), ``plots/*.png``; with blocks also
``blocks.json`` (the mosaic files per split and the tile ids in each).
``runs/latest-segmentation`` holds the path of the last finished run.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from .config import SegmentationConfig
from .data import bands0, base_query, context_of, eval_dataset, open_catalog, query_split, scan_masks, train_dataset
from .task import SegmentationTask

log = logging.getLogger(__name__)


def resolve_resume_config(resume: str | Path, overrides: list[str] | None = None,
                          runs_root: str | Path | None = None) -> SegmentationConfig:
    """The config of a run being resumed (its config.yaml), with ``--set`` overrides on top;
    ``latest`` is the last segmentation run."""
    from workbench.train.run_steps import resume_config

    from .config import config_from_dict

    return resume_config(resume, overrides, config_from_dict, runs_root, task=SegmentationTask.name)


def train(cfg: SegmentationConfig, resume: str | Path | None = None, catalog: str | Path | None = None,
          query_override: dict | None = None, runs_root: str | Path | None = None, verbose: bool = True,
          catalog_immutable: bool = False) -> dict:
    """Train, pick the threshold on val, score test; returns the run summary (with ``run_dir``,
    ``threshold``, ``test`` metrics). See the module docstring for what lands in the run folder.
    The catalog is only read (``catalog_immutable``: the user's word that it does not change)."""
    from workbench.data.contract import FILE as INPUTS_FILE
    from workbench.data.dataset import passthrough_collate
    from workbench.data.tile_table import concat
    from workbench.train.run_dir import RunDir
    from workbench.train.run_steps import (
        band_stats_for,
        check_resumed_tiles,
        finish_run,
        input_contract_for,
        pretrained_stats,
        refuse_split_filter,
        resumed_query,
        write_tiles_json,
    )
    from workbench.train.trainer import Trainer

    t_start = time.perf_counter()
    refuse_split_filter(query_override, "segment train")
    if resume is not None:  # one run for the config, the band statistics and the checkpoint
        resume = RunDir.open(resume, runs_root, task=SegmentationTask.name).path
    query = resumed_query(resume, base_query(cfg, query_override), query_override)
    d = cfg.data
    with open_catalog(cfg, catalog, catalog_immutable) as cat:
        train_tiles = query_split(cat, query, d.train_split)
        val_tiles = query_split(cat, query, d.val_split)
        test_tiles = query_split(cat, query, d.test_split, required=False)
        catalog_path = str(cat.path)
        train_src, val_src, test_src = (context_of(cat, tiles, cfg)
                                        for tiles in (train_tiles, val_tiles, test_tiles))
    check_resumed_tiles(resume, {"train": train_tiles, "val": val_tiles, "test": test_tiles})

    class_counts = scan_masks(train_tiles, cfg.model.classes, d.stats_max_tiles)
    val_counts = scan_masks(val_tiles, cfg.model.classes, d.stats_max_tiles)
    val_no_water = cfg.binary and int(val_counts[1:].sum()) == 0
    stats = band_stats_for(train_tiles, bands=bands0(cfg), max_tiles=d.stats_max_tiles, seed=cfg.train.seed,
                           resume=resume, runs_root=runs_root, indices=d.indices)
    contract = input_contract_for(train_tiles, bands=bands0(cfg), resume=resume, runs_root=runs_root,
                                  task=SegmentationTask.name, indices=d.indices)
    stats = pretrained_stats(stats, contract, cfg.model.weight_layout, resume)

    train_ds = train_dataset(train_src, cfg, stats)
    val_ds = eval_dataset(val_src, cfg, stats)
    task = SegmentationTask(cfg, train_ds.channels, class_counts, band_names=contract.channel_names)
    trainer = Trainer(task, cfg.train, train_ds, val_ds, name=cfg.name, config=cfg, resume=resume,
                      collate_fn=passthrough_collate, runs_root=runs_root)
    run = trainer.run
    if trainer.is_main:
        stats.save(run.path / "band_stats.json")
        contract.save(run.path / INPUTS_FILE)
        write_tiles_json(run, catalog=catalog_path, query=query,
                         splits={"train": d.train_split, "val": d.val_split, "test": d.test_split},
                         tiles={"train": train_tiles, "val": val_tiles, "test": test_tiles},
                         class_counts=class_counts.tolist())
        if d.context == "block":
            run.write_json("blocks.json", {split: [{"path": b.path, "block": b.block, "tiles": list(b.tiles),
                                                    "picked": len(b.picked)} for b in src]
                                           for split, src in (("train", train_src), ("val", val_src),
                                                              ("test", test_src))})
    if trainer.is_main:       # once every input is checked (a bad one is a one-line error, no warnings)
        warn_splits(concat([train_tiles, val_tiles, test_tiles]), cfg)
        if val_no_water and cfg.train.monitor.startswith("val/"):
            print(f"warning: split {d.val_split} has no water pixels: the checkpoint kept by {cfg.train.monitor} "
                  f"means nothing (every land-only prediction scores well); import more ground or resplit",
                  file=sys.stderr)
    try:
        summary = trainer.fit()
        if trainer.is_main:
            summary = _after_fit(trainer, cfg, stats, val_ds, test_tiles, summary, verbose, test_src,
                                 val_no_water=val_no_water)
            finish_run(trainer, summary, run_table if verbose else None, started=t_start,
                       threshold=summary.get("threshold"), test=summary.get("test_short"),
                       **({"threshold_reason": summary["threshold_reason"]} if summary.get("threshold_reason")
                          else {}))
    finally:
        trainer.close()
    return summary


def warn_splits(tiles: list, cfg: SegmentationConfig) -> list[str]:
    """``splits.split_warnings`` of the run's train/val/test tiles, one line each on stderr: a run
    on a val split without water cannot choose a checkpoint or a threshold, and should say so."""
    from workbench.data.splits import split_warnings

    d = cfg.data
    lines = split_warnings(tiles, splits=(d.train_split, d.val_split, d.test_split),
                           hint="import more ground, or re-split it: workbench data import DIR --resplit "
                                "--block-size DEG")
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def _after_fit(trainer, cfg: SegmentationConfig, stats, val_ds, test_tiles, summary: dict, verbose: bool,
               test_src=None, val_no_water: bool = False) -> dict:
    from workbench.train.plots import draw_plots
    from workbench.train.run_steps import reload_best

    from . import report
    from .evaluate import scan_thresholds, score_dataset
    from .metrics import format_table

    run = trainer.run
    model = reload_best(trainer)
    device = trainer.accelerator.device
    bs = cfg.train.eval_batch_size or cfg.train.batch_size

    threshold = 0.5
    scan = None
    reason = None
    if cfg.binary:
        scan = scan_thresholds(model, val_ds, cfg, device, bs)
        if val_no_water:        # every threshold "wins" on land only: the scan is kept, not used
            reason = f"{cfg.data.val_split} split has no water pixels"
        elif scan["best_threshold"] is None:
            reason = f"no threshold scored on the {cfg.data.val_split} split"
        else:
            threshold = float(scan["best_threshold"])
        if reason:
            print(f"warning: threshold 0.5, not chosen: {reason}", file=sys.stderr)
    # Multi-class models predict the argmax: the threshold is recorded (0.5) but not used.
    run.write_json("threshold.json", {"threshold": threshold, "binary": cfg.binary, "split": cfg.data.val_split,
                                      "select": cfg.eval.select, "scan": scan,
                                      **({"reason": reason} if reason else {})})

    out = dict(summary)
    out["threshold"] = threshold if cfg.binary else None
    if reason:
        out["threshold_reason"] = reason
    if not test_tiles:
        log.warning("no %s tiles with masks: the run has no test metrics", cfg.data.test_split)
        run.write_json("metrics.json", {"split": cfg.data.test_split, "tiles": 0, "threshold": out["threshold"]})
        return out
    test_ds = eval_dataset(test_src or test_tiles, cfg, stats)
    metrics, examples = score_dataset(model, test_ds, cfg, device, bs, threshold, keep_examples=6)
    metrics = {"split": cfg.data.test_split, "tiles": len(test_tiles), "threshold": out["threshold"],
               "checkpoint": "best", **metrics}
    run.write_json("metrics.json", metrics)
    draw_plots(run, {"confusion_matrix.png": lambda p: report.plot_confusion_png(metrics, cfg, p),
                     "test_panel.png": lambda p: report.plot_panel(examples, p, title=f"{run.name} test"),
                     "iou_curve.png": lambda p: report.plot_iou_curve(run.read_metrics(), p, title=run.name)})
    if verbose:
        print(f"\ntest split '{cfg.data.test_split}': {len(test_tiles)} tiles, threshold {threshold:g}")
        print(format_table(metrics, cfg.class_names))
    out["test"] = metrics
    out["test_short"] = short_metrics(metrics)
    return out


def short_metrics(m: dict) -> dict:
    per = {r["name"]: r for r in m.get("per_class", [])}
    water = per.get("water", {})
    return {"mean_iou": m.get("mean_iou"), "water_iou": water.get("iou"), "water_f1": water.get("f1"),
            "overall_accuracy": m.get("overall_accuracy")}


def run_table(summary: dict) -> str:
    from workbench.train.run_dir import fmt, summary_table

    t = summary.get("test_short") or {}
    why = summary.get("threshold_reason")
    threshold = fmt(summary.get("threshold"), "{:g}") + (f" (not chosen: {why})" if why else "")
    return summary_table(summary, [("threshold (val)", threshold),
                                   ("test mean IoU", fmt(t.get("mean_iou"))),
                                   ("test water IoU", fmt(t.get("water_iou"))),
                                   ("test water F1", fmt(t.get("water_f1")))])
