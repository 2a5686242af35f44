"""STAC items over local COGs read as scenes (workbench.data.sources.stac through inputs.describe)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support import sentinel2 as s2
from workbench.data.inputs import describe
from workbench.data.sources import stac
from workbench.errors import WorkbenchError

SIZE = 64
EDGE = s2.NODATA_EDGE
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


@pytest.fixture(scope="module")
def g() -> s2.Ground:
    return s2.ground(SIZE, seed=7)


@pytest.fixture(scope="module")
def items(tmp_path_factory, g) -> dict[tuple[str, bool], Path]:
    """One item per (asset keys, offset) over its own COGs."""
    out = {}
    for keys in ("s2", "common"):
        for offset in (False, True):
            folder = tmp_path_factory.mktemp(f"stac-{keys}-{int(offset)}")
            out[keys, offset] = s2.write_stac_item(folder / "item.json", g, keys=keys, offset=offset)
    return out


def _edit(item: Path, to: Path, change) -> Path:
    """A copy of ``item`` (and its COGs) at ``to`` with its JSON changed by ``change(dict)``."""
    to.mkdir(parents=True, exist_ok=True)
    for p in item.parent.iterdir():
        if p.is_file() and p != item:
            shutil.copy(p, to / p.name)
    d = json.loads(item.read_text())
    change(d)
    out = to / "item.json"
    out.write_text(json.dumps(d))
    return out


def _one_line_error(call, *needles: str) -> str:
    with pytest.raises(WorkbenchError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


@pytest.mark.parametrize("keys", ["s2", "common"])
@pytest.mark.parametrize("offset", [False, True])
def test_describe_names_radiometry_and_metadata(items, keys, offset):
    item = items[keys, offset]
    scene = describe(item)
    assert scene.kind == "stac" and scene.path == str(item)
    assert scene.names == list(BANDS)                 # thumbnail and metadata XML skipped, SCL apart
    assert scene.date == "2023-04-15" and scene.scene_id == "S2B_33TUL_20230415_0_L2A"
    assert 0 < scene.cloud_cover < 0.05               # eo:cloud_cover is in percent
    assert scene.tags["PRODUCT_URI"] == s2.PRODUCT + ".SAFE"
    for b in scene.bands:
        assert b.radiometry.scale == pytest.approx(1e-4)
        assert b.radiometry.offset == pytest.approx(-0.1 if offset else 0.0)
        assert "raster:bands" in b.radiometry.source and b.nodata == 0 and b.index == 1
        assert Path(b.path).is_absolute() and Path(b.path).parent == item.parent
        assert b.path.endswith(f"{b.name}.tif")
        assert b.resolution == s2.SENTINEL2_RESOLUTION[b.name]
    assert scene.scl is not None and scene.scl.path.endswith("SCL.tif") and scene.scl.radiometry is None


@pytest.mark.parametrize("keys", ["s2", "common"])
@pytest.mark.parametrize("offset", [False, True])
def test_ten_metre_bands_read_as_ground_reflectance(items, g, keys, offset):
    with describe(items[keys, offset]).open(["B04", "B03", "B02", "B08"]) as stack:
        assert (stack.width, stack.height) == g.shape and stack.transform == g.transform
        x, valid = stack.read()
    want = g.stack(("B04", "B03", "B02", "B08"))
    scl_invalid = np.isin(s2.scl_native(g, 20, EDGE), (0, 9)).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(valid, ~scl_invalid)          # SCL (20 m, nearest) marks edge and cloud
    assert not valid[:, :EDGE].any() and not valid[g.cover == s2.COVERS.index("cloud")].any()
    assert valid.sum() > 0.5 * valid.size
    np.testing.assert_allclose(x[:, valid], want[:, valid], atol=1e-4)
    assert (x[:, ~valid] == 0).all()


def test_without_scl_only_the_nodata_edge_is_invalid(items, g):
    with describe(items["s2", True]).open(["B08"], scl_nodata=()) as stack:
        x, valid = stack.read()
    assert not valid[:, :EDGE].any() and valid[:, EDGE:].all()
    np.testing.assert_allclose(x[0][valid], g.reflectance["B08"][valid], atol=1e-4)


def test_twenty_metre_band_on_the_ten_metre_grid(items, g):
    with describe(items["common", False]).open(["B11", "B02"], scl_nodata=()) as stack:
        assert stack.transform == g.transform                     # the finest chosen band's grid
        x, valid = stack.read()
    inner = valid.copy()
    inner[:2], inner[-2:], inner[:, : EDGE + 2], inner[:, -2:] = False, False, False, False
    assert np.median(np.abs(x[0][inner] - s2.upsampled(g, "B11")[inner])) < 0.01
    np.testing.assert_allclose(x[1][valid], g.reflectance["B02"][valid], atol=1e-4)


def test_relative_item_path_from_elsewhere(items, monkeypatch):
    item = items["s2", False]
    monkeypatch.chdir(item.parent.parent)
    scene = describe(f"{item.parent.name}/item.json")
    assert scene.band("B02").path == str(item.parent / "B02.tif")


def test_stac_1_1_bands_and_neutral_keys(items, tmp_path, g):
    """STAC 1.1: ``bands`` with ``eo:common_name`` / ``raster:*``; the asset keys say nothing."""
    def change(d):
        d["stac_version"] = "1.1.0"
        assets = {}
        for i, a in enumerate(d["assets"].values()):
            eo, raster = a.pop("eo:bands", None), a.pop("raster:bands", None)
            if raster:
                r = raster[0]
                entry = {"nodata": r["nodata"], "data_type": r["data_type"],
                         "raster:spatial_resolution": r["spatial_resolution"]}
                if eo:
                    entry.update({"name": eo[0]["name"], "eo:common_name": eo[0]["common_name"],
                                  "raster:scale": r["scale"], "raster:offset": r["offset"]})
                else:
                    entry["name"] = "SCL"
                a["bands"] = [entry]
            assets[f"asset{i}"] = a
        d["assets"] = assets

    scene = describe(_edit(items["s2", True], tmp_path / "v11", change))
    assert scene.names == list(BANDS) and scene.scl is not None
    b = scene.band("B11")
    assert b.resolution == 20 and b.nodata == 0
    assert (b.radiometry.scale, b.radiometry.offset) == (pytest.approx(1e-4), pytest.approx(-0.1))
    with scene.open(["B02", "B08"]) as stack:
        x, valid = stack.read()
    np.testing.assert_allclose(x[:, valid], g.stack(("B02", "B08"))[:, valid], atol=1e-4)


def test_names_from_asset_keys(items, tmp_path):
    """No eo:bands: the key names the band; in a Sentinel-2 item a common name is its S2 band."""
    def strip(d):
        for a in d["assets"].values():
            a.pop("eo:bands", None)

    assert describe(_edit(items["common", False], tmp_path / "s2", strip)).names == list(BANDS)

    def plain(d):
        strip(d)
        for k in ("platform", "constellation", "s2:product_uri"):
            d["properties"].pop(k)

    scene = describe(_edit(items["common", False], tmp_path / "plain", plain))
    assert scene.names == ["blue", "green", "red", "nir", "swir16", "swir22"]
    assert scene.band("red").path.endswith("B04.tif")


def test_undeclared_radiometry_nodata_and_resolution(items, tmp_path):
    """No raster:bands and no proj:transform: radiometry left to the dtype's convention (checked on
    the values later), nodata and pixel size from the local file's header."""
    def bare(d):
        for a in d["assets"].values():
            a.pop("raster:bands", None)
            a.pop("proj:transform", None)
        d["properties"].pop("constellation")
        d["properties"].pop("platform")
        d["properties"].pop("s2:product_uri")

    scene = describe(_edit(items["s2", True], tmp_path / "bare", bare))
    b11 = scene.band("B11")
    assert b11.radiometry is None and b11.nodata == 0 and b11.resolution == 20
    with scene.open(["B02"]) as stack:
        assert stack.radiometry[0].source.startswith("uint16 values taken as reflectance")


