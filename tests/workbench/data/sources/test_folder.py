"""``workbench data import``: pairs, the Earth Engine Drive layout, class folders, bad input, concurrency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from tests.support.rasters import write_pair
from tests.support.runner import ROOT
from workbench.data import geotiff
from workbench.data.catalog import Catalog
from workbench.data.sources import folder


def snapshot(catalog: Path) -> list[tuple]:
    """Every row of the catalog, exactly (empty if there is no catalog yet)."""
    if not catalog.exists():
        return []
    conn = sqlite3.connect(catalog)
    try:
        rows = conn.execute("SELECT * FROM tiles ORDER BY id").fetchall()
        meta = conn.execute("SELECT * FROM meta ORDER BY key").fetchall()
    finally:
        conn.close()
    return rows + [("meta",) + tuple(m) for m in meta]


def make_pairs(folder_: Path, n: int, seed0: int = 0, origin: tuple[float, float] = (500_000.0, 4_650_000.0),
               size: int = 64, **kw) -> list[Path]:
    """``n`` image/mask pairs laid out edge to edge, 10 per row, like tiles cut from one scene."""
    folder_.mkdir(parents=True, exist_ok=True)
    step = size * 10.0
    return [write_pair(folder_, f"tile_{i:03d}", seed=seed0 + i, size=size,
                       origin=(origin[0] + step * (i % 10), origin[1] - step * (i // 10)), **kw)[0]
            for i in range(n)]


def write_ee_pair(folder_: Path, index: int, size: int = 48, seed: int = 0) -> tuple[Path, Path, np.ndarray,
                                                                                   np.ndarray]:
    """An EE Drive export: Original_Image_{i}.tif and Masked_Image_{i}.tif (water set to 0 in all bands).

    The left 5 columns are outside the footprint (all 0 in both files)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 3000, (3, size, size)).astype("uint16")
    yy, xx = np.mgrid[0:size, 0:size]
    water = (yy + xx) < size * 0.8
    empty = xx < 5
    img[:, empty] = 0
    masked = img.copy()
    masked[:, water] = 0
    t = from_origin(600_000.0 + 10_000 * index, 2_330_000.0, 10.0, 10.0)  # UTM 48N, near Hanoi
    names = ["B2", "B3", "B4"]
    o = geotiff.write(folder_ / "Segmentation_satellites_data" / f"Original_Image_{index}.tif", img, t,
                      "EPSG:32648", nodata=0, band_names=names,
                      tags={"DATE_ACQUIRED": "2023-03-14", "CLOUDY_PIXEL_PERCENTAGE": "0.4"})
    m = geotiff.write(folder_ / "Mask_satellites_data" / f"Masked_Image_{index}.tif", masked, t, "EPSG:32648",
                      nodata=0, band_names=names)
    return o, m, water & ~empty, empty


# ---- the layouts --------------------------------------------------------------------------------

def test_import_side_by_side_pairs(home, cli):
    make_pairs(home / "in", 3)
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 0, err
    assert "added 3 tile(s)" in out and "side-by-side" in out
    tiles = Catalog().query()
    assert len(tiles) == 3
    for t in tiles:
        assert t.source == "folder" and t.mask_path.endswith("_mask.tif")
        mask = geotiff.read(t.mask_path)[0]
        assert t.water_fraction == pytest.approx(mask.mean())
        assert t.label == "coast"
        assert 14.9 < t.lon < 15.1 and 41.9 < t.lat < 42.1  # UTM 33N at 500 km E, 4650 km N
        assert t.west < t.lon < t.east and t.south < t.lat < t.north
        assert t.gsd == 10.0 and t.bands == ["red", "green", "blue"] and t.crs == "EPSG:32633"
        assert (t.width, t.height) == (64, 64) and t.split in ("train", "val", "test")


