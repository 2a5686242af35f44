"""A run's input contract: the same ground in every form gives the same normalised tensors, and
what cannot be reconciled is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from tests.support import sentinel2 as s2
from workbench.data import geotiff
from workbench.data.catalog import Tile
from workbench.data.contract import InputContract, open_scene
from workbench.errors import WorkbenchError

SIZE = 96


@pytest.fixture(scope="module")
def g():
    return s2.ground(SIZE, seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, g):
    """The contract and band statistics of a run trained on the uint16 DN GeoTIFF."""
    return s2.trained_inputs(tmp_path_factory.mktemp("train"), g)


def read_all(contract, stats, path, **kw):
    scene = open_scene(contract, stats, path, run="r", warn=False, **kw)
    try:
        return scene.read(Window(0, 0, scene.info.width, scene.info.height))
    finally:
        scene.close()


def test_contract_records_names_units_and_radiometry(trained):
    contract, stats = trained
    assert contract.names == ["B02", "B03", "B04", "B08"] and contract.units == "reflectance"
    assert contract.bands[0].dtype == "uint16" and contract.bands[0].scale == pytest.approx(1e-4)
    assert contract.gsd == pytest.approx(10.0)
    assert stats.band_names == contract.names
    assert 0.0 < stats.mean[3] < 1.0                      # NIR statistics in reflectance, not DN
    again = InputContract.from_dict(contract.to_dict())
    assert again.names == contract.names and again.units == contract.units


def test_every_form_gives_the_same_tensors(tmp_path, g, trained):
    contract, stats = trained
    ref, ok = read_all(contract, stats, s2.write_dn_geotiff(tmp_path / "dn.tif", g))
    forms = {
        "ee names": s2.write_dn_geotiff(tmp_path / "ee.tif", g, names="ee"),
        "reordered": s2.write_dn_geotiff(tmp_path / "re.tif", g, bands=("B08", "B04", "B02", "B03")),
        "13 bands": s2.write_dn_geotiff(tmp_path / "all.tif", g, bands=s2.ALL_BANDS),
        "declared offset": s2.write_dn_geotiff(tmp_path / "off.tif", g, dn_offset=1000, declare_offset=True),
        "float": s2.write_float_geotiff(tmp_path / "f.tif", g),
        "SAFE with offset": s2.write_safe(tmp_path / "safe", g, offset=True),
        "SAFE before 04.00": s2.write_safe(tmp_path / "safe_old", g, offset=False),
    }
    assert ok.sum() > 0.8 * ok.size and not ok[:, :s2.NODATA_EDGE].any()
    for what, path in forms.items():
        x, valid = read_all(contract, stats, path)
        both = ok & valid
        assert both.sum() > 0.7 * ok.sum(), what
        np.testing.assert_allclose(x[:, both], ref[:, both], atol=1e-4, err_msg=what)


def test_user_scale_and_offset_settle_an_undeclared_offset(tmp_path, g, trained):
    contract, stats = trained
    ref, ok = read_all(contract, stats, s2.write_dn_geotiff(tmp_path / "dn.tif", g))
    silent = s2.write_dn_geotiff(tmp_path / "silent.tif", g, dn_offset=1000)
    with pytest.raises(WorkbenchError, match=r"silent\.tif.*\+1000 offset.*--offset -0.1") as e:
        read_all(contract, stats, silent)
    assert "\n" not in str(e.value)
    x, valid = read_all(contract, stats, silent, offset=-0.1)
    np.testing.assert_allclose(x[:, ok & valid], ref[:, ok & valid], atol=1e-4)


def test_unnamed_bands_need_bands(tmp_path, g, trained):
    contract, stats = trained
    ref, ok = read_all(contract, stats, s2.write_dn_geotiff(tmp_path / "dn.tif", g))
    plain = s2.write_dn_geotiff(tmp_path / "plain.tif", g, names="none")
    with pytest.raises(WorkbenchError, match=r"plain\.tif: .*no names.*--bands B02,B03,B04,B08"):
        read_all(contract, stats, plain)
    x, _ = read_all(contract, stats, plain, bands=["B2", "B3", "B4", "B8"])
    np.testing.assert_allclose(x[:, ok], ref[:, ok], atol=1e-4)


def test_what_cannot_be_reconciled_is_refused(tmp_path, g, trained):
    contract, stats = trained
    cases = {
        "no band B08": s2.write_dn_geotiff(tmp_path / "rgb.tif", g, bands=("B02", "B03", "B04")),
        "not reflectance": geotiff.write(tmp_path / "dnfloat.tif", g.dn(s2.TEN_M).astype("float32"), g.transform,
                                         g.crs, band_names=list(s2.TEN_M)),
        "carry no reflectance": geotiff.write(tmp_path / "u8.tif", (g.stack(s2.TEN_M) * 255).astype("uint8"),
                                              g.transform, g.crs, band_names=list(s2.TEN_M)),
        "B08": s2.write_safe(tmp_path / "nob08", g, bands=tuple(b for b in s2.L2A_BANDS if b != "B08")),
    }
    for what, path in cases.items():
        with pytest.raises(WorkbenchError) as e:
            read_all(contract, stats, path)
        msg = str(e.value)
        assert what in msg and str(path.name) in msg and "\n" not in msg, msg


def test_scl_clouds_and_nodata_are_invalid(tmp_path, g, trained):
    contract, stats = trained
    _, valid = read_all(contract, stats, s2.write_safe(tmp_path / "safe", g))
    cloud = np.isin(g.scl(), (3, 8, 9, 10))
    assert cloud.any() and not valid[cloud].any()
    assert not valid[:, :s2.NODATA_EDGE].any()
    _, plain_valid = read_all(contract, stats, s2.write_dn_geotiff(tmp_path / "dn.tif", g))
    assert valid.sum() < plain_valid.sum()               # the cloud is left out of the SAFE's map


def test_catalog_tiles_are_read_by_band_name(tmp_path, g, trained):
    from workbench.data.contract import tile_positions

    contract, _ = trained
    def tile(path):
        return Tile(path=str(path), source="folder", bands=list(geotiff.read_info(path).band_names))

    full = tile(s2.write_dn_geotiff(tmp_path / "all.tif", g, bands=s2.ALL_BANDS))
    assert tile_positions(contract, [full]) == [1, 2, 3, 7]            # B02 B03 B04 B08 of 13
    ee = tile(s2.write_dn_geotiff(tmp_path / "ee.tif", g, bands=("B08", "B04", "B02", "B03"), names="ee"))
    assert tile_positions(contract, [ee]) == [2, 3, 1, 0]
    with pytest.raises(WorkbenchError, match="another order"):
        tile_positions(contract, [full, ee])
    rgb = tile(s2.write_dn_geotiff(tmp_path / "rgb.tif", g, bands=("B02", "B03", "B04")))
    with pytest.raises(WorkbenchError, match=r"rgb\.tif: has no band B08"):
        tile_positions(contract, [rgb])
    u8 = tile(geotiff.write(tmp_path / "u8.tif", (g.stack(s2.TEN_M) * 255).astype("uint8"), g.transform, g.crs,
                            band_names=list(s2.TEN_M)))
    with pytest.raises(WorkbenchError, match=r"u8\.tif: values in raw units"):
        tile_positions(contract, [u8])
