"""What the many-scene batch tests of every task share: the scenes, launching ranks, and a
folder's files compared across runs (bytes, inode, mtime: a file "kept" was not written again)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tests.support import sentinel2 as s2
from tests.support.runner import ROOT

N_SCENES = 4


def write_scenes(folder: Path, n: int = N_SCENES, size: int = 128) -> list[Path]:
    """``n`` Sentinel-2-like DN scenes of ``size`` px, each its own ground (seeds 10, 11, ...)."""
    return [s2.write_dn_geotiff(folder / f"scene{i}.tif", s2.ground(size, seed=10 + i)) for i in range(n)]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``folder``: bytes, inode, mtime."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(home: Path) -> dict:
    """The environment of a launched rank: this checkout importable, one OpenMP thread, ``home``."""
    return {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher]


def accelerate_launch(*launcher: str) -> list[str]:
    """``accelerate launch`` of this interpreter's accelerate (its console script beside it)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher]
