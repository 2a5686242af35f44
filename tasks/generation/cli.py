"""Every verb of ``workbench generate``: DiffusionSat images at a place and time, into the catalog.

``workbench generate --lat .. --lon .. --prompt ..`` generates with no verb (``predict.py``);
``workbench generate train`` fine-tunes a model (``train.py``). The verbs ``eval`` and
``seg-experiment`` also score with a segmentation model, so they are experiments' verbs
(``experiments/cli.py``), added by the CLI registry to the verbs ``register`` returns. A
trained model is named by ``--run RUN`` (a generation run: name, unique prefix or ``latest``)
or ``--model DIR`` (a DiffusionSat folder; it still accepts a run, as before ``--run``).
Stdlib only at import time: torch loads only once every input has been checked.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
from pathlib import Path

from workbench import paths
from workbench.commands.train_verb import add_train_verb, finish_train, train_config
from workbench.data.query_args import QUERY_HELP, query_from_args
from workbench.errors import EXIT_USER_ERROR

EXAMPLES = """examples:
  workbench generate --lat 21.01 --lon 105.81 --prompt "a satellite image of a river delta"
  workbench generate --lat 21.01 --lon 105.81 --prompt "a satellite image of a river delta" \\
      --date 2015-06-15 --gsd 0.5 --cloud-cover 0.1 --steps 30 --guidance 7.5 --scheduler dpm --seed 7 --num-images 4
  workbench generate --model ~/diffusionsat_512 --size 512 --lat 48.86 --lon 2.35 \\
      --prompt "a fmow satellite image of a stadium in France"
  workbench generate --prompts prompts/river-deltas.yaml --model models/small --out generated/deltas
  workbench generate --run latest --lat 21.0 --lon 105.8 --prompt "a satellite image of vegetated land"
  workbench data list --source generated        the catalog rows they became
  workbench generate train --preset bluemarble-small      train the default model's recipe (see train --help)
  workbench generate eval --run latest                    location fidelity, water-fraction correlation
  workbench generate seg-experiment --n 512               segmentation on real vs real + generated tiles

Inputs are human units: degrees, metres per pixel (--gsd), a fraction (--cloud-cover), a
calendar day (--date; default: the model's, else today); the workbench does DiffusionSat's
metadata shift and scaling. The same --seed gives the same image (image k uses seed + k).
--model is a DiffusionSat folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/), e.g. a
released 256 or 512 px checkpoint; default: tasks/generation/default_model. --run RUN uses the
model a `workbench generate train` run made (its name, a unique prefix, or latest).

--prompts FILE.yaml generates prompts x places x dates:
  prompts: [a satellite image of a river delta, a satellite image of farmland]
  places:  [{name: red-river, lat: 21.01, lon: 105.81}, {name: mekong, lat: 10.0, lon: 106.3}]
  dates:   [2015-06-15, 2020-01-10]           # optional
  gsd: 10   cloud_cover: 0   seed: 0   num_images: 1   steps: 20   guidance: 7.5   size: 64   # optional
