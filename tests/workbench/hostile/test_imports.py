"""Hostile values on import: refused in one line with the catalog unchanged, or read as what they are."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
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


@pytest.mark.parametrize("origin, crs", [((500, 200), "EPSG:4326"), ((1e20, 1e20), "EPSG:4326"),
                                         ((1e20, 1e20), "EPSG:32631")])
def test_a_tile_off_the_earth_is_refused(home, cli, origin, crs):
    geotiff.write(home / "in" / "far.tif", np.ones((1, 8, 8), "uint16"), from_origin(*origin, 1, 1), crs)
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 2 and "far.tif" in err and "not on the Earth" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (home / "data" / "catalog.sqlite").exists() or "0 tile" in cli("data", "list")[1]


def test_infinite_pixels_are_no_data_in_statistics(tmp_path):
    a = np.full((2, 10, 10), 0.25, np.float32)
    a[:, :3, :3] = np.inf
    p = geotiff.write(tmp_path / "inf.tif", a, from_origin(500_000, 4_600_000, 10, 10), "EPSG:32633")
    st = compute_band_stats([Tile(path=str(p), source="folder", split="train")], split=None)
    assert st.pixels == 91 and st.mean == [0.25, 0.25]


def _mask_with(path, values) -> None:
    m = geotiff.read(path)
    m[0, :2, :len(values)] = values
    info = geotiff.read_info(path)
    geotiff.write(path, m, info.affine, info.crs, nodata=info.nodata)


def test_mask_values_that_are_not_classes_are_refused(home, cli):
    _, mask = write_pair(home / "in", "a", size=16)
    _mask_with(mask, [7, 200])
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "7, 200" in err and "a_mask.tif" in err, err
    assert not (home / "data" / "catalog.sqlite").exists() or "0 tile" in cli("data", "list")[1]


def test_mask_classes_admits_an_n_class_mask(home, cli):
    _, mask = write_pair(home / "in", "a", size=16)
    _mask_with(mask, [2, 2])
    assert cli("data", "import", home / "in", "--no-progress")[0] == 2
    code, out, err = cli("data", "import", home / "in", "--mask-classes", "3", "--no-progress")
    assert code == 0 and "added 1" in out, err


def test_a_failed_earth_engine_import_leaves_no_derived_mask(home, cli):
    folder = home / "ee"
    t = from_origin(500_000, 4_650_000, 10, 10)
    img = np.random.default_rng(0).integers(100, 3000, (3, 16, 16)).astype("uint16")
    masked = img.copy()
    masked[:, :4, :4] = 0
    folder.mkdir()
    for key in ("1", "x" * 225):  # the second's derived mask name is too long for the file system
        for name, a in ((f"Original_Image_{key}.tif", img), (f"Masked_Image_{key}.tif", masked)):
            with rasterio.open(folder / name, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint16",
                               crs="EPSG:32633", transform=t) as ds:
                ds.write(a)
    before = sorted(p.name for p in folder.iterdir())
    code, out, err = cli("data", "import", folder, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_png_named_tif_is_refused(home, cli):
    from PIL import Image

    folder = home / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "photo.tif", format="PNG")
    code, out, err = cli("data", "import", folder, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "photo.tif: a PNG file" in err, err


def test_two_links_to_one_pair_add_one_tile_and_say_so(home, cli):
    image, mask = write_pair(home / "real", "a", size=16)
    folder = home / "in"
    folder.mkdir()
    for name in ("x", "y"):
        (folder / f"{name}.tif").symlink_to(image)
        (folder / f"{name}_mask.tif").symlink_to(mask)
    code, out, err = cli("data", "import", folder, "--no-progress")
    assert code == 0 and "added 1 tile" in out and "counted once" in out, (out, err)
    assert "1 tile(s)" in cli("data", "list")[1]
