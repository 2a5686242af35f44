"""Scene prediction: a tiny model saved through a fake run folder, predicted over synthetic GeoTIFFs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile
from workbench.data.stats import BandStats
from workbench.errors import WorkbenchError

FILTERS = [8, 16, 32]  # own plain AttentionUNet: output stride 4


def make_run(root: Path, name: str = "segmentation-tiny-20240101-000000", bands: int = 3, classes: int = 1,
             window: int = 64, overlap: int = 16, batch_size: int = 4, crs_tile: Path | None = None) -> Path:
    from tasks.segmentation.config import SegmentationConfig, config_from_dict
    from tasks.segmentation.models import build_model
    from workbench.config import dump_yaml
    from workbench.train.checkpoint import save_checkpoint, with_prefix

    run = root / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = config_from_dict({"name": "tiny", "model": {"arch": "AttentionUNet", "encoder": None, "classes": classes,
                                                       "kwargs": {"filters": FILTERS}},
                            "predict": {"window": window, "overlap": overlap, "batch_size": batch_size}})
    assert isinstance(cfg, SegmentationConfig)
    dump_yaml(cfg, run / "config.yaml")
    torch.manual_seed(0)
    model = build_model("AttentionUNet", None, in_channels=bands, classes=classes, filters=FILTERS)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(run / "checkpoints" / "best.safetensors", with_prefix("model", model.state_dict()), {"step": 1})
    stats = BandStats([1500.0] * bands, [300.0] * bands, tiles=[str(crs_tile)] if crs_tile else [])
    stats.save(run / "band_stats.json")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "select": "iou"}))
    return run


def make_scene(path: Path, width: int = 300, height: int = 200, bands: int = 3, crs: str = "EPSG:32633",
               nodata: float | None = 0) -> Path:
    rng = np.random.default_rng(1)
    img = rng.normal(1500, 300, (bands, height, width)).clip(1, 5000).astype("uint16")
    yy, xx = np.mgrid[0:height, 0:width]
    img[:, (yy - 100) ** 2 + (xx - 150) ** 2 < 60 ** 2] -= 400
    if nodata is not None:
        img[:, :10, :25] = 0
    return geotiff.write(path, img, from_origin(500_000, 4_650_000, 10, 10), crs, nodata=nodata)


@pytest.fixture
def run_dir(home):
    return make_run(home)


def test_predict_scene_georeferenced(home, run_dir):
    from tasks.segmentation.predict import predict_scene
    from tasks.segmentation.run import load_run

    run = load_run(run_dir.name)
    assert run.in_channels == 3 and run.classes == 1 and run.threshold == 0.5
    scene = make_scene(home / "scene.tif")
    res = predict_scene(run, scene, home / "out" / "mask.tif", prob_path=home / "out" / "prob.tif", progress=False)
    assert res["windows"] == 4 * 6 or res["windows"] > 1
    with rasterio.open(scene) as src, rasterio.open(res["out"]) as m, rasterio.open(res["probabilities"]) as p:
        assert (m.width, m.height, m.count, m.dtypes[0]) == (300, 200, 1, "uint8")
        assert m.crs == src.crs and m.transform == src.transform and m.nodata == 255
        assert p.crs == src.crs and p.transform == src.transform and p.dtypes[0] == "float32"
        mask, prob = m.read(1), p.read(1)
    assert (mask[:10, :25] == 255).all() and np.isnan(prob[:10, :25]).all()
    rest = mask.copy()
    rest[:10, :25] = 0
    assert set(np.unique(rest)) <= {0, 1}
    ok = ~np.isnan(prob)
    assert ((prob[ok] > 0.5) == (mask[ok] == 1)).all()
    assert res["nodata_pixels"] == 250
    assert not list((home / "out").glob(".*tmp*"))


def test_batched_matches_naive_and_blends(home, run_dir):
    from tasks.segmentation.predict import predict_probabilities
    from tasks.segmentation.run import load_run

    run = load_run(run_dir)
    run.cfg.predict.precision = "fp32"  # the naive baseline is fp32: compare the engines in one arithmetic
    scene = make_scene(home / "scene.tif")
    for blend in ("gaussian", "mean"):
        a = predict_probabilities(run, scene, window=64, overlap=16, batch_size=5, blend=blend, progress=False)
        b = predict_probabilities(run, scene, window=64, overlap=16, blend=blend, progress=False, naive=True)
        assert a.plan == b.plan and a.plan.windows > 10
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5, rtol=0)
        assert (a.valid == b.valid).all()
        assert np.isfinite(a.probs).all() and (a.probs >= 0).all() and (a.probs <= 1).all()
    # A scene smaller than the window: padded by reflection, cropped back.
    small = make_scene(home / "small.tif", width=50, height=37, nodata=None)
    s = predict_probabilities(run, small, window=256, overlap=32, progress=False)
    assert s.probs.shape == (1, 37, 50) and s.plan.windows == 1


def test_tta_makes_prediction_equivariant_under_its_symmetries(home, run_dir):
    """Averaging over the D4 views must give the same answer for a rotated or flipped scene,
    rotated or flipped back; a random model without TTA does not."""
    from tasks.segmentation.predict import predict_probabilities
    from tasks.segmentation.run import load_run
    from workbench.data.augment import dihedral

    run = load_run(run_dir)
    img = geotiff.read(make_scene(home / "scene.tif", width=64, height=64, nodata=None))
    transform = from_origin(500_000, 4_650_000, 10, 10)

    def probs(t: int, tta: str) -> np.ndarray:
        path = geotiff.write(home / f"t{t}.tif", np.ascontiguousarray(dihedral(img, t)), transform, "EPSG:32633")
        return predict_probabilities(run, path, window=64, overlap=16, progress=False, tta=tta).probs

    base = {tta: probs(0, tta) for tta in ("none", "flips", "d4")}
    for t in range(1, 8):
        np.testing.assert_allclose(probs(t, "d4"), dihedral(base["d4"], t), atol=1e-5)
    for t in (4, 6, 2):                                        # left-right, up-down, both
        np.testing.assert_allclose(probs(t, "flips"), dihedral(base["flips"], t), atol=1e-5)
    assert np.abs(probs(1, "none") - dihedral(base["none"], 1)).max() > 1e-3
    assert np.abs(base["d4"] - base["none"]).max() > 1e-3
    with pytest.raises(WorkbenchError, match="tta 'rot'"):
        predict_probabilities(run, home / "t0.tif", progress=False, tta="rot")


def test_window_must_fit_output_stride(home, run_dir):
    from tasks.segmentation.predict import predict_scene
    from tasks.segmentation.run import load_run

    run = load_run(run_dir)
    scene = make_scene(home / "scene.tif")
    with pytest.raises(WorkbenchError, match="multiple of the model's output stride 4"):
        predict_scene(run, scene, home / "m.tif", window=62, progress=False)


def test_bad_inputs_are_one_line_errors(home, run_dir, cli):
    from tasks.segmentation.predict import predict_scene
    from tasks.segmentation.run import load_run

    run = load_run(run_dir)
    four = make_scene(home / "four.tif", bands=4)
    with pytest.raises(WorkbenchError) as e:
        predict_scene(run, four, home / "m.tif", progress=False)
    assert "4 bands" in str(e.value) and "expects 3" in str(e.value) and "four.tif" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(WorkbenchError, match="no such file"):
        predict_scene(run, home / "missing.tif", home / "m.tif", progress=False)
    truncated = home / "trunc.tif"
    data = make_scene(home / "full.tif", width=600, height=600).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="trunc.tif"):
        predict_scene(run, truncated, home / "m.tif", progress=False)
    with pytest.raises(WorkbenchError, match="no such run"):
        load_run("nope")
    assert not (home / "m.tif").exists()
    # Another CRS than the run's training tiles (e.g. the next UTM zone) is no reason to refuse:
    # the model reads pixels, and the mask is written on the scene's own grid.
    tile = make_scene(home / "train_tile.tif", width=64, height=64)
    other = make_run(home, name="segmentation-crs-20240101-000000", crs_tile=tile)
    zone34 = make_scene(home / "zone34.tif", crs="EPSG:32634")
    predict_scene(load_run(other), zone34, home / "z.tif", progress=False)
    assert geotiff.read_info(home / "z.tif").crs == "EPSG:32634"
    code, out, err = cli("segment", "predict", "--run", run_dir.name, "--input", str(four), "--out",
                         str(home / "m.tif"))
    assert code == 2 and "expects 3" in err and len(err.strip().splitlines()) == 1


def _mask(path: Path, arr: np.ndarray, transform, crs="EPSG:4326", nodata=None) -> Path:
    return geotiff.write(path, arr.astype("uint8"), transform, crs, nodata=nodata)


def test_score_scene_hand_computed(home):
    from tasks.segmentation.scene import score_scene

    t = from_origin(0.0, 10.0, 1.0, 1.0)  # 10 x 10 px, 1 degree pixels
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1
    pred = np.zeros((10, 10), np.uint8)
    pred[:, :4] = 1
    pred[0, 9] = 1
    pred[9, 9] = 255  # nodata never counts
    tp = _mask(home / "truth.tif", truth, t)
    pp = _mask(home / "pred.tif", pred, t, nodata=255)
    m = score_scene(pp, tp, tiles=None)
    # water: TP 40, FP 1, FN 10 -> 40/51 ; land: TP 48 (49 minus the nodata pixel), FP 10, FN 1 -> 48/59
    assert m["pixels"] == 99
    assert m["iou_water"] == pytest.approx(40 / 51) and m["iou_land"] == pytest.approx(48 / 59)
    assert m["mean_iou"] == pytest.approx((40 / 51 + 48 / 59) / 2)
    # Only the left-top tile (rows 0-4, cols 0-5 of the grid) and an all-land tile (filtered by water fraction).
    tiles = [Tile(path="a.tif", source="folder", west=0.0, east=6.0, north=10.0, south=5.0, crs="EPSG:4326"),
             Tile(path="b.tif", source="folder", west=7.0, east=10.0, north=5.0, south=0.0, crs="EPSG:4326"),
             Tile(path="c.tif", source="folder", west=50.0, east=60.0, north=5.0, south=0.0, crs="EPSG:4326")]
    m = score_scene(pp, tp, tiles=tiles)
    # tile a: 5 rows x 6 cols; water cols 0-4: TP 5*4=20, FN 5 (col 4), land col 5: TN 5
    assert m["tiles_scored"] == 1 and m["tiles_filtered"] == 1 and m["tiles_outside"] == 1
    assert m["pixels"] == 30 and m["iou_water"] == pytest.approx(20 / 25) and m["iou_land"] == pytest.approx(5 / 10)
    other = _mask(home / "other.tif", truth[:, :9], t)
    with pytest.raises(WorkbenchError, match="grid"):
        score_scene(pp, other)


def test_score_scene_splits_errors_at_the_class_edges(home):
    """Same masks as above: the band (1 px) is columns 4 and 5; the wrong pixels are column 4
    (10, in the band) and one far from any edge."""
    from tasks.segmentation.scene import class_edges, format_boundary, score_scene

    t = from_origin(0.0, 10.0, 1.0, 1.0)
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1
    pred = np.zeros((10, 10), np.uint8)
    pred[:, :4] = 1
    pred[0, 9] = 1
    pred[9, 9] = 255
    tp = _mask(home / "truth.tif", truth, t)
    pp = _mask(home / "pred.tif", pred, t, nodata=255)
    b = score_scene(pp, tp)["boundary"]
    assert b["pixel_share"] == pytest.approx(20 / 99) and b["errors"] == 11 and b["errors_in_band"] == 10
    assert b["error_share"] == pytest.approx(10 / 11)
    assert b["mean_iou_outside"] == pytest.approx((40 / 41 + 38 / 39) / 2)
    assert "20.2 % of pixels, 90.9 % of errors; mean IoU elsewhere 0.9750" in format_boundary(b)
    # A tile holding only columns 0-4: its column 4 is still an edge (column 5 lies outside it).
    tile = Tile(path="a.tif", source="folder", west=0.0, east=5.0, north=10.0, south=5.0, crs="EPSG:4326")
    b = score_scene(pp, tp, tiles=[tile], water_max=None)["boundary"]
    assert b["pixel_share"] == pytest.approx(5 / 25) and b["error_share"] == 1.0
    assert b["mean_iou_outside"] == pytest.approx(1.0)  # 20 water pixels right; land absent: not averaged
    # Wider bands, no wrap-around at the scene's edges, nodata never an edge.
    edges = class_edges(truth, np.ones_like(truth, bool), 2)
    assert edges[:, 3:7].all() and not edges[:, :3].any() and not edges[:, 7:].any()
    hole = np.ones_like(truth, bool)
    hole[:, 5] = False
    assert not class_edges(truth, hole, 1)[:, 5:].any()


def test_write_masks_updates_catalog_once(home, run_dir, monkeypatch):
    from tasks.segmentation.predict import write_masks
    from tasks.segmentation.run import load_run

    run = load_run(run_dir)
    cat = Catalog()
    tiles = []
    for i in range(3):
        p = make_scene(home / "gen" / f"g{i}.tif", width=64, height=48, nodata=None)
        info = geotiff.read_info(p)
        w, s, e, n = info.lonlat_bounds()
        tiles.append(Tile(path=str(p), source="generated", west=w, south=s, east=e, north=n, crs=info.crs,
                          width=64, height=48))
    cat.add_tiles(tiles)
    rows = cat.query(source="generated")
    calls = []
    real = cat.update_many
    monkeypatch.setattr(cat, "update_many", lambda changes: (calls.append(len(changes)), real(changes)))
    n = write_masks(run, cat, rows, min_confidence=0.6, progress=False)
    assert n == 3 and calls == [3]
    for row in Catalog().query(source="generated"):
        assert row.mask_path and row.mask_path.endswith("_pseudo_mask.tif")
        mi, ti = geotiff.read_info(row.mask_path), geotiff.read_info(row.path)
        assert geotiff.same_grid(ti, mi) is None and mi.nodata == 255
        m = geotiff.read(row.mask_path)[0]
        assert set(np.unique(m)) <= {0, 1, 255}
        known = m != 255
        assert row.water_fraction == pytest.approx((m == 1).sum() / known.sum() if known.any() else None)
    # again: the tiles' masks are now their own pseudo-masks, which may be redone ...
    assert write_masks(run, cat, Catalog().query(source="generated"), min_confidence=0.6, progress=False) == 3
    # ... but a tile's own (ground-truth) mask is never replaced
    truth = make_scene(home / "gen" / "truth_mask.tif", width=64, height=48, bands=1, nodata=None)
    first = Catalog().query(source="generated")[0]
    cat.update_many([(first.id, {"mask_path": str(truth)})])
    with pytest.raises(WorkbenchError, match="has a mask of its own"):
        write_masks(run, cat, Catalog().query(source="generated"), progress=False)
    assert Catalog().get(first.id).mask_path == str(truth)


def test_cli_predict_and_score(home, run_dir, cli):
    scene = make_scene(home / "scene.tif", nodata=None)
    info = geotiff.read_info(scene)
    truth = geotiff.write(home / "truth.tif", np.zeros((200, 300), np.uint8), info.affine, info.crs)
    code, out, err = cli("segment", "predict", "--run", "latest", "--input", str(scene), "--out",
                         str(home / "pred.tif"), "--window", "64", "--overlap", "8", "--batch-size", "8",
                         "--truth", str(truth), "--all-pixels", "--no-progress")
    assert code == 0, err
    assert "pred.tif" in out and "IoU" in out and "pixels 60000" in out
    assert "class edges (within 1 px): no errors" in out or "class edges (within 1 px): 0.0 % of pixels" in out
    assert geotiff.read_info(home / "pred.tif").width == 300
    mask = geotiff.read(home / "pred.tif")[0]
    for label, name in enumerate(("land", "water")):          # a table line per class: pixels, share, km2
        n = int((mask == label).sum())
        assert f"{name:<12} {n:>12} {f'{100 * n / 60000:.1f} %':>7} {n * 100 / 1e6:>12.4f}" in out.splitlines()
    code, out, err = cli("segment", "predict", "--run", run_dir.name, "--input", str(scene), "--out",
                         str(home / "p2.tif"), "--truth", str(truth))
    assert code == 2 and "no such catalog" in err  # --truth reads the catalog: it makes no empty one
    assert not (home / "data" / "catalog.sqlite").exists()


def test_streamed_scene_equals_the_whole_scene_bit_for_bit(home, run_dir, monkeypatch):
    """predict_scene writes rows as windows complete, keeping only the open rows; the mask and the
    probabilities must equal the scene-sized accumulators' (predict_probabilities) exactly: several
    window rows, overlap, a nodata corner, a ragged last row and column, batches spanning window
    rows (5 of 6 windows per row, 16) and one window at a time for a binary model; a 3-class softmax."""
    from tasks.segmentation import predict as P
    from tasks.segmentation.run import load_run

    heights = []
    real_finish = P._OpenRows.finish

    def finish(self, upto):
        heights.append(self.wsum.shape[0])
        return real_finish(self, upto)

    monkeypatch.setattr(P._OpenRows, "finish", finish)
    scene = make_scene(home / "scene.tif", width=290, height=230)        # rows 0 48 96 144 166, cols ... 226
    three = make_run(home, name="segmentation-three-20240101-000000", classes=3)
    settings = ((5, "gaussian", False), (16, "mean", False), (1, "gaussian", True))
    for run_path, classes in ((run_dir, 1), (three, 3)):
        run = load_run(run_path)
        for batch, blend, naive in settings if classes == 1 else settings[:1]:
            heights.clear()
            whole = P.predict_probabilities(run, scene, window=64, overlap=16, batch_size=batch, blend=blend,
                                            progress=False, naive=naive)
            assert heights == [230]
            if classes == 1:      # a random model: a threshold that gives a map of both classes
                run.threshold = float(np.median(whole.probs[0][whole.valid]))
            heights.clear()
            out, prob = home / f"m{classes}{batch}.tif", home / f"p{classes}{batch}.tif"
            res = P.predict_scene(run, scene, out, prob_path=prob, window=64, overlap=16, batch_size=batch,
                                  blend=blend, progress=False, naive=naive)
            assert len(heights) > 3 and max(heights) < 230
            if batch == 5:
                assert max(heights) <= 64 + 48               # one window row plus the overlap band
            expected = P.labels_of(whole, run.threshold)
            np.testing.assert_array_equal(geotiff.read(out)[0], expected)
            probs = whole.probs.copy()
            probs[:, ~whole.valid] = np.nan
            np.testing.assert_array_equal(geotiff.read(prob), probs)
            assert len(set(np.unique(expected)) - {255}) >= 2
            names = ["land", "water"] if classes == 1 else ["class0", "class1", "class2"]
            assert res["class_pixels"] == {n: int((expected == i).sum()) for i, n in enumerate(names)}
            assert res["areas_km2"] == {n: pytest.approx((expected == i).sum() * 100 / 1e6)
                                        for i, n in enumerate(names)}
            assert res["nodata_pixels"] == 250 and res["valid_pixels"] == 290 * 230 - 250
    with rasterio.open(out) as m, rasterio.open(prob) as p:
        assert m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert p.descriptions == ("p_class_0", "p_class_1", "p_class_2") and m.descriptions == ("class",)


def test_a_narrow_scene_and_one_smaller_than_the_window_stream_too(home, run_dir, monkeypatch):
    """Batches of 16 over a 2-window-wide scene span 8 window rows (the open rows grow for them);
    a scene smaller than the window is padded and cropped as before; GDAL's cache is capped."""
    from tasks.segmentation import predict as P
    from tasks.segmentation.run import load_run

    caches = []
    real_finish = P._OpenRows.finish

    def finish(self, upto):
        caches.append(rasterio.env.getenv().get("GDAL_CACHEMAX") if rasterio.env.hasenv() else None)
        return real_finish(self, upto)

    monkeypatch.setattr(P._OpenRows, "finish", finish)
    run = load_run(run_dir)
    for name, w, h, window in (("narrow", 90, 400, 64), ("small", 50, 37, 256)):
        scene = make_scene(home / f"{name}.tif", width=w, height=h, nodata=None)
        whole = P.predict_probabilities(run, scene, window=window, overlap=16, batch_size=16, progress=False)
        res = P.predict_scene(run, scene, home / f"{name}_m.tif", window=window, overlap=16, batch_size=16,
                              progress=False)
        np.testing.assert_array_equal(geotiff.read(res["out"])[0], P.labels_of(whole, run.threshold))
        assert res["valid_pixels"] == w * h and res["water_fraction"] == pytest.approx(
            (P.labels_of(whole, run.threshold) == 1).mean())
    assert caches.count(P.GDAL_CACHE_MB) > 5 and None in caches        # streamed blocks; not the whole-scene path


