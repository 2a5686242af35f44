"""``workbench segment``: train and evaluate segmentation runs (predict: see predict_cli).

Stdlib only at import time; each verb imports torch and the task modules when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.commands import add_command, add_verb
from workbench.commands.train_verb import add_train_verb, finish_train, train_config
from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args


EXAMPLES = """examples:
  workbench segment train                                   the 'water' preset on Blue Marble tiles
  workbench segment train --preset unet3plus --set train.max_steps=50
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
  workbench segment eval runs/segmentation-water-20250101-120000 --water-min 0.05 --water-max 0.95
  workbench segment eval latest --split val
"""

TRAIN_EXAMPLES = """examples:
  workbench segment train                                        preset 'water' (the make segment run)
  workbench segment train --preset attention-unet --set train.epochs=5 --set data.window=64
  workbench segment train --set model.encoder=resnet34 --set train.lr=3e-4 --name r34
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
  workbench segment train --source folder --set data.source=null   your imported tiles
  workbench segment train --resume segmentation-water-20250101-120000

The train/val/test tiles are those matching the filters in each split of the catalog's
split column. The run folder (printed on the last line) gets config.yaml, band_stats.json,
tiles.json, threshold.json (chosen on val), checkpoints/, metrics.json (test) and plots/.
Presets: {presets}

""" + QUERY_HELP

EVAL_EXAMPLES = """examples:
  workbench segment eval RUN                                     the test split of the run's tiles
  workbench segment eval RUN --split test --water-min 0.05 --water-max 0.95   coastal tiles only
  workbench segment eval latest --split val --threshold 0.4 --json

RUN is a run folder, a name under runs/, a unique prefix, or 'latest' (the last finished
segmentation run). Filters narrow the run's own tile query (--where replaces its where).

""" + QUERY_HELP


def _presets() -> list[str]:
    from .config import list_presets

    return list_presets()


def register(sub, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "segment", help="train and evaluate segmentation models (water masks)",
                           description="Segmentation: UNet-family models on catalog tiles with masks.",
                           epilog=EXAMPLES)

    add_train_verb(verbs, common, default="water", task_dir="tasks/segmentation", func=run_train,
                   help="train a model from a preset",
                   description="Train a segmentation model: preset, then --set overrides, on the tiles "
                               "the filters select.",
                   epilog=TRAIN_EXAMPLES.format(presets=", ".join(_presets())))

    v = add_verb(verbs, "eval", common, help="re-score a run on a split or any tile query",
                 description="Score a trained run's best weights on catalog tiles and print the "
                             "per-class table.",
                 epilog=EVAL_EXAMPLES)
    v.add_argument("run", metavar="RUN", help="run folder, name, unique prefix, or 'latest'")
    v.add_argument("--threshold", type=float, metavar="T", help="probability threshold (default: the run's)")
    v.add_argument("--batch-size", type=int, metavar="N", help="windows per forward pass")
    v.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    v.add_argument("--out", metavar="FILE", help="also write the metrics JSON here")
    add_query_args(v)
    v.set_defaults(func=run_eval)

    # ---- predict: added by the scene-prediction work (tasks/segmentation/predict_cli.py) ----
    try:
        from tasks.segmentation import predict_cli
    except ImportError:
        predict_cli = None
    if predict_cli is not None:
        predict_cli.register(verbs, common)


def run_train(args: argparse.Namespace) -> int:
    from .config import PRESETS
    from .train import resolve_resume_config, train

    cfg = train_config(args, PRESETS, resolve_resume_config)
    return finish_train(args, train(cfg, resume=args.resume, catalog=args.catalog, query_override=query_from_args(args)))


def run_eval(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError
    from workbench.train.run_dir import resolve_run

    from .evaluate import evaluate_run, result_line
    from .metrics import format_table

    ref = resolve_run(args.run, "segmentation")
    if args.batch_size is not None and args.batch_size < 1:
        raise WorkbenchError("--batch-size: must be at least 1")
    query = query_from_args(args)
    split = query.pop("split", None) or "test"
    metrics = evaluate_run(ref, split=split, query=query, catalog=args.catalog, threshold=args.threshold,
                           batch_size=args.batch_size)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"run {metrics['run']}")
    print(f"split {metrics['query'].get('split')}  threshold "
          f"{'-' if metrics['threshold'] is None else format(metrics['threshold'], 'g')}  "
          f"{result_line(metrics)}")
    print(format_table(metrics))
    return 0
