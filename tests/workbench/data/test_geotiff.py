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
