"""``workbench generate``: DiffusionSat images at a place and time, into the catalog.

``workbench generate --lat .. --lon .. --prompt ..`` generates with no verb; the verb
``train`` (``train_cli.py``) hangs off the same parser, and so do ``eval`` and ``seg-experiment``
(``experiments/cli.py``, added by the CLI registry). Stdlib only at import time:
torch loads only once every input has been checked.
"""

from __future__ import annotations

import argparse
import importlib
import secrets
import sys
from pathlib import Path

from workbench import paths
from workbench.errors import EXIT_USER_ERROR

EXAMPLES = """examples:
  workbench generate --lat 21.01 --lon 105.81 --prompt "a satellite image of a river delta"
  workbench generate --lat 21.01 --lon 105.81 --prompt "a satellite image of a river delta" \\
      --date 2015-06-15 --gsd 0.5 --cloud-cover 0.1 --steps 30 --guidance 7.5 --scheduler dpm --seed 7 --num-images 4
  workbench generate --model ~/diffusionsat_512 --size 512 --lat 48.86 --lon 2.35 \\
      --prompt "a fmow satellite image of a stadium in France"
  workbench generate --prompts prompts/river-deltas.yaml --model models/small --out generated/deltas
  workbench data list --source generated        the catalog rows they became
  workbench generate train --preset bluemarble-small      train the default model's recipe (see train --help)
  workbench generate eval --model latest                  location fidelity, water-fraction correlation
  workbench generate seg-experiment --n 512               segmentation on real vs real + generated tiles

Inputs are human units: degrees, metres per pixel (--gsd), a fraction (--cloud-cover), a
calendar day (--date; default: the model's, else today); the workbench does DiffusionSat's
metadata shift and scaling. The same --seed gives the same image (image k uses seed + k).
--model is a DiffusionSat folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/), e.g. a
released 256 or 512 px checkpoint; default: tasks/generation/default_model.

--prompts FILE.yaml generates prompts x places x dates:
  prompts: [a satellite image of a river delta, a satellite image of farmland]
  places:  [{name: red-river, lat: 21.01, lon: 105.81}, {name: mekong, lat: 10.0, lon: 106.3}]
  dates:   [2015-06-15, 2020-01-10]           # optional
  gsd: 10   cloud_cover: 0   seed: 0   num_images: 1   steps: 20   guidance: 7.5   size: 64   # optional
Flags given on the command line override the file.
"""

# Modules adding verbs to ``workbench generate`` (train), each with ``register(verbs, common)`` that
# sets its own ``func``; listed explicitly like the task registry, and imported for --help, so they
# too must import nothing heavy at module level. ``eval`` and ``seg-experiment`` use a segmentation
# model too: they are experiments' verbs, added by the CLI registry to the verbs ``register`` returns.
VERB_MODULES: tuple[str, ...] = ("tasks.generation.train_cli",)

SCHEDULER_CHOICES = ("ddim", "dpm", "euler", "pndm", "ddpm")
DEFAULTS = {"gsd": 1.0, "cloud_cover": 0.0, "steps": 20, "guidance": 7.5, "scheduler": "ddim", "num_images": 1}