def test_score_scene_by_row_blocks_equals_the_whole_arrays(home):
    """Blocks of 7 rows with a 2 px halo over a 43 x 50 scene: the confusion matrix, the class-edge
    band (which needs the rows above and below a block) and the tile filter equal those of the
    whole arrays (boundary_breakdown), with nodata in both masks and overlapping tiles."""
    from tasks.segmentation.scene import _land_water_metrics, _valid, boundary_breakdown, score_scene, tile_window

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:43, 0:50]
    truth = ((yy - 20) ** 2 + (xx - 22) ** 2 < 14 ** 2).astype(np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.08
    pred[flip] = 1 - pred[flip]
    truth[rng.random(truth.shape) < 0.03] = 255
    pred[:3, :] = 255
    t = from_origin(0.0, 43.0, 1.0, 1.0)
    tp, pp = _mask(home / "truth.tif", truth, t, nodata=255), _mask(home / "pred.tif", pred, t, nodata=255)
    tiles = [Tile(path=f"{i}.tif", source="folder", west=w, east=e, north=n, south=s, crs="EPSG:4326")
             for i, (w, e, n, s) in enumerate([(0, 30, 43, 20), (20, 45, 30, 5), (40, 50, 10, 0), (45, 50, 43, 35)])]
    info = geotiff.read_info(tp)
    known = _valid(pred, 255) & _valid(truth, 255)
    for use_tiles in (False, True):
        valid = known.copy()
        if use_tiles:
            region = np.zeros_like(valid)
            for tile in tiles[:2]:                       # tile 2 (bottom right) and 3 have no water: filtered
                r0, r1, c0, c1 = tile_window(tile, info)
                region[r0:r1, c0:c1] = True
            valid &= region
        expected = _land_water_metrics(pred, truth, valid)
        expected_band = boundary_breakdown(pred, truth, valid, 2, known)
        got = score_scene(pp, tp, tiles if use_tiles else None, band_px=2, rows=7)
        assert got["matrix"] == expected["matrix"] and got["mean_iou"] == expected["mean_iou"]
        assert got["boundary"] == pytest.approx(expected_band)
        assert expected_band["errors_in_band"] > 0 and expected_band["errors"] > expected_band["errors_in_band"]
        if use_tiles:
            assert (got["tiles_scored"], got["tiles_filtered"]) == (2, 2)
