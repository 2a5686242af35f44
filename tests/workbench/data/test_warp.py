"""Any CRS / any pixel size in, the map on the scene's grid out (issue 19 part 3): a scene in
another UTM zone at 20 m or in EPSG:4326 is read onto a model grid at the run's 10 m and gives
the values of the native scene there; a mask made on that grid goes back onto the scene's grid;
what cannot be reprojected is one line."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from tests.support import sentinel2 as s2
from workbench.data import geotiff, warp
from workbench.data.contract import open_scene
from workbench.errors import WorkbenchError

SIZE = 128
NIR_WATER = 0.08          # B08 reflectance: water ~0.01, every land cover above 0.15


@pytest.fixture(scope="module")
def g():
    return s2.ground(SIZE, seed=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, g):
    """The contract (10 m, EPSG:32633) and statistics of a run trained on the native DN GeoTIFF."""
    return s2.trained_inputs(tmp_path_factory.mktemp("train"), g)


def info(crs, transform, width, height, path="scene.tif") -> geotiff.RasterInfo:
    return geotiff.RasterInfo(path=path, width=width, height=height, count=4, dtype="uint16", crs=crs,
                              transform=tuple(transform)[:6], nodata=0, band_names=s2.TEN_M)


def native_bounds(g):
    h, w = g.shape
    return g.transform.c, g.transform.f - h * s2.RES, g.transform.c + w * s2.RES, g.transform.f


def reprojected(path, g, crs, res, *, float_export=False):
    """The native ground reprojected to ``crs`` at ``res`` (CRS units): uint16 DN with nodata 0
    (average, as a 20 m product is made from finer pixels), or float reflectance without a nodata
    tag (an Earth Engine export in EPSG:4326), 0 outside the footprint."""
    h, w = g.shape
    src = g.stack().astype(np.float32) if float_export else g.dn()
    src[:, ~g.valid()] = 0
    t, dw, dh = calculate_default_transform(g.crs, crs, w, h, *native_bounds(g), resolution=res)
    out = np.zeros((src.shape[0], dh, dw), src.dtype)
    reproject(src, out, src_transform=g.transform, src_crs=g.crs, dst_transform=t, dst_crs=crs, src_nodata=0,
              dst_nodata=0, resampling=Resampling.average if res > 1 else Resampling.bilinear)
    return geotiff.write(path, out, t, crs, nodata=None if float_export else 0, band_names=list(s2.TEN_M))


def onto(array, src_transform, src_crs, grid, resampling, fill):
    """``array`` (bands, h, w) reprojected onto ``grid`` directly: the reference."""
    arr = array[None] if array.ndim == 2 else array
    out = np.full((arr.shape[0], grid.height, grid.width), fill, arr.dtype)
    reproject(arr, out, src_transform=src_transform, src_crs=src_crs, dst_transform=grid.affine, dst_crs=grid.crs,
              src_nodata=fill, dst_nodata=fill, resampling=resampling)
    return out


def near_edge(labels, px=1):
    """True within ``px`` pixels of a change of label (or of the nodata border)."""
    edge = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        d = np.diff(labels.astype(np.int16), axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    for _ in range(px - 1):
        edge = edge | np.roll(edge, 1, 0) | np.roll(edge, -1, 0) | np.roll(edge, 1, 1) | np.roll(edge, -1, 1)
    return edge


# ---- where a scene is read -------------------------------------------------------------------

def test_model_grid_only_where_the_pixels_are_not_the_runs():
    utm = from_origin(500_000, 4_600_000, 10, 10)
    assert warp.model_grid(info("EPSG:32633", utm, 100, 100), 10.0, ["EPSG:32633"]) is None
    # another UTM zone at the run's pixel size: metres are metres, read as it is (several zones too)
    assert warp.model_grid(info("EPSG:32634", utm, 100, 100), 10.0, ["EPSG:32633"]) is None
    assert warp.model_grid(info("EPSG:32635", utm, 100, 100), 10.0, ["EPSG:32633", "EPSG:32634"]) is None
    assert warp.model_grid(info("EPSG:32633", from_origin(500_000, 4_600_000, 10.5, 10.5), 100, 100), 10.0) is None
    # 20 m: the same CRS and footprint at 10 m
    grid = warp.model_grid(info("EPSG:32634", from_origin(500_000, 4_600_000, 20, 20), 50, 40), 10.0, ["EPSG:32633"])
    assert grid.crs == "EPSG:32634" and (grid.width, grid.height) == (100, 80)
    assert grid.affine == from_origin(500_000, 4_600_000, 10, 10)
    # degrees: the UTM zone of the centre, north and south
    geo = warp.model_grid(info("EPSG:4326", from_origin(14.9, 41.6, 1e-4, 1e-4), 2000, 2000), 10.0)
    assert geo.crs == "EPSG:32633" and abs(geo.affine.a) == abs(geo.affine.e) == 10.0
    assert geo.height == pytest.approx(2000 * 1e-4 * geotiff.EARTH_METRES_PER_DEGREE / 10, rel=0.02)
    south = warp.model_grid(info("EPSG:4326", from_origin(-45.1, -10.0, 1e-4, 1e-4), 1000, 1000), 10.0)
    assert south.crs == "EPSG:32723"
    # a run trained in degrees (the Blue Marble demo) reads degrees as they are
    blue = info("EPSG:4326", from_origin(0, 10, 0.0666667, 0.0666667), 64, 64)
    assert warp.model_grid(blue, blue.affine.a * geotiff.EARTH_METRES_PER_DEGREE, ["EPSG:4326"]) is None
    # a US-feet state plane: 32.8 ft are 10 m, 10 ft pixels are not
    feet = 10 / 0.3048006096
    assert warp.model_grid(info("EPSG:2263", from_origin(9e5, 2e5, feet, feet), 64, 64), 10.0) is None
    fine = warp.model_grid(info("EPSG:2263", from_origin(9e5, 2e5, 10, 10), 64, 64), 10.0)
    assert fine.crs == "EPSG:2263" and fine.affine.a == pytest.approx(feet) and fine.width == 20
    # a run that does not know its pixel size reads anything as it is
    assert warp.model_grid(info("EPSG:4326", from_origin(14.9, 41.6, 1e-4, 1e-4), 50, 50), None) is None


@pytest.mark.parametrize("lon, lat, crs", [(15.0, 41.5, "EPSG:32633"), (-0.1, 51.5, "EPSG:32630"),
                                           (179.9, -30, "EPSG:32760"), (-180, 0, "EPSG:32601"),
                                           (10, 86, "EPSG:32661"), (10, -85, "EPSG:32761")])
def test_utm_zone(lon, lat, crs):
    assert warp.utm_zone(lon, lat) == crs


def test_target_grid_is_the_scene_or_out_crs():
    scene = info("EPSG:32633", from_origin(500_000, 4_600_000, 10, 10), 300, 200)
    assert warp.target_grid(scene) is scene and warp.target_grid(scene, "EPSG:32633") is scene
    lonlat = warp.target_grid(scene, "EPSG:4326")
    assert lonlat.crs == "EPSG:4326" and lonlat.width > 0 and lonlat.height > 0
    w, s, e, n = lonlat.bounds
    ww, ss, ee, nn = scene.lonlat_bounds()
    px = abs(lonlat.affine.a)                             # GDAL rounds the size to whole pixels
    assert w <= ww + px and s <= ss + px and e >= ee - px and n >= nn - px
    assert e - w < 1.01 * (ee - ww) + 2 * px


def test_what_cannot_be_reprojected_is_one_line(tmp_path, g, trained):
    contract, stats = trained
    cases = {
        "no georeferencing": lambda: warp.model_grid(info(None, from_origin(0, 0, 1, 1), 64, 64), 10.0),
        "not longitudes and latitudes": lambda: warp.model_grid(
            info("EPSG:4326", from_origin(10, 95, 1e-3, 1e-3), 64, 64), 10.0),
        "spans 20 degrees": lambda: warp.model_grid(info("EPSG:4326", from_origin(0, 10, 0.1, 0.1), 200, 20), 10.0),
        "do not transform to EPSG:4326": lambda: warp.target_grid(
            info("EPSG:32633", from_origin(1e15, 1e15, 10, 10), 64, 64), "EPSG:4326"),
        "--out-crs 'EPSG:999999'": lambda: warp.target_grid(
            info("EPSG:32633", from_origin(5e5, 4.6e6, 10, 10), 64, 64), "EPSG:999999"),
        "resampling 'lanczos4'": lambda: warp.resample_to(tmp_path / "m.tif", info("EPSG:32633", g.transform, 8, 8),
                                                          tmp_path / "o.tif", "lanczos4"),
    }
    for what, call in cases.items():
        with pytest.raises(WorkbenchError) as e:
            call()
        assert what in str(e.value) and "\n" not in str(e.value), str(e.value)
    # the scene without a CRS, through open_scene: named, one line
    bare = geotiff.write(tmp_path / "bare.tif", g.dn(), from_origin(100, 200, 1, 1), None, nodata=0,
                         band_names=list(s2.TEN_M))
    with pytest.raises(WorkbenchError, match=r"bare\.tif: has no georeferencing \(no CRS\)") as e:
        open_scene(contract, stats, bare, run="r", warn=False)
    assert "\n" not in str(e.value)


# ---- reading onto the model grid -------------------------------------------------------------

SCENES = {  # what users bring: another zone at 20 m (DN, nodata 0), and degrees (EE float export, no nodata)
    "zone 34 at 20 m": dict(crs="EPSG:32634", res=20.0),
    "EPSG:4326": dict(crs="EPSG:4326", res=8e-5, float_export=True),
}


@pytest.fixture(scope="module", params=list(SCENES))
def scene(request, tmp_path_factory, g):
    folder = tmp_path_factory.mktemp("scene")
    return request.param, reprojected(folder / "scene.tif", g, **SCENES[request.param])


def test_reprojected_scene_reads_like_the_native_one(g, trained, scene):
    what, path = scene
    contract, stats = trained
    reader = open_scene(contract, stats, path, run="r", warn=False)
    try:
        own = geotiff.read_info(path)
        assert reader.warped and geotiff.same_grid(reader.scene_info, own) is None
        grid = reader.info
        assert abs(grid.affine.a) == pytest.approx(10.0) and abs(grid.affine.e) == pytest.approx(10.0)
        assert grid.crs == ("EPSG:32634" if own.crs == "EPSG:32634" else "EPSG:32633")
        assert "10 m grid" in reader.notes[-1]
        refl, valid = reader.stack.read(Window(0, 0, grid.width, grid.height))
        x, xvalid = reader.read(Window(0, 0, grid.width, grid.height))
    finally:
        reader.close()
    assert refl.shape == (4, grid.height, grid.width) and np.array_equal(valid, xvalid)
    # the native ground, reprojected onto the model grid in one step: the scene's values there
    ref = onto(np.where(g.valid(), g.stack(), np.nan).astype(np.float32), g.transform, g.crs, grid,
               Resampling.bilinear, np.nan)
    ref_valid = np.isfinite(ref).all(axis=0)
    both = valid & ref_valid
    assert both.sum() > 0.6 * grid.width * grid.height, what
    assert not (valid & ~ref_valid & ~near_edge(ref_valid, 3)).any(), f"{what}: valid outside the footprint"
    diff = np.abs(refl[:, both] - ref[:, both])
    assert np.median(diff) < 0.01 and diff.mean() < 0.015, f"{what}: {np.median(diff)}, {diff.mean()}"
    for b in range(4):                                     # no band shifted or scaled
        assert refl[b, both].mean() == pytest.approx(ref[b, both].mean(), abs=0.004), what
    # and the model sees the same water: a NIR threshold maps it as on the native grid
    truth = onto(np.where(g.valid(), g.water, 255).astype(np.uint8), g.transform, g.crs, grid, Resampling.nearest,
                 255)[0]
    judged = both & (truth != 255)
    agree = ((refl[3] < NIR_WATER) == (truth == 1))[judged]
    assert agree.mean() > 0.97, f"{what}: {agree.mean()}"


def test_scene_at_the_runs_pixels_is_read_as_it_is_in_any_zone(tmp_path, g, trained):
    contract, stats = trained
    for zone in ("EPSG:32634", "EPSG:32635"):
        path, _ = s2.write_next_zone(tmp_path / f"{zone[-5:]}.tif", g, crs=zone)
        reader = open_scene(contract, stats, path, run="r", warn=False)
        try:
            assert not reader.warped and not reader.stack.warped and reader.info is reader.scene_info
            assert geotiff.same_grid(reader.info, geotiff.read_info(path)) is None
        finally:
            reader.close()


# ---- back onto the scene's grid --------------------------------------------------------------

def test_mask_made_on_the_model_grid_lands_on_the_scene_grid(tmp_path, g, trained, scene):
    """The predict_scene recipe: open on the model grid, map there, write a temporary mask,
    resample it (nearest) onto the scene's own grid; it matches the scene's own water map
    except at edges."""
    what, path = scene
    contract, stats = trained
    reader = open_scene(contract, stats, path, run="r", warn=False)
    try:
        grid, scene_info = reader.info, reader.scene_info
        refl, valid = reader.stack.read(Window(0, 0, grid.width, grid.height))
    finally:
        reader.close()
    mask = np.where(valid, refl[3] < NIR_WATER, 255).astype(np.uint8)
    tmp = geotiff.write(tmp_path / "model_mask.tif", mask, grid.affine, grid.crs, nodata=255, band_names=["water"])
    out = warp.resample_to(tmp, warp.target_grid(scene_info), tmp_path / "mask.tif", "nearest", tags={"k": "v"})
    back = geotiff.read_info(out)
    assert geotiff.same_grid(back, geotiff.read_info(path)) is None, what
    assert back.nodata == 255 and back.band_names == ("water",) and back.dtype == "uint8"
    with rasterio.open(out) as ds:
        assert ds.tags()["k"] == "v"
        got = ds.read(1)
    # the scene's own water on its own pixels (the same threshold, on its own values)
    own = geotiff.read(path).astype(np.float32)
    own_nir = own[3] * (1e-4 if geotiff.read_info(path).dtype == "uint16" else 1.0)
    own_valid = (own != 0).any(axis=0)
    expect = np.where(own_valid, own_nir < NIR_WATER, 255).astype(np.uint8)
    judged = (got != 255) & (expect != 255)
    assert judged.sum() > 0.6 * got.size
    wrong = judged & (got != expect)
    assert wrong.mean() < 0.02, f"{what}: {wrong.mean()}"
    assert not (wrong & ~near_edge(expect, 2)).any(), f"{what}: a wrong pixel away from any water edge"


def test_round_trip_to_another_crs_and_back(tmp_path, g):
    """native -> other zone / EPSG:4326 (--out-crs) -> native: the mask comes back except a few
    pixels at water edges; probabilities (bilinear) come back close."""
    labels = np.where(g.valid(), g.water, 255).astype(np.uint8)
    mask = geotiff.write(tmp_path / "mask.tif", labels, g.transform, g.crs, nodata=255, band_names=["water"])
    prob = np.where(g.valid(), 0.1 + 0.8 * g.water, np.nan).astype(np.float32)
    probs = geotiff.write(tmp_path / "p.tif", prob[None], g.transform, g.crs, nodata=float("nan"),
                          band_names=["p_water"])
    native = geotiff.read_info(mask)
    for other in ("EPSG:32634", "EPSG:4326"):
        there = warp.target_grid(native, other)
        m1 = warp.resample_to(mask, there, tmp_path / "m1.tif", "nearest")
        p1 = warp.resample_to(probs, there, tmp_path / "p1.tif", "bilinear")
        assert geotiff.same_grid(geotiff.read_info(m1), there) is None
        assert geotiff.read_info(p1).crs == there.crs and math.isnan(geotiff.read_info(p1).nodata)
        m2 = warp.resample_to(m1, native, tmp_path / "m2.tif", "nearest")
        p2 = warp.resample_to(p1, native, tmp_path / "p2.tif", "bilinear")
        assert geotiff.same_grid(geotiff.read_info(m2), native) is None
        got = geotiff.read(m2)[0]
        judged = (got != 255) & (labels != 255)
        assert judged.sum() > 0.95 * (labels != 255).sum(), other
        wrong = judged & (got != labels)
        assert wrong.mean() < 0.01 and not (wrong & ~near_edge(labels, 1)).any(), other
        p = geotiff.read(p2)[0]
        ok = np.isfinite(p) & judged & ~near_edge(labels, 3)
        assert np.abs(p[ok] - prob[ok]).max() < 1e-3, other
        assert np.nanmin(p) >= 0.1 - 1e-6 and np.nanmax(p) <= 0.9 + 1e-6


def test_resample_to_works_window_by_window(tmp_path, monkeypatch):
    """Bounded memory: rows of ``rows`` px go to the writer one at a time; numpy never holds the
    whole raster (tracemalloc peak well under its size)."""
    h, w = 1000, 700
    rng = np.random.default_rng(0)
    arr = rng.random((2, h, w), dtype=np.float32)
    src = geotiff.write(tmp_path / "p.tif", arr, from_origin(500_000, 4_600_000, 10, 10), "EPSG:32633",
                        nodata=float("nan"))
    grid = warp.model_grid(geotiff.read_info(src), 20.0)            # 20 m: 350 x 500
    assert (grid.width, grid.height) == (350, 500)
    seen = []
    real = geotiff.RasterWriter.write

    def spy(self, array, window):
        seen.append((array.shape, window))
        return real(self, array, window)

    monkeypatch.setattr(geotiff.RasterWriter, "write", spy)
    tracemalloc.start()
    try:
        out = warp.resample_to(src, grid, tmp_path / "q.tif", "average", rows=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [wd.row_off for _, wd in seen] == list(range(0, 500, 64))
    assert all(shape == (2, min(64, 500 - wd.row_off), 350) for shape, wd in seen)
    assert peak < arr.nbytes / 8, peak
    q = geotiff.read(out)
    np.testing.assert_allclose(q, arr.reshape(2, 500, 2, 350, 2).mean(axis=(2, 4)), atol=1e-5)


def test_finer_pixels_are_averaged_onto_a_coarser_run(tmp_path, g, trained):
    """A 10 m scene for a run trained at 20 m: each model pixel is the mean of its 2 x 2 scene
    pixels (average, not bilinear's sample of a few of them)."""
    contract, stats = trained
    coarse = dataclasses.replace(contract, gsd=20.0)
    path = s2.write_dn_geotiff(tmp_path / "dn.tif", g)
    reader = open_scene(coarse, stats, path, run="r", warn=False)
    try:
        grid = reader.info
        assert reader.warped and (grid.width, grid.height) == (SIZE // 2, SIZE // 2) and grid.crs == g.crs
        refl, valid = reader.stack.read(Window(0, 0, grid.width, grid.height))
    finally:
        reader.close()
    means = g.stack().reshape(4, SIZE // 2, 2, SIZE // 2, 2).mean(axis=(2, 4))
    inside = np.zeros(valid.shape, bool)
    inside[:, s2.NODATA_EDGE // 2:] = True
    assert np.array_equal(valid, inside)
    np.testing.assert_allclose(refl[:, inside], means[:, inside], atol=1e-4)


def test_warped_bands_without_nodata_are_invalid_outside_their_footprint(tmp_path):
    """Raw 8-bit RGB in degrees, no nodata tag: the UTM model grid's corners lie outside the
    rotated footprint, where a warp reads 0; they must be no data, not black ground."""
    from workbench.data.inputs import describe

    rgb = np.full((3, 400, 400), 50, np.uint8)
    path = geotiff.write(tmp_path / "rgb.tif", rgb, from_origin(17.0, 46.0, 2e-4, 2e-4), "EPSG:4326",
                         band_names=["red", "green", "blue"])
    own = geotiff.read_info(path)
    grid = warp.model_grid(own, 20.0)
    assert grid.crs == "EPSG:32633"
    with describe(str(path)).open(scl_nodata=None) as stack:
        stack.onto(grid)
        assert stack.warped
        raw = stack.read_raw(Window(0, 0, grid.width, grid.height))
        bad = stack.invalid(raw, Window(0, 0, grid.width, grid.height))
    footprint = onto(np.ones((400, 400), np.uint8), own.affine, own.crs, grid, Resampling.nearest, 0)[0] == 1
    assert (~footprint).sum() > 100                       # there are corners outside
    assert bad[~footprint & ~near_edge(footprint, 2)].all()
    assert not bad[footprint & ~near_edge(footprint, 2)].any()
    assert (raw[:, ~bad] == 50).all()
