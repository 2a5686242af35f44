"""Hostile values on import: refused in one line with the catalog unchanged, or read as what they are."""

from __future__ import annotations

import numpy as np
from rasterio.transform import from_origin

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.catalog import Tile
from workbench.data.stats import compute_band_stats


def test_an_infinite_block_size_is_refused(home, cli):
    write_pair(home / "in", "a", size=16)
    code, out, err = cli("data", "import", home / "in", "--block-size", "inf", "--no-progress")
    assert code == 2 and "--block-size inf" in err and len(err.strip().splitlines()) == 1
    assert not (home / "data" / "catalog.sqlite").exists() or "0 tile" in cli("data", "list")[1]


def test_a_tile_off_the_earth_is_refused(home, cli):
    geotiff.write(home / "in" / "far.tif", np.ones((1, 8, 8), "uint16"), from_origin(500, 200, 1, 1), "EPSG:4326")
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 2 and "far.tif" in err and "not on the Earth" in err


def test_infinite_pixels_are_no_data_in_statistics(tmp_path):
    a = np.full((2, 10, 10), 0.25, np.float32)
    a[:, :3, :3] = np.inf
    p = geotiff.write(tmp_path / "inf.tif", a, from_origin(500_000, 4_600_000, 10, 10), "EPSG:32633")
    st = compute_band_stats([Tile(path=str(p), source="folder", split="train")], split=None)
    assert st.pixels == 91 and st.mean == [0.25, 0.25]