def test_the_cog_wins_over_a_jp2_of_the_same_band(items, tmp_path):
    def add_jp2(d):
        jp2 = dict(d["assets"]["B02"], type="image/jp2", href="./B03.tif")   # a stand-in file: never opened
        d["assets"] = {"B02-jp2": jp2, **d["assets"]}

    scene = describe(_edit(items["s2", False], tmp_path / "dup", add_jp2))
    assert scene.names == list(BANDS) and scene.band("B02").path.endswith("B02.tif")


def test_remote_hrefs_become_gdal_paths(items, tmp_path):
    def remote(d):
        d["assets"]["B02"]["href"] = "https://example.com/cogs/B02.tif"
        d["assets"]["B03"]["href"] = "s3://bucket/cogs/B03.tif"
        d["assets"]["B04"]["href"] = "gs://bucket/cogs/B04.tif"

    scene = describe(_edit(items["s2", False], tmp_path / "remote", remote))
    assert scene.band("B02").path == "/vsicurl/https://example.com/cogs/B02.tif"
    assert scene.band("B03").path == "/vsis3/bucket/cogs/B03.tif"
    assert scene.band("B04").path == "/vsigs/bucket/cogs/B04.tif"
    assert scene.band("B02").resolution == 10 and scene.band("B02").nodata == 0     # from the item, not the file
    assert scene.band("B08").path == str(tmp_path / "remote" / "B08.tif")


