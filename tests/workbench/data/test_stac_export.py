"""``workbench data export-stac``: a STAC Collection pystac reads back, items checked field by field
against the STAC 1.1 item spec (offline: no schema is fetched), stable ids, hrefs that survive a move,
and refusals that leave nothing behind."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pystac
import pytest

from tests.support.stac import exported_catalog, make_catalog, varied_catalog
from workbench.data import geotiff
from workbench.data.catalog import Catalog
from workbench.data.stac_export import CATALOG_FILE, COLLECTION_FILE, FIELDS, PREFIX, export_stac, item_id

PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(catalog, export folder), exported once for the read-only checks."""
    return exported_catalog(tmp_path_factory.mktemp("stac-export"))


def _rows(catalog: Path):
    with Catalog(catalog, read_only=True) as cat:
        return cat.query(), cat.root


def _item_files(out: Path, cid: str = "export") -> dict[str, dict]:
    return {json.loads(p.read_text())["id"]: json.loads(p.read_text()) for p in (out / cid / "items").glob("*.json")}


def _time(text: str) -> datetime:
    assert text.endswith("Z"), text                    # RFC 3339 in UTC
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_pystac_reads_it_back_and_every_href_resolves(built):
    catalog, out = built
    tiles, _ = _rows(catalog)
    for reader, name in ((pystac.Catalog.from_file, CATALOG_FILE), (pystac.Collection.from_file,
                                                                     f"export/{COLLECTION_FILE}")):
        root = reader(str(out / name))
        items = list(root.get_items(recursive=True))
        assert len(items) == len(tiles)
        for item in items:
            assert Path(item.get_self_href()).is_file()
            for key, asset in item.assets.items():
                assert Path(asset.get_absolute_href()).is_file(), (item.id, key)
    coll = pystac.Catalog.from_file(str(out / CATALOG_FILE)).get_child("export")
    assert isinstance(coll, pystac.Collection)
    by_path = {t.path: t for t in tiles}
    for item in coll.get_items():
        tile = by_path[item.assets["image"].get_absolute_href()]
        assert ("mask" in item.assets) == (tile.mask_path is not None)
        if tile.mask_path:
            assert item.assets["mask"].get_absolute_href() == tile.mask_path
    assert sorted(p.name for p in out.iterdir()) == [CATALOG_FILE, "export"]        # nothing else, no temp
    assert sorted(p.name for p in (out / "export").iterdir()) == [COLLECTION_FILE, "items"]