def test_import_images_and_masks_folders(home, cli):
    for i in range(2):
        img, msk = write_pair(home / "tmp", f"s{i}", seed=i)
        (home / "in" / "images").mkdir(parents=True, exist_ok=True)
        (home / "in" / "masks").mkdir(parents=True, exist_ok=True)
        img.rename(home / "in" / "images" / f"s{i}.tif")
        msk.rename(home / "in" / "masks" / f"s{i}.tif")
    code, out, err = cli("data", "import", home / "in", "--split", "val", "--no-progress")
    assert code == 0, err
    tiles = Catalog().query()
    assert [Path(t.path).parent.name for t in tiles] == ["images", "images"]
    assert [Path(t.mask_path).parent.name for t in tiles] == ["masks", "masks"]
    assert {t.split for t in tiles} == {"val"}


def test_import_custom_pattern(home, cli):
    for i in range(2):
        img, msk = write_pair(home / "in" / "scenes", f"x{i}", seed=i)
        (home / "in" / "labels").mkdir(exist_ok=True)
        msk.rename(home / "in" / "labels" / f"x{i}_water.tif")
    code, out, err = cli("data", "import", home / "in", "--pattern", "scenes/{name}.tif,labels/{name}_water.tif",
                         "--no-progress")
    assert code == 0, err
    tiles = Catalog().query()
    assert len(tiles) == 2 and all(t.mask_path.endswith("_water.tif") for t in tiles)


def test_import_earth_engine_drive_layout_derives_a_real_mask(home, cli):
    expected = {}
    for i in range(3):
        o, m, water, empty = write_ee_pair(home / "drive", i, seed=i)
        expected[o.name] = (water, empty)
    code, out, err = cli("data", "import", home / "drive", "--no-progress")
    assert code == 0, err
    assert "earthengine" in out and "derived 3 water mask(s)" in out
    tiles = Catalog().query()
    assert len(tiles) == 3 and {t.source for t in tiles} == {"earthengine"}
    for t in tiles:
        water, empty = expected[Path(t.path).name]
        assert t.mask_path == t.path.replace(".tif", "_water_mask.tif")
        info = geotiff.read_info(t.mask_path, verify=True)
        geotiff.require_same_grid(geotiff.read_info(t.path), info)
        assert info.count == 1 and info.nodata == 255
        mask = geotiff.read(t.mask_path)[0]
        np.testing.assert_array_equal(mask[~empty], water[~empty].astype("uint8"))
        assert (mask[empty] == 255).all()
        assert set(np.unique(mask[~empty])) == {0, 1}
        assert t.water_fraction == pytest.approx(water[~empty].mean())  # nodata ignored
        assert t.date == "2023-03-14" and t.cloud_cover == pytest.approx(0.004)  # 0.4 % as a fraction
        assert t.bands == ["B2", "B3", "B4"]
        assert 105 < t.lon < 107 and 20 < t.lat < 22
    # the derived masks are not mistaken for images on a second import
    code, out, err = cli("data", "import", home / "drive", "--no-progress")
    assert code == 0 and "added 0 tile(s)" in out and Catalog().count() == 3


def test_derived_mask_rejects_a_file_that_is_not_a_masked_copy(tmp_path):
    o, m, _, _ = write_ee_pair(tmp_path, 0)
    other = geotiff.read(m)
    other[:, :, 20:] = 7  # not the image's values
    geotiff.write(m, other, geotiff.read_info(o).affine, "EPSG:32648")
    with pytest.raises(Exception, match="not a water-masked copy"):
        folder.derive_water_mask(o, m)


def test_import_class_folders(home, cli):
    for cls, n in (("water", 2), ("forest", 3)):
        make_pairs(home / "in" / cls, n, seed0=10 if cls == "forest" else 0)
        for mask in (home / "in" / cls).glob("*_mask.tif"):
            mask.unlink()
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 0, err
    assert "mode classes" in out
    tiles = Catalog().query()
    assert sorted(t.label for t in tiles) == ["forest"] * 3 + ["water"] * 2
    assert all(t.mask_path is None and t.water_fraction is None for t in tiles)


