"""Sentinel-2 in, right maps out: a whole scene + mask imported as chips, a run trained on them with
the default preset, and the same ground predicted in every form users bring it in."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.support import sentinel2 as s2
from tests.support.runner import run_in_process
from tests.support.segmentation import run_dir_of, trained_on_scene
from workbench.data import geotiff


def rows(home: Path) -> int:
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on a 256 px scene (DN GeoTIFF + mask) cut into 64 px chips, with the
    default preset and nothing but the source and tiny step counts on the command line."""
    home = tmp_path_factory.mktemp("s2home")
    run, cli = trained_on_scene(home)
    return home, run, cli


@pytest.mark.slow
def test_a_scene_imports_as_chips_in_every_split(trained):
    home, run, _ = trained
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        got = conn.execute("SELECT split, COUNT(*), MIN(width), MAX(width), MIN(date), MIN(scene_id) "
                           "FROM tiles GROUP BY split").fetchall()
    splits = {r[0]: r for r in got}
    assert set(splits) == {"train", "val", "test"} and sum(r[1] for r in got) == 16
    assert all(r[2] == r[3] == 64 for r in got) and all(r[4] == "2023-04-15" for r in got)
    inputs = json.loads((run / "inputs.json").read_text())
    assert [b["name"] for b in inputs["bands"]] == ["B02", "B03", "B04", "B08"]
    assert inputs["units"] == "reflectance"


@pytest.mark.slow
def test_every_form_of_the_same_ground_gives_the_same_mask(trained, tmp_path):
    home, run, cli = trained
    g = s2.ground(128, seed=5)
    forms = {
        "uint16": s2.write_dn_geotiff(tmp_path / "dn.tif", g),
        "EE names": s2.write_dn_geotiff(tmp_path / "ee.tif", g, names="ee"),
        "reordered": s2.write_dn_geotiff(tmp_path / "re.tif", g, bands=("B08", "B04", "B02", "B03")),
        "13 bands": s2.write_dn_geotiff(tmp_path / "all.tif", g, bands=s2.ALL_BANDS),
        "float": s2.write_float_geotiff(tmp_path / "f.tif", g),
        "SAFE": s2.write_safe(tmp_path / "safe", g, offset=True),
        "STAC": s2.write_stac_item(tmp_path / "stac" / "item.json", g, offset=True),
    }
    masks = {}
    for what, path in forms.items():
        out = tmp_path / f"{what.replace(' ', '_')}_mask.tif"
        code, _, err = cli("segment", "predict", "--run", run, "--input", path, "--out", out, "--scl-nodata", "none",
                           "--no-progress")
        assert code == 0, (what, err)
        masks[what] = geotiff.read(out)[0]
        assert geotiff.read_info(out).crs == g.crs
    ref = masks["uint16"]
    valid = ref != 255
    assert not valid[:, :s2.NODATA_EDGE].any() and valid[:, s2.NODATA_EDGE:].all()
    for what, m in masks.items():
        assert np.array_equal(m != 255, valid), what
        assert (m[valid] != ref[valid]).mean() < 1e-3, what
    # With the SCL's clouds left out the SAFE's map has nodata where the cloud is, the same elsewhere.
    out = tmp_path / "safe_scl.tif"
    assert cli("segment", "predict", "--run", run, "--input", forms["SAFE"], "--out", out, "--no-progress")[0] == 0
    scl = geotiff.read(out)[0]
    cloud = np.isin(g.scl(), (8, 9, 10))
    assert cloud.any() and (scl[cloud] == 255).all()
    assert (scl[valid & ~cloud] == 255).mean() < 0.01        # only the cloud's 20 m rim besides


@pytest.mark.slow
def test_the_next_utm_zone_is_read_on_its_own_grid(trained, tmp_path):
    home, run, cli = trained
    g = s2.ground(128, seed=5)
    image, _ = s2.write_next_zone(tmp_path / "z34.tif", g)
    code, _, err = cli("segment", "predict", "--run", run, "--input", image, "--out", tmp_path / "m.tif",
                       "--no-progress")
    assert code == 0, err
    assert geotiff.read_info(tmp_path / "m.tif").crs == "EPSG:32634"