def test_items_carry_the_fields_the_item_spec_requires(built):
    catalog, out = built
    tiles, root = _rows(catalog)
    ids = {t.id: item_id(t, root) for t in tiles}
    items = _item_files(out)
    assert set(items) == set(ids.values())
    for t in tiles:
        d = items[ids[t.id]]
        assert d["type"] == "Feature" and d["stac_version"] == "1.1.0" and d["id"] == ids[t.id]
        assert PROJ in d["stac_extensions"] and EO in d["stac_extensions"]
        # geometry and bbox: the lon/lat bounds, a closed ring
        assert d["bbox"] == [t.west, t.south, t.east, t.north]
        ring = d["geometry"]["coordinates"][0]
        assert d["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
        assert {x for x, _ in ring} == {t.west, t.east} and {y for _, y in ring} == {t.south, t.north}
        props = d["properties"]
        assert "datetime" in props
        if t.date:
            assert _time(props["datetime"]).date().isoformat() == t.date
            assert "start_datetime" not in props
        else:                                          # unknown: null, and a range instead
            assert props["datetime"] is None
            assert _time(props["start_datetime"]) <= _time(props["end_datetime"])
            assert _time(props["end_datetime"]) == datetime.fromisoformat(t.created_at)
        # proj: the tile's own grid, from its header
        info = geotiff.read_info(t.path)
        assert props["proj:shape"] == [t.height, t.width]
        assert props["proj:transform"] == list(info.transform[:6])
        assert props["proj:bbox"] == list(info.bounds)
        if t.crs.startswith("EPSG:"):
            assert props["proj:code"] == t.crs and "proj:wkt2" not in props
        else:
            assert props["proj:code"] is None and props["proj:wkt2"].startswith("PROJCRS")
            assert geotiff.same_crs(props["proj:wkt2"], t.crs) and props[f"{PREFIX}crs"] == t.crs
        assert props["gsd"] == t.gsd
        if t.cloud_cover is None:
            assert "eo:cloud_cover" not in props
        else:
            assert props["eo:cloud_cover"] == pytest.approx(100 * t.cloud_cover)
        for name in FIELDS:
            assert props[f"{PREFIX}{name}"] == getattr(t, name), name
        assert props[f"{PREFIX}parent"] == (ids[t.parent_id] if t.parent_id else None)
        # links: root, parent, collection as written (relative, SELF_CONTAINED: no self)
        here = out / "export" / "items"
        rels = {link["rel"]: link for link in d["links"]}
        assert {"root", "parent", "collection"} <= set(rels) and "self" not in rels
        assert all(not Path(link["href"]).is_absolute() for link in d["links"])
        assert (here / rels["root"]["href"]).resolve() == out / CATALOG_FILE
        assert (here / rels["parent"]["href"]).resolve() == out / "export" / COLLECTION_FILE
        assert (here / rels["collection"]["href"]).resolve() == out / "export" / COLLECTION_FILE
        assert d["collection"] == "export"
        if t.parent_id:
            assert (here / rels["derived_from"]["href"]).resolve() == here / f"{ids[t.parent_id]}.json"
        else:
            assert "derived_from" not in rels
        # assets: href, type, roles; eo:bands with common names
        image = d["assets"]["image"]
        assert image["href"] == t.path and image["roles"] == ["data"] and "geotiff" in image["type"]
        assert [b["name"] for b in image["eo:bands"]] == t.bands
        assert [b.get("common_name") for b in image["eo:bands"]] == t.bands   # red, green, blue (, nir)
        if t.mask_path:
            assert d["assets"]["mask"]["href"] == t.mask_path and d["assets"]["mask"]["roles"] == ["labels"]


def test_the_collection_carries_its_extent_and_the_required_fields(built):
    catalog, out = built
    tiles, _ = _rows(catalog)
    d = json.loads((out / "export" / COLLECTION_FILE).read_text())
    assert d["type"] == "Collection" and d["stac_version"] == "1.1.0" and d["id"] == "export"
    assert d["description"] and d["license"] == "other"
    (bbox,) = d["extent"]["spatial"]["bbox"]
    assert bbox == [min(t.west for t in tiles), min(t.south for t in tiles), max(t.east for t in tiles),
                    max(t.north for t in tiles)]
    ((start, end),) = d["extent"]["temporal"]["interval"]
    assert _time(start).year == 1970                   # the undated tile's open start
    assert _time(end) == max(datetime.fromisoformat(t.created_at) for t in tiles if not t.date)
    items = [link for link in d["links"] if link["rel"] == "item"]
    assert len(items) == len(tiles) and all((out / "export" / link["href"]).is_file() for link in items)
    assert d["summaries"][f"{PREFIX}source"] == ["folder", "generated"]
    root = json.loads((out / CATALOG_FILE).read_text())
    assert root["type"] == "Catalog" and root["stac_version"] == "1.1.0" and root["id"] and root["description"]
    assert [link["href"] for link in root["links"] if link["rel"] == "child"] == [f"./export/{COLLECTION_FILE}"]


def test_ids_are_stable_and_an_export_moves_as_a_whole(built, tmp_path):
    catalog, out = built
    with Catalog(catalog, read_only=True) as cat:
        again = export_stac(cat, tmp_path / "again")
    assert set(_item_files(out)) == set(_item_files(again.path.parent, "again"))
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(out, moved)                        # absolute asset hrefs: the folder goes anywhere
    for item in pystac.Catalog.from_file(str(moved / CATALOG_FILE)).get_items(recursive=True):
        assert all(Path(a.get_absolute_href()).is_file() for a in item.assets.values())


def test_relative_assets_move_with_the_data_folder(tmp_path):
    catalog = make_catalog(tmp_path / "a")
    with Catalog(catalog, read_only=True) as cat:
        export_stac(cat, tmp_path / "a" / "data" / "stac", relative_assets=True)
    d = next(iter(_item_files(tmp_path / "a" / "data" / "stac", "stac").values()))
    assert d["assets"]["image"]["href"].startswith("../../../tiles/")
    shutil.move(tmp_path / "a", tmp_path / "b")        # the data folder, export inside it, moved
    root = pystac.Catalog.from_file(str(tmp_path / "b" / "data" / "stac" / CATALOG_FILE))
    hrefs = [a.get_absolute_href() for item in root.get_items(recursive=True) for a in item.assets.values()]
    assert len(hrefs) == 7 and all(Path(h).is_file() and "/b/data/tiles/" in h for h in hrefs)


def test_cli_exports_what_the_filters_select(home, cli):
    catalog = make_catalog(home)
    code, out, err = cli("data", "export-stac", home / "tests-only", "--catalog", catalog, "--split", "test",
                         "--no-progress", "--id", "water-test", "--license", "CC-BY-4.0")
    assert code == 0, err
    assert "collection water-test of 1 item(s)" in out
    d = json.loads((home / "tests-only" / "water-test" / COLLECTION_FILE).read_text())
    assert d["id"] == "water-test" and d["license"] == "CC-BY-4.0"
    (item,) = _item_files(home / "tests-only", "water-test").values()
    assert item["properties"][f"{PREFIX}split"] == "test" and item["collection"] == "water-test"
    code, _, err = cli("data", "export-stac", home / "gen", "--catalog", catalog, "--source", "generated",
                       "--where", "parent_id IS NOT NULL", "--no-progress")
    assert code == 0, err
    (item,) = _item_files(home / "gen", "gen").values()
    assert item["properties"][f"{PREFIX}parent"].startswith("utm_a-")   # named though not exported
    assert all(link["rel"] != "derived_from" for link in item["links"])


def _refused(cli, *args) -> str:
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_non_empty_folder_is_refused_and_left_alone(home, cli):
    catalog = make_catalog(home)
    target = home / "existing"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    err = _refused(cli, "data", "export-stac", target, "--catalog", catalog, "--no-progress")
    assert str(target) in err and "not empty" in err
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    (home / "a-file").write_text("x")
    assert "not a folder" in _refused(cli, "data", "export-stac", home / "a-file", "--catalog", catalog)
    assert "is a file, not a folder" in _refused(cli, "data", "export-stac", home / "a-file" / "out", "--catalog",
                                                  catalog)      # before any tile is read
    empty = home / "empty"
    empty.mkdir()                                      # an empty folder is a new one
    code, _, err = cli("data", "export-stac", empty, "--catalog", catalog, "--no-progress")
    assert code == 0, err
    assert (empty / CATALOG_FILE).is_file()
    assert "a collection id" in _refused(cli, "data", "export-stac", home / "x", "--catalog", catalog, "--id", "a/b")


def test_a_missing_tile_or_no_match_writes_nothing(home, cli):
    catalog = make_catalog(home)
    before = catalog.read_bytes()
    Path(home / "data" / "tiles" / "lonlat_b.tif").unlink()
    err = _refused(cli, "data", "export-stac", home / "out", "--catalog", catalog, "--no-progress")
    assert "lonlat_b.tif: no such file" in err
    err = _refused(cli, "data", "export-stac", home / "out", "--catalog", catalog, "--label", "nothing-has-it")
    assert "no tile matches" in err
    assert not (home / "out").exists() and not list(home.glob(".out*"))   # no temporary folder left
    assert catalog.read_bytes() == before


@pytest.mark.parametrize("relative,chunk", [(False, None), (True, None), (False, 1), (True, 3)])
def test_the_files_are_the_ones_pystac_writes(tmp_path, monkeypatch, relative, chunk):
    """Byte for byte, also when the export goes a tile or three at a time (a parent in another
    chunk: its derived_from link and workbench:parent all the same)."""
    from workbench.bench_stac import pystac_export
    from workbench.data import stac_export

    if chunk:
        monkeypatch.setattr(stac_export, "EXPORT_CHUNK", chunk)
    catalog = varied_catalog(tmp_path / "src")
    with Catalog(catalog, read_only=True) as cat:
        done = export_stac(cat, tmp_path / "ours", collection_id="same", relative_assets=relative)
        pystac_export(cat, tmp_path / "pystac", collection_id="same", relative_assets=relative)
    ours = sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(tmp_path / "pystac") for p in (tmp_path / "pystac").rglob("*") if p.is_file())
    assert ours == theirs and len(ours) == 2 + 8 == 2 + done.items
    for name in ours:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "pystac" / name).read_bytes(), name


