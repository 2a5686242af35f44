"""``workbench data import COLLECTION.json``: an export comes back row for row, another tool's
collection and item collection map from the standard fields, and bad items change nothing."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest

from tests.support.rasters import write_pair
from tests.support.stac import catalog_bytes, exported_catalog, make_catalog, round_trip_rows
from workbench.data.catalog import Catalog, Tile
from workbench.data.sources.folder import water_fraction
from workbench.data.sources.stac_collection import import_collection, stac_kind
from workbench.data.stac_export import CATALOG_FILE, COLLECTION_FILE, export_stac
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(catalog, its export folder)."""
    return exported_catalog(tmp_path_factory.mktemp("stac-import"))


def test_stac_kind_tells_collections_from_items(exported, tmp_path):
    _, out = exported
    assert stac_kind(out / CATALOG_FILE) == "catalog"
    assert stac_kind(out / "export" / COLLECTION_FILE) == "collection"
    item = next((out / "export" / "items").glob("*.json"))
    assert stac_kind(item) is None                     # one item is a scene: data import chips it
    (tmp_path / "x.json").write_text("{not json")
    assert stac_kind(tmp_path / "x.json") is None and stac_kind(tmp_path / "missing.json") is None


@pytest.mark.parametrize("entry", [CATALOG_FILE, f"export/{COLLECTION_FILE}"])
def test_export_then_import_gives_the_same_rows(exported, tmp_path, entry):
    catalog, out = exported
    with Catalog(tmp_path / "new.sqlite") as cat:
        result = import_collection(cat, out / entry)
    assert result.found == 4 and len(result.added) == 4 and result.already == 0 and result.unlinked == 0
    assert round_trip_rows(tmp_path / "new.sqlite") == round_trip_rows(catalog)
    before = catalog_bytes(tmp_path / "new.sqlite")
    with Catalog(tmp_path / "new.sqlite") as cat:      # again: every image is catalogued, nothing added
        again = import_collection(cat, out / entry)
    assert again.already == 4 and not again.added and catalog_bytes(tmp_path / "new.sqlite") == before


def test_cli_round_trip_and_a_parent_outside_the_import(home, cli):
    catalog = make_catalog(home)
    code, _, err = cli("data", "export-stac", home / "all", "--catalog", catalog, "--no-progress")
    assert code == 0, err
    code, out, err = cli("data", "import", home / "all" / CATALOG_FILE, "--catalog", home / "copy.sqlite",
                         "--no-progress")
    assert code == 0, err
    assert "STAC catalog of 4 item(s)" in out and "added 4 tile(s)" in out
    assert round_trip_rows(home / "copy.sqlite") == round_trip_rows(catalog)
    code, out, err = cli("data", "import", home / "all", "--catalog", home / "copy.sqlite", "--no-progress")
    assert code == 0 and "4 already in the catalog" in out, err     # the export's folder means its catalog.json
    code, _, err = cli("data", "export-stac", home / "gen", "--catalog", catalog, "--source", "generated",
                       "--no-progress")
    assert code == 0, err
    code, out, err = cli("data", "import", home / "gen" / CATALOG_FILE, "--catalog", home / "gen.sqlite",
                         "--no-progress")
    assert code == 0 and "1 parent(s) not in this import left unlinked" in out, (out, err)
    with Catalog(home / "gen.sqlite", read_only=True) as cat:
        (tile,) = cat.query()
    assert tile.source == "generated" and tile.parent_id is None and tile.extra == {"seed": 7, "prompt": "delta"}