Flags given on the command line override the file.
"""


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
                      help="acquisition date (default: the model's, else today); 'unknown' gives the zero "
                           "date DiffusionSat trained some places with")
    what.add_argument("--gsd", type=float, metavar="METRES",
                      help="ground sample distance, metres per pixel (default: the model's, else 1.0)")
    what.add_argument("--cloud-cover", type=float, metavar="0..1", help="cloud cover fraction (default 0)")
    what.add_argument("--prompts", metavar="FILE.yaml", help="a prompt set: prompts x places x dates")
    what.add_argument("--metadata-in-prompt", action="store_true",
                      help="also write the metadata into the prompt in words, as DiffusionSat's captions could")
    how = p.add_argument_group("how")
    model = how.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="DIR", help="DiffusionSat model folder (default: the workbench's)")
    model.add_argument("--run", metavar="RUN",
                       help="the model of a generation run (its name, a unique prefix, or latest)")
    how.add_argument("--steps", type=int, metavar="N", help="denoising steps (default: the model's, else 20)")
    how.add_argument("--guidance", type=float, metavar="G",
                     help="classifier-free guidance scale (default: the model's, else 7.5)")
    how.add_argument("--scheduler", choices=SCHEDULER_CHOICES, help="sampler (default: the model's, else ddim)")
    how.add_argument("--seed", type=int, metavar="S", help="random seed (default: a fresh one, printed)")
    how.add_argument("--num-images", type=int, metavar="K", help="images per prompt/place/date (default 1)")
    how.add_argument("--size", type=int, metavar="PX", help="image side in pixels (default: the model's)")
    how.add_argument("--device", default="auto", metavar="DEV", help="auto (cuda if present), cpu, cuda, cuda:1 ...")
    how.add_argument("--batch-size", type=int, default=8, metavar="N",
                     help="images made at once (default 8; memory grows with it, not with --num-images)")
    how.add_argument("--out", metavar="DIR|FILE.png",
                     help="output folder (default: $WORKBENCH_HOME/generated/<time>); for one image, a file name "
                          "(its .png and .tif side by side)")
    how.add_argument("--no-progress", action="store_true", help="no progress bar")
    # ``workbench generate VERB ...``; no verb means "generate"
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    register_train(verbs, common)
    return verbs


def run_generate(args: argparse.Namespace) -> int:
    if args.prompt is None and args.prompts is None and args.lat is None and args.lon is None:
        args.subparser.print_help()
        return EXIT_USER_ERROR
    from .predict import Options, check_options
    from .run import resolve_model

    jobs, file_opts = _jobs(args, {})  # input errors first, before looking at the model
    folder = resolve_model(args.model, args.run)
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
                guidance=float(opts["guidance"]), batch_size=args.batch_size)
    return opts


def _run(args: argparse.Namespace, jobs, folder, opts) -> int:
    from .predict import default_out_dir, generate

    out_dir = Path(args.out) if args.out else default_out_dir()
    outputs = generate(jobs, folder, opts, out_dir=out_dir, catalog=args.catalog,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    print(_table(outputs))
    where = out_dir.parent if out_dir.suffix.lower() in (".png", ".tif", ".tiff") else out_dir
    print(f"{len(outputs)} image(s) as PNG + GeoTIFF in {where}; catalog rows (source generated) "
          f"added to {args.catalog or paths.default_catalog()}")
    return 0


def _table(outputs) -> str:
    rows = [("id", "png", "place", "date", "seed")]
    for o in outputs:
        rows.append((str(o.tile_id), _short(o.png), o.job.place, o.job.metadata.day, str(o.seed)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ generate train

TRAIN_EXAMPLES = """examples:
  workbench generate train                                  preset 'bluemarble-small': the default model's recipe
  workbench generate train --preset bluemarble-small --export tasks/generation/default_model
                                                            ... and install it as the default model
  workbench generate train --init tiny --set train.max_steps=50 --set vae.enabled=false   a quick smoke run
  workbench generate train --preset finetune --model ~/diffusionsat_256 --source folder --set data.size=256
  workbench generate train --run latest --set train.max_steps=2000 --where "lat > 0"
  workbench generate train --resume generation-bluemarble-small-20250101-120000
  workbench generate --run latest --lat 21.0 --lon 105.8 --prompt "a satellite image of vegetated land"
  workbench generate eval --run latest                       location fidelity and water-fraction correlation

The VAE and the text encoder stay frozen; the SatUNet trains with the objective its scheduler
names (epsilon or v; the default preset: v with zero terminal SNR), min-SNR weights
(model.min_snr_gamma, 5 unless set; the default preset: none), EMA, metadata dropout 0.1 per value,
caption dropout 0.1, gradient checkpointing on a GPU, and bf16 where the hardware has it
(train.mixed_precision: auto, which both presets use). Captions come from a template in
prompts/captions/ (data.captions: bluemarble, fmow, or a YAML path). A fresh model (--init, or
model.init in the preset) with vae.enabled first fits its VAE to the tiles: a run of its own,
runs/generation-<name>-vae-<time>, then the UNet run. The UNet run folder (printed last) gets
config.yaml, generation.json, captions.json, caption_template.yaml, tiles.json, checkpoints/ and
model/: a complete DiffusionSat folder (EMA weights) for `workbench generate --run RUN`.
--resume RUN continues exactly where RUN stopped (a VAE-stage run goes on to the UNet stage).
Presets: {presets}

