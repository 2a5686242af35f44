"""The one GeoTIFF module: georeferencing survives, writes are atomic, bad files are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from workbench.data import geotiff
from workbench.errors import WorkbenchError


def test_round_trip_keeps_crs_transform_nodata_and_band_names(tmp_path):
    arr = np.arange(3 * 20 * 30, dtype="int16").reshape(3, 20, 30)
    t = from_origin(399_960.0, 5_000_040.0, 10.0, 10.0)
    path = geotiff.write(tmp_path / "a.tif", arr, t, "EPSG:32631", nodata=-9999, band_names=["B4", "B3", "B2"])
    info = geotiff.read_info(path, verify=True)
    assert (info.width, info.height, info.count, info.dtype) == (30, 20, 3, "int16")
    assert info.crs == "EPSG:32631" and info.nodata == -9999
    assert info.band_names == ("B4", "B3", "B2")
    assert info.affine == t
    assert info.bounds == (399_960.0, 5_000_040.0 - 200, 399_960.0 + 300, 5_000_040.0)
    assert info.gsd_metres() == 10.0
    lon, lat = info.centre_lonlat()
    assert 1.6 < lon < 1.8 and 45.1 < lat < 45.2  # UTM 31N, near the central meridian 3°E, ~45°N
    window = geotiff.read(path, Window(5, 2, 4, 3))
    np.testing.assert_array_equal(window, arr[:, 2:5, 5:9])
    assert not list(tmp_path.glob(".*tmp*"))


def test_lonlat_gsd_is_metres(tmp_path):
    path = geotiff.write(tmp_path / "g.tif", np.zeros((4, 4), "uint8"), from_origin(0, 10, 1 / 15, 1 / 15), "EPSG:4326")
    assert geotiff.read_info(path).gsd_metres() == pytest.approx(7421.3, rel=1e-3)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = geotiff.write(tmp_path / "a.tif", np.ones((4, 4), "uint8"), from_origin(0, 4, 1, 1), "EPSG:4326")

    class Boom(RuntimeError):
        pass

    real_open = rasterio.open

    def failing_open(fp, mode="r", **kw):
        ds = real_open(fp, mode, **kw)
        if mode == "w":
            ds.close()
            raise Boom("disk full")
        return ds

    monkeypatch.setattr(rasterio, "open", failing_open)
    with pytest.raises(Boom):
        geotiff.write(path, np.zeros((4, 4), "uint8"), from_origin(0, 4, 1, 1), "EPSG:4326")
    monkeypatch.undo()
    assert geotiff.read(path).max() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


def test_truncated_and_missing_files_are_one_line_errors(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype="uint8")
    path = geotiff.write(tmp_path / "t.tif", arr, from_origin(0, 1, 0.01, 0.01), "EPSG:4326", compress=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError) as err:
        geotiff.read_info(path, verify=True)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="nope.tif: no such file"):
        geotiff.read_info(tmp_path / "nope.tif")
    (tmp_path / "junk.tif").write_text("not a tiff")
    with pytest.raises(WorkbenchError, match="junk.tif: not a readable GeoTIFF"):
        geotiff.read_info(tmp_path / "junk.tif")


def test_same_grid_reports_why(tmp_path):
    t = from_origin(0, 10, 1, 1)
    a = geotiff.read_info(geotiff.write(tmp_path / "a.tif", np.zeros((8, 8), "uint8"), t, "EPSG:32633"))
    b = geotiff.read_info(geotiff.write(tmp_path / "b.tif", np.zeros((8, 8), "uint8"), t, "EPSG:32634"))
    c = geotiff.read_info(geotiff.write(tmp_path / "c.tif", np.zeros((8, 9), "uint8"), t, "EPSG:32633"))
    d = geotiff.read_info(geotiff.write(tmp_path / "d.tif", np.zeros((8, 8), "uint8"), from_origin(1, 10, 1, 1),
                                        "EPSG:32633"))
    assert geotiff.same_grid(a, a) is None
    assert "CRS" in geotiff.same_grid(a, b)
    assert "size" in geotiff.same_grid(a, c)
    assert "geotransform" in geotiff.same_grid(a, d)
    with pytest.raises(WorkbenchError, match="b.tif: mask is not on the grid of .*a.tif"):
        geotiff.require_same_grid(a, b)


# ------------------------------------------------------------------------------ the streaming writer

T = from_origin(399_960.0, 5_000_040.0, 10.0, 10.0)


def _writer(path, arr, **kw):
    count, height, width = arr.shape
    return geotiff.RasterWriter(path, width=width, height=height, count=count, dtype=arr.dtype, affine=T,
                                crs="EPSG:32631", **kw)


def test_writer_in_ragged_row_bands_writes_a_cog_with_overviews(tmp_path):
    arr = np.random.default_rng(1).random((2, 700, 650), dtype=np.float32)
    arr[:, :10, :10] = np.nan
    with _writer(tmp_path / "p.tif", arr, nodata=float("nan"), band_names=["p_a", "p_b"], tags={"run": "r1"},
                 overview_resampling="average") as out:
        for r in range(0, 700, 224):                        # not the 256 px tiles: partial blocks in between
            out.write(arr[:, r:r + 224], row_off=r)
    assert out.close() == tmp_path / "p.tif"             # closing twice is harmless
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1) == [2, 4] and ds.block_shapes[0] == (256, 256)
        assert ds.descriptions == ("p_a", "p_b") and ds.tags()["run"] == "r1" and np.isnan(ds.nodata)
        assert ds.crs.to_string() == "EPSG:32631" and ds.transform == T
        np.testing.assert_array_equal(ds.read(), arr)
        overview = ds.read(1, out_shape=(175, 163))          # the 4x overview: averaged, not the first pixel
        assert 0.3 < np.nanmean(overview) < 0.7 and np.nanstd(overview) < np.nanstd(arr[0])
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]


def test_writer_by_windows_equals_the_whole_array_and_plain_tiffs_stay_plain(tmp_path):
    arr = np.random.default_rng(2).integers(0, 3, (1, 300, 520), dtype=np.uint8)
    with _writer(tmp_path / "m.tif", arr, cog=False, nodata=255) as out:
        for r in (0, 150):
            for c in (0, 256):
                out.write(arr[0, r:r + 150, c:c + 264][None], Window(c, r, min(264, 520 - c), 150))
    whole = geotiff.write(tmp_path / "w.tif", arr, T, "EPSG:32631", nodata=255, cog=True)
    np.testing.assert_array_equal(geotiff.read(tmp_path / "m.tif"), geotiff.read(whole))
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.overviews(1) == [] and "LAYOUT" not in ds.tags(ns="IMAGE_STRUCTURE")
    with rasterio.open(whole) as ds:
        # overviews until the smallest fits one 256 px tile
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2, 4]


def test_an_exception_inside_the_writer_leaves_the_old_file_and_no_temporaries(tmp_path):
    old = geotiff.write(tmp_path / "m.tif", np.full((1, 40, 40), 7, np.uint8), T, "EPSG:32631")
    arr = np.zeros((1, 40, 40), np.uint8)
    with pytest.raises(RuntimeError, match="model failed"):
        with _writer(old, arr) as out:
            out.write(arr[:, :20], row_off=0)
            raise RuntimeError("model failed")
    assert geotiff.read(old).min() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


def test_writer_bad_blocks_and_settings_are_one_line_errors(tmp_path):
    arr = np.zeros((1, 40, 40), np.uint8)
    with pytest.raises(WorkbenchError, match=r"m\.tif: a block of \(1, 20, 40\) at row 30, col 0 does not fit") as e:
        with _writer(tmp_path / "m.tif", arr) as out:
            out.write(arr[:, :20], row_off=30)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())
    with pytest.raises(WorkbenchError, match="overview resampling 'sharp': expected one of nearest"):
        _writer(tmp_path / "m.tif", arr, overview_resampling="sharp")
    with pytest.raises(WorkbenchError, match=r"m\.tif: 2 band name\(s\) for 1 band"):
        _writer(tmp_path / "m.tif", arr, band_names=["a", "b"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match=r"could not be written"):
        _writer(tmp_path / "file" / "m.tif", arr)


def test_pixel_area_in_metres_whatever_the_crs(tmp_path):
    one = np.zeros((4, 4), "uint8")
    utm = geotiff.read_info(geotiff.write(tmp_path / "u.tif", one, T, "EPSG:32631"))
    assert utm.pixel_area_m2(np.arange(4)).tolist() == [100.0] * 4
    feet = geotiff.read_info(geotiff.write(tmp_path / "f.tif", one, from_origin(0, 0, 10, 10), "EPSG:2277"))
    assert feet.pixel_area_m2([0])[0] == pytest.approx(100 * 0.3048006096 ** 2)     # US survey feet
    # 0.1 degree pixels from 60 N: about cos(latitude) of a square degree's side (a sphere), the
    # ellipsoid's own figure within a percent
    geo = geotiff.read_info(geotiff.write(tmp_path / "g.tif", one, from_origin(10, 60, 0.1, 0.1), "EPSG:4326"))
    side = 0.1 * geotiff.EARTH_METRES_PER_DEGREE
    assert geo.pixel_area_m2([0, 3]) == pytest.approx([side * side * np.cos(np.radians(59.95)),
                                                       side * side * np.cos(np.radians(59.65))], rel=1e-2)
    # a whole-Earth grid of 1 degree pixels adds up to the WGS 84 ellipsoid's surface (510,065,621.7 km^2)
    earth = geotiff.read_info(geotiff.write(tmp_path / "e.tif", np.zeros((180, 360), "uint8"),
                                            from_origin(-180, 90, 1, 1), "EPSG:4326"))
    assert earth.pixel_area_m2(np.arange(180)).sum() * 360 / 1e6 == pytest.approx(510_065_621.7, rel=1e-7)
    with pytest.raises(WorkbenchError, match="n.tif: has no CRS"):
        geotiff.read_info(geotiff.write(tmp_path / "n.tif", one, T, None)).pixel_area_m2([0])