def test_a_grid_gdal_reads_otherwise_than_the_tags_is_gdals(tmp_path):
    catalog = varied_catalog(tmp_path / "src")
    with Catalog(catalog, read_only=True) as cat:
        export_stac(cat, tmp_path / "out")
    items = {d["assets"]["image"]["href"]: d for d in _item_files(tmp_path / "out", "out").values()}
    tiles = tmp_path / "src" / "data" / "tiles"
    pam = items[str(tiles / "pam.tif")]["properties"]
    assert pam["proj:transform"] == [20.0, 0.0, 600000.0, 0.0, -20.0, 4700000.0]     # the .aux.xml's, as GDAL says
    assert pam["proj:bbox"] == [600000.0, 4699680.0, 600320.0, 4700000.0]
    unnamed = items[str(tiles / "unnamed.tif")]["properties"]                       # CRS from the file's header
    assert unnamed["proj:code"] == "EPSG:32633" and unnamed["proj:shape"] == [16, 16]
    assert unnamed[f"{PREFIX}date"] == "2022-03-04T10:20:30" and unnamed["datetime"] == "2022-03-04T00:00:00Z"
    plain = items[str(tiles / "plain.tif")]
    assert plain["geometry"] is None and "bbox" not in plain and plain["properties"]["proj:code"] is None
    assert "proj:bbox" not in plain["properties"]
