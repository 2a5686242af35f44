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
