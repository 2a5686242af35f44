"""``workbench data export-parquet``: one stac-geoparquet file whose rows are export-stac's items
(ids, footprints, properties, assets), with GeoParquet 1.1.0 metadata, read back by pyarrow (and
by DuckDB where it is installed); an existing file is never written over."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.stac import make_catalog, round_trip_rows
from workbench.data.catalog import Catalog
from workbench.data.stac_export import PREFIX, item_id

pa = pytest.importorskip("pyarrow")            # in the dev extra: make test runs these
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(catalog, parquet file, export-stac folder) of the four-tile fixture catalog."""
    from workbench.data.geoparquet_export import export_parquet
    from workbench.data.stac_export import export_stac

    root = tmp_path_factory.mktemp("geoparquet")
    catalog = make_catalog(root)
    with Catalog(catalog, read_only=True) as cat:
        export_parquet(cat, root / "tiles.parquet")
        export_stac(cat, root / "stac")
    return catalog, root / "tiles.parquet", root / "stac"


def _stac_items(folder: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["id"]: json.loads(p.read_text()) for p in folder.glob("*/items/*.json")}


def test_the_geo_metadata_says_geoparquet_1_1(built):
    _, path, _ = built
    meta = pq.read_schema(path).metadata
    geo = json.loads(meta[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert column["covering"]["bbox"] == {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    stac = json.loads(meta[b"stac-geoparquet"])
    assert stac["version"] == "1.0.0"
    (coll,) = stac["collections"].values()
    assert coll["type"] == "Collection" and coll["id"] == "tiles" and coll["links"] == []
    assert column["bbox"] == coll["extent"]["spatial"]["bbox"][0]


def test_rows_are_the_stac_exports_items(built):
    import shapely

    catalog, path, stac = built
    table = pq.read_table(path)
    items = _stac_items(stac)
    with Catalog(catalog, read_only=True) as cat:
        tiles, root = cat.query(), cat.root
    assert table.num_rows == len(tiles) == 4
    assert sorted(table.column("id").to_pylist()) == sorted(items)
    assert set(table.column_names) >= {"type", "stac_version", "stac_extensions", "id", "geometry", "bbox", "links",
                                       "assets", "collection", "datetime", "proj:transform", f"{PREFIX}label"}
    assert pa.types.is_timestamp(table.schema.field("datetime").type)
    assert pa.types.is_struct(table.schema.field("bbox").type)
    assert pa.types.is_binary(table.schema.field("geometry").type)
    rows = {r["id"]: r for r in table.to_pylist()}
    for t in tiles:
        row, item = rows[item_id(t, root)], items[item_id(t, root)]
        props = item["properties"]
        assert row["bbox"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), item["bbox"]))
        ring = shapely.from_wkb(row["geometry"])
        assert ring.equals(shapely.geometry.shape(item["geometry"]))
        assert list(ring.exterior.coords) == [tuple(p) for p in item["geometry"]["coordinates"][0]]
        if t.date:
            assert row["datetime"] == datetime.fromisoformat(f"{t.date}T00:00:00+00:00")
            assert row["start_datetime"] is None
        else:
            assert row["datetime"] is None and row["start_datetime"] == datetime(1970, 1, 1, tzinfo=UTC)
            assert row["end_datetime"] == datetime.fromisoformat(t.created_at)
        for key in ("proj:code", "proj:shape", "proj:transform", "proj:bbox", "gsd", f"{PREFIX}label",
                    f"{PREFIX}water_fraction", f"{PREFIX}pred_score", f"{PREFIX}parent", f"{PREFIX}lon"):
            assert row[key] == props.get(key), key
        assert json.loads(row[f"{PREFIX}extra"]) == t.extra
        assert row["assets"]["image"]["href"] == t.path == item["assets"]["image"]["href"]
        assert row["assets"]["image"]["eo:bands"] == [{"name": b, "common_name": b} for b in t.bands]
        assert (row["assets"]["mask"] or {}).get("href") == t.mask_path
        assert row["stac_extensions"] == item["stac_extensions"] and row["collection"] == "tiles"
        assert row["links"] == []


def test_duckdb_reads_it_where_installed(built):
    duckdb = pytest.importorskip("duckdb")
    _, path, _ = built
    (count,) = duckdb.sql(f"SELECT count(*) FROM '{path}' WHERE \"workbench:label\" = 'coast'").fetchone()
    assert count == 2


def test_cli_writes_what_the_filters_select_and_never_over_a_file(home, cli):
    catalog = make_catalog(home)
    out = home / "exports" / "test.parquet"
    code, stdout, err = cli("data", "export-parquet", out, "--catalog", catalog, "--split", "test", "--no-progress",
                            "--id", "water-test", "--license", "CC-BY-4.0")
    assert code == 0, err
    assert "collection water-test of 1 row(s)" in stdout
    table = pq.read_table(out)
    assert table.column(f"{PREFIX}split").to_pylist() == ["test"]
    assert table.column("collection").to_pylist() == ["water-test"]
    before = out.read_bytes()
    code, _, err = cli("data", "export-parquet", out, "--catalog", catalog, "--no-progress")
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["test.parquet"]
    code, _, err = cli("data", "export-parquet", home / "none.parquet", "--catalog", catalog, "--label", "nothing")
    assert code == 2 and "no tile matches" in err and not (home / "none.parquet").exists()
    code, _, err = cli("data", "export-parquet", home / "rel.parquet", "--catalog", catalog, "--relative-assets",
                       "--no-progress")
    assert code == 0, err
    hrefs = [a["image"]["href"] for a in pq.read_table(home / "rel.parquet").column("assets").to_pylist()]
    assert all(h.startswith("data/tiles/") and (home / h).is_file() for h in hrefs)


def test_a_missing_tile_writes_nothing(home, cli):
    catalog = make_catalog(home)
    Path(home / "data" / "tiles" / "lonlat_b.tif").unlink()
    code, _, err = cli("data", "export-parquet", home / "t.parquet", "--catalog", catalog, "--no-progress")
    assert code == 2 and "lonlat_b.tif: no such file" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in home.iterdir() if "parquet" in p.name] == []          # no temporary file either