""" + QUERY_HELP


def _presets() -> list[str]:
    from .config import list_presets

    return list_presets()


def register_train(verbs, common: argparse.ArgumentParser) -> None:
    """``workbench generate train``."""
    v = add_train_verb(verbs, common, default="bluemarble-small", task_dir="tasks/generation", func=run_train,
                       help="fine-tune a DiffusionSat model on catalog tiles",
                       description="Train the SatUNet of a DiffusionSat model (a folder, or a fresh miniature "
                                   "one) on the tiles the filters select.",
                       epilog=TRAIN_EXAMPLES.format(presets=", ".join(_presets())))
    start = v.add_mutually_exclusive_group()
    start.add_argument("--model", metavar="DIR", help="fine-tune this DiffusionSat folder (or a generation run)")
    start.add_argument("--run", metavar="RUN", help="fine-tune the model of this generation run (name, unique "
                                                    "prefix, or latest)")
    start.add_argument("--init", choices=("tiny", "small"), help="start from a fresh miniature model")
    v.add_argument("--export", metavar="DIR", help="also copy the trained model folder to DIR (replaces a model "
                                                   "folder there), e.g. tasks/generation/default_model")
    v.add_argument("--no-progress", action="store_true", help="no progress bar while encoding tiles")
    v.set_defaults(verb_parser=v)


def command_line(args: argparse.Namespace, query: dict) -> str:
    """The command as a user would retype it (recorded in the run and in the model folder)."""
    parts = ["workbench", "generate", "train"]
    if args.preset:
        parts += ["--preset", args.preset]
    if args.model:
        parts += ["--model", args.model]
    if args.run:
        parts += ["--run", args.run]
    if args.init:
        parts += ["--init", args.init]
    for o in args.overrides or []:
        parts += ["--set", o]
    if args.name:
        parts += ["--name", args.name]
    if args.resume:
        parts += ["--resume", args.resume]
    for key, value in query.items():
        flag = f"--{key.replace('_', '-')}"
        if key == "bbox":
            parts += [flag, *(f"{x:g}" for x in value)]
        else:
            parts += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    if args.catalog:
        parts += ["--catalog", args.catalog]
    if args.catalog_immutable:
        parts += ["--catalog-immutable"]
    if args.export:
        parts += ["--export", args.export]
    return shlex.join(parts)


def run_train(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError

    from .config import PRESETS
    from .train import resolve_resume_config, train

    if args.resume and (args.model or args.run or args.init):
        raise WorkbenchError("--resume continues a run with its own config: drop --model/--run/--init (use --set)")
    start = argparse.Namespace(**vars(args))   # --model / --run / --init are config overrides under the hood
    start.overrides = list(args.overrides or [])
    if args.run:   # the run's model folder, resolved now: the config records where it was
        from .run import load_run

        start.overrides += [f"model.path={load_run(args.run).root.resolve()}", "model.init=", "vae.enabled=false"]
    if args.model:
        start.overrides += [f"model.path={args.model}", "model.init=", "vae.enabled=false"]
    if args.init:
        start.overrides += [f"model.init={args.init}", "model.path="]
    cfg = train_config(start, PRESETS, resolve_resume_config)
    query = query_from_args(args)
    summary = train(cfg, resume=args.resume, catalog=args.catalog, query_override=query, export=args.export,
                    command=command_line(args, query), progress=not args.no_progress,
                    catalog_immutable=args.catalog_immutable)
    return finish_train(args, summary)

