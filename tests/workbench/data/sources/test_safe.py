"""Sentinel-2 L2A .SAFE folders read as scenes (workbench.data.sources.safe through inputs.describe)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.support import sentinel2 as s2
from workbench.data.inputs import describe
from workbench.data.sources import safe as safe_source
from workbench.errors import WorkbenchError

SIZE = 96
EDGE = s2.NODATA_EDGE


@pytest.fixture(scope="module")
def g() -> s2.Ground:
    return s2.ground(SIZE, seed=5)


@pytest.fixture(scope="module")
def product(tmp_path_factory, g):
    return s2.write_safe(tmp_path_factory.mktemp("safe"), g, offset=True)


def _bilinear(native: np.ndarray, f: int, size: int) -> np.ndarray:
    """Plain bilinear interpolation of a coarse band at the 10 m pixel centres (the reference)."""
    u = (np.arange(size) + 0.5) / f - 0.5
    lo = np.clip(np.floor(u).astype(int), 0, native.shape[0] - 1)
    hi = np.clip(lo + 1, 0, native.shape[0] - 1)
    w = np.where(u < 0, 0.0, u - np.floor(u))
    a = native[lo] * (1 - w)[:, None] + native[hi] * w[:, None]
    return a[:, lo] * (1 - w)[None, :] + a[:, hi] * w[None, :]


def test_is_safe(tmp_path, product):
    assert safe_source.is_safe(product)
    renamed = tmp_path / "my-product"
    shutil.copytree(product, renamed)
    assert safe_source.is_safe(renamed)
    assert not safe_source.is_safe(tmp_path)
    assert not safe_source.is_safe(product / "MTD_MSIL2A.xml")


def test_describe_names_radiometry_and_metadata(product):
    scene = describe(product)
    assert scene.kind == "safe"
    assert scene.names == list(s2.L2A_BANDS)            # 12 bands; no B10 in L2A
    assert scene.date == "2023-04-15"
    assert scene.scene_id == product.name[:-5]
    assert 0 < scene.cloud_cover < 0.05
    for b in scene.bands:
        assert b.radiometry.scale == pytest.approx(1e-4) and b.radiometry.offset == pytest.approx(-0.1)
        assert "MTD_MSIL2A.xml" in b.radiometry.source and b.nodata == 0 and b.index == 1
    by = {b.name: b for b in scene.bands}
    assert by["B02"].path.endswith("R10m/T33TUL_20230415T100029_B02_10m.jp2") and by["B02"].resolution == 10
    assert by["B11"].path.endswith("R20m/T33TUL_20230415T100029_B11_20m.jp2") and by["B11"].resolution == 20
    assert by["B01"].path.endswith("R60m/T33TUL_20230415T100029_B01_60m.jp2") and by["B01"].resolution == 60
    assert scene.scl is not None and scene.scl.path.endswith("_SCL_20m.jp2") and "SCL" not in scene.names


def test_offset_product_reads_as_ground_reflectance(product, g):
    with describe(product).open(["B04", "B03", "B02", "B08"]) as stack:
        assert (stack.width, stack.height) == g.shape and stack.transform == g.transform
        x, valid = stack.read()
    want = g.stack(("B04", "B03", "B02", "B08"))
    cloud = g.cover == s2.COVERS.index("cloud")
    assert not valid[:, :EDGE].any() and not valid[cloud].any()        # nodata edge and SCL cloud
    scl_invalid = np.isin(s2.scl_native(g, 20, EDGE), (0, 9)).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(valid, ~scl_invalid)                 # SCL (20 m, nearest) decides the rest
    np.testing.assert_allclose(x[:, valid], want[:, valid], atol=1e-4)
    assert (x[:, ~valid] == 0).all()


def test_no_offset_product(tmp_path, g):
    scene = describe(s2.write_safe(tmp_path, g, offset=False))
    assert scene.bands[0].radiometry.offset == 0.0 and scene.tags["PROCESSING_BASELINE"] == "03.01"
    with scene.open(["B08"], scl_nodata=()) as stack:
        x, valid = stack.read()
    np.testing.assert_allclose(x[0][valid], g.reflectance["B08"][valid], atol=1e-4)
    assert not valid[:, :EDGE].any() and valid[:, EDGE:].all()


def test_20m_bands_resampled_onto_10m(product, g):
    with describe(product).open(["B02", "B11", "B8A"], scl_nodata=()) as stack:
        assert stack.transform == g.transform                 # the finest band's grid
        x, valid = stack.read()
    inner = np.zeros(g.shape, bool)
    inner[2:-2, EDGE + 2:-2] = True                           # away from the image border and the nodata edge
    for i, band in ((1, "B11"), (2, "B8A")):
        ref = _bilinear(s2.native(g, band).astype(np.float64), 2, SIZE)
        np.testing.assert_allclose(x[i][inner], ref[inner], atol=1e-4)
        # and close to the 20 m values themselves (bilinear mixes neighbours across cover edges)
        assert np.median(np.abs(x[i][valid] - s2.upsampled(g, band)[valid])) < 0.01
    np.testing.assert_allclose(x[0][valid], g.reflectance["B02"][valid], atol=1e-4)
    assert not valid[:, :EDGE].any()


def test_scl_marks_cloud_and_nodata(product, g):
    with describe(product).open(["B11"]) as stack:          # the 20 m grid: SCL on its own grid
        x, valid = stack.read()
        assert stack.transform.a == 20
    scl = s2.scl_native(g, 20, EDGE)
    np.testing.assert_array_equal(valid, ~np.isin(scl, (0, 9)))


def test_missing_jp2_named_when_a_run_asks_for_it(tmp_path, g):
    safe = s2.write_safe(tmp_path, g)
    s2.safe_band_path(safe, "B11", 20).unlink()
    s2.safe_band_path(safe, "B11", 60).unlink()
    scene = describe(safe)
    assert "B11" not in scene.names and "B12" in scene.names
    with pytest.raises(WorkbenchError) as err:
        scene.open(["B02", "B11"])
    msg = str(err.value)
    assert str(safe) in msg and "B11" in msg and "T33TUL_20230415T100029_B11_20m.jp2" in msg and "\n" not in msg


def test_finest_jp2_is_picked(tmp_path, g):
    safe = s2.write_safe(tmp_path, g)
    s2.safe_band_path(safe, "B04", 10).unlink()
    b04 = describe(safe).band("B04")
    assert b04.resolution == 20 and b04.path.endswith("_B04_20m.jp2")


def test_bad_products(tmp_path, g):
    safe = s2.write_safe(tmp_path, g)
    mtd = safe / "MTD_MSIL2A.xml"
    text = mtd.read_text()
    mtd.write_text(text[: len(text) // 2])
    with pytest.raises(WorkbenchError, match="MTD_MSIL2A.xml: not readable XML"):
        describe(safe)
    with pytest.raises(WorkbenchError, match="not a Sentinel-2 L2A product"):
        safe_source.read_safe(tmp_path)
    mtd.write_text(text.replace("<BOA_QUANTIFICATION_VALUE unit=\"none\">10000", "<BOA_QUANTIFICATION_VALUE>ten"))
    with pytest.raises(WorkbenchError, match=r"MTD_MSIL2A.xml: BOA_QUANTIFICATION_VALUE 'ten' is not a number"):
        describe(safe)
    mtd.write_text("<?xml version='1.0'?><n1:Level-1C_User_Product xmlns:n1='x'/>")
    with pytest.raises(WorkbenchError, match="not Level-2A product metadata"):
        describe(safe)
    mtd.write_text(text)
    shutil.rmtree(safe / "GRANULE")
    with pytest.raises(WorkbenchError) as err:
        describe(safe)
    assert str(safe) in str(err.value) and "no band JP2s" in str(err.value)


def test_other_namespace_and_no_spectral_list(tmp_path, g):
    """Matching is on local tag names; without Spectral_Information_List band_id follows the standard order."""
    safe = s2.write_safe(tmp_path, g)
    mtd = safe / "MTD_MSIL2A.xml"
    text = mtd.read_text().replace("psd-14.sentinel2.eo.esa.int/PSD", "psd-15.example/PSD")
    start, end = text.index("<Spectral_Information_List>"), text.index("</Spectral_Information_List>")
    text = text[:start] + text[end + len("</Spectral_Information_List>"):]
    text = text.replace('<BOA_ADD_OFFSET band_id="11">-1000', '<BOA_ADD_OFFSET band_id="11">-900')
    mtd.write_text(text)
    scene = describe(safe)
    assert scene.band("B11").radiometry.offset == pytest.approx(-0.09)     # band_id 11 = B11
    assert scene.band("B12").radiometry.offset == pytest.approx(-0.1)


def test_gdal_sentinel2_subdataset(product, g):
    """GDAL's own view of the synthetic product: SENTINEL2_L2A:<MTD>:10m:EPSG_32633 through describe_raster."""
    sub = f"SENTINEL2_L2A:{product / 'MTD_MSIL2A.xml'}:10m:EPSG_32633"
    scene = describe(sub)
    assert scene.kind == "raster" and {"B02", "B03", "B04", "B08"} <= set(scene.names)
    assert scene.date == "2023-04-15" and scene.scene_id == product.name[:-5]
    b = scene.band("B02")
    assert b.nodata == 0 and b.radiometry.scale == pytest.approx(1e-4) and b.radiometry.offset == pytest.approx(-0.1)
    with scene.open(["B02", "B08"]) as stack:
        x, valid = stack.read()
    assert not valid[:, :EDGE].any() and valid[:, EDGE:].all()
    np.testing.assert_allclose(x[:, valid], g.stack(("B02", "B08"))[:, valid], atol=1e-4)