@pytest.mark.slow
def test_what_cannot_be_read_is_one_line_and_changes_nothing(trained, tmp_path):
    home, run, cli = trained
    g = s2.ground(128, seed=5)
    before = rows(home)
    no_b08 = s2.write_safe(tmp_path / "nob08", g, bands=tuple(b for b in s2.L2A_BANDS if b != "B08"))
    silent = s2.write_dn_geotiff(tmp_path / "silent.tif", g, dn_offset=1000)
    bare_item = s2.write_stac_item(tmp_path / "bare" / "item.json", g, bands=())
    cases = [
        (("segment", "predict", "--run", run, "--input", no_b08, "--out", tmp_path / "a.tif"), ("B08", no_b08.name)),
        (("segment", "predict", "--run", run, "--input", silent, "--out", tmp_path / "b.tif"), ("offset", "silent")),
        (("segment", "predict", "--run", run, "--input", bare_item, "--out", tmp_path / "c.tif"), ("item.json",)),
        (("data", "import", silent, "--chip-size", "64"), ("offset", "silent")),
        (("data", "import", bare_item), ("item.json", "asset")),
    ]
    other_grid = s2.write_mask(tmp_path / "small_mask.tif", s2.ground(96, seed=5))
    cases.append((("data", "import", s2.write_dn_geotiff(tmp_path / "s.tif", g), "--mask", other_grid),
                  ("small_mask.tif", "grid")))
    for args, words in cases:
        code, out, err = cli(*args, "--no-progress")
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for w in words:
            assert w in err, (w, err)
    assert rows(home) == before
    assert not any((tmp_path / n).exists() for n in ("a.tif", "b.tif", "c.tif"))


@pytest.mark.slow
def test_ee_style_chips_train_with_the_water_preset_and_nothing_else(tmp_path):
    """The acceptance command as a user types it: ``--source folder`` and a step cap, no other override."""
    s2.write_ee_chips(tmp_path / "export", s2.ground(2048, seed=2), chip=128)
    home = tmp_path / "home"
    home.mkdir()
    p = run_in_process("data", "import", tmp_path / "export", "--no-progress", home=home)
    assert p.returncode == 0, p.stderr
    assert "splits: train" in p.stdout and " val " in p.stdout and " test " in p.stdout
    p = run_in_process("segment", "train", "--source", "folder", "--set", "train.max_steps=2", home=home)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p.stdout)
    inputs = json.loads((run / "inputs.json").read_text())
    assert [b["name"] for b in inputs["bands"]] == ["B02", "B03", "B04", "B08"]     # EE's B2 B3 B4 B8
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_folder_of_scenes_is_predicted_into_another_folder(trained, tmp_path):
    home, run, cli = trained
    g = s2.ground(128, seed=5)
    scenes = tmp_path / "scenes"
    s2.write_dn_geotiff(scenes / "a.tif", g)
    s2.write_mask(scenes / "a_mask.tif", g)                   # a mask beside its scene is no scene
    s2.write_float_geotiff(scenes / "b.tif", g)
    s2.write_safe(scenes, g)
    s2.write_stac_item(scenes / "item.json", g, cog_dir=scenes)  # its COGs are assets, not scenes
    code, out, err = cli("segment", "predict", "--run", run, "--input", scenes, "--out", tmp_path / "masks",
                         "--no-progress")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "masks").glob("*_mask.tif"))
    assert (tmp_path / "masks" / "manifest.json").is_file() and len(list((tmp_path / "masks" / "done").iterdir())) == 4
    assert len(written) == 4 and "a_mask.tif" in written and "item_mask.tif" in written, written
    a, b = (geotiff.read(tmp_path / "masks" / n)[0] for n in ("a_mask.tif", "b_mask.tif"))
    assert np.array_equal(a, b)
    s2.write_dn_geotiff(scenes / "c.tif", g, bands=("B02", "B03"))           # cannot be read: nothing written
    code, out, err = cli("segment", "predict", "--run", run, "--input", scenes, "--out", tmp_path / "m2",
                         "--no-progress")
    assert code == 2 and "c.tif" in err and not (tmp_path / "m2").exists()
    code, out, err = cli("segment", "predict", "--run", run, "--input", scenes, "--out", scenes, "--no-progress")
    assert code == 2 and "new folder" in err


def test_outputs_never_replace_inputs(tmp_path):
    from workbench.data.inputs import refuse_overwrite
    from workbench.errors import WorkbenchError

    scene = tmp_path / "scene.tif"
    cases = [({"--out": scene}, {"--input": scene}), ({"--out": tmp_path / "t.tif"}, {"--truth": tmp_path / "t.tif"}),
             ({"--out": tmp_path / "m.tif", "--probabilities": tmp_path / "m.tif"}, {"--input": scene})]
    for outputs, inputs in cases:
        with pytest.raises(WorkbenchError, match="never replaces"):
            refuse_overwrite(outputs, inputs)
    refuse_overwrite({"--out": tmp_path / "m.tif", "--probabilities": None}, {"--input": scene, "--truth": None})


