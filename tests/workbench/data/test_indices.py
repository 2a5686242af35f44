"""Spectral indices as channels: their values on known reflectances (whatever the encoding), their
nodata, their statistics, their record in the input contract, the dataset and the scene reader
giving the same numbers, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from tests.support import sentinel2 as s2
from workbench.data import geotiff
from workbench.data import indices as spectral
from workbench.data.catalog import Tile
from workbench.data.contract import InputContract, contract_of, open_scene
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import GridWindows
from workbench.data.stats import BandStats, compute_band_stats
from workbench.errors import WorkbenchError

SIZE = 64


@pytest.fixture(scope="module")
def g():
    return s2.ground(SIZE, seed=4)


def nd(a, b):
    return (a - b) / (a + b)


def test_values_on_known_reflectances():
    names = ["B02", "B03", "B04", "B08", "B11", "B12"]
    refl = np.array([0.05, 0.30, 0.20, 0.10, 0.15, 0.05], np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    pairs = spectral.resolve(["ndwi", "mndwi", "ndvi", "ndmi", "ndbi", "nbr"], names, "t")
    got, ok = spectral.values(refl, pairs)
    assert ok.all() and got.shape == (6, 2, 3)
    want = [nd(.3, .1), nd(.3, .15), nd(.1, .2), nd(.1, .15), nd(.15, .1), nd(.1, .05)]
    np.testing.assert_allclose(got[:, 0, 0], want, rtol=1e-6)


def test_nir_is_b08_else_b8a_and_common_names_work():
    assert spectral.resolve(["ndwi"], ["B03", "B08", "B8A"], "t") == [(0, 1)]
    assert spectral.resolve(["ndwi"], ["B03", "B8A"], "t") == [(0, 1)]
    assert spectral.resolve(["ndwi"], ["B2", "B3", "B8"], "t") == [(1, 2)]          # Earth Engine names
    assert spectral.resolve(["ndvi"], ["red", "green", "blue", "nir"], "t") == [(3, 0)]
    assert spectral.resolve(["mndwi"], ["SR_B3", "SR_B5", "SR_B6"], "t") == [(0, 2)]  # Landsat


def test_nodata_where_a_band_is_nodata_or_the_denominator_is_about_zero():
    refl = np.zeros((2, 1, 5), np.float32)
    refl[0, 0] = [0.3, 0.0, 0.0001, np.nan, 0.2]     # green
    refl[1, 0] = [0.1, 0.0, 0.00005, 0.1, -0.25]      # nir
    valid = np.array([[True, True, True, True, True]])
    got, ok = spectral.values(refl, [(0, 1)], valid)
    assert ok.tolist() == [[True, False, False, False, False]]
    assert got[0, 0, 0] == pytest.approx(0.5) and (got[0, 0, 1:] == 0).all()
    valid[0, 0] = False                               # a nodata pixel of the bands stays nodata
    assert not spectral.values(refl, [(0, 1)], valid)[1][0, 0]
    # a slightly negative band (offset products): the ratio is clipped to [-1, 1]
    got, ok = spectral.values(np.array([[[0.02]], [[-0.019]]], np.float32), [(0, 1)])
    assert ok.all() and got[0, 0, 0] == 1.0


def test_unknown_listed_twice_and_missing_bands_are_one_line():
    with pytest.raises(WorkbenchError, match=r"data.indices: unknown index 'ndxx' \(known: ndwi, mndwi"):
        spectral.check_names(["ndxx"])
    with pytest.raises(WorkbenchError, match="index ndwi is listed twice"):
        spectral.check_names(["ndwi", "NDWI"])
    with pytest.raises(WorkbenchError, match=r"^rgbn.tif: index mndwi needs B11 \(swir16\); the input has "
                                             r"B02, B03, B04, B08$"):
        spectral.resolve(["mndwi"], ["B02", "B03", "B04", "B08"], "rgbn.tif")
    with pytest.raises(WorkbenchError, match=r"needs B03 \(green\); the input has b1, b2 \(bands without names"):
        spectral.resolve(["ndwi"], ["b1", "b2"], "t.tif")
    with pytest.raises(WorkbenchError, match=r"needs B08 \(nir\) or B8A \(nir08\), which data.bands does not read"):
        spectral.resolve(["ndwi"], ["B02", "B03", "B04"], "t.tif", also=["B02", "B03", "B04", "B08"])


@pytest.mark.parametrize("form", ["dn", "dn+offset", "float"])
def test_statistics_are_those_of_the_reflectance_index(tmp_path, g, form):
    """uint16 DN, DN + the declared baseline-04.00 offset and float reflectance give one NDWI mean
    / std: the index is of reflectance, not of DN (with the offset the DN ratio is another number)."""
    path = {"dn": lambda: s2.write_dn_geotiff(tmp_path / "t.tif", g),
            "dn+offset": lambda: s2.write_dn_geotiff(tmp_path / "t.tif", g, dn_offset=1000, declare_offset=True),
            "float": lambda: s2.write_float_geotiff(tmp_path / "t.tif", g)}[form]()
    stats = compute_band_stats([Tile(path=str(path), source="folder", split="train")], split=None,
                               indices=["ndwi"])
    ok = g.valid()
    want = nd(g.reflectance["B03"].astype(np.float64), g.reflectance["B08"].astype(np.float64))[ok]
    assert stats.index_names == ["ndwi"] and stats.band_names == ["B02", "B03", "B04", "B08"]
    assert stats.index_mean[0] == pytest.approx(want.mean(), abs=1e-5)
    assert stats.index_std[0] == pytest.approx(want.std(), abs=1e-5)
    assert len(stats) == 4                           # the bands; indices apart


def test_band_stats_and_contract_round_trip_with_indices(tmp_path, g):
    tile = Tile(path=str(s2.write_dn_geotiff(tmp_path / "t.tif", g)), source="folder", split="train")
    stats = compute_band_stats([tile], split=None, indices=["ndwi", "ndvi"])
    again = BandStats.load(stats.save(tmp_path / "band_stats.json"))
    assert again.index_names == ["ndwi", "ndvi"] and again.index_mean == stats.index_mean
    assert again.select([1, 3]).index_names == ["ndwi", "ndvi"]
    assert again.index_stats(["ndvi"]).mean == [stats.index_mean[1]]
    contract = contract_of([tile], indices=["ndwi", "ndvi"])
    loaded = InputContract.load(contract.save(tmp_path / "inputs.json"))
    assert loaded.indices == ["ndwi", "ndvi"] and loaded.names == ["B02", "B03", "B04", "B08"]
    old = contract.to_dict()
    del old["indices"]                               # an inputs.json written before indices existed
    assert InputContract.from_dict(old).indices == []
    plain = json.loads(compute_band_stats([tile], split=None).save(tmp_path / "plain.json").read_text())
    assert "indices" not in plain and BandStats.from_dict(plain).index_names == []


def test_refusals_at_train_start(tmp_path, g):
    tile = Tile(path=str(s2.write_dn_geotiff(tmp_path / "rgbn.tif", g)), source="folder", split="train")
    with pytest.raises(WorkbenchError, match=r"rgbn.tif: index mndwi needs B11 \(swir16\); the input has B02, B03"):
        compute_band_stats([tile], split=None, indices=["mndwi"])
    with pytest.raises(WorkbenchError, match=r"rgbn.tif: index mndwi needs B11 \(swir16\)"):
        contract_of([tile], indices=["mndwi"])
    with pytest.raises(WorkbenchError, match="which data.bands does not read"):
        compute_band_stats([tile], bands=[0, 1, 2], split=None, indices=["ndwi"])
    raw = geotiff.write(tmp_path / "rgb8.tif", (np.arange(3 * 16 * 16) % 200 + 1).astype(np.uint8).reshape(3, 16, 16),
                        g.transform, g.crs, band_names=["red", "green", "nir"])
    rt = Tile(path=str(raw), source="folder", split="train")
    with pytest.raises(WorkbenchError, match="rgb8.tif: spectral indices .ndwi. need reflectance; this tile holds "
                                             "raw uint8"):
        compute_band_stats([rt], split=None, indices=["ndwi"])
    with pytest.raises(WorkbenchError, match="rgb8.tif: spectral indices .ndwi. need reflectance"):
        contract_of([rt], indices=["ndwi"])


def test_dataset_and_scene_reader_give_the_same_index_channel(tmp_path, g):
    """Training windows and a predicted scene carry the same (normalised) NDWI channel, from
    different encodings of one ground: the training tile is uint16 DN, the scene the offset
    product; and that channel is the ground's NDWI, normalised with the run's statistics."""
    tile = Tile(path=str(s2.write_dn_geotiff(tmp_path / "train.tif", g)), source="folder", split="train")
    stats = compute_band_stats([tile], split=None, indices=["ndwi"])
    contract = contract_of([tile], indices=["ndwi"])
    ds = WindowDataset([tile], GridWindows(SIZE), stats=stats, with_mask=False)
    assert ds.channels == 5
    batch = ds[0]
    scene = open_scene(contract, stats, s2.write_dn_geotiff(tmp_path / "scene.tif", g, dn_offset=1000,
                                                            declare_offset=True), run="r", warn=False)
    try:
        assert len(scene.bands) == 5
        x, valid = scene.read(Window(0, 0, SIZE, SIZE))
    finally:
        scene.close()
    assert x.shape == (5, SIZE, SIZE)
    np.testing.assert_array_equal(valid, batch["valid"].numpy())
    np.testing.assert_allclose(x, batch["image"].numpy(), atol=2e-4)
    want = nd(g.reflectance["B03"], g.reflectance["B08"])
    want = (want - stats.index_mean[0]) / stats.index_std[0]
    ok = g.valid()
    np.testing.assert_allclose(x[4][ok], want[ok], atol=2e-4)
    assert (x[:, ~ok] == 0).all()


def test_dataset_index_nodata_is_invalid_and_ignored_in_the_mask(tmp_path, g):
    """A pixel whose green + nir is 0 (a float export's masked edge, no nodata tag) is invalid and
    its mask value the ignore index, in every channel."""
    img = s2.write_float_geotiff(tmp_path / "f.tif", g)
    mask = s2.write_mask(tmp_path / "f_mask.tif", g, nodata_edge=0)
    tile = Tile(path=str(img), mask_path=str(mask), source="folder", split="train")
    stats = compute_band_stats([tile], split=None, indices=["ndwi"])
    batch = WindowDataset([tile], GridWindows(SIZE), stats=stats, ignore_index=-100)[0]
    edge = ~g.valid()
    assert not batch["valid"].numpy()[edge].any() and batch["valid"].numpy()[~edge].all()
    assert (batch["mask"].numpy()[edge] == -100).all()
    assert (batch["image"].numpy()[:, edge] == 0).all()


def test_a_scene_without_an_index_band_names_the_index(tmp_path, g):
    tile = Tile(path=str(s2.write_dn_geotiff(tmp_path / "train.tif", g, bands=s2.ALL_BANDS)), source="folder",
                split="train")
    positions = [s2.ALL_BANDS.index(b) for b in ("B02", "B03", "B04", "B08", "B11")]
    stats = compute_band_stats([tile], bands=positions, split=None, indices=["mndwi"])
    contract = contract_of([tile], positions, indices=["mndwi"])
    rgbn = s2.write_dn_geotiff(tmp_path / "rgbn.tif", g)
    with pytest.raises(WorkbenchError, match=r"rgbn.tif: has no band B11 that run r needs for index mndwi \(it has "
                                             r"B02, B03, B04, B08"):
        open_scene(contract, stats, rgbn, run="r", warn=False)


def test_index_channels_are_finished_on_the_cpu_even_when_the_trainer_asks_for_raw_batches(tmp_path, g):
    """The raw (device-finished) path carries no index channels: a dataset with indices keeps
    building its batches itself, so the model still gets bands + indices."""
    img = s2.write_float_geotiff(tmp_path / "f.tif", g)
    mask = s2.write_mask(tmp_path / "f_mask.tif", g, nodata_edge=0)
    tile = Tile(path=str(img), mask_path=str(mask), source="folder", split="train")
    stats = compute_band_stats([tile], split=None, indices=["ndwi"])
    cpu = WindowDataset([tile], GridWindows(SIZE), stats=stats).__getitems__([0])
    raw = WindowDataset([tile], GridWindows(SIZE), stats=stats, finish_on_device=True).__getitems__([0])
    assert raw["image"].dtype == torch.float32 and raw["image"].shape[1] == 5
    assert torch.equal(raw["image"], cpu["image"]) and torch.equal(raw["mask"], cpu["mask"])
