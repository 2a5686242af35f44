"""A tiny folder-imported catalog and the flags that train a segmentation preset on it in seconds."""

from __future__ import annotations

import zlib
from pathlib import Path

from tests.support.rasters import write_pair

SIZE = 32
FAST = ["--source", "folder", "--set", f"data.window={SIZE}", "--set", "train.max_steps=2",
        "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8",
        "--set", "train.log_every_steps=1"]


def make_catalog(home: Path, cli, counts=(6, 2, 2)) -> None:
    for split, n in zip(("train", "val", "test"), counts):
        folder = home / "in" / split
        folder.mkdir(parents=True)
        for i in range(n):
            write_pair(folder, f"{split}{i}", size=SIZE, seed=zlib.crc32(f"{split}{i}".encode()) % 1000,
                       origin=(500_000.0 + 1000 * i, 4_650_000.0))
        code, out, err = cli("data", "import", folder, "--split", split, "--no-progress")
        assert code == 0, err


def run_dir_of(out: str) -> Path:
    return Path(out.strip().splitlines()[-1])
