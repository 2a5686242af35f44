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


def trained_on_scene(home: Path, *train_args: str, steps: int = 3):
    """A run trained (water preset, a few steps) on a 256 px Sentinel-2-like scene (DN GeoTIFF +
    mask) cut into 64 px chips under ``home``; returns (run folder, cli) where ``cli(*args)`` runs the
    entry point there (in this process: these tests run dozens of commands) and gives (exit
    code, stdout, stderr)."""
    from tests.support import sentinel2 as s2
    from tests.support.runner import run_in_process

    def cli(*args):
        p = run_in_process(*args, home=home)
        return p.returncode, p.stdout, p.stderr

    g = s2.ground(256, seed=0)
    scene = s2.write_dn_geotiff(home / "scene.tif", g)
    mask = s2.write_mask(home / "scene_mask.tif", g)
    code, out, err = cli("data", "import", scene, "--mask", mask, "--chip-size", "64", "--block-size", "0.003",
                         "--no-progress")
    assert code == 0, err
    tiny = ["--set", "data.window=64", "--set", f"train.max_steps={steps}", "--set", "train.epochs=1",
            "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8", "--set", "train.log_every_steps=1"]
    code, out, err = cli("segment", "train", "--preset", "water", "--source", "folder", *tiny, *train_args)
    assert code == 0, err
    return run_dir_of(out), cli