def test_without_pyarrow_the_verb_says_how_to_install_it(home):
    """pyarrow hidden from a fresh interpreter: one line naming the extra, exit 2."""
    catalog = make_catalog(home)
    code = ("import sys; sys.modules['pyarrow'] = None; from workbench.cli import main; "
            f"sys.exit(main(['data', 'export-parquet', {str(home / 'x.parquet')!r}, '--catalog', {str(catalog)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "satellite-workbench[parquet]" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (home / "x.parquet").exists()
    (home / "in.parquet").write_bytes(b"PAR1")
    code = code.replace("'export-parquet', ", "'import', ").replace(str(home / "x.parquet"), str(home / "in.parquet"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and "satellite-workbench[parquet]" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_kind_of_row_has_its_columns(tmp_path, monkeypatch):
    """No CRS (null geometry and bbox), a CRS without a code (proj:wkt2, workbench:crs), a date
    with a time (workbench:date), bands without common names: every property has its column.
    Written three rows at a time (three row groups), the file holds the same table and metadata."""
    from tests.support.stac import varied_catalog
    from workbench.data import stac_export
    from workbench.data.geoparquet_export import export_parquet
    from workbench.data.stac_export import export_stac

    catalog = varied_catalog(tmp_path / "src")
    with Catalog(catalog, read_only=True) as cat:
        done = export_parquet(cat, tmp_path / "all.parquet")
        export_stac(cat, tmp_path / "stac")
        monkeypatch.setattr(stac_export, "EXPORT_CHUNK", 3)
        export_parquet(cat, tmp_path / "chunked.parquet", collection_id="all")
    chunked = pq.ParquetFile(tmp_path / "chunked.parquet")
    assert chunked.num_row_groups == 3 and chunked.read().equals(pq.read_table(done.path))
    assert chunked.schema_arrow.metadata == pq.read_schema(done.path).metadata
    rows = {r["id"]: r for r in pq.read_table(done.path).to_pylist()}
    items = _stac_items(tmp_path / "stac")
    assert done.items == len(rows) == len(items) == 8 and set(rows) == set(items)
    for iid, item in items.items():
        row, props = rows[iid], item["properties"]
        for key, value in props.items():
            if key in ("datetime", "start_datetime", "end_datetime"):
                assert row[key] == (None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")))
            elif key == f"{PREFIX}extra":
                assert json.loads(row[key]) == value
            else:
                assert row[key] == value, (iid, key)
        if item["geometry"] is None:
            assert row["geometry"] is None and row["bbox"] is None
        bands = row["assets"]["image"]["eo:bands"]
        assert [{k: v for k, v in b.items() if v is not None} for b in bands] == item["assets"]["image"]["eo:bands"]


# ---- data import FILE.parquet ------------------------------------------------------------------------

@pytest.mark.parametrize("relative", [False, True])
def test_export_then_import_gives_the_same_rows(home, cli, relative):
    catalog = make_catalog(home)
    args = ["--relative-assets"] if relative else []
    code, _, err = cli("data", "export-parquet", home / "out" / "all.parquet", "--catalog", catalog, "--no-progress",
                       *args)
    assert code == 0, err
    code, out, err = cli("data", "import", home / "out" / "all.parquet", "--catalog", home / "copy.sqlite",
                         "--no-progress")
    assert code == 0, err
    assert "STAC geoparquet of 4 item(s)" in out and "added 4 tile(s)" in out
    assert round_trip_rows(home / "copy.sqlite") == round_trip_rows(catalog)
    code, out, err = cli("data", "import", home / "out" / "all.parquet", "--catalog", home / "copy.sqlite",
                         "--no-progress")
    assert code == 0 and "4 already in the catalog" in out, err


def test_another_tools_geoparquet_maps_from_the_standard_fields(tmp_path):
    """A file laid out as the stac-geoparquet library writes it (float32 bbox struct, a timestamp,
    an asset ``visual`` with role data), with no workbench column."""
    import shapely

    from tests.support.rasters import write_pair
    from workbench.data.geoparquet_export import parquet_metadata
    from workbench.data.sources.stac_collection import import_collection

    (tmp_path / "data").mkdir()
    image, mask = write_pair(tmp_path / "data", "scene", size=16, seed=3)
    box = [14.99, 41.99, 15.01, 42.01]
    asset = pa.struct([("href", pa.string()), ("type", pa.string()), ("roles", pa.list_(pa.string()))])
    table = pa.table({
        "type": ["Feature"], "stac_version": ["1.1.0"], "stac_extensions": [[]], "id": ["S2A_scene"],
        "geometry": [shapely.to_wkb(shapely.box(*box), flavor="iso")],
        "bbox": pa.array([dict(zip(("xmin", "ymin", "xmax", "ymax"), box))],
                         pa.struct([(k, pa.float32()) for k in ("xmin", "ymin", "xmax", "ymax")])),
        "links": pa.array([[]], pa.list_(pa.struct([("rel", pa.string()), ("href", pa.string())]))),
        "assets": pa.array([{"visual": {"href": "data/scene.tif", "type": "image/tiff; application=geotiff",
                                        "roles": ["data"]},
                             "water": {"href": "data/scene_mask.tif", "type": "image/tiff; application=geotiff",
                                       "roles": ["labels"]}}],
                           pa.struct([("visual", asset), ("water", asset)])),
        "collection": ["other"],
        "datetime": pa.array([datetime(2022, 7, 1, 10, 30, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        "eo:cloud_cover": [12.5], "proj:code": ["EPSG:32633"], "gsd": [10.0]})
    pq.write_table(table.replace_schema_metadata(parquet_metadata(box, {})), tmp_path / "other.parquet")
    with Catalog(tmp_path / "c.sqlite") as cat:
        result = import_collection(cat, tmp_path / "other.parquet")
    (tile,) = result.added
    assert result.kind == "geoparquet" and tile.path == str(image) and tile.mask_path == str(mask)
    assert tile.west == pytest.approx(14.99) and tile.north == pytest.approx(42.01)
    assert tile.date == "2022-07-01" and tile.cloud_cover == pytest.approx(0.125) and tile.crs == "EPSG:32633"
    assert tile.bands == ["red", "green", "blue"] and tile.source == "folder" and tile.label is not None
    assert tile.extra["stac_item"] == "S2A_scene"


def test_a_parquet_file_that_is_not_stac_geoparquet_is_refused(home, cli):
    pq.write_table(pa.table({"a": [1, 2]}), home / "plain.parquet")
    (home / "broken.parquet").write_bytes(b"PAR1 not really")
    for name, needle in (("plain.parquet", "not a stac-geoparquet file"), ("broken.parquet", "not a readable Parquet")):
        code, _, err = cli("data", "import", home / name, "--catalog", home / "c.sqlite", "--no-progress")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
