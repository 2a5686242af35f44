"""``tiff_grid.read_grid``: GDAL's own grid wherever it answers, None wherever GDAL could read the
file differently from its plain tags (so callers open it with GDAL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_origin

from tests.support.rasters import write_pair
from tests.support.stac import CUSTOM_CRS
from workbench.data import geotiff
from workbench.data.tiff_grid import GdalHeaders, read_grid


def _raw(path: Path, transform: Affine, crs: str | None = "EPSG:32633", size: tuple[int, int] = (24, 16),
         dtype: str = "uint16", count: int = 2, **options) -> Path:
    """A GeoTIFF written by rasterio with GDAL creation options (BigTIFF, byte order, tiling ...)."""
    height, width = size
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform, **options) as ds:
        ds.write(np.ones((count, height, width), dtype))
    return path


def _agrees(path: Path) -> None:
    grid, info = read_grid(path), geotiff.read_info(path)
    assert grid is not None, path
    assert (grid.width, grid.height) == (info.width, info.height)
    assert grid.transform == info.transform and grid.bounds == info.bounds
    assert all(type(v) is float for v in grid.transform)


@pytest.mark.parametrize("options", [
    {}, {"BIGTIFF": "YES"}, {"ENDIANNESS": "BIG"}, {"BIGTIFF": "YES", "ENDIANNESS": "BIG"},
    {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"},
    {"dtype": "float32", "count": 7}, {"crs": "EPSG:4326"}, {"crs": CUSTOM_CRS},
])
def test_it_reads_what_gdal_reads(tmp_path, options):
    opts = dict(options)
    res = 0.000123456789 if opts.get("crs") == "EPSG:4326" else 10.0
    origin = (105.812345678901, 21.05) if opts.get("crs") == "EPSG:4326" else (499_980.123456789, 4_650_000.5)
    _agrees(_raw(tmp_path / "a.tif", from_origin(*origin, res, res * 1.5), **opts))


def test_the_workbench_writers_files_and_their_masks(tmp_path):
    for name, kw in (("utm", {}), ("geo", {"crs": "EPSG:4326", "origin": (-70.5, -33.4), "res": 0.001}),
                     ("odd", {"crs": CUSTOM_CRS, "origin": (300_000.0, 4_650_000.0)})):
        image, mask = write_pair(tmp_path, name, size=16, **kw)
        _agrees(image)
        _agrees(mask)
        assert read_grid(image) == read_grid(mask)            # same grid, same CRS key: no GDAL needed
    cog = geotiff.write(tmp_path / "cog.tif", np.ones((3, 600, 600), "uint16"), from_origin(1000, 2000, 1, 1),
                        "EPSG:3857", cog=True)
    _agrees(cog)                                              # overviews after the full image
    assert read_grid(tmp_path / "utm.tif").crs_key != read_grid(tmp_path / "geo.tif").crs_key


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_anything_gdal_may_read_otherwise_is_left_to_gdal(tmp_path):
    t = from_origin(500_000.0, 4_650_000.0, 10.0, 10.0)
    point = _raw(tmp_path / "point.tif", t)
    with rasterio.open(point, "r+") as ds:
        ds.update_tags(AREA_OR_POINT="Point")                 # GDAL shifts PixelIsPoint grids half a pixel
    rotated = _raw(tmp_path / "rotated.tif", Affine(10.0, 2.0, 500_000.0, 1.0, -10.0, 4_650_000.0))
    sidecar = _raw(tmp_path / "sidecar.tif", t)
    Path(f"{sidecar}.aux.xml").write_text("<PAMDataset><GeoTransform>0, 1, 0, 0, 0, -1</GeoTransform></PAMDataset>")
    plain = _raw(tmp_path / "plain.tif", Affine.identity(), crs=None)   # no georeferencing at all
    png = tmp_path / "image.tif"
    with rasterio.open(png, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.ones((1, 8, 8), "uint8"))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(_raw(tmp_path / "whole.tif", t).read_bytes()[:40])
    for path in (point, rotated, sidecar, plain, png, truncated, tmp_path / "missing.tif", tmp_path):
        assert read_grid(path) is None, path
    assert geotiff.read_info(sidecar).transform[:6] == (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)   # the PAM file won


def test_gdal_headers_reads_as_read_info_does(tmp_path):
    image, _ = write_pair(tmp_path, "a", size=16)
    with GdalHeaders() as gdal:
        assert gdal.read_info(image) == geotiff.read_info(image)
        with pytest.raises(Exception, match="no such file"):
            gdal.read_info(tmp_path / "missing.tif")


def test_counts_and_offsets_the_file_cannot_hold_are_none_without_a_huge_read(tmp_path):
    """Hostile headers: a BigTIFF whose IFD claims 2**46 entries (a petabyte), a tag whose data lie past the end
    of the file, an IFD offset past the end. None (GDAL then says what is wrong), no MemoryError."""
    import struct

    huge_ifd = tmp_path / "huge_ifd.tif"
    huge_ifd.write_bytes(b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + struct.pack("<Q", 2 ** 46))
    far_tag = tmp_path / "far_tag.tif"       # one ModelPixelScale entry: 2**40 doubles at offset 2**62
    far_tag.write_bytes(b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", 1)
                        + struct.pack("<HHII", 33550, 12, 2 ** 30, 2 ** 31) + b"\0" * 4)
    far_ifd = tmp_path / "far_ifd.tif"
    far_ifd.write_bytes(b"MM" + struct.pack(">HI", 42, 2 ** 32 - 1))
    for path in (huge_ifd, far_tag, far_ifd):
        assert read_grid(path) is None, path
