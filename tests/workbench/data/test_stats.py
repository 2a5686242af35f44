"""Band statistics: numpy agreement, nodata exclusion, splits, subsets, errors, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.transform import from_origin

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.catalog import Tile
from workbench.data.stats import BandStats, compute_band_stats, select_tiles
from workbench.errors import WorkbenchError

TR = from_origin(500_000, 4_650_000, 10, 10)


def tile(path, split="train") -> Tile:
    return Tile(path=str(path), source="folder", split=split)


def test_stats_match_numpy_across_tiles_and_blocks(tmp_path, monkeypatch):
    import workbench.data.stats as stats_mod
    monkeypatch.setattr(stats_mod, "_PIXELS_PER_READ", 4096)  # force many block reads
    rng = np.random.default_rng(0)
    arrays = [rng.normal(5000, 900, (3, 600, 520)).astype("float32"),  # tiled (>= 512 px)
              rng.normal(4000, 300, (3, 70, 90)).astype("float32")]  # striped
    tiles = [tile(geotiff.write(tmp_path / f"a{i}.tif", a, TR, "EPSG:32633", band_names=["r", "g", "b"]))
             for i, a in enumerate(arrays)]
    st = compute_band_stats(tiles)
    flat = np.concatenate([a.reshape(3, -1) for a in arrays], axis=1).astype(np.float64)
    np.testing.assert_allclose(st.mean, flat.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(st.std, flat.std(axis=1), rtol=1e-9)
    assert st.band_names == ["red", "green", "blue"] and st.pixels == flat.shape[1]   # canonical names
    sub = compute_band_stats(tiles, bands=[2, 0])
    np.testing.assert_allclose(sub.mean, flat.mean(axis=1)[[2, 0]], rtol=1e-10)
    assert sub.band_names == ["blue", "red"]


def test_nodata_excluded(tmp_path):
    a = np.arange(2 * 10 * 10, dtype="int16").reshape(2, 10, 10)
    a[0, :3] = -9999  # rows 0-2 of band 0 are nodata -> those pixels leave both bands
    p = geotiff.write(tmp_path / "n.tif", a, TR, "EPSG:32633", nodata=-9999)
    st = compute_band_stats([tile(p)])
    keep = a[:, 3:].reshape(2, -1).astype(np.float64) * 1e-4     # int16: reflectance x 10000
    np.testing.assert_allclose(st.mean, keep.mean(axis=1))
    np.testing.assert_allclose(st.std, keep.std(axis=1))
    assert st.pixels == 70
    f = np.ones((1, 8, 8), np.float32)
    f[0, 0, :4] = np.nan
    f[0, 1] = 3.0
    q = geotiff.write(tmp_path / "f.tif", f, TR, "EPSG:32633")
    st = compute_band_stats([tile(q)])
    vals = f[~np.isnan(f)]
    assert st.pixels == 60 and st.mean[0] == pytest.approx(vals.mean())


def test_only_train_split_and_deterministic_subset(tmp_path):
    tiles = []
    for i in range(6):
        img, _ = write_pair(tmp_path, f"t{i}", size=32, seed=i)
        tiles.append(tile(img, "train" if i < 4 else "test"))
    st = compute_band_stats(tiles)
    assert len(st.tiles) == 4 and all("t4" not in t and "t5" not in t for t in st.tiles)
    a = compute_band_stats(tiles, max_tiles=2, seed=1)
    b = compute_band_stats(tiles, max_tiles=2, seed=1)
    assert a.tiles == b.tiles and len(a.tiles) == 2 and a.mean == b.mean
    assert len({tuple(select_tiles(tiles, max_tiles=2, seed=s)[0].path for _ in [0]) for s in range(8)}) > 1
    with pytest.raises(WorkbenchError, match="no 'train' tiles"):
        compute_band_stats([t for t in tiles if t.split == "test"])


def test_errors_name_the_file(tmp_path):
    a, _ = write_pair(tmp_path, "three", size=16, bands=3)
    b, _ = write_pair(tmp_path, "four", size=16, bands=4)
    with pytest.raises(WorkbenchError, match=r"four\.tif.*4 bands"):
        compute_band_stats([tile(a), tile(b)])
    with pytest.raises(WorkbenchError, match=r"three\.tif.*band index 5 out of range"):
        compute_band_stats([tile(a)], bands=[5])
    nod = geotiff.write(tmp_path / "empty.tif", np.zeros((2, 8, 8), "uint16"), TR, "EPSG:32633", nodata=0)
    with pytest.raises(WorkbenchError, match=r"no valid pixels.*empty\.tif"):
        compute_band_stats([tile(nod)])
    with pytest.raises(WorkbenchError, match="empty tile list"):
        compute_band_stats([])
    other = geotiff.write(tmp_path / "named.tif", np.ones((3, 8, 8), "uint16"), TR, "EPSG:32633",
                          band_names=["nir", "swir1", "swir2"])
    with pytest.raises(WorkbenchError, match=r"named\.tif.*differ"):
        compute_band_stats([tile(a), tile(other)])


def test_band_stats_round_trip(tmp_path):
    st = BandStats([1.5, 2.0], [0.5, 0.25], ["red", "nir"], pixels=10, tiles=["a.tif"])
    p = st.save(tmp_path / "run" / "band_stats.json")
    assert json.loads(p.read_text())["band_names"] == ["red", "nir"]
    again = BandStats.load(p)
    assert again == st and BandStats.from_dict(st.to_dict()) == st
    scale, bias = st.scale_bias()
    x = np.array([3.0, 2.5])
    np.testing.assert_allclose(x * scale + bias, (x - np.array(st.mean)) / np.array(st.std))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match=r"bad\.json"):
        BandStats.load(tmp_path / "bad.json")
    with pytest.raises(WorkbenchError):
        BandStats([1.0], [1.0, 2.0])
    with pytest.raises(WorkbenchError, match="no such"):
        BandStats.load(tmp_path / "none.json")
