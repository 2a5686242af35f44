"""``workbench generate eval``: location fidelity and water-fraction correlation of a model.

Stdlib only at import time (``workbench --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args

EVAL_EXAMPLES = """examples:
  workbench generate eval                                   the default model, 128 test places
  workbench generate eval --model latest --n 128 --steps 20 --guidance 3
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


def add_sampler_args(group) -> None:
    """``--steps --guidance --scheduler``, each defaulting to the model's own (``workbench.json``)."""
    group.add_argument("--steps", type=int, default=None, metavar="N",
                       help="denoising steps (default: the model's, else 20)")
    group.add_argument("--guidance", type=float, default=None, metavar="G",
                       help="classifier-free guidance scale (default: the model's, else 3)")
    group.add_argument("--scheduler", default=None, choices=("ddim", "dpm", "euler", "pndm", "ddpm"),
                       help="sampler (default: the model's, else ddim)")


def register(verbs, common: argparse.ArgumentParser) -> None:
    v = verbs.add_parser("eval", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                         help="score a model: location fidelity, water-fraction correlation",
                         description="Generate a tile for each of N test places, with and without metadata, "
                                     "and score them against the real tiles there.",
                         epilog=EVAL_EXAMPLES)
    v.add_argument("--model", metavar="DIR", help="DiffusionSat folder or generation run (default: the workbench's)")
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


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.errors import WorkbenchError

    from .evaluate import EvalOptions, evaluate, report, sampler_settings
    from .run import resolve_model

    query = query_from_args(args)
    for flag, value, low in (("--n", args.n, 2), ("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            raise WorkbenchError(f"{flag} {value}: must be at least {low}")
    folder = resolve_model(args.model)
    opts = EvalOptions(n=args.n, **sampler_settings(folder, args.steps, args.guidance, args.scheduler), seed=args.seed,
                       batch_size=args.batch_size, device=args.device, seg_run=args.seg_run,
                       progress=not (args.no_progress or args.json))
    result = evaluate(folder, opts, query, catalog=args.catalog, out_dir=Path(args.out) if args.out else None,
                      log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_place"}, default=str))
        return 0
    print(report(result))
    print(result["out_dir"])
    sys.stdout.flush()
    return 0
