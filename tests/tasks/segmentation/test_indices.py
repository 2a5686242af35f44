"""``data.indices: [ndwi]`` end to end: a run trained on Sentinel-2 chips records the index in its
input contract and statistics, its model reads bands + index, a predicted scene gets the index
recomputed exactly as training windows had it, and what lacks an index's band is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.windows import Window

from tests.support import sentinel2 as s2
from tests.support.segmentation import trained_on_scene
from workbench.data import geotiff
from workbench.data.catalog import Tile
from workbench.data.contract import InputContract, open_scene
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import GridWindows
from workbench.data.stats import BandStats

TINY = ["--set", "data.window=64", "--set", "train.max_steps=2", "--set", "train.epochs=1",
        "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8", "--set", "train.log_every_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("indices_home")
    run, cli = trained_on_scene(home, "--set", "data.indices=[ndwi]", steps=2)
    return home, run, cli


@pytest.mark.slow
def test_the_run_records_the_index_and_its_model_reads_it(trained):
    from tasks.segmentation.run import load_run

    _, run, _ = trained
    inputs = json.loads((run / "inputs.json").read_text())
    assert [b["name"] for b in inputs["bands"]] == ["B02", "B03", "B04", "B08"] and inputs["indices"] == ["ndwi"]
    stats = json.loads((run / "band_stats.json").read_text())
    assert stats["indices"]["names"] == ["ndwi"] and -1 < stats["indices"]["mean"][0] < 1
    loaded = load_run(run)
    first = next(m for m in loaded.model.modules() if hasattr(m, "in_channels"))
    assert first.in_channels == 5


@pytest.mark.slow
def test_a_predicted_scene_gets_the_index_the_training_windows_had(trained, tmp_path):
    """The run's own statistics and contract: training windows of a DN tile and the scene reader
    on the same ground as the offset product (another encoding) give the same 5 channels."""
    _, run, cli = trained
    stats = BandStats.load(run / "band_stats.json")
    contract = InputContract.load(run / "inputs.json")
    g = s2.ground(128, seed=5)
    dn = s2.write_dn_geotiff(tmp_path / "dn.tif", g)
    window = WindowDataset([Tile(path=str(dn), source="folder")], GridWindows(128), stats=stats, with_mask=False)[0]
    offset = s2.write_dn_geotiff(tmp_path / "off.tif", g, dn_offset=1000, declare_offset=True)
    scene = open_scene(contract, stats, offset, run="r", warn=False)
    try:
        x, valid = scene.read(Window(0, 0, 128, 128))
    finally:
        scene.close()
    assert x.shape == window["image"].shape == (5, 128, 128)
    np.testing.assert_array_equal(valid, window["valid"].numpy())
    np.testing.assert_allclose(x, window["image"].numpy(), atol=2e-4)
    ndwi = (g.reflectance["B03"] - g.reflectance["B08"]) / (g.reflectance["B03"] + g.reflectance["B08"])
    ok = g.valid()
    mean, std = stats.index_mean[0], stats.index_std[0]
    np.testing.assert_allclose(x[4][ok] * std + mean, ndwi[ok], atol=1e-4)

    # and the CLI maps both encodings to one mask
    masks = []
    for path in (dn, offset):
        out = tmp_path / f"{path.stem}_mask.tif"
        code, _, err = cli("segment", "predict", "--run", run, "--input", path, "--out", out, "--no-progress")
        assert code == 0, err
        masks.append(geotiff.read(out)[0])
    assert (masks[0] != masks[1]).mean() < 1e-3
    assert (masks[0][:, s2.NODATA_EDGE:] != 255).all()


@pytest.mark.slow
def test_an_index_whose_band_is_missing_is_one_line(trained, tmp_path):
    home, run, cli = trained
    g = s2.ground(128, seed=5)
    no_b08 = s2.write_dn_geotiff(tmp_path / "no_b08.tif", g, bands=("B02", "B03", "B04", "B8A"))
    cases = [
        (("segment", "predict", "--run", run, "--input", no_b08, "--out", tmp_path / "a.tif"),
         ("no_b08.tif", "B08", "index ndwi", "B8A")),
        (("segment", "train", "--preset", "water", "--source", "folder", *TINY, "--set", "data.indices=[mndwi]"),
         ("index mndwi", "B11 (swir16)", "B02, B03, B04, B08")),
        (("segment", "train", "--preset", "water", "--source", "folder", *TINY, "--set", "data.indices=[ndwii]"),
         ("data.indices", "ndwii", "known: ndwi")),
        (("segment", "train", "--preset", "water", "--source", "folder", *TINY, "--set", "data.indices=[ndwi]",
          "--set", "data.bands=[1,2,3]"),
         ("index ndwi", "data.bands does not read")),
    ]
    runs_before = sorted(p.name for p in (home / "runs").iterdir())
    for args, words in cases:
        code, out, err = cli(*args, "--no-progress") if args[1] == "predict" else cli(*args)
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for w in words:
            assert w in err, (w, err)
    assert not (tmp_path / "a.tif").exists()
    assert sorted(p.name for p in (home / "runs").iterdir()) == runs_before