def test_subfolders_of_pairs_are_pairs_not_classes(home, cli):
    make_pairs(home / "in" / "scene_a", 2)
    make_pairs(home / "in" / "scene_b", 2, origin=(300_000.0, 4_000_000.0))
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 0, err
    assert "mode pairs" in out
    tiles = Catalog().query()
    assert len(tiles) == 4 and all(t.mask_path for t in tiles) and {t.label for t in tiles} == {"coast"}


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_plain_tiff_without_crs_imports_without_coordinates(home, cli):
    import rasterio

    (home / "in").mkdir()
    arr = np.full((3, 16, 16), 7, "uint8")
    with rasterio.open(home / "in" / "plain.tif", "w", driver="GTiff", width=16, height=16, count=3,
                       dtype="uint8") as dst:
        dst.write(arr)
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 0, err
    assert "no CRS" in out and "Warning" not in err
    (t,) = Catalog().query()
    assert t.lon is None and t.gsd is None and t.split in ("train", "val", "test") and t.crs is None


def test_reimport_adds_nothing(home, cli):
    make_pairs(home / "in", 4)
    assert cli("data", "import", home / "in", "--no-progress")[0] == 0
    before = snapshot(home / "data" / "catalog.sqlite")
    code, out, err = cli("data", "import", home / "in", "--no-progress")
    assert code == 0, err
    assert "added 0 tile(s)" in out and "4 already in the catalog" in out
    assert snapshot(home / "data" / "catalog.sqlite") == before


def test_tags_date_and_cloud(tmp_path):
    assert folder.date_from_tags({"DATE_ACQUIRED": "2023-01-05"}) == "2023-01-05"
    assert folder.date_from_tags({"SENSING_TIME": "2021-07-09T10:20:31.024Z"}) == "2021-07-09"
    assert folder.date_from_tags({"SYSTEM:TIME_START": "1672531200000"}) == "2023-01-01"
    assert folder.date_from_tags({"DATE": "not a date"}) is None
    assert folder.cloud_from_tags({"CLOUDY_PIXEL_PERCENTAGE": "12.5"}) == 0.125
    assert folder.cloud_from_tags({"CLOUD_COVER": "-1"}) is None


def test_auto_split_is_by_geographic_blocks(home, cli):
    make_pairs(home / "in", 40)     # 6.4 x 2.6 km: 4 default ground blocks, so a finer override
    assert cli("data", "import", home / "in", "--no-progress", "--block-size", "0.005")[0] == 0
    tiles = Catalog().query()
    per_block: dict = {}
    for t in tiles:
        per_block.setdefault(tuple(t.extra["block"]), set()).add(t.split)
    assert all(len(s) == 1 for s in per_block.values())
    assert len(per_block) >= 5 and {t.split for t in tiles} == {"train", "val", "test"}


# ---- bad input: exit 2, one line naming the culprit, catalog exactly as it was ------------------

@pytest.fixture
def seeded(home, cli):
    """A catalog that already holds two tiles, and its exact content."""
    make_pairs(home / "first", 2, seed0=100)
    assert cli("data", "import", home / "first", "--no-progress")[0] == 0
    cat = home / "data" / "catalog.sqlite"
    return cat, snapshot(cat)


def _assert_user_error(result, *needles):
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def test_truncated_geotiff(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 3, seed0=200)
    victim = home / "in" / "tile_001.tif"
    rng = np.random.default_rng(0)
    geotiff.write(victim, rng.integers(0, 60000, (3, 256, 256)).astype("uint16"),
                  from_origin(500_640.0, 4_650_000.0, 10, 10), "EPSG:32633", tiled=True)
    write_pair(home / "tmp", "m", size=256)[1].rename(home / "in" / "tile_001_mask.tif")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    _assert_user_error(cli("data", "import", home / "in", "--no-progress"), "tile_001.tif")
    assert snapshot(cat) == before


