"""``workbench generate train``: fine-tune a DiffusionSat model on catalog tiles.

Stdlib only at import time (``workbench --help`` stays instant).
"""

from __future__ import annotations

import argparse
import shlex

from workbench.commands.train_verb import add_train_verb, finish_train, train_config
from workbench.data.query_args import QUERY_HELP, query_from_args


TRAIN_EXAMPLES = """examples:
  workbench generate train                                  preset 'bluemarble-small': the default model's recipe
  workbench generate train --preset bluemarble-small --export tasks/generation/default_model
                                                            ... and install it as the default model
  workbench generate train --init tiny --set train.max_steps=50 --set vae.enabled=false   a quick smoke run
  workbench generate train --preset finetune --model ~/diffusionsat_256 --source folder --set data.size=256
  workbench generate train --model latest --set train.max_steps=2000 --where "lat > 0"
  workbench generate train --resume generation-bluemarble-small-20250101-120000
  workbench generate --model latest --lat 21.0 --lon 105.8 --prompt "a satellite image of vegetated land"
  workbench generate eval --model latest                     location fidelity and water-fraction correlation

The VAE and the text encoder stay frozen; the SatUNet trains with the objective its scheduler
names (epsilon or v; the default preset: v with zero terminal SNR), min-SNR weights
(model.min_snr_gamma, 5 unless set; the default preset: none), EMA, metadata dropout 0.1 per value, caption dropout 0.1, gradient
checkpointing on a GPU, and bf16 where the hardware has it (train.mixed_precision: auto; the
default preset pins fp32, as its committed model was trained). Captions come from a template in
prompts/captions/ (data.captions: bluemarble, fmow, or a YAML path). A fresh model (--init, or
model.init in the preset) with vae.enabled first fits its VAE to the tiles: a run of its own,
runs/generation-<name>-vae-<time>, then the UNet run. The UNet run folder (printed last) gets
config.yaml, generation.json, captions.json, caption_template.yaml, tiles.json, checkpoints/ and
model/: a complete DiffusionSat folder (EMA weights) for `workbench generate --model`.
--resume RUN continues exactly where RUN stopped (a VAE-stage run goes on to the UNet stage).
Presets: {presets}

""" + QUERY_HELP


def _presets() -> list[str]:
    from .config import list_presets

    return list_presets()


def register(verbs, common: argparse.ArgumentParser) -> None:
    v = add_train_verb(verbs, common, default="bluemarble-small", task_dir="tasks/generation", func=run_train,
                       help="fine-tune a DiffusionSat model on catalog tiles",
                       description="Train the SatUNet of a DiffusionSat model (a folder, or a fresh miniature "
                                   "one) on the tiles the filters select.",
                       epilog=TRAIN_EXAMPLES.format(presets=", ".join(_presets())))
    start = v.add_mutually_exclusive_group()
    start.add_argument("--model", metavar="DIR", help="fine-tune this DiffusionSat folder (or a generation run)")
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
    if args.export:
        parts += ["--export", args.export]
    return shlex.join(parts)


def run_train(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError

    from .config import PRESETS
    from .train import run_table, train

    if args.resume and (args.model or args.init):
        raise WorkbenchError("--resume continues a run with its own config: drop --model/--init (use --set)")
    start = argparse.Namespace(**vars(args))   # --model / --init are config overrides under the hood
    start.overrides = list(args.overrides or [])
    if args.model:
        start.overrides += [f"model.path={args.model}", "model.init=", "vae.enabled=false"]
    if args.init:
        start.overrides += [f"model.init={args.init}", "model.path="]
    cfg = train_config(start, PRESETS, resume_config)
    query = query_from_args(args)
    summary = train(cfg, resume=args.resume, catalog=args.catalog, query_override=query, export=args.export,
                    command=command_line(args, query), progress=not args.no_progress)
    print(run_table(summary))
    return finish_train(args, summary)


def resume_config(run: str, overrides: list[str]):
    from workbench.config import deep_merge, parse_overrides
    from workbench.train.run_dir import RunDir

    from .config import config_from_dict

    return config_from_dict(deep_merge(RunDir.open(run).read_config(), parse_overrides(overrides)))
