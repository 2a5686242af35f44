"""The catalog: every filter, raw and read-only where, predictions written back, relative paths."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
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


# ---- bulk writes, column reads, indexes ---------------------------------------------------------

def _one_by_one(root: Path, batches: list[tuple[list[Tile], bool]]) -> tuple[list[list[int]], list[tuple]]:
    """Reference: every tile added by a call of its own (the upsert semantics, row by row)."""
    ref = Catalog(root / "reference.sqlite")
    ids = [[ref.add_tiles([t], replace=replace)[0] for t in tiles] for tiles, replace in batches]
    rows = [tuple(r) for r in ref.conn.execute("SELECT * FROM tiles ORDER BY id")]
    ref.close()
    return ids, rows


def test_bulk_add_gives_the_ids_and_rows_of_one_add_per_tile(tmp_path):
    """Existing paths kept (or replaced), repeats inside one call, new ids in input order: the
    bulk insert stores what adding the tiles one at a time stores."""
    root = tmp_path / "data"

    def t(name: str, label: str) -> Tile:
        return Tile(path=str(root / f"{name}.tif"), source="folder", label=label, bands=["red"], extra={"k": name},
                    created_at="2026-01-01T00:00:00+00:00")

    batches = [([t("a", "1"), t("b", "1")], False),
               ([t("c", "2"), t("a", "2"), t("c", "3"), t("d", "2")], False),
               ([t("b", "4"), t("e", "4"), t("e", "5"), t("a", "4")], True)]
    want_ids, want_rows = _one_by_one(root, batches)
    with Catalog(root / "catalog.sqlite") as cat:
        got = [cat.add_tiles(tiles, replace=replace) for tiles, replace in batches]
        rows = [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")]
    assert got == want_ids == [[1, 2], [3, 1, 3, 4], [2, 5, 5, 1]]
    assert rows == want_rows
    assert [r[-2] for r in rows] == ['{"k": "a"}', '{"k": "b"}', '{"k": "c"}', '{"k": "d"}', '{"k": "e"}']


def test_many_tiles_past_the_bound_parameter_limit(tmp_path):
    """Thousands of paths in one call (the look-ups are chunked under SQLite's parameter cap)."""
    root = tmp_path / "data"
    tiles = [Tile(path=str(root / f"t/{i}.tif"), source="folder", split="train") for i in range(2500)]
    with Catalog(root / "catalog.sqlite") as cat:
        assert cat.add_tiles(tiles[:1200]) == list(range(1, 1201))
        again = cat.add_tiles(tiles[::-1])       # 1200 there already, 1300 new
        assert again[:1300] == list(range(1201, 2501)) and again[1300:] == list(range(1200, 0, -1))
        assert cat.count() == 2500
        assert cat.existing_paths([t.path for t in tiles] + [str(root / "new.tif")]) == {t.path for t in tiles}


@pytest.mark.parametrize("many", [False, True])
def test_links_are_stored_as_their_targets(tmp_path, many):
    """A symlinked file is stored as the file it names (two links to one file: one path), whether
    the folder is listed at once (many files of it in one call) or each file is looked at."""
    from workbench.data.catalog import LISTED_FOLDER

    root = tmp_path / "data"
    real = root / "real"
    links = root / "links"
    real.mkdir(parents=True)
    links.mkdir()
    n = LISTED_FOLDER + 10 if many else 5
    paths = []
    for i in range(n):
        target = real / f"{i}.tif"
        target.write_bytes(b"x")
        if i % 2:
            (links / f"{i}.tif").symlink_to(target)
        else:
            (links / f"{i}.tif").write_bytes(b"x")
        paths.append(links / f"{i}.tif")
    (tmp_path / "alias").symlink_to(links)          # a linked folder is resolved too
    tiles = [Tile(path=str(tmp_path / "alias" / p.name), source="folder") for p in paths]
    with Catalog(root / "catalog.sqlite") as cat:
        cat.add_tiles(tiles)
        stored = [r[0] for r in cat.conn.execute("SELECT path FROM tiles ORDER BY id")]
        assert stored == [str(p.resolve().relative_to(root)) for p in paths]
        assert stored[:2] == ["links/0.tif", "real/1.tif"]
        assert cat.add_tiles([Tile(path=str(real / "1.tif"), source="folder")]) == [2]   # the same file


def test_table_holds_the_rows_query_gives(cat):
    table = cat.table()
    tiles = cat.query()
    assert len(table) == 5 and [Tile(**r.as_dict()) for r in table] == tiles
    assert [r.water_fraction for r in table] == [t.water_fraction for t in tiles]
    assert table["id"].dtype == np.int64 and table["id"].tolist() == [1, 2, 3, 4, 5]
    assert np.isnan(table["water_fraction"][4]) and table[4].water_fraction is None and table[4].mask_path is None
    assert table["path"] == [t.path for t in tiles] and table.band_lists()[0] == ["red", "green", "blue"]
    assert table.bounds().shape == (5, 4) and table.shapes().tolist() == [[0, 0]] * 5
    for name in ("water_fraction", "width", "id", "label", "path"):    # a column as Tile fields hold it
        assert table.values(name) == [getattr(t, name) for t in tiles]
    assert table.values("water_fraction")[4] is None and all(w is None for w in table.values("width"))
    sub = cat.table(columns=["path", "split", "extra"], split=["train", "test"])
    assert sub.names == ["id", "path", "split", "extra"] and len(sub) == 3
    assert sub[1].extra == {"n": "c"} and not hasattr(sub[1], "label")
    assert [r.path for r in sub[sub["id"] > 1]] == [sub[1].path, sub[2].path]
    assert len(cat.table(split="nope")) == 0 and len(cat.table(columns=["path"], where="lat > 50")) == 1


def test_table_and_query_refuse_what_they_should(cat):
    with pytest.raises(WorkbenchError, match="unknown catalog column.*colour"):
        cat.table(columns=["path", "colour"])
    with pytest.raises(WorkbenchError, match="malformed query --where"):
        cat.table(where="no_such_column = 1")
    with pytest.raises(WorkbenchError, match="malformed query --where"):
        list(cat.iter_query(where="no_such_column = 1"))


def test_iter_query_streams_the_rows_of_query(cat):
    assert list(cat.iter_query(batch_size=2)) == cat.query()
    assert list(cat.iter_query(batch_size=1, split="train")) == cat.query(split="train")


@pytest.mark.parametrize("filters, index", [
    (dict(split="test"), "tiles_split"),
    (dict(split=["val", "test"]), "tiles_split"),
    (dict(source="folder"), "tiles_source_split"),
    (dict(source="folder", split="train"), "tiles_source_split"),
    (dict(label="coast"), "tiles_label"),
    (dict(pred_label="water"), "tiles_pred"),
    (dict(bbox=(0, 40, 20, 50)), "tiles_lonlat"),
    (dict(date_from="2023-01-01", date_to="2023-12-31"), "tiles_date"),
    (dict(water_min=0.05, water_max=0.95), "tiles_water"),
    (dict(ids=[1, 2]), "INTEGER PRIMARY KEY"),
])
def test_common_filters_use_an_index(cat, filters, index):
    """The SQL query()/table() run for each common filter searches an index (no full scan).
    A one-sided range (only date_from, only water_min) is left to SQLite's planner: it may scan
    in id order when it expects most rows to match."""
    for head in ("SELECT * FROM tiles", "SELECT id, path FROM tiles"):
        sql, params = cat._select(head, filters, order=True)
        plan = " | ".join(r[3] for r in cat.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert f"USING {index}" in plan or f"USING INDEX {index}" in plan or \
            f"USING COVERING INDEX {index}" in plan, plan
        assert "SCAN tiles" not in plan, plan


def test_an_existing_catalog_gets_the_new_indexes_when_a_writer_opens_it(tmp_path):
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    raw = sqlite3.connect(path)
    for name in ("tiles_split", "tiles_date", "tiles_water"):
        raw.execute(f"DROP INDEX {name}")
    raw.commit()
    raw.close()
    with Catalog(path) as cat:
        names = {r[0] for r in cat.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"tiles_split", "tiles_date", "tiles_water"} <= names
        assert cat.get_meta("schema_version") == 1


def test_tens_of_thousands_of_ids_in_one_query(cat, monkeypatch):
    """``ids=`` longer than SQLite's parameter cap (32 766) is one JSON parameter; a table read in
    blocks joins them in order."""
    import workbench.data.catalog as catalog

    ids = [5, *range(10, 40_000), 2]
    assert [t.id for t in cat.query(ids=ids)] == [2, 5] and cat.count(ids=ids) == 2
    monkeypatch.setattr(catalog, "TABLE_BLOCK", 2)
    table = cat.table(columns=["path", "water_fraction"])
    assert table["id"].tolist() == [1, 2, 3, 4, 5] and table["path"] == [t.path for t in cat.query()]
    assert len(cat.table(ids=ids)) == 2 and len(cat.table(split="nope")) == 0


def test_a_batch_as_large_as_the_catalog_rebuilds_the_indexes_in_its_transaction(tmp_path, monkeypatch):
    import workbench.data.catalog as catalog

    monkeypatch.setattr(catalog, "REBUILD_ROWS", 2)
    root = tmp_path / "data"

    def indexes(cat) -> set[str]:
        return {r[0] for r in cat.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                               "name LIKE 'tiles_%'")}

    with Catalog(root / "catalog.sqlite") as cat:
        assert cat.add_tiles(_tiles(root)) == [1, 2, 3, 4, 5]
        assert indexes(cat) == set(catalog._INDEXES) and len(catalog._INDEXES) == 7
        assert names(cat.query(split="train")) == ["a", "d"] and names(cat.query(label="coast")) == ["c", "d"]
        before = [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")]
        bad = [Tile(path=str(root / f"n{i}.tif"), source="folder", parent_id=99 if i == 5 else None)
               for i in range(6)]               # the last one breaks the parent_id foreign key
        with pytest.raises(sqlite3.IntegrityError):
            cat.add_tiles(bad)
        assert indexes(cat) == set(catalog._INDEXES)          # the drop went back with the rows
        assert [tuple(r) for r in cat.conn.execute("SELECT * FROM tiles ORDER BY id")] == before

        dropped: list[str] = []
        cat.conn.set_trace_callback(lambda sql: dropped.append(sql) if sql.startswith("DROP INDEX") else None)
        more = [Tile(path=str(root / f"m{i}.tif"), source="folder", split="test") for i in range(6)]
        assert cat.add_tiles(more) == list(range(6, 12))        # 6 new rows beside 5: a rebuild
        assert len(dropped) == len(catalog._INDEXES) and indexes(cat) == set(catalog._INDEXES)
        dropped.clear()
        assert cat.add_tiles([Tile(path=str(root / f"s{i}.tif"), source="folder") for i in range(2)]) == [12, 13]
        assert dropped == []                                     # 2 beside 11: inserted into the indexes
        assert cat.count() == 13 and cat.count(split="test") >= 6 and names(cat.query(split="train")) == ["a", "d"]