def test_mask_on_another_grid(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 2, seed0=300)
    write_pair(home / "tmp", "x", origin=(501_000.0, 4_650_000.0), seed=1)[1].rename(home / "in" / "tile_001_mask.tif")
    _assert_user_error(cli("data", "import", home / "in", "--no-progress"), "tile_001_mask.tif", "grid")
    assert snapshot(cat) == before


def test_mask_in_another_crs(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 2, seed0=400)
    write_pair(home / "tmp", "x", crs="EPSG:32632", seed=1)[1].rename(home / "in" / "tile_000_mask.tif")
    _assert_user_error(cli("data", "import", home / "in", "--no-progress"), "tile_000_mask.tif", "CRS")
    assert snapshot(cat) == before


def test_mask_of_another_size(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 2, seed0=500)
    write_pair(home / "tmp", "x", size=32)[1].rename(home / "in" / "tile_000_mask.tif")
    _assert_user_error(cli("data", "import", home / "in", "--no-progress"), "tile_000_mask.tif")
    assert snapshot(cat) == before


def test_missing_directory(home, cli, seeded):
    cat, before = seeded
    _assert_user_error(cli("data", "import", home / "nope", "--no-progress"), "nope", "no such file or folder")
    assert snapshot(cat) == before


def test_a_file_is_one_scene_and_a_folder_option_is_refused(home, cli, seeded):
    cat, before = seeded
    f = make_pairs(home / "in", 1)[0]
    _assert_user_error(cli("data", "import", f, "--mode", "pairs", "--no-progress"), f.name, "not to one scene")
    assert snapshot(cat) == before
    code, out, err = cli("data", "import", f, "--no-progress")       # one image: a scene of one chip
    assert code == 0, err
    assert "layout scene" in out and "added 1 tile" in out


def test_unknown_source(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 1)
    _assert_user_error(cli("data", "import", home / "in", "--source", "martian"), "martian")
    assert snapshot(cat) == before


def test_unknown_split(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 1)
    _assert_user_error(cli("data", "import", home / "in", "--split", "holdout"), "holdout")
    assert snapshot(cat) == before


def test_empty_folder(home, cli, seeded):
    cat, before = seeded
    (home / "empty").mkdir()
    (home / "empty" / "notes.txt").write_text("no tiles here")
    _assert_user_error(cli("data", "import", home / "empty"), "empty", "no GeoTIFFs")
    assert snapshot(cat) == before


def test_orphan_mask(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 2)
    (home / "in" / "tile_001.tif").unlink()
    _assert_user_error(cli("data", "import", home / "in", "--no-progress"), "tile_001_mask.tif")
    assert snapshot(cat) == before


def test_ee_masked_image_without_original(home, cli, seeded):
    cat, before = seeded
    write_ee_pair(home / "drive", 0)
    o, _, _, _ = write_ee_pair(home / "drive", 1)
    o.unlink()
    _assert_user_error(cli("data", "import", home / "drive", "--no-progress"), "Masked_Image_1.tif")
    assert snapshot(cat) == before


def test_bad_pattern(home, cli, seeded):
    cat, before = seeded
    make_pairs(home / "in", 1)
    _assert_user_error(cli("data", "import", home / "in", "--pattern", "images/*.tif"), "--pattern")
    assert snapshot(cat) == before


def test_malformed_where_on_list(home, cli, seeded):
    cat, before = seeded
    _assert_user_error(cli("data", "list", "--where", "lat >> AND"), "--where")
    _assert_user_error(cli("data", "list", "--where", "1=1; DROP TABLE tiles"), "--where")
    assert snapshot(cat) == before


# ---- acceptance: two processes importing at once lose nothing -----------------------------------

