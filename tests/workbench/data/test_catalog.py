"""The catalog: every filter, raw and read-only where, predictions written back, relative paths."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from workbench.data.catalog import Catalog, Tile, TileSelection, run_query
from workbench.errors import WorkbenchError


def _tiles(root: Path) -> list[Tile]:
    rows = [
        # name, source, split, lon, lat, water, label, date
        ("a", "bluemarble", "train", 10.0, 45.0, 0.00, "land", "2004-06-15"),
        ("b", "bluemarble", "val", -30.0, 0.0, 1.00, "water", "2004-06-15"),
        ("c", "folder", "test", 105.8, 21.0, 0.40, "coast", "2023-03-01"),
        ("d", "earthengine", "train", 12.5, 41.9, 0.10, "coast", "2023-07-20"),
        ("e", "generated", None, 0.0, 60.0, None, None, None),
    ]
    return [Tile(path=str(root / f"tiles/{n}.tif"), mask_path=str(root / f"tiles/{n}_mask.tif") if wf is not None
                 else None, source=src, split=split, lon=lon, lat=lat, water_fraction=wf, label=label, date=date,
                 bands=["red", "green", "blue"], gsd=10.0, caption=f"tile {n}", extra={"n": n})
            for n, src, split, lon, lat, wf, label, date in rows]


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "data" / "catalog.sqlite")
    c.add_tiles(_tiles(tmp_path / "data"))
    yield c
    c.close()


def names(tiles) -> list[str]:
    return [Path(t.path).stem for t in tiles]


def test_add_and_query_round_trip(cat, tmp_path):
    tiles = cat.query()
    assert names(tiles) == ["a", "b", "c", "d", "e"]
    a = tiles[0]
    assert a.path == str(tmp_path / "data" / "tiles" / "a.tif")  # absolute when read back
    assert a.bands == ["red", "green", "blue"] and a.extra == {"n": "a"} and a.created_at
    assert a.id == 1 and cat.get(a.id).path == a.path
    with pytest.raises(WorkbenchError, match="no tile with id 99"):
        cat.get(99)


@pytest.mark.parametrize("filters, expected", [
    (dict(source="bluemarble"), ["a", "b"]),
    (dict(source=["folder", "earthengine"]), ["c", "d"]),
    (dict(split="train"), ["a", "d"]),
    (dict(split=["val", "test"]), ["b", "c"]),
    (dict(label="coast"), ["c", "d"]),
    (dict(bbox=(0, 40, 20, 50)), ["a", "d"]),
    (dict(bbox=(-40, -5, -20, 5)), ["b"]),
    (dict(water_min=0.1), ["b", "c", "d"]),
    (dict(water_max=0.1), ["a", "d"]),
    (dict(water_min=0.05, water_max=0.95), ["c", "d"]),
    (dict(date_from="2023-01-01"), ["c", "d"]),
    (dict(date_to="2023-06-30"), ["a", "b", "c"]),
    (dict(date_from="2023-01-01", date_to="2023-06-30"), ["c"]),
    (dict(where="lat > 40 AND label IS NOT NULL"), ["a", "d"]),
    (dict(where="caption LIKE '%c'"), ["c"]),
    (dict(ids=[2, 4]), ["b", "d"]),
    (dict(limit=2), ["a", "b"]),
    (dict(source="bluemarble", split="train", label="land"), ["a"]),
])
def test_each_filter(cat, filters, expected):
    assert names(cat.query(**filters)) == expected
    assert cat.count(**filters) == (len(expected) if "limit" not in filters else 5)


@pytest.mark.parametrize("source, expected", [
    ("bluemarble", "bluemarble"),
    ("bluemarble,generated", ["bluemarble", "generated"]),
    (" bluemarble , generated ,", ["bluemarble", "generated"]),
    (["folder", "generated"], ["folder", "generated"]),
    (None, None),
    ("", None),
])
def test_run_query_reads_a_comma_list_of_sources(source, expected):
    q = run_query(source, "lat > 0")
    assert q.get("source") == expected and q["where"] == "lat > 0"
    assert run_query(source, None, {"source": "folder", "where": None}) == {"source": "folder"}  # the CLI's wins


def test_config_source_comma_list_selects_both_sources(cat):
    query = TileSelection(source="bluemarble,generated").query()
    assert query == {"source": ["bluemarble", "generated"]}
    assert names(cat.query(**query)) == ["a", "b", "e"]
    with pytest.raises(WorkbenchError, match="unknown source 'nope'"):
        cat.query(**run_query("bluemarble,nope", None))


def test_unknown_source_and_filter_are_user_errors(cat):
    with pytest.raises(WorkbenchError, match="unknown source 'nope'"):
        cat.query(source="nope")
    with pytest.raises(WorkbenchError, match="unknown query filter"):
        cat.query(colour="red")


@pytest.mark.parametrize("where", [
    "1=1; DROP TABLE tiles",
    "1=1); DROP TABLE tiles; --",
    "id IN (SELECT id FROM tiles) ; DELETE FROM tiles",
    "lat >",
    "no_such_column = 1",
])
def test_malformed_or_writing_where_fails_cleanly(cat, where):
    before = cat.count()
    with pytest.raises(WorkbenchError, match="malformed query --where"):
        cat.query(where=where)
    assert cat.count() == before
    assert sqlite3.connect(cat.path).execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == before


def test_where_cannot_write_even_through_functions(cat):
    before = [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")]
    for where in ("(SELECT load_extension('x')) IS NULL", "(SELECT COUNT(*) FROM sqlite_master) > 0 "
                  "AND 1=(SELECT 1 FROM pragma_journal_mode('DELETE'))"):
        with pytest.raises(WorkbenchError):
            cat.query(where=where)
    assert [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")] == before


def test_set_predictions_round_trip(cat):
    ids = [t.id for t in cat.query(source="bluemarble")]
    assert cat.set_predictions([(ids[0], "water", 0.91), (ids[1], "land", 0.55)], model_id="cls-1") == 2
    a, b = cat.query(source="bluemarble")
    assert (a.pred_label, a.pred_score, a.model_id) == ("water", pytest.approx(0.91), "cls-1")
    assert (b.pred_label, b.pred_score, b.model_id) == ("land", pytest.approx(0.55), "cls-1")
    assert names(cat.query(pred_label="water")) == ["a"]
    assert names(cat.query(model_id="cls-1")) == ["a", "b"]
    assert cat.stats()["by_pred_label"] == {"-": 3, "land": 1, "water": 1}


def test_paths_relative_to_catalog_dir(cat, tmp_path):
    outside = tmp_path / "elsewhere" / "x.tif"
    cat.add_tiles([Tile(path=str(outside), source="folder")])
    stored = dict(sqlite3.connect(cat.path).execute("SELECT path, mask_path FROM tiles").fetchall())
    assert "tiles/a.tif" in stored and stored["tiles/a.tif"] == "tiles/a_mask.tif"
    assert str(outside) in stored  # outside the catalog's folder: absolute
    # moving the whole data folder keeps the tiles findable
    moved = tmp_path / "moved"
    cat.close()
    (tmp_path / "data").rename(moved)
    with Catalog(moved / "catalog.sqlite") as c2:
        assert c2.query(limit=1)[0].path == str(moved / "tiles" / "a.tif")


def test_same_path_is_kept_or_replaced(cat):
    t = cat.query(limit=1)[0]
    t2 = Tile(path=t.path, source="folder", label="changed")
    assert cat.add_tiles([t2]) == [t.id]
    assert cat.get(t.id).label == "land" and cat.count() == 5
    cat.add_tiles([t2], replace=True)
    assert cat.get(t.id).label == "changed" and cat.count() == 5


def test_failed_add_leaves_catalog_unchanged(cat, tmp_path):
    before = [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")]
    with pytest.raises(WorkbenchError, match="unknown source"):
        cat.add_tiles([Tile(path=str(tmp_path / "new.tif"), source="folder"),
                       Tile(path=str(tmp_path / "bad.tif"), source="martian")])
    assert [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")] == before


def test_stats_counts(cat):
    s = cat.stats()
    assert s["tiles"] == 5 and s["with_mask"] == 4
    assert s["by_source"] == {"bluemarble": 2, "earthengine": 1, "folder": 1, "generated": 1}
    assert s["by_split"] == {"-": 1, "test": 1, "train": 2, "val": 1}
    assert s["by_label"] == {"-": 1, "coast": 2, "land": 1, "water": 1}
    assert s["water_min"] == 0 and s["water_max"] == 1
    assert cat.stats(source="bluemarble")["tiles"] == 2
    assert cat.stats(where="lat > 40")["tiles"] == 3


def test_update_and_meta(cat):
    t = cat.query(limit=1)[0]
    cat.update(t.id, label="water", extra={"k": 1})
    assert cat.get(t.id).label == "water" and cat.get(t.id).extra == {"k": 1}
    with pytest.raises(WorkbenchError, match="unknown catalog column"):
        cat.update(t.id, colour="red")
    cat.set_meta("bluemarble", {"tile_size": 64})
    assert cat.get_meta("bluemarble") == {"tile_size": 64} and cat.get_meta("nope", 3) == 3


def test_not_a_catalog_is_a_user_error(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(WorkbenchError, match="not a workbench catalog"):
        Catalog(bad)


def test_opening_waits_for_a_writer_that_holds_the_lock(tmp_path):
    """Another process mid-write makes SQLite refuse the switch to WAL at once, without its
    busy timeout (two imports creating one catalog hit this): opening must wait, not fail."""
    path = tmp_path / "catalog.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA user_version = 1")  # the file exists, as another importer has just made it
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")  # its schema, not yet committed
    probe = sqlite3.connect(path, timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # the case, without the retry
        probe.execute("PRAGMA journal_mode = WAL")
    probe.close()
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        with Catalog(path) as cat:
            assert cat.count() == 0
            assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        release.join()
        writer.close()
