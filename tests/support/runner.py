"""Run the real console entry point: in a subprocess, as a user types it, or in this process
(the same ``workbench.cli.main``, without a fresh interpreter's torch import per command) for
end-to-end tests that run many commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_workbench(*args: str, env: dict | None = None, cwd: Path | None = None,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (what a user types)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


def run_in_process(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``workbench ARGS`` through ``workbench.cli.main`` here, with ``$WORKBENCH_HOME`` = ``home``
    and the working folder ``cwd`` for the call; stdout and stderr captured, both restored after."""
    import contextlib
    import io

    from workbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_home, old_cwd = os.environ.get("WORKBENCH_HOME"), os.getcwd()
    os.environ["WORKBENCH_HOME"] = str(home)
    try:
        os.chdir(cwd or home)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse exits
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old_cwd)
        if old_home is None:
            os.environ.pop("WORKBENCH_HOME", None)
        else:
            os.environ["WORKBENCH_HOME"] = old_home
    return subprocess.CompletedProcess(["workbench", *map(str, args)], code, out.getvalue(), err.getvalue())


def help_in_a_fresh_process(argvs: list[list[str]], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Print each ``workbench ARGV`` help in one fresh interpreter, which fails if any module of
    ``forbidden`` got imported on the way: ``--help`` must stay instant."""
    code = ("import sys; from workbench.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
            f"heavy = [m for m in {tuple(forbidden)!r} if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def import_pairs(home: Path, cli, count: int) -> Path:
    """``count`` small tile/mask pairs in ``home/in``, imported into the home's catalog as train
    tiles through the CLI (``cli`` is the fixture); returns the catalog's path."""
    from tests.support.rasters import write_pair

    folder = home / "in"
    folder.mkdir()
    for i in range(count):
        write_pair(folder, f"t{i}", size=16, seed=i, origin=(500_000.0 + 1000 * i, 4_650_000.0))
    assert cli("data", "import", folder, "--split", "train", "--no-progress")[0] == 0
    return home / "data" / "catalog.sqlite"