def _foreign(folder: Path) -> Path:
    """Another tool's collection: no workbench field, per-item folders, relative hrefs, proj v1
    ``proj:epsg``, a dated item with a mask (role labels), one with only a time range and STAC 1.1 bands."""
    data = folder / "data"
    data.mkdir(parents=True)
    img_a, mask_a = write_pair(data, "scene_a", size=16, seed=5)
    img_b, _ = write_pair(data, "scene_b", size=16, seed=6, crs="EPSG:4326", origin=(2.35, 48.86), res=0.001)
    coll = pystac.Collection(id="other", description="not ours", license="CC-BY-4.0",
                             extent=pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                  pystac.TemporalExtent([[datetime(2020, 1, 1, tzinfo=UTC), None]])))
    box = {"type": "Polygon", "coordinates": [[[14.99, 41.99], [15.01, 41.99], [15.01, 42.01], [14.99, 42.01],
                                               [14.99, 41.99]]]}
    a = pystac.Item("a", box, [14.99, 41.99, 15.01, 42.01], datetime(2022, 7, 1, 10, 30, tzinfo=UTC),
                    {"eo:cloud_cover": 12.5, "proj:epsg": 32633, "gsd": 10})
    a.add_asset("visual", pystac.Asset(str(img_a), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                       extra_fields={"eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]}))
    a.add_asset("water", pystac.Asset(str(mask_a), media_type=pystac.MediaType.GEOTIFF, roles=["labels"]))
    a.add_asset("thumb", pystac.Asset("thumb.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"]))
    b = pystac.Item("b", None, None, None, {"start_datetime": "2021-03-01T00:00:00Z",
                                            "end_datetime": "2021-03-31T00:00:00Z"})
    b.add_asset("image", pystac.Asset(str(img_b), media_type=pystac.MediaType.COG,
                                      extra_fields={"bands": [{"name": "r"}, {"name": "g"}, {"name": "b"}]}))
    coll.add_items([a, b])
    coll.normalize_hrefs(str(folder / "stac"))
    for item in (a, b):
        for asset in item.assets.values():
            if Path(asset.href).is_absolute():
                asset.href = str(Path("../../data") / Path(asset.href).name)   # relative to the item
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "stac" / COLLECTION_FILE


def test_another_tools_collection_maps_from_the_standard_fields(home, cli):
    path = _foreign(home / "foreign")
    code, out, err = cli("data", "import", path, "--catalog", home / "c.sqlite", "--no-progress")
    assert code == 0, err
    assert "STAC collection of 2 item(s)" in out and "sources: folder 2" in out
    with Catalog(home / "c.sqlite", read_only=True) as cat:
        a, b = sorted(cat.query(), key=lambda t: t.path)
    data = home / "foreign" / "data"
    assert a.path == str(data / "scene_a.tif") and a.mask_path == str(data / "scene_a_mask.tif")
    assert (a.west, a.south, a.east, a.north) == (14.99, 41.99, 15.01, 42.01) and a.lon == pytest.approx(15.0)
    assert a.crs == "EPSG:32633" and (a.width, a.height) == (16, 16) and a.gsd == 10
    assert a.date == "2022-07-01" and a.cloud_cover == pytest.approx(0.125) and a.bands == ["B04", "B03", "B02"]
    assert a.water_fraction == pytest.approx(water_fraction(data / "scene_a_mask.tif")) and a.label == "coast"
    assert a.split in ("train", "val", "test") and a.extra["stac_item"] == "a"
    assert a.extra["imported_from"] == str(path.resolve()) and "block" in a.extra
    # b: no bbox, proj or gsd: the file's header; a time range: its start; STAC 1.1 bands
    assert b.crs == "EPSG:4326" and b.date == "2021-03-01" and b.bands == ["r", "g", "b"]
    assert b.mask_path is None and b.water_fraction is None and b.cloud_cover is None
    assert b.west == pytest.approx(2.35) and b.north == pytest.approx(48.86) and b.gsd == pytest.approx(111.3, 0.01)
    code, out, err = cli("data", "remove", "--imported-from", path, "--catalog", home / "c.sqlite")
    assert code == 0 and "removed 2 tile row(s)" in out, err          # undone like any import


def test_an_item_collection_resolves_hrefs_from_its_file(tmp_path):
    (tmp_path / "tiles").mkdir()
    img, mask = write_pair(tmp_path / "tiles", "one", size=16, seed=8)
    item = pystac.Item("one", None, None, datetime(2024, 5, 6, tzinfo=UTC), {})
    item.add_asset("image", pystac.Asset("tiles/one.tif", media_type=pystac.MediaType.GEOTIFF))
    item.add_asset("mask", pystac.Asset("tiles/one_mask.tif", media_type=pystac.MediaType.GEOTIFF))
    (tmp_path / "items.json").write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    assert stac_kind(tmp_path / "items.json") == "item collection"
    with Catalog(tmp_path / "c.sqlite") as cat:
        result = import_collection(cat, tmp_path / "items.json", split="val")
    (tile,) = result.added
    assert isinstance(tile, Tile) and tile.path == str(img) and tile.mask_path == str(mask) and tile.split == "val"
    assert tile.date == "2024-05-06" and tile.crs == "EPSG:32633" and tile.bands == ["red", "green", "blue"]


# ---- bad input: one line naming the item, exit 2, the catalog byte for byte as it was -------------------

def _break(export: Path, stem: str, change) -> str:
    """Edit the exported item whose id starts with ``stem``; returns its id."""
    (path,) = (export / "export" / "items").glob(f"{stem}-*.json")
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return d["id"]


def _drop_image(d):
    del d["assets"]["image"]


def _missing_mask(d):
    d["assets"]["mask"]["href"] = d["assets"]["mask"]["href"].replace("_mask.tif", "_gone.tif")


def _remote(d):
    d["assets"]["image"]["href"] = "https://example.com/utm_a.tif"


def _bad_score(d):
    d["properties"]["workbench:pred_score"] = "high"


def _bad_bbox(d):
    d["bbox"] = ["west", 1, 2, 3]


def _bad_source(d):
    d["properties"]["workbench:source"] = "somewhere"


def _bad_datetime(d):
    d["properties"]["datetime"] = "yesterday"


def _no_properties(d):
    del d["properties"]


@pytest.mark.parametrize(("stem", "change", "needles"), [
    ("lonlat_b", _drop_image, ("no image asset", "assets: mask")),
    ("custom_d", _missing_mask, ("asset mask points at", "custom d_gone.tif", "does not exist")),
    ("utm_a", _remote, ("asset image is https://example.com/utm_a.tif, not a local file",)),
    ("lonlat_b", _bad_score, ("workbench:pred_score 'high' is not a number",)),
    ("generated_c", _bad_bbox, ("bbox", "is not [west, south, east, north]")),
    ("utm_a", _bad_source, ("'somewhere' is not a catalog source",)),
    ("utm_a", _bad_datetime, ("not a valid STAC item",)),
    ("custom_d", _no_properties, ("not a valid STAC item (no 'properties')",)),
])
def test_a_bad_item_is_one_line_and_changes_nothing(home, cli, stem, change, needles):
    catalog = make_catalog(home / "src")
    with Catalog(catalog, read_only=True) as cat:
        export_stac(cat, home / "export")
    target = home / "target.sqlite"
    with Catalog(target) as cat:                       # a catalog that already holds a row
        write_pair(home, "kept", size=16)
        cat.add_tiles([Tile(path=str(home / "kept.tif"), source="folder", split="train")])
    before = catalog_bytes(target)
    item = _break(home / "export", stem, change)
    code, out, err = cli("data", "import", home / "export" / CATALOG_FILE, "--catalog", target, "--no-progress")
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert item in err, err                            # the item is named ...
    for needle in needles:                             # ... and what is wrong with it
        assert needle in err, err
    assert catalog_bytes(target) == before


def test_a_missing_item_a_duplicate_id_or_image_is_refused(exported, tmp_path):
    _, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (victim,) = list((copy / "export" / "items").glob("utm_a-*.json"))
    twin = json.loads(victim.read_text())
    victim.unlink()
    with Catalog(tmp_path / "c.sqlite") as cat:
        with pytest.raises(WorkbenchError, match="links to .*utm_a-.*json, which does not exist; nothing imported"):
            import_collection(cat, copy / CATALOG_FILE)
        victim.write_text(json.dumps(twin))
        (copy / "export" / "items" / "twin.json").write_text(json.dumps(twin))    # one id, two files
        coll = json.loads((copy / "export" / COLLECTION_FILE).read_text())
        coll["links"].append({"rel": "item", "href": "./items/twin.json", "type": "application/geo+json"})
        (copy / "export" / COLLECTION_FILE).write_text(json.dumps(coll))
        with pytest.raises(WorkbenchError, match="appears twice"):
            import_collection(cat, copy / CATALOG_FILE)
        twin["id"] = "another-id"                      # another id, the same image
        (copy / "export" / "items" / "twin.json").write_text(json.dumps(twin))
        with pytest.raises(WorkbenchError, match="utm_a.tif is also the image of"):
            import_collection(cat, copy / CATALOG_FILE)
        assert cat.count() == 0


def test_scene_options_are_refused_for_a_collection(exported, home, cli):
    _, out = exported
    code, _, err = cli("data", "import", out / CATALOG_FILE, "--catalog", home / "c.sqlite", "--mask", "m.tif")
    assert code == 2 and "--mask" in err and len(err.strip().splitlines()) == 1
    assert not (home / "c.sqlite").exists()


def test_a_tile_without_a_crs_round_trips_with_a_null_geometry(tmp_path):
    import numpy as np

    from workbench.data import geotiff

    image = geotiff.write(tmp_path / "plain.tif", np.ones((3, 8, 8), "uint16"), (2, 0, 0, 0, -2, 0), None)
    with Catalog(tmp_path / "a.sqlite") as cat:
        cat.add_tiles([Tile(path=str(image), source="folder", width=8, height=8, bands=["red", "green", "blue"])])
        done = export_stac(cat, tmp_path / "out")
    (item,) = pystac.Catalog.from_file(str(done.path)).get_items(recursive=True)
    assert item.geometry is None and item.bbox is None and item.properties["proj:code"] is None
    with Catalog(tmp_path / "b.sqlite") as cat:
        import_collection(cat, tmp_path / "out")       # the export's folder
    assert round_trip_rows(tmp_path / "b.sqlite") == round_trip_rows(tmp_path / "a.sqlite")


def _cli_refuses(cli, home: Path, export: Path, target: Path, *needles: str) -> None:
    if not target.exists():
        with Catalog(target) as cat:
            write_pair(home, "kept", size=16)
            cat.add_tiles([Tile(path=str(home / "kept.tif"), source="folder", split="train")])
    before = catalog_bytes(target)
    code, out, err = cli("data", "import", export / CATALOG_FILE, "--catalog", target, "--no-progress")
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert catalog_bytes(target) == before


def test_a_mask_off_its_grid_or_an_image_that_is_no_raster_is_refused(home, cli):
    """The item says everything a row needs, so only the files' tags are read: a mask moved off its
    image's grid, or an image that is no raster any more, is still refused as GDAL sees it."""
    import numpy as np
    from rasterio.transform import from_origin

    from workbench.data import geotiff

    catalog = make_catalog(home / "src")
    with Catalog(catalog, read_only=True) as cat:
        export_stac(cat, home / "export")
    tiles = home / "src" / "data" / "tiles"
    mask = tiles / "utm_a_mask.tif"
    kept = mask.read_bytes()
    geotiff.write(mask, np.zeros((16, 16), "uint8"), from_origin(500_010.0, 4_650_000.0, 10.0, 10.0), "EPSG:32633")
    _cli_refuses(cli, home, home / "export", home / "c.sqlite", "utm_a_mask.tif is not on its image's grid",
                 "different geotransforms")
    geotiff.write(mask, np.zeros((16, 16), "uint8"), from_origin(500_000.0, 4_650_000.0, 10.0, 10.0), "EPSG:32634")
    _cli_refuses(cli, home, home / "export", home / "c.sqlite", "not on its image's grid", "CRS EPSG:32633 vs")
    mask.write_bytes(kept)
    (tiles / "lonlat_b.tif").write_bytes(b"not a raster at all")
    _cli_refuses(cli, home, home / "export", home / "c.sqlite", "lonlat_b.tif: not a readable GeoTIFF")


def test_an_older_stac_item_is_migrated_and_reads_the_same(exported, tmp_path):
    """Items of STAC 1.0 with the projection extension v1.1 (``proj:epsg``) go through pystac's
    migration; they give the rows an export of this version gives."""
    catalog, out = exported
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    for path in (copy / "export" / "items").glob("*.json"):
        d = json.loads(path.read_text())
        d["stac_version"] = "1.0.0"
        d["stac_extensions"] = ["https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                                "https://stac-extensions.github.io/projection/v1.1.0/schema.json"]
        code = d["properties"].pop("proj:code")
        if code:
            d["properties"]["proj:epsg"] = int(code.split(":")[1])
        path.write_text(json.dumps(d))
    with Catalog(tmp_path / "new.sqlite") as cat:
        result = import_collection(cat, copy)
    assert len(result.added) == 4
    assert round_trip_rows(tmp_path / "new.sqlite") == round_trip_rows(catalog)
