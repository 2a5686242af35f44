"""``classify predict --input SCENE``: a whole scene classified window by window into a class map on
the scene's ground, the same map whatever form the same ground comes in, and inputs the run cannot
read refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.support import sentinel2 as s2
from tests.support.runner import run_workbench
from workbench.data import geotiff

pytestmark = pytest.mark.slow  # a real (tiny) training run

SIZE = 32
EDGE = 24            # nodata columns: the first column of 32 px windows is 8/32 valid, less than half
TINY = ["--set", f"data.size={SIZE}", "--set", "train.max_steps=3", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "train.eval_batch_size=16", "--set", "train.log_every_steps=1",
        "--set", "train.schedule.warmup_steps=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A water/coast/land run trained on a 256 px DN scene + mask cut into 32 px chips, with the
    default preset and only the source and tiny step counts on the command line."""
    home = tmp_path_factory.mktemp("clshome")

    def cli(*args):
        p = run_workbench(*args, env={"WORKBENCH_HOME": str(home)}, cwd=home)
        assert p.returncode == 0, p.stderr
        return p.stdout

    g = s2.ground(256, seed=0)
    scene = s2.write_dn_geotiff(home / "scene.tif", g)
    mask = s2.write_mask(home / "scene_mask.tif", g)
    cli("data", "import", scene, "--mask", mask, "--chip-size", str(SIZE), "--block-size", "0.003", "--no-progress")
    out = cli("classify", "train", "--source", "folder", *TINY)
    return Path(out.strip().splitlines()[-1])


def predict(cli, run: Path, scene: Path, out: Path, *extra) -> dict:
    code, stdout, err = cli("classify", "predict", "--run", run, "--input", scene, "--out", out, "--json", *extra)
    assert code == 0, err
    return json.loads(stdout)


def test_a_scene_gives_one_class_per_window_on_the_scenes_ground(trained, cli, tmp_path, one_torch_thread):
    g = s2.ground(128, seed=5)
    scene = s2.write_dn_geotiff(tmp_path / "dn.tif", g, nodata_edge=EDGE)
    res = predict(cli, trained, scene, tmp_path / "out" / "classes.tif", "--probabilities", tmp_path / "p.tif")
    classes = json.loads((trained / "classes.json").read_text())["classes"]
    with rasterio.open(tmp_path / "out" / "classes.tif") as ds:
        labels = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.descriptions == ("class",)
        assert ds.crs.to_string() == g.crs and (ds.width, ds.height) == (4, 4)
        assert ds.transform == g.transform * rasterio.Affine.scale(SIZE)        # stride = size: the window itself
        assert ds.tags()["CLASSES"] == ",".join(classes) and ds.tags()["run"] == str(trained.resolve())
    with rasterio.open(tmp_path / "p.tif") as ds:
        probs = ds.read()
        assert ds.dtypes[0] == "float32" and ds.count == len(classes) and ds.transform == g.transform * \
            rasterio.Affine.scale(SIZE)
    # The first column of windows is mostly nodata: no class, NaN probabilities; every other window has one.
    assert (labels[:, 0] == 255).all() and np.isnan(probs[:, :, 0]).all()
    assert (labels[:, 1:] < len(classes)).all()
    np.testing.assert_allclose(probs[:, :, 1:].sum(axis=0), 1.0, atol=1e-5)
    assert (probs[:, :, 1:].argmax(axis=0) == labels[:, 1:]).all()
    assert res["counts"] == {c: int((labels == i).sum()) for i, c in enumerate(classes)} and res["no_class"] == 4
    assert res["windows"] == 16 and not list(tmp_path.rglob(".*tmp*"))

    # Overlapping windows: every 16 px (7 x 7), each pixel centred on its window's centre.
    res = predict(cli, trained, scene, tmp_path / "s16.tif", "--stride", "16")
    with rasterio.open(tmp_path / "s16.tif") as ds:
        assert (ds.width, ds.height) == (7, 7) and res["stride"] == 16
        assert ds.transform == g.transform * rasterio.Affine.translation(8, 8) * rasterio.Affine.scale(16)
        fine = ds.read(1)
    assert (fine[:, 0] == 255).all() and (fine[:, 1] != 255).all()     # [16, 48): 24 of 32 px valid
    assert np.array_equal(fine[::2, ::2], labels)                        # the same windows, the same classes


