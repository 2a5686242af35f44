"""The ``train`` verb every task has: the same options, the same config resolution, the same ending.

    v = add_train_verb(verbs, common, default="water", task_dir="tasks/segmentation", func=run_train, ...)
    cfg = train_config(args, PRESETS, resolve_resume_config)
    ... summary = train(cfg, ..., query_override=query_from_args(args))
    return finish_train(args, summary)

``train_config`` is where a run's config becomes complete: the preset (or the resumed run's
``config.yaml``), ``--set``, ``--name`` (checked here, before any work, so a name that cannot
be a folder fails at once), and the tile filters of the command line folded into ``data``,
so the ``config.yaml`` the run writes selects the same tiles on its own and ``runs compare``
shows a differing ``--where``. ``--print-config`` prints that config and stops.

Stdlib only: task CLIs import it at ``--help`` time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from workbench.commands import add_verb
from workbench.data.query_args import add_query_args, filters_as_sql, query_from_args
from workbench.errors import WorkbenchError

# Filters the train verbs take that are not recorded in ``data``: ``--split`` is refused by every
# train() (tiles come from data.train_split / val_split / test_split), and ``--limit`` has no
# config key in the tasks' data sections (it stays a command-line cap).
NOT_FOLDED = ("split", "limit")


def add_train_verb(verbs, common: argparse.ArgumentParser, *, default: str, task_dir: str, func: Callable,
                   query: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    """``--preset --set --name --resume --json --print-config`` (and the tile filters) on a ``train`` verb."""
    v = add_verb(verbs, "train", common, **kwargs)
    v.add_argument("--preset", default=None, metavar="NAME",
                   help=f"preset name ({task_dir}/presets) or a YAML file (default: {default})")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. train.lr=3e-4 (repeatable)")
    v.add_argument("--name", help="run name, kept as given in the run folder runs/<task>-<name>-<time> "
                                  "(default: the config's name)")
    v.add_argument("--resume", metavar="RUN", help="continue a run exactly from its last checkpoint")
    v.add_argument("--json", action="store_true", help="print the run summary as JSON before the run folder")
    v.add_argument("--print-config", action="store_true",
                   help="print the resolved config (tile filters included) as YAML and exit; "
                        "opens no catalog and trains nothing")
    if query:
        add_query_args(v)
    v.set_defaults(func=func)
    return v


def train_config(args: argparse.Namespace, presets: Any, resume_config: Callable) -> Any:
    """The preset plus ``--set`` (and ``--name``); with ``--resume``, the run's own config plus ``--set``;
    then the command line's tile filters folded into ``data`` (see ``fold_query``).

    With ``--print-config`` it prints the result as YAML and exits with status 0 (``SystemExit``,
    as ``--help`` does), before the task opens a catalog."""
    from workbench.train.run_dir import check_run_name

    if args.name is not None:
        check_run_name(args.name, "--name")
    overrides = list(args.overrides or [])
    if args.name:
        overrides.append(f"name={args.name}")
    if args.resume:
        if args.preset:
            raise WorkbenchError("--resume continues a run with its own config: drop --preset (use --set)")
        cfg = resume_config(args.resume, overrides)
    else:
        cfg = presets.load(args.preset, overrides)
    if isinstance(getattr(cfg, "name", None), str):
        check_run_name(cfg.name, "name")
    fold_query(cfg, query_from_args(args) if hasattr(args, "where") else {})
    if getattr(args, "print_config", False):
        print_config(cfg)
        raise SystemExit(0)
    return cfg


def fold_query(cfg: Any, query: dict[str, Any]) -> Any:
    """Record the command line's tile filters in ``cfg.data`` (changed in place, and returned).

    The result selects exactly the tiles train() selects from ``cfg`` plus ``query_override``
    (``workbench.data.catalog.run_query``): ``--source`` and ``--where`` replace ``data.source``
    and ``data.where`` (they do in train() too: ``--where`` is not AND-ed with the preset's), and
    the other filters (``--label --pred-label --bbox --water-min --water-max --date-from
    --date-to``) are AND-ed onto ``data.where`` as the SQL the catalog runs for them. train()
    still receives ``query_override``; its filters then only repeat what ``data`` holds.
    ``--split`` and ``--limit`` are left to train() (``NOT_FOLDED``)."""
    folded = {k: v for k, v in query.items() if k not in NOT_FOLDED and v is not None}
    if not folded:
        return cfg
    data = getattr(cfg, "data", None)
    if data is None or not hasattr(data, "source") or not hasattr(data, "where"):
        raise WorkbenchError("this task's config has no data.source / data.where to record the tile filters in")
    from workbench.data.catalog import run_query

    q = run_query(data.source, data.where, {k: folded[k] for k in ("source", "where") if k in folded})
    if "source" in folded:
        source = q.get("source")
        data.source = source if source is None or isinstance(source, str) else ",".join(source)
    extra = filters_as_sql({k: v for k, v in folded.items() if k not in ("source", "where")})
    where = q.get("where")
    data.where = where if not extra else extra if not where else f"({where}) AND {extra}"
    return cfg


def print_config(cfg: Any) -> None:
    """The resolved config as the YAML a run's ``config.yaml`` holds."""
    import dataclasses

    import yaml

    from workbench.config import to_dict

    tree = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    sys.stdout.write(yaml.safe_dump(tree, sort_keys=False))
    sys.stdout.flush()


def finish_train(args: argparse.Namespace, summary: dict) -> int:
    """Print the summary JSON if asked, then the run folder as the last stdout line (scripts read it)."""
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "test"}, default=str))
    if summary.get("run_dir"):
        print(summary["run_dir"])
    sys.stdout.flush()
    return 0