def test_multi_band_asset(tmp_path, g):
    """One GeoTIFF of four bands described by eo:bands: one band per entry, by index."""
    import pystac

    s2.write_dn_geotiff(tmp_path / "stack.tif", g, bands=("B04", "B03", "B02", "B08"), names="none")
    item = pystac.Item(id="stacked", geometry=None, bbox=None, datetime=None,
                       properties={"start_datetime": "2023-04-15T10:00:00Z", "end_datetime": "2023-04-15T10:01:00Z"})
    eo = [{"name": n} for n in ("red", "green", "B2", "nir")]
    item.add_asset("image", pystac.Asset(href="./stack.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                         extra_fields={"eo:bands": eo}))
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    scene = describe(path)
    assert scene.names == ["B02", "red", "green", "nir"]            # S2 names first, then common ones
    assert {b.name: b.index for b in scene.bands} == {"red": 1, "green": 2, "B02": 3, "nir": 4}
    assert scene.date == "2023-04-15" and scene.scene_id == "stacked" and scene.cloud_cover is None
    with scene.open(["red", "B02"]) as stack:
        x, valid = stack.read()
    np.testing.assert_allclose(x[:, valid], g.stack(("B04", "B02"))[:, valid], atol=1e-4)


def test_not_json_and_not_items(tmp_path, items):
    bad = tmp_path / "broken.json"
    bad.write_text('{"type": "Feature", ')
    _one_line_error(lambda: describe(bad), str(bad), "not JSON")
    collection = tmp_path / "collection.json"
    collection.write_text(json.dumps({"type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a",
                                      "description": "x", "license": "proprietary", "links": [],
                                      "extent": {}}))
    _one_line_error(lambda: describe(collection), str(collection), "a STAC collection", "not an item")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "x",
                                   "links": []}))
    _one_line_error(lambda: describe(catalog), str(catalog), "a STAC catalog", "not an item")
    features = tmp_path / "search.json"
    features.write_text(json.dumps({"type": "FeatureCollection", "features": [{}, {}]}))
    _one_line_error(lambda: describe(features), str(features), "item collection (2 items)")
    geojson = tmp_path / "feature.json"
    geojson.write_text(json.dumps({"type": "Feature", "geometry": None, "properties": {}}))
    _one_line_error(lambda: describe(geojson), str(geojson), "GeoJSON feature, not a STAC item")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    _one_line_error(lambda: describe(listed), str(listed), "not a STAC item")
    _one_line_error(lambda: stac.read_item(str(tmp_path / "nothing.json")), "nothing.json", "no such file")


