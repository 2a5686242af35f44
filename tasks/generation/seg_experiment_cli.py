"""``workbench generate seg-experiment``: train a segmenter on real tiles, then on real + generated
tiles with pseudo-masks, and compare them on the real test split.

Stdlib only at import time (``workbench --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys

from .eval_cli import add_sampler_args

SEG_EXPERIMENT_EXAMPLES = """examples:
  workbench generate seg-experiment                          water preset, 1024 generated tiles, default model
  workbench generate seg-experiment --set train.epochs=4 --n 256      a quick run (--set goes to both trainings)
  workbench generate seg-experiment --baseline latest --model latest --n 512 --min-confidence 0.8
  workbench generate seg-experiment --preset unet-resnet34 --equal-epochs --out experiments/r34-gen
  workbench data list --source generated --where "json_extract(extra, '$.experiment') = 'seg-generated-20250101-120000'"

Steps (each segmentation step is a `workbench segment ...` subprocess; the catalog carries the tiles):
  1 baseline        segment train --preset P --name EXP-real          (or --baseline RUN: reuse a run)
  2 generate        N tiles at the places of the baseline's train tiles (evenly spread, seeds --seed + k),
                    into the catalog: source generated, split train, parent_id = the real tile,
                    extra.experiment = EXP (train places only: nothing reaches the val/test blocks)
  3 pseudo-masks    segment predict --run BASELINE --write-masks --min-confidence C
                    (pixels below C are 255 = nodata, never trained on)
  4 real+generated  segment train --preset BASELINE/config.yaml --name EXP-real+generated with
                    data.source += generated and data.where += "real, or EXP's tiles with a pseudo-mask";
                    the baseline's optimizer steps (train.max_steps), or its epochs with --equal-epochs;
                    the baseline's own filters hold for generated tiles too (the water preset's where
                    keeps coastal tiles, by their pseudo-mask's water fraction, and every 8th other)
  5 report          train tiles, steps, test mIoU and water IoU of both runs on the same real test
                    tiles, and the difference; experiment.json, panel.png (real | generated |
                    pseudo-mask) and logs/ in --out (default $WORKBENCH_HOME/experiments/seg-generated-<time>)
The experiment id EXP is --name, else the output folder's name.
"""


def register(verbs, common: argparse.ArgumentParser) -> None:
    v = verbs.add_parser("seg-experiment", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                         help="does segmentation gain from generated tiles? real vs real+generated",
                         description="Train a segmentation model on real tiles, generate tiles at its train "
                                     "places, pseudo-label them with it, train again on real + generated tiles "
                                     "and compare both on the real test split.",
                         epilog=SEG_EXPERIMENT_EXAMPLES)
    seg = v.add_argument_group("segmentation")
    seg.add_argument("--preset", default=None, metavar="P",
                     help="segmentation preset (name or YAML file) of the baseline (default: water)")
    seg.add_argument("--baseline", metavar="RUN",
                     help="reuse this trained segmentation run (folder, name, prefix or 'latest') as the baseline")
    seg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="segmentation config override for both trainings, e.g. train.epochs=4 (repeatable)")
    seg.add_argument("--min-confidence", type=float, default=0.9, metavar="C",
                     help="pseudo-mask pixels less confident than C are nodata (default 0.9)")
    seg.add_argument("--equal-epochs", action="store_true",
                     help="train real+generated for the baseline's epochs (default: its optimizer steps)")
    gen = v.add_argument_group("generation")
    gen.add_argument("--model", metavar="DIR", help="DiffusionSat folder or generation run (default: the workbench's)")
    gen.add_argument("--n", type=int, default=1024, metavar="N", help="generated tiles (default 1024)")
    add_sampler_args(gen)
    gen.add_argument("--seed", type=int, default=10_000, metavar="S",
                     help="tile k uses seed S + k (default 10000, apart from generate eval's)")
    gen.add_argument("--size", type=int, default=None, metavar="PX", help="tile side in pixels (default: the model's)")
    gen.add_argument("--batch-size", type=int, default=64, metavar="N", help="tiles denoised together (default 64)")
    gen.add_argument("--device", default="auto", metavar="DEV", help="auto (cuda if present), cpu, cuda, ...")
    out = v.add_argument_group("output")
    out.add_argument("--name", metavar="EXP", help="experiment id (default: the output folder's name)")
    out.add_argument("--out", metavar="DIR",
                     help="output folder (default: $WORKBENCH_HOME/experiments/seg-generated-<time>)")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bars, and the steps' own output only in the logs")
    v.set_defaults(func=run_seg_experiment, verb_parser=v)


def run_seg_experiment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.errors import WorkbenchError

    from .seg_experiment import ExperimentOptions, report, run_experiment

    if args.baseline and args.preset:
        raise WorkbenchError("--baseline reuses a trained run with its own config: drop --preset")
    opts = ExperimentOptions(preset=args.preset or "water", baseline=args.baseline, overrides=list(args.overrides),
                             model=args.model, n=args.n, steps=args.steps, guidance=args.guidance,
                             scheduler=args.scheduler, seed=args.seed, size=args.size, batch_size=args.batch_size,
                             device=args.device, min_confidence=args.min_confidence,
                             equal_epochs=args.equal_epochs, name=args.name,
                             progress=not (args.no_progress or args.json))
    result = run_experiment(opts, catalog=args.catalog, out_dir=Path(args.out) if args.out else None,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        shown = {**result, "generated": {k: v for k, v in result["generated"].items() if k != "ids"}}
        print(json.dumps(shown, default=str))
        return 0
    print(report(result))
    print(result["out_dir"])
    sys.stdout.flush()
    return 0
