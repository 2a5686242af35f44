"""A Blue-Marble-like catalog for the generator's tests: tiles spread over the globe, with captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.transform import from_origin

from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile

SPLITS = ("train", "train", "train", "val", "test")


def make_catalog(home: Path, n: int = 25, size: int = 32) -> Path:
    """``n`` Blue-Marble-like RGB tiles spread over the globe: land whose colour follows latitude,
    a water strip whose width gives the water fraction; splits train/train/train/val/test."""
    folder = home / "data" / "tiles"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    res = 1 / 15
    rows = []
    for i in range(n):
        lat, lon = -60 + 120 * i / (n - 1), -150 + 300 * ((i * 7) % n) / n
        wf = (i % 4) / 3
        water = np.mgrid[0:size, 0:size][1] < wf * size
        img = np.empty((3, size, size), np.int64)
        img[:, ~water] = np.array([60 + lat, 120 - lat / 2, 40]).clip(0, 255).astype(int)[:, None]
        img[:, water] = np.array([10, 30, 90])[:, None]
        img = (img + rng.integers(-5, 6, img.shape)).clip(0, 255).astype(np.uint8)
        transform = from_origin(lon - res * size / 2, lat + res * size / 2, res, res)
        path = geotiff.write(folder / f"t{i}.tif", img, transform,
                             "EPSG:4326", band_names=["red", "green", "blue"])
        label = "water" if wf > 0.95 else "land" if wf < 0.05 else "coast"
        rows.append(Tile(path=str(path), source="bluemarble", split=SPLITS[i % 5], lon=lon, lat=lat, crs="EPSG:4326",
                         width=size, height=size, gsd=7421.0, date="2004-06-15", cloud_cover=0.0,
                         bands=["red", "green", "blue"], water_fraction=float(water.mean()), label=label,
                         caption=f"a satellite image of {label}",
                         extra={"surface": "vegetated", "depth": "deep", "zone": "temperate",
                                "hemisphere": "northern" if lat >= 0 else "southern"}))
    with Catalog() as cat:
        cat.add_tiles(rows)
    return home / "data" / "catalog.sqlite"