@pytest.mark.slow
def test_two_concurrent_imports_lose_no_rows(tmp_path):
    make_pairs(tmp_path / "a", 30, seed0=0, size=32)
    make_pairs(tmp_path / "b", 30, seed0=1000, size=32, origin=(300_000.0, 4_000_000.0))
    catalog = tmp_path / "shared" / "catalog.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "WORKBENCH_HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench", "data", "import", str(tmp_path / d),
                               "--catalog", str(catalog), "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for d in ("a", "b")]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "added 30 tile(s)" in out, out
    with Catalog(catalog) as cat:
        assert cat.count() == 60
        assert cat.count(where="path LIKE 'a/%' OR path LIKE '%/a/%'") == 30
    # and the JSON listing sees all of them
    out = subprocess.run([sys.executable, "-m", "workbench", "data", "list", "--catalog", str(catalog), "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len([json.loads(line) for line in out.stdout.splitlines()]) == 60


def test_date_from_the_file_name_and_scene_id_from_tags(home, cli):
    from tests.support import sentinel2 as s2
    from workbench.data import geotiff as gt

    g = s2.ground(64, seed=1)
    folder = home / "named"
    img = s2.write_dn_geotiff(folder / "S2_20220704_chip.tif", g, tags={"DATE_ACQUIRED": ""})
    s2.write_mask(folder / "S2_20220704_chip_mask.tif", g)
    assert gt.read_info(img).count == 4
    code, out, err = cli("data", "import", folder, "--no-progress")
    assert code == 0, err
    with Catalog(home / "data" / "catalog.sqlite") as cat:
        (tile,) = cat.query(source="folder")
    assert tile.date == "2022-07-04" and tile.scene_id == g.scene_id
    assert [r["scale"] for r in tile.extra["radiometry"]] == [pytest.approx(1e-4)] * 4


def test_a_folder_of_scene_products_imports_each_scene_in_one_go(home, cli):
    from tests.support import sentinel2 as s2

    g = s2.ground(128, seed=2)
    products = home / "products"
    s2.write_safe(products, g, offset=True)                 # baseline 05.09
    s2.write_safe(products, g, offset=False)                # baseline 03.01, the same ground
    s2.write_stac_item(products / "item.json", g, cog_dir=home / "cogs")
    code, out, err = cli("data", "import", products, "--chip-size", "64", "--no-progress")
    assert code == 0, err
    assert "3 image(s), layout scene products" in out and "3 scene(s) cut" in out
    with Catalog(home / "data" / "catalog.sqlite") as cat:
        tiles = cat.query()
    assert len(tiles) == 12 and len({t.scene_id for t in tiles}) == 3
    by_chip: dict = {}
    for t in tiles:                                          # one place, one split, in every product
        by_chip.setdefault(tuple(t.extra["chip"]), set()).add(t.split)
    assert all(len(s) == 1 for s in by_chip.values())
    code, out, err = cli("data", "import", products, "--chip-size", "64", "--no-progress")
    assert code == 0 and "added 0 tile(s)" in out and "3 already" in out


def test_a_failing_product_leaves_no_chip_and_no_row(home, cli):
    from tests.support import sentinel2 as s2

    g = s2.ground(128, seed=2)
    products = home / "products"
    s2.write_safe(products, g, offset=True)
    s2.write_stac_item(products / "z_item.json", g, cog_dir=home / "cogs", bands=("B02", "B03", "B04", "B08"),
                       offset=False)
    (home / "cogs" / "B03.tif").unlink()                     # the item's B03 asset is gone: fails after the SAFE
    code, out, err = cli("data", "import", products, "--chip-size", "64", "--chips", home / "chips", "--no-progress")
    assert code == 2 and "B03" in err and len(err.strip().splitlines()) == 1, err
    assert not [p for p in (home / "chips").rglob("*") if p.is_file()]
    assert not (home / "data" / "catalog.sqlite").exists() or Catalog(home / "data" / "catalog.sqlite").count() == 0
