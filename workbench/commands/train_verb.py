"""The ``train`` verb every task has: the same options, the same config resolution, the same ending.

    v = add_train_verb(verbs, common, presets=PRESETS_NAMES, default="water", help=..., epilog=...)
    cfg = train_config(args, PRESETS, resolve_resume_config)
    ... summary = train(cfg, ...)
    return finish_train(args, summary)

Stdlib only: task CLIs import it at ``--help`` time.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from workbench.commands import add_verb
from workbench.data.query_args import add_query_args
from workbench.errors import WorkbenchError


def add_train_verb(verbs, common: argparse.ArgumentParser, *, default: str, task_dir: str, func: Callable,
                   query: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    """``--preset --set --name --resume --json`` (and the tile filters) on a ``train`` verb."""
    v = add_verb(verbs, "train", common, **kwargs)
    v.add_argument("--preset", default=None, metavar="NAME",
                   help=f"preset name ({task_dir}/presets) or a YAML file (default: {default})")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. train.lr=3e-4 (repeatable)")
    v.add_argument("--name", help="run name (default: the config's name)")
    v.add_argument("--resume", metavar="RUN", help="continue a run exactly from its last checkpoint")
    v.add_argument("--json", action="store_true", help="print the run summary as JSON before the run folder")
    if query:
        add_query_args(v)
    v.set_defaults(func=func)
    return v


def train_config(args: argparse.Namespace, presets: Any, resume_config: Callable) -> Any:
    """The preset plus ``--set`` (and ``--name``); with ``--resume``, the run's own config plus ``--set``."""
    overrides = list(args.overrides or [])
    if args.name:
        overrides.append(f"name={args.name}")
    if args.resume:
        if args.preset:
            raise WorkbenchError("--resume continues a run with its own config: drop --preset (use --set)")
        return resume_config(args.resume, overrides)
    return presets.load(args.preset, overrides)


def finish_train(args: argparse.Namespace, summary: dict) -> int:
    """Print the summary JSON if asked, then the run folder as the last stdout line (scripts read it)."""
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "test"}, default=str))
    if summary.get("run_dir"):
        print(summary["run_dir"])
    sys.stdout.flush()
    return 0
