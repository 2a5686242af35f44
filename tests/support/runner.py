"""Run the real console entry point in a subprocess, as a user types it."""

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


def help_in_a_fresh_process(argvs: list[list[str]], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Print each ``workbench ARGV`` help in one fresh interpreter, which fails if any module of
    ``forbidden`` got imported on the way: ``--help`` must stay instant."""
    code = ("import sys; from workbench.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
            f"heavy = [m for m in {tuple(forbidden)!r} if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