def test_every_form_of_the_same_ground_gives_the_same_class_map(trained, cli, tmp_path, one_torch_thread):
    g = s2.ground(128, seed=5)
    forms = {
        "uint16": s2.write_dn_geotiff(tmp_path / "dn.tif", g, nodata_edge=EDGE),
        "reordered": s2.write_dn_geotiff(tmp_path / "re.tif", g, bands=("B08", "B04", "B02", "B03"),
                                         nodata_edge=EDGE),
        "EE names": s2.write_dn_geotiff(tmp_path / "ee.tif", g, names="ee", nodata_edge=EDGE),
        "float": s2.write_float_geotiff(tmp_path / "f.tif", g, nodata_edge=EDGE),
        "SAFE": s2.write_safe(tmp_path / "safe", g, offset=True, nodata_edge=EDGE),
    }
    maps = {}
    for what, path in forms.items():
        out = tmp_path / f"{what.replace(' ', '_')}.tif"
        res = predict(cli, trained, path, out, "--scl-nodata", "none")
        with rasterio.open(out) as ds:
            maps[what] = ds.read(1)
            assert ds.crs.to_string() == g.crs and ds.transform == g.transform * rasterio.Affine.scale(SIZE), what
        assert res["inputs"].startswith("B02 B03 B04 B08 as reflectance"), (what, res["inputs"])
    ref = maps["uint16"]
    assert (ref[:, 0] == 255).all() and (ref[:, 1:] != 255).all()
    for what, m in maps.items():
        assert np.array_equal(m, ref), what


def test_what_cannot_be_read_is_one_line_and_nothing_is_written(trained, cli, tmp_path):
    g = s2.ground(128, seed=5)
    no_b08 = s2.write_dn_geotiff(tmp_path / "nob08.tif", g, bands=("B02", "B03", "B04"))
    silent = s2.write_dn_geotiff(tmp_path / "silent.tif", g, dn_offset=1000)
    small = geotiff.write(tmp_path / "small.tif", g.dn()[:, :24, :24], g.transform, g.crs, nodata=0,
                          band_names=list(s2.DEFAULT_BANDS))
    ok = s2.write_dn_geotiff(tmp_path / "ok.tif", g)
    out = tmp_path / "out" / "classes.tif"
    cases = [
        (("--input", no_b08, "--out", out), ("B08", "nob08.tif")),
        (("--input", silent, "--out", out, "--probabilities", tmp_path / "out" / "p.tif"), ("offset", "silent")),
        (("--input", small, "--out", out), ("small.tif", "24x24", "32 px")),
        (("--input", ok, "--out", out, "--stride", "40"), ("stride 40",)),
        (("--input", ok, "--out", out, "--source", "folder"), ("--input", "filters")),
        (("--input", ok), ("--out",)),
        (("--out", out), ("--input",)),
    ]
    for args, words in cases:
        code, stdout, err = cli("classify", "predict", "--run", trained, *args)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (args, err)
        assert all(w in lines[0] for w in words), (words, lines[0])
        assert not (tmp_path / "out").exists(), args


def test_a_folder_of_scenes_gives_a_class_map_each(trained, cli, tmp_path, one_torch_thread):
    g = s2.ground(128, seed=5)
    scenes = tmp_path / "scenes"
    s2.write_dn_geotiff(scenes / "a.tif", g)
    s2.write_float_geotiff(scenes / "b.tif", g)
    code, out, err = cli("classify", "predict", "--run", trained, "--input", scenes, "--out", tmp_path / "maps")
    assert code == 0, err
    a, b = (geotiff.read(tmp_path / "maps" / f"{n}_classes.tif")[0] for n in "ab")
    assert a.shape == (4, 4) and np.array_equal(a, b)
    code, out, err = cli("classify", "predict", "--run", trained, "--input", scenes, "--out", scenes)
    assert code == 2 and "new folder" in err
    code, out, err = cli("classify", "predict", "--run", trained, "--input", scenes / "a.tif", "--out",
                         scenes / "a.tif")
    assert code == 2 and "never replaces" in err
