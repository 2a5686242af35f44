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

A preset describes a recipe, not a dataset: its ``data.source`` + ``data.where`` are only its
DEFAULT dataset (``water``: Blue Marble, coastal tiles). A command line that selects a dataset
(``--source``, ``--where``, ``--set data.source=...`` or ``--set data.where=...``) replaces that
default as a whole, so ``segment train --source folder`` trains on every folder tile, not on
the folder tiles that happen to pass a Blue-Marble-only ``where`` (``drop_default_dataset``).

Stdlib only: task CLIs import it at ``--help`` time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from workbench.commands import add_catalog_immutable, add_verb
from workbench.data.query_args import add_query_args, filters_as_sql, query_from_args
from workbench.errors import WorkbenchError

# Filters the train verbs take that are not recorded in ``data``: ``--split`` is refused by every
# train() (tiles come from data.train_split / val_split / test_split), and ``--limit`` has no
# config key in the tasks' data sections (it stays a command-line cap).
NOT_FOLDED = ("split", "limit")
# The config keys (and command-line filters) that choose a dataset rather than narrow one.
DATASET_KEYS = ("source", "where")


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
    add_catalog_immutable(v)  # training only reads the catalog: every rank opens it read-only
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
    set_keys = {o.split("=", 1)[0].strip() for o in overrides}
    fold_query(cfg, query_from_args(args) if hasattr(args, "where") else {},
               default_dataset=not args.resume, set_keys=set_keys)
    if getattr(args, "print_config", False):
        print_config(cfg)
        raise SystemExit(0)
    return cfg


def drop_default_dataset(cfg: Any, query: dict[str, Any], set_keys: set[str] | frozenset = frozenset()) -> bool:
    """When the command line selects a dataset, forget the preset's: ``data.source`` and
    ``data.where`` not given with ``--set`` become None (any source, no condition), before the
    command line's ``--source`` / ``--where`` are folded in. Returns whether it dropped them.

    Why as a whole: a preset's ``where`` is written for its own dataset (``water``'s picks
    Blue Marble's coastal tiles and its ``extra.depth``); kept under ``--source folder`` it
    silently trains on whichever folder tiles happen to pass it. ``--set data.source=null``
    is then no longer needed (and still harmless). Narrowing filters (``--label``, ``--bbox``,
    ``--water-min`` ...) do not select a dataset: they are AND-ed onto the preset's as before."""
    data = getattr(cfg, "data", None)
    chosen = {k for k in DATASET_KEYS if query.get(k) is not None} | {
        k for k in DATASET_KEYS if f"data.{k}" in set_keys}
    if not chosen or data is None or not all(hasattr(data, k) for k in DATASET_KEYS):
        return False
    for key in DATASET_KEYS:
        if f"data.{key}" not in set_keys:
            setattr(data, key, None)
    return True


def fold_query(cfg: Any, query: dict[str, Any], default_dataset: bool = True,
               set_keys: set[str] | frozenset = frozenset()) -> Any:
    """Record the command line's tile filters in ``cfg.data`` (changed in place, and returned).

    With ``default_dataset`` (a preset's config; not a resumed run's own) a dataset chosen on
    the command line first replaces the preset's whole selection (``drop_default_dataset``;
    ``set_keys``: the keys given with ``--set``). Then the result selects exactly the tiles
    train() selects from ``cfg`` plus ``query_override`` (``workbench.data.catalog.run_query``):
    ``--source`` and ``--where`` replace ``data.source`` and ``data.where`` (they do in train()
    too: ``--where`` is not AND-ed with the preset's), and the other filters (``--label
    --pred-label --bbox --water-min --water-max --date-from --date-to``) are AND-ed onto
    ``data.where`` as the SQL the catalog runs for them. train() still receives
    ``query_override``; its filters then only repeat what ``data`` holds. ``--split`` and
    ``--limit`` are left to train() (``NOT_FOLDED``)."""
    folded = {k: v for k, v in query.items() if k not in NOT_FOLDED and v is not None}
    if default_dataset:
        drop_default_dataset(cfg, folded, set_keys)
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
