"""Shared fixtures: small GeoTIFFs written by rasterio, an isolated WORKBENCH_HOME,
and helpers to call the CLI in-process or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from workbench.data import geotiff

ROOT = Path(__file__).resolve().parents[1]


def write_pair(folder: Path, name: str, size: int = 64, bands: int = 3, crs: str = "EPSG:32633",
               origin: tuple[float, float] = (500_000.0, 4_650_000.0), res: float = 10.0, seed: int = 0,
               dtype: str = "uint16", nodata: float | None = None) -> tuple[Path, Path]:
    """An image whose 'water' pixels are bluer and darker than land, and its 0/1 mask on the same grid.

    Water is a disc whose centre depends on ``seed`` so tiles differ.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    water = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size * 0.3) ** 2
    img = rng.normal(1500, 200, (bands, size, size))
    img[min(2, bands - 1)][water] += 800  # a bluer band over water
    img[0][water] -= 600
    img = np.clip(img, 1, 10_000).astype(dtype)
    transform = from_origin(origin[0], origin[1], res, res)
    names = ["red", "green", "blue", "nir", "swir1", "swir2"][:bands] + [f"b{i}" for i in range(6, bands)]
    image = geotiff.write(folder / f"{name}.tif", img, transform, crs, nodata=nodata, band_names=names[:bands])
    mask = geotiff.write(folder / f"{name}_mask.tif", water.astype("uint8"), transform, crs, band_names=["water"])
    return image, mask


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh WORKBENCH_HOME: catalog and runs live under it."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Run ``workbench ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from workbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse exits
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_workbench(*args: str, env: dict | None = None, cwd: Path | None = None,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (what a user types)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def one_torch_thread():
    """Tiny convolutions run fastest on one thread (two OpenMP threads spin badly on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