def register(sub, common: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    # allow_abbrev=False: the verbs' own options (eval --n) must not read as abbreviations of ours
    p = sub.add_parser("generate", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       allow_abbrev=False,
                       help="generate georeferenced satellite images with DiffusionSat",
                       description="Generate satellite images from a prompt, a place and a date with a "
                                   "DiffusionSat model; write PNG + GeoTIFF and add them to the catalog.",
                       epilog=EXAMPLES)
    p.set_defaults(func=run_generate, subparser=p)
    what = p.add_argument_group("what to generate")
    what.add_argument("--prompt", help="text prompt, e.g. 'a satellite image of a river delta'")
    what.add_argument("--lat", type=float, metavar="DEG", help="latitude of the tile centre, -90..90")
    what.add_argument("--lon", type=float, metavar="DEG", help="longitude of the tile centre, -180..180")
    what.add_argument("--date", metavar="YYYY-MM-DD",
                      help="acquisition date (default: the model's, else today)")
    what.add_argument("--gsd", type=float, metavar="METRES",
                      help="ground sample distance, metres per pixel (default: the model's, else 1.0)")
    what.add_argument("--cloud-cover", type=float, metavar="0..1", help="cloud cover fraction (default 0)")
    what.add_argument("--prompts", metavar="FILE.yaml", help="a prompt set: prompts x places x dates")
    what.add_argument("--metadata-in-prompt", action="store_true",
                      help="also write the metadata into the prompt in words, as DiffusionSat's captions could")
    how = p.add_argument_group("how")
    how.add_argument("--model", metavar="DIR", help="DiffusionSat model folder (default: the workbench's)")
    how.add_argument("--steps", type=int, metavar="N", help="denoising steps (default: the model's, else 20)")
    how.add_argument("--guidance", type=float, metavar="G",
                     help="classifier-free guidance scale (default: the model's, else 7.5)")
    how.add_argument("--scheduler", choices=SCHEDULER_CHOICES, help="sampler (default: the model's, else ddim)")
    how.add_argument("--seed", type=int, metavar="S", help="random seed (default: a fresh one, printed)")
    how.add_argument("--num-images", type=int, metavar="K", help="images per prompt/place/date (default 1)")
    how.add_argument("--size", type=int, metavar="PX", help="image side in pixels (default: the model's)")
    how.add_argument("--device", default="auto", metavar="DEV", help="auto (cuda if present), cpu, cuda, cuda:1 ...")
    how.add_argument("--out", metavar="DIR", help="output folder (default: $WORKBENCH_HOME/generated/<time>)")
    how.add_argument("--no-progress", action="store_true", help="no progress bar")
    if VERB_MODULES:  # ``workbench generate VERB ...``; no verb means "generate"
        verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
        for module in VERB_MODULES:
            importlib.import_module(module).register(verbs, common)
        return verbs
    return None


def run_generate(args: argparse.Namespace) -> int:
    if args.prompt is None and args.prompts is None and args.lat is None and args.lon is None:
        args.subparser.print_help()
        return EXIT_USER_ERROR
    from .generate import Options, check_options, resolve_model

    jobs, file_opts = _jobs(args, {})  # input errors first, before looking at the model
    folder = resolve_model(args.model)
    if folder.defaults:  # the model's own gsd / cloud cover defaults (workbench.json)
        jobs, file_opts = _jobs(args, folder.defaults)
    opts = Options(**_options(args, file_opts, folder.defaults.get("sampling") or {}))
    check_options(opts, folder)
    return _run(args, jobs, folder, opts)


def _jobs(args: argparse.Namespace, model_defaults: dict):
    from workbench.errors import WorkbenchError

    from .jobs import load_prompt_set, single_job

    gsd_default = float(model_defaults.get("gsd", DEFAULTS["gsd"]))
    cloud_default = float(model_defaults.get("cloud_cover", DEFAULTS["cloud_cover"]))
    # A model trained on one acquisition date (Blue Marble: a 2004 composite) has never seen
    # another, so its own date is a better default than today.
    date_default = model_defaults.get("date")
    if args.prompts:
        if args.prompt or args.lat is not None or args.lon is not None:
            raise WorkbenchError("--prompts FILE.yaml replaces --prompt/--lat/--lon: give one or the other")
        return load_prompt_set(args.prompts, args.gsd, args.cloud_cover, args.date, gsd_default, cloud_default,
                               date_default)
    for flag, value in (("--prompt", args.prompt), ("--lat", args.lat), ("--lon", args.lon)):
        if value is None:
            raise WorkbenchError(f"{flag} is required (or --prompts FILE.yaml)")
    job = single_job(args.prompt, args.lat, args.lon, gsd_default if args.gsd is None else args.gsd,
                     cloud_default if args.cloud_cover is None else args.cloud_cover, args.date or date_default)
    return [job], {}


def _options(args: argparse.Namespace, file_opts: dict, model_sampling: dict | None = None) -> dict:
    """Each option from the command line, else the prompt set, else the model's own sampling
    defaults (``workbench.json``: steps, guidance, scheduler), else ``DEFAULTS``."""
    from workbench.errors import WorkbenchError

    model_sampling = {k: v for k, v in (model_sampling or {}).items() if k in ("steps", "guidance", "scheduler")}

    def pick(name: str, default=None):
        value = getattr(args, name)
        return value if value is not None else file_opts.get(name, model_sampling.get(name, default))

    opts = {name: pick(name, DEFAULTS.get(name)) for name in ("steps", "guidance", "scheduler", "num_images", "size")}
    if opts["scheduler"] not in SCHEDULER_CHOICES:
        raise WorkbenchError(f"scheduler {opts['scheduler']!r}: choose from {', '.join(SCHEDULER_CHOICES)}")
    seed = pick("seed")
    for key in ("steps", "num_images", "size", "seed"):
        value = seed if key == "seed" else opts[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise WorkbenchError(f"{key} {value!r}: must be a whole number")
    if isinstance(opts["guidance"], bool) or not isinstance(opts["guidance"], (int, float)):
        raise WorkbenchError(f"guidance {opts['guidance']!r}: must be a number")
    opts.update(seed=secrets.randbelow(2 ** 31) if seed is None else seed, progress=not args.no_progress,
                metadata_in_prompt=args.metadata_in_prompt, device=args.device,
                guidance=float(opts["guidance"]))
    return opts


def _run(args: argparse.Namespace, jobs, folder, opts) -> int:
    from .generate import default_out_dir, run

    out_dir = Path(args.out) if args.out else default_out_dir()
    outputs = run(jobs, folder, opts, out_dir=out_dir, catalog=args.catalog,
                  log=lambda line: print(line, file=sys.stderr, flush=True))
    print(_table(outputs))
    print(f"{len(outputs)} image(s) as PNG + GeoTIFF in {out_dir}; catalog rows (source generated) "
          f"added to {args.catalog or paths.default_catalog()}")
    return 0


def _table(outputs) -> str:
    rows = [("id", "png", "place", "date", "seed")]
    for o in outputs:
        rows.append((str(o.tile_id), _short(o.png), o.job.place, o.job.metadata.date.isoformat(), str(o.seed)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
