"""The verbs of ``experiments/`` on ``workbench generate``: ``eval`` and ``seg-experiment``.

Both use the generator and a segmentation model, so they live above the tasks; the CLI registry
(``workbench/tasks_registry.py``, ``EXPERIMENT_VERBS``) hangs them on the ``generate`` command
next to the task's own verbs, under the names users know. Stdlib only at import time
(``workbench --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args

EVAL_EXAMPLES = """examples:
  workbench generate eval                                   the default model, 128 test places
  workbench generate eval --run latest --n 128 --steps 20 --guidance 3
  workbench generate eval --model runs/generation-bluemarble-small-20250101-120000/model --seg-run latest
  workbench generate eval --model ~/diffusionsat_256 --source folder --split test --seg-run none
  workbench data list --source generated --where "json_extract(extra, '$.variant') = 'zeroed'"

For --n places of the test split (evenly spread, deterministic; default: the source and filter the
model was trained on, else Blue Marble) one tile is generated from the place's caption and
metadata and one with the metadata zeroed (same caption, same seed). Reported for both:
  location fidelity  share of places whose generated tile's mean colour is nearer the real tile
                     there than the real tile of a random other test place (chance: 0.5)
  water-fraction r   Pearson correlation of the generated tiles' water fraction, scored by a
                     segmentation run (workbench segment predict --write-masks, through the
                     catalog), with the real tiles' water fraction
  spread             fidelity's binomial standard error (about 0.035 at 128 places) and r's 95 %
                     interval (Fisher z): differences smaller than these are the draw, not the model
  nearest train place  the same for answering each place with the real tile of the nearest place
                     the model trained on (needs its training record): what the split allows
  by distance        both, for the model and that reference, in quartiles of the distance from
                     each place to its nearest training place
Generated tiles go into the catalog (source generated, parent_id = the real tile, extra.eval_batch);
eval.json and mosaic.png (real | generated | metadata zeroed) go to --out.

""" + QUERY_HELP


SEG_EXPERIMENT_EXAMPLES = """examples:
  workbench generate seg-experiment                          water preset, 1024 generated tiles, default model
  workbench generate seg-experiment --set train.epochs=4 --n 256      a quick run (--set goes to both trainings)
  workbench generate seg-experiment --baseline latest --model latest --n 512 --min-confidence 0.8
  workbench generate seg-experiment --preset unet-resnet34 --equal-epochs --out r34-gen
  workbench data list --source generated --where "json_extract(extra, '$.experiment') = 'seg-generated-20250101-120000'"

Steps (a segmentation step does in-process what the `workbench segment ...` shown does; the catalog carries the tiles):
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
                    pseudo-mask) and logs/ in --out (default $WORKBENCH_HOME/runs/experiments/seg-generated-<time>)
The experiment id EXP is --name, else the output folder's name.
"""


def add_sampler_args(group) -> None:
    """``--steps --guidance --scheduler``, each defaulting to the model's own (``workbench.json``)."""
    group.add_argument("--steps", type=int, default=None, metavar="N",
                       help="denoising steps (default: the model's, else 20)")
    group.add_argument("--guidance", type=float, default=None, metavar="G",
                       help="classifier-free guidance scale (default: the model's, else 3)")
    group.add_argument("--scheduler", default=None, choices=("ddim", "dpm", "euler", "pndm", "ddpm"),
                       help="sampler (default: the model's, else ddim)")


def register(verbs, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` and ``seg-experiment`` to the ``workbench generate`` verbs."""
    register_eval(verbs, common)
    register_seg_experiment(verbs, common)


def register_eval(verbs, common: argparse.ArgumentParser) -> None:
    v = verbs.add_parser("eval", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                         help="score a model: location fidelity, water-fraction correlation",
                         description="Generate a tile for each of N test places, with and without metadata, "
                                     "and score them against the real tiles there.",
                         epilog=EVAL_EXAMPLES)
    model = v.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="DIR", help="DiffusionSat folder (default: the workbench's)")
    model.add_argument("--run", metavar="RUN",
                       help="the model of a generation run (its name, a unique prefix, or latest)")
    v.add_argument("--n", type=int, default=128, metavar="N", help="number of test places (default 128)")
    add_sampler_args(v)
    v.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of place k's noise (seed + k) and of the random other places (default 0)")
    v.add_argument("--seg-run", default="latest", metavar="RUN",
                   help="segmentation run that scores water ('latest', a run, or 'none'; default latest)")
    v.add_argument("--batch-size", type=int, default=64, metavar="N", help="places denoised together (default 64)")
    v.add_argument("--device", default="auto", metavar="DEV", help="auto (cuda if present), cpu, cuda, ...")
    v.add_argument("--out", metavar="DIR", help="output folder (default: $WORKBENCH_HOME/generated/eval-<time>)")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_query_args(v)
    v.set_defaults(func=run_eval, verb_parser=v)


def register_seg_experiment(verbs, common: argparse.ArgumentParser) -> None:
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
                     help="output folder (default: $WORKBENCH_HOME/runs/experiments/seg-generated-<time>)")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bars, and the steps' own output only in the logs")
    v.set_defaults(func=run_seg_experiment, verb_parser=v)


def run_seg_experiment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.generated_tiles import ExperimentOptions, report, run_experiment
    from workbench.errors import WorkbenchError

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


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.water_scoring import evaluate_generator
    from tasks.generation.evaluate import EvalOptions, report, sampler_settings
    from tasks.generation.run import resolve_model
    from workbench.errors import WorkbenchError

    query = query_from_args(args)
    for flag, value, low in (("--n", args.n, 2), ("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            raise WorkbenchError(f"{flag} {value}: must be at least {low}")
    folder = resolve_model(args.model, args.run)
    opts = EvalOptions(n=args.n, **sampler_settings(folder, args.steps, args.guidance, args.scheduler), seed=args.seed,
                       batch_size=args.batch_size, device=args.device, progress=not (args.no_progress or args.json))
    result = evaluate_generator(folder, opts, args.seg_run, query, catalog=args.catalog,
                                out_dir=Path(args.out) if args.out else None,
                                log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_place"}, default=str))
        return 0
    print(report(result))
    print(result["out_dir"])
    sys.stdout.flush()
    return 0
