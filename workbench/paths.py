"""Where the workbench keeps its state.

Everything lives under one home directory so a project folder is self-contained:
``$WORKBENCH_HOME`` if set, else the current working directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME") or os.getcwd())


def data_dir() -> Path:
    return home() / "data"


def default_catalog() -> Path:
    return data_dir() / "catalog.sqlite"


def runs_dir() -> Path:
    return home() / "runs"