def _reprojected(src: Path, dst: Path, crs: str, resolution: float | None = None) -> Path:
    """``src`` warped to ``crs`` (bilinear; at ``resolution`` in its units, else GDAL's suggestion),
    nodata 0 outside the footprint, band names and tags kept: what a user's gdalwarp would give."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src) as ds:
        kw = {"resolution": resolution} if resolution else {}
        t, w, h = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds, **kw)
        out = np.zeros((ds.count, h, w), ds.dtypes[0])
        reproject(ds.read(), out, src_transform=ds.transform, src_crs=ds.crs, dst_transform=t, dst_crs=crs,
                  src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear)
        names, tags = list(ds.descriptions), ds.tags()
    return geotiff.write(dst, out, t, crs, nodata=0, band_names=names, tags=tags)


def _onto(mask: Path, like: Path) -> np.ndarray:
    """``mask`` resampled (nearest) onto the grid of ``like``, 255 outside: the comparison's own warp."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(mask) as m, rasterio.open(like) as ref:
        out = np.full((ref.height, ref.width), 255, np.uint8)
        reproject(m.read(1), out, src_transform=m.transform, src_crs=m.crs, dst_transform=ref.transform,
                  dst_crs=ref.crs, src_nodata=255, dst_nodata=255, resampling=Resampling.nearest)
    return out


def _away_from_edges(labels: np.ndarray, px: int) -> np.ndarray:
    """Valid pixels with no other label (nor nodata) within ``px``."""
    h, w = labels.shape
    far = labels != 255
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            shifted = np.full_like(labels, 255)
            shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                labels[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            far &= shifted == labels
    return far


def _agreement(cli, run, native: Path, other: Path, out: Path) -> tuple[float, str, np.ndarray]:
    """Predict ``other`` and compare it with the native scene's map brought onto its grid (nearest),
    over the valid pixels 2 px or more from any edge; returns (agreement, stdout, mask)."""
    native_mask = native.with_name(native.stem + "_mask.tif")
    if not native_mask.exists():
        assert cli("segment", "predict", "--run", run, "--input", native, "--out", native_mask, "--no-progress",
                   "--no-preview")[0] == 0
    code, stdout, err = cli("segment", "predict", "--run", run, "--input", other, "--out", out, "--no-progress",
                            "--no-preview")
    assert code == 0, err
    got, want = geotiff.read(out)[0], _onto(native_mask, other)
    far = _away_from_edges(want, 2) & (got != 255)
    assert far.sum() > 500
    return float((got[far] == want[far]).mean()), stdout, got


@pytest.mark.slow
def test_a_reprojected_scene_gives_the_native_map_on_its_own_grid(trained, tmp_path):
    """Lon/lat and 20 m scenes are predicted on a model grid at the run's 10 m and written back on
    their own grid. Any resampling of the input costs this tiny, texture-sensitive model some pixels,
    so the yardstick is the same ground warped to the next UTM zone at 10 m (read as it is, no model
    grid): the model grid's maps must agree with the native map about as well as that one does."""
    home, run, cli = trained
    native = s2.write_dn_geotiff(tmp_path / "dn.tif", s2.ground(128, seed=5))
    base, out, _ = _agreement(cli, run, native, _reprojected(native, tmp_path / "z34.tif", "EPSG:32634", 10.0),
                              tmp_path / "z34_mask.tif")
    assert "model grid" not in out and base > 0.75
    for crs, resolution in (("EPSG:4326", None), ("EPSG:32633", 20.0)):
        other = _reprojected(native, tmp_path / f"{crs[5:]}_{resolution}.tif", crs, resolution)
        agree, out, got = _agreement(cli, run, native, other, tmp_path / f"{crs[5:]}_{resolution}_mask.tif")
        info, scene = geotiff.read_info(tmp_path / f"{crs[5:]}_{resolution}_mask.tif"), geotiff.read_info(other)
        assert (info.crs, info.width, info.height, info.affine) == (scene.crs, scene.width, scene.height,
                                                                    scene.affine)
        assert "model grid" in out and "of 10 in EPSG:3263" in out, out
        print(f"{crs} {resolution}: {agree:.4f} of the native map's pixels (next zone at 10 m: {base:.4f})")
        assert agree > base - 0.05, (crs, resolution, agree, base)


@pytest.mark.slow
def test_out_crs_writes_the_map_in_another_crs(trained, tmp_path):
    home, run, cli = trained
    native = s2.write_dn_geotiff(tmp_path / "dn.tif", s2.ground(128, seed=5))
    code, out, err = cli("segment", "predict", "--run", run, "--input", native, "--out", tmp_path / "m.tif",
                         "--out-crs", "EPSG:4326", "--probabilities", tmp_path / "p.tif", "--no-progress")
    assert code == 0, err
    assert geotiff.read_info(tmp_path / "m.tif").crs == geotiff.read_info(tmp_path / "p.tif").crs == "EPSG:4326"
    assert not list(tmp_path.glob(".*model*"))  # the model-grid temporaries are gone
    code, _, err = cli("segment", "predict", "--run", run, "--input", native, "--out", tmp_path / "n.tif",
                       "--out-crs", "EPSG:999999", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "EPSG:999999" in err and \
        not (tmp_path / "n.tif").exists(), err
