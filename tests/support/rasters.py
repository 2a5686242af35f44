"""Small GeoTIFF pairs written by rasterio, made fresh by every test that needs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.transform import from_origin

from workbench.data import geotiff


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
