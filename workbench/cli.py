"""``workbench <command> <verb>``: the one entry point.

Command modules are listed explicitly below (platform commands, then the task
registry with the experiment verbs each task command carries) and only build argparse
parsers at import time; anything heavy (torch,
rasterio) is imported inside the verb that needs it, so ``workbench --help``
answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
from collections.abc import Sequence

from workbench.errors import EXIT_USER_ERROR, WorkbenchError
from workbench.tasks_registry import EXPERIMENT_VERBS, TASK_COMMANDS

PLATFORM_COMMANDS = (
    "workbench.commands.data",
    "workbench.commands.runs",
    "workbench.commands.ee",
)

EPILOG = """examples:
  workbench data bluemarble                 build the offline default catalog (Blue Marble + GSHHS water)
  workbench data stats                      tiles per source / split / label
  workbench data list --split test --where "water_fraction BETWEEN 0.3 AND 0.7" --json
  workbench runs list                       every run under runs/
  workbench runs compare RUN_A RUN_B        metrics side by side and the config keys that differ
  workbench segment train --preset water    train, pick a threshold on val, score the test split
  workbench segment predict --run latest --input scene.tif --out mask.tif
  workbench classify train                  water / coast / land tile classifier, scored on the test split
  workbench classify predict --run latest   predicted label + score for every tile, into the catalog
  workbench generate --lat 21.01 --lon 105.81 --prompt "a satellite image of a river delta"
  workbench ee export --point 105.85 21.03 --radius 5000 --start 2023-01-01 --end 2023-03-31 --out data/ee-hanoi
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def common_options() -> argparse.ArgumentParser:
    """Options every verb takes (a parent parser, so they go after the verb)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--catalog", metavar="PATH",
                        help="catalog database (default: $WORKBENCH_HOME/data/catalog.sqlite)")
    return parent


def build_parser() -> Parser:
    parser = Parser(prog="workbench", description="Satellite-vision workbench: tiles, training runs, "
                    "segmentation, classification and DiffusionSat generation.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from workbench import __version__
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    common = common_options()
    for module in PLATFORM_COMMANDS:
        importlib.import_module(module).register(sub, common)
    for command, module in TASK_COMMANDS.items():
        verbs = importlib.import_module(module).register(sub, common)
        for extra in EXPERIMENT_VERBS.get(command, ()):
            if verbs is None:
                raise RuntimeError(f"{module}.register returned no verbs for {extra} to add to")
            importlib.import_module(extra).register(verbs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; a user error is one line and exit 2, and a reader that stops reading
    (``workbench data list --json | head -1``) ends the command quietly with exit 0."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        # The reader has what it wanted. Point stdout at /dev/null so the exit-time flush of
        # whatever is still buffered cannot raise again (the recipe in Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        (getattr(args, "subparser", None) or parser).print_help()
        return 0 if args.command is None else EXIT_USER_ERROR
    try:
        return int(func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, sqlite3.DatabaseError, MemoryError) as exc:
        if os.environ.get("WORKBENCH_DEBUG") == "1" or isinstance(exc, BrokenPipeError):
            raise
        print(f"workbench: error: {environment_error(exc, args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def environment_error(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for what the machine or its files refused (a full disk, a path under a file, a
    read-only folder, a damaged catalog, memory): those are the user's to fix, not bugs, so they
    name the file and the reason instead of a traceback (``WORKBENCH_DEBUG=1`` shows it)."""
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller --batch-size or --window, or fewer images at once"
    if isinstance(exc, sqlite3.DatabaseError):
        from workbench import paths

        where = getattr(args, "catalog", None) or paths.default_catalog()
        return f"{where}: catalog database error ({exc}); nothing more was written"
    assert isinstance(exc, OSError)
    name = exc.filename if exc.filename is not None else "a file"
    other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{name}{other}: {exc.strerror or exc}"