def test_item_without_band_assets(items, tmp_path):
    def no_bands(d):
        d["assets"] = {k: a for k, a in d["assets"].items() if k in ("thumbnail", "granule_metadata")}

    item = _edit(items["s2", False], tmp_path / "nobands", no_bands)
    _one_line_error(lambda: describe(item), str(item), "a STAC item without the assets", "no asset names a band",
                    "thumbnail, granule_metadata")


def test_missing_asset_file_is_named(items, tmp_path):
    item = _edit(items["s2", False], tmp_path / "missing", lambda d: None)
    (item.parent / "B11.tif").unlink()
    _one_line_error(lambda: describe(item), str(item), "asset B11", str(item.parent / "B11.tif"), "does not exist")


def test_bad_raster_fields(items, tmp_path):
    def bad_scale(d):
        d["assets"]["B04"]["raster:bands"][0]["scale"] = "ten"

    item = _edit(items["s2", False], tmp_path / "scale", bad_scale)
    _one_line_error(lambda: describe(item), str(item), "asset B04", "scale 'ten' is not a number")

    def negative(d):
        d["assets"]["B04"]["raster:bands"][0]["scale"] = -1

    item = _edit(items["s2", False], tmp_path / "negative", negative)
    _one_line_error(lambda: describe(item), str(item), "asset B04", "must be a positive number")


def test_import_refuses_an_item_without_bands_and_chips_a_good_one(items, tmp_path, g):
    """``data import`` of a scene (folder.import_scene) reads STAC items through describe."""
    from workbench.data.catalog import Catalog
    from workbench.data.sources.folder import import_scene

    def no_bands(d):
        d["assets"] = {k: a for k, a in d["assets"].items() if k == "thumbnail"}

    bad = _edit(items["s2", True], tmp_path / "nobands", no_bands)
    mask = s2.write_mask(tmp_path / "water.tif", g)
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        _one_line_error(lambda: import_scene(cat, bad, mask, chips_root=tmp_path / "chips", chip_size=32),
                        str(bad), "no asset names a band")
        assert cat.query() == []
        result = import_scene(cat, items["s2", True], mask, chips_root=tmp_path / "chips", chip_size=32)
        tiles = cat.query()
    assert result.chipped == 1 and len(tiles) == 4
    assert all(t.extra["radiometry"][0]["offset"] == pytest.approx(-0.1) for t in tiles)


def test_undeclared_offset_is_left_to_the_value_check(tmp_path, g):
    """DN + 1000 with no raster:bands: nothing is guessed here, and the values give it away."""
    from workbench.data.radiometry import check_values

    def undeclared(d):
        for a in d["assets"].values():
            a.pop("raster:bands", None)

    item = s2.write_stac_item(tmp_path / "orig" / "item.json", g, offset=True, extras=False)
    scene = describe(_edit(item, tmp_path / "undeclared", undeclared))
    with scene.open(["B02", "B03", "B04", "B08"], scl_nodata=()) as stack:
        raw = stack.read_raw()
        valid = ~stack.invalid(raw)
        _one_line_error(lambda: check_values(raw, valid, stack.radiometry, scene.path), "+1000 offset")


@pytest.fixture
def served(items):
    """The folder of one item served over http on localhost (pystac fetches the item; nothing leaves)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(items["common", True].parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_item_url_keeps_assets_remote(served):
    for url in (f"{served}/item.json", f"/vsicurl/{served}/item.json"):
        scene = describe(url)
        assert scene.path == url and scene.names == list(BANDS)
        assert scene.band("B02").path == f"/vsicurl/{served}/B02.tif"
        assert scene.band("B11").resolution == 20 and scene.band("B02").radiometry.offset == pytest.approx(-0.1)
        assert scene.scl.path == f"/vsicurl/{served}/SCL.tif"
    _one_line_error(lambda: describe(f"{served}/other.json"), f"{served}/other.json", "cannot be read")


def test_file_url(items):
    item = items["s2", False]
    assert describe(item.as_uri()).band("B04").path == str(item.parent / "B04.tif")
