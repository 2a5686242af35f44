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


def cache_dir() -> Path:
    """Where derived files go when the data folder may not be written (a catalog on read-only
    shared storage): ``$WORKBENCH_CACHE``, else the user's cache folder (XDG)."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "satellite-workbench"
