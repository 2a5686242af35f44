"""The Sentinel-2 test data makers (tests/support/sentinel2.py) write what they claim.

Every form is read back with plain rasterio / pystac / ElementTree (not with the workbench's
readers, which other tests check against these files), and compared with ``ground()``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.support import sentinel2 as s2

SIZE = 96


@pytest.fixture(scope="module")
def g() -> s2.Ground:
    return s2.ground(SIZE, seed=3)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def test_ground_is_reproducible_and_realistic(g):
    again = s2.ground(SIZE, seed=3)
    other = s2.ground(SIZE, seed=4)
    assert set(g.reflectance) == set(s2.ALL_BANDS)
    for b in s2.ALL_BANDS:
        assert g.reflectance[b].dtype == np.float32 and g.reflectance[b].shape == (SIZE, SIZE)
        np.testing.assert_array_equal(g.reflectance[b], again.reflectance[b])
    assert not np.array_equal(g.water, other.water)
    assert 0.10 <= g.water.mean() <= 0.30
    water, land = g.water == 1, g.water == 0
    # water is dark in NIR and SWIR, land bright; visible water around its L2A values
    assert g.reflectance["B08"][water].mean() < 0.03 < 0.2 < g.reflectance["B08"][land].mean()
    assert abs(g.reflectance["B02"][water].mean() - 0.06) < 0.01
    covers = {s2.COVERS[i] for i in np.unique(g.cover)}
    assert {"water", "vegetation", "soil", "built", "cloud"} <= covers
    veg = g.cover == s2.COVERS.index("vegetation")
    assert abs(g.reflectance["B08"][veg].mean() - 0.35) < 0.03
    # multiples of 1e-4 and never 0 (DN 0 is L2A's no data)
    for b in s2.ALL_BANDS:
        dn = g.reflectance[b].astype(np.float64) * 1e4
        assert np.abs(dn - np.rint(dn)).max() < 1e-2 and dn.min() >= 5
    assert g.crs == "EPSG:32633" and g.transform == from_origin(500_000, 4_600_000, 10, 10)


def test_coarse_bands_are_coarse(g):
    b11, b01 = g.reflectance["B11"], g.reflectance["B01"]
    assert np.array_equal(b11[0::2, 0::2], b11[1::2, 1::2])
    assert np.array_equal(b01[0:90:6, 0:90:6], b01[5:90:6, 5:90:6])
    np.testing.assert_array_equal(s2.native(g, "B11"), b11[::2, ::2])
    np.testing.assert_array_equal(s2.upsampled(g, "B11"), b11)
    assert s2.native(g, "B02", 20).shape == (SIZE // 2, SIZE // 2)
    assert not np.array_equal(g.reflectance["B02"][0::2, 0::2], g.reflectance["B02"][1::2, 1::2])


def test_dn_geotiff(tmp_path, g):
    p = s2.write_dn_geotiff(tmp_path / "scene.tif", g)
    with rasterio.open(p) as ds:
        assert ds.dtypes == ("uint16",) * 4 and ds.nodata == 0
        assert ds.crs.to_string() == "EPSG:32633" and ds.transform == g.transform
        assert ds.descriptions == ("B02", "B03", "B04", "B08")
        assert ds.tags()["DATE_ACQUIRED"] == "2023-04-15" and ds.tags()["SCENE_ID"] == s2.SCENE_ID
        a = ds.read()
    assert (a[:, :, :16] == 0).all() and (a[:, :, 16:] > 0).all()
    refl = a[:, :, 16:] * np.float32(1e-4)
    np.testing.assert_allclose(refl, g.stack(s2.TEN_M)[:, :, 16:], atol=1e-6)


def test_reordered_ee_named_and_13_band_geotiffs(tmp_path, g):
    order = ("B08", "B04", "B02", "B03")
    p = s2.write_dn_geotiff(tmp_path / "reordered.tif", g, bands=order, names="ee", nodata_edge=0)
    with rasterio.open(p) as ds:
        assert ds.descriptions == ("B8", "B4", "B2", "B3")
        np.testing.assert_allclose(ds.read() * 1e-4, g.stack(order), atol=1e-6)
    p = s2.write_dn_geotiff(tmp_path / "none.tif", g, names="none")
    with rasterio.open(p) as ds:
        assert ds.descriptions == (None,) * 4
    p = s2.write_dn_geotiff(tmp_path / "all.tif", g, bands=s2.ALL_BANDS, names="ee")
    with rasterio.open(p) as ds:
        assert ds.count == 13 and ds.descriptions[8] == "B8A" and ds.descriptions[0] == "B1"
        assert ds.res == (10.0, 10.0)
        np.testing.assert_allclose(ds.read(12)[:, 16:] * 1e-4, g.reflectance["B11"][:, 16:], atol=1e-6)


def test_offset_dn_geotiff(tmp_path, g):
    p = s2.write_dn_geotiff(tmp_path / "off.tif", g, dn_offset=1000, declare_offset=True)
    with rasterio.open(p) as ds:
        assert ds.tags()["BOA_ADD_OFFSET"] == "-1000"
        a = ds.read(1)
    assert a[:, 16:].min() >= 1005 and (a[:, :16] == 0).all()
    np.testing.assert_allclose((a[:, 16:] - 1000.0) * 1e-4, g.reflectance["B02"][:, 16:], atol=1e-6)


def test_float_geotiff_has_no_nodata_and_zero_edge(tmp_path, g):
    p = s2.write_float_geotiff(tmp_path / "float.tif", g, bands=("B04", "B08"))
    with rasterio.open(p) as ds:
        assert ds.dtypes == ("float32", "float32") and ds.nodata is None
        a = ds.read()
    assert (a[:, :, :16] == 0.0).all()
    np.testing.assert_array_equal(a[:, :, 16:], g.stack(("B04", "B08"))[:, :, 16:])
    p = s2.write_float_geotiff(tmp_path / "nan.tif", g, edge_value=float("nan"))
    with rasterio.open(p) as ds:
        assert np.isnan(ds.read(1)[:, :16]).all()


def test_mask(tmp_path, g):
    p = s2.write_mask(tmp_path / "scene_mask.tif", g)
    with rasterio.open(p) as ds:
        assert ds.dtypes == ("uint8",) and ds.nodata == 255 and ds.transform == g.transform
        m = ds.read(1)
    assert (m[:, :16] == 255).all()
    np.testing.assert_array_equal(m[:, 16:], g.water[:, 16:])


def test_next_zone(tmp_path, g):
    img, mask = s2.write_next_zone(tmp_path / "zone34.tif", g, tmp_path / "zone34_mask.tif")
    from rasterio.warp import transform as warp_points

    with rasterio.open(img) as ds, rasterio.open(mask) as ms:
        assert ds.crs.to_string() == "EPSG:32634" and ms.crs == ds.crs and ms.transform == ds.transform
        assert ds.res == (10.0, 10.0) and ds.nodata == 0
        a, m = ds.read(4), ms.read(1)
        # the same ground: pixel centres of the source found again in the next zone
        rows, cols = np.mgrid[20:SIZE - 4:7, 20:SIZE - 4:7]
        xs, ys = rasterio.transform.xy(g.transform, rows.ravel(), cols.ravel())
        xs2, ys2 = warp_points("EPSG:32633", "EPSG:32634", xs, ys)
        r2, c2 = rasterio.transform.rowcol(ds.transform, xs2, ys2)
    got_mask = m[r2, c2]
    want = g.water[rows.ravel(), cols.ravel()]
    assert (got_mask == want).mean() > 0.9
    got = a[r2, c2] * 1e-4
    agree = np.abs(got - g.reflectance["B08"][rows.ravel(), cols.ravel()]) < 0.05
    assert agree.mean() > 0.85
    known = m != 255
    assert abs(m[known].mean() - g.water[:, 16:].mean()) < 0.03


@pytest.mark.parametrize("offset", [True, False])
def test_safe(tmp_path, g, offset):
    safe = s2.write_safe(tmp_path, g, offset=offset)
    assert safe.name == s2.safe_name("05.09" if offset else "03.01") and safe.suffix == ".SAFE"
    add = 1000 if offset else 0
    for band, res in (("B02", 10), ("B08", 10), ("B11", 20), ("B8A", 20), ("B01", 60), ("B04", 20)):
        p = s2.safe_band_path(safe, band, res)
        assert p.name == f"T33TUL_20230415T100029_{band}_{res}m.jp2"
        with rasterio.open(p) as ds:
            assert ds.driver == "JP2OpenJPEG" and ds.nodata is None and ds.dtypes == ("uint16",)
            assert ds.crs.to_string() == "EPSG:32633"
            assert ds.transform == from_origin(500_000, 4_600_000, res, res)     # georeferencing survives
            a = ds.read(1)
        edge = 16 // (res // 10)
        assert (a[:, :edge] == 0).all() and a[:, edge:].min() >= 5 + add
        np.testing.assert_allclose((a[:, edge:] - add) * 1e-4, s2.native(g, band, res)[:, edge:], atol=1e-6)
    assert not s2.safe_band_path(safe, "B08", 20).exists()        # B08 is a 10 m band only
    assert not s2.safe_band_path(safe, "B10", 60).exists()        # L2A has no B10
    with rasterio.open(s2.safe_band_path(safe, "SCL", 20)) as ds:
        scl = ds.read(1)
        assert ds.dtypes == ("uint8",) and ds.res == (20.0, 20.0)
    assert (scl[:, :8] == 0).all()
    assert set(np.unique(scl[:, 8:])) <= {4, 5, 6, 9} and 9 in scl and 6 in scl
    np.testing.assert_array_equal(scl[:, 8:] == 6, g.water[::2, ::2][:, 8:] == 1)

    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    assert _local(root.tag) == "Level-2A_User_Product"
    texts = {_local(e.tag): (e.text or "").strip() for e in root.iter()}
    assert texts["PRODUCT_URI"] == safe.name and texts["PRODUCT_START_TIME"].startswith("2023-04-15T10:00:29")
    assert texts["PROCESSING_BASELINE"] == ("05.09" if offset else "03.01")
    assert texts["BOA_QUANTIFICATION_VALUE"] == "10000"
    assert 0 < float(texts["Cloud_Coverage_Assessment"]) < 5
    offsets = {e.get("band_id"): e.text for e in root.iter() if _local(e.tag) == "BOA_ADD_OFFSET"}
    assert offsets == ({str(i): "-1000" for i in range(13)} if offset else {})
    bands = {e.get("bandId"): e.get("physicalBand") for e in root.iter() if _local(e.tag) == "Spectral_Information"}
    assert bands["0"] == "B1" and bands["8"] == "B8A" and bands["12"] == "B12" and len(bands) == 13
    files = [e.text for e in root.iter() if _local(e.tag) == "IMAGE_FILE"]
    for f in files:
        assert (safe / f"{f}.jp2").is_file()
    assert any(f.endswith("B02_10m") for f in files)


def test_safe_missing_band(tmp_path, g):
    safe = s2.write_safe(tmp_path, g, bands=[b for b in s2.L2A_BANDS if b != "B11"], tci=False)
    assert not s2.safe_band_path(safe, "B11", 20).exists()
    assert s2.safe_band_path(safe, "B12", 20).exists() and s2.safe_band_path(safe, "SCL", 20).exists()
    assert not list(safe.rglob("*TCI*"))


@pytest.mark.parametrize("keys,offset", [("s2", False), ("common", True)])
def test_stac_item(tmp_path, g, keys, offset):
    p = s2.write_stac_item(tmp_path / "item" / "item.json", g, tmp_path / "item" / "cogs", keys=keys,
                           offset=offset)
    d = json.loads(p.read_text())
    assert d["properties"]["proj:epsg"] == 32633 and d["properties"]["datetime"] == "2023-04-15T10:00:29Z"
    assert all(not a["href"].startswith("/") for a in d["assets"].values())      # relative hrefs
    item = pystac.Item.from_file(str(p))
    key = "B08" if keys == "s2" else "nir"
    asset = item.assets[key]
    assert asset.extra_fields["eo:bands"] == [{"name": "B08", "common_name": "nir"}]
    rb = asset.extra_fields["raster:bands"][0]
    assert rb["nodata"] == 0 and rb["scale"] == 0.0001 and rb["offset"] == (-0.1 if offset else 0)
    assert {"thumbnail", "granule_metadata", "SCL" if keys == "s2" else "scl"} <= set(item.assets)
    assert item.assets["thumbnail"].media_type == pystac.MediaType.PNG
    for k, band, res in ((key, "B08", 10), ("B11" if keys == "s2" else "swir16", "B11", 20)):
        with rasterio.open(item.assets[k].get_absolute_href()) as ds:
            assert ds.res == (res, res) and ds.nodata == 0 and ds.crs.to_string() == "EPSG:32633"
            assert ds.overviews(1) or ds.width < 256          # a COG: overviews once it is big enough
            assert ds.profile.get("tiled") or ds.width < 128
            raw = ds.read(1).astype(np.float64)
        edge = 16 // (res // 10)
        refl = raw[:, edge:] * rb["scale"] + rb["offset"]
        np.testing.assert_allclose(refl, s2.native(g, band)[:, edge:], atol=1e-6)
    assert item.properties["eo:cloud_cover"] > 0


def test_stac_item_cogs_have_overviews(tmp_path):
    big = s2.ground(512, seed=1)
    p = s2.write_stac_item(tmp_path / "item.json", big, bands=("B04",), scl=False, extras=False, proj="code")
    d = json.loads(p.read_text())
    assert d["properties"]["proj:code"] == "EPSG:32633" and set(d["assets"]) == {"B04"}
    with rasterio.open(tmp_path / "B04.tif") as ds:
        assert ds.overviews(1) and ds.block_shapes[0] == (128, 128)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_ee_chips(tmp_path, g, dtype):
    pairs = s2.write_ee_chips(tmp_path, g, chip=32, dtype=dtype)
    assert len(pairs) == (SIZE // 32) ** 2
    seen = np.zeros(g.shape, int)
    for image, mask in pairs:
        assert mask.name == image.stem + "_mask.tif"
        with rasterio.open(image) as ds, rasterio.open(mask) as ms:
            assert ds.descriptions == ("B2", "B3", "B4", "B8") and ms.transform == ds.transform
            assert ds.nodata == (0 if dtype == "uint16" else None) and ms.nodata == 255
            assert ds.tags()["DATE_ACQUIRED"] == "2023-04-15"
            row, col = rasterio.transform.rowcol(g.transform, ds.transform.c + 5, ds.transform.f - 5)
            a, m = ds.read().astype(np.float64), ms.read(1)
        win = np.s_[row:row + 32, col:col + 32]
        seen[win] += 1
        scale = 1e-4 if dtype == "uint16" else 1.0
        ok = g.valid()[win]
        np.testing.assert_allclose(a[:, ok] * scale, g.stack(s2.TEN_M)[(slice(None),) + win][:, ok], atol=1e-6)
        assert (m[ok] == g.water[win][ok]).all() and (m[~ok] == 255).all() and (a[:, ~ok] == 0).all()
    assert (seen == 1).all()
