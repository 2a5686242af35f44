"""Sharing one catalog: readers open it read-only (never a write lock), one process writes.

Real processes, real SQLite: a reader process holds a read transaction while a writer process
commits with a zero busy timeout (a lock held by the reader would make it fail at once), and
the reader checks every count and query it makes against the writer's transactions of K rows.
The tests run as root here, which no permission bit stops: what they check for a read-only
folder is what the workbench does about it (opens the file immutable, writes nothing beside
it, refuses to write), seen in the folder's listing and the file's bytes.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from tests.support.rasters import write_pair
from tests.support.runner import import_pairs
from tests.support.segmentation import FAST, make_catalog, run_dir_of
from workbench.data.catalog import Catalog, Tile
from workbench.errors import WorkbenchError

K = 40              # rows per writer transaction
HELD = 5            # transactions committed while the reader holds one read transaction
MORE = 30           # transactions committed while the reader keeps querying


def _one_line_refusal(code: int, err: str, path: Path) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err, err


def _new_catalog(path: Path) -> None:
    with Catalog(path):
        pass  # schema only; closing the last connection folds the WAL into the file


def _insert(conn: sqlite3.Connection, txn: int) -> float:
    """One transaction of K rows tagged ``extra.txn``; the seconds BEGIN IMMEDIATE .. COMMIT took."""
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO tiles (path, source, extra, created_at) VALUES (?, 'folder', ?, '2026-12-02')",
                     [(f"t{txn}_{i}.tif", json.dumps({"txn": txn})) for i in range(K)])
    conn.execute("COMMIT")
    return time.perf_counter() - t0


def _writer(path: str, holding, held, done, out) -> None:
    """Zero busy timeout: a lock that a reader held would be 'database is locked' at once."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 0")
    errors, seconds = [], []
    try:
        if not holding.wait(20):
            raise RuntimeError("the reader never started")
        for txn in range(HELD + MORE):
            seconds.append(_insert(conn, txn))
            if txn == HELD - 1:
                held.set()
            time.sleep(0.005)
    except Exception as exc:  # reported to the test, which fails with it
        errors.append(repr(exc))
    finally:
        held.set()
        done.set()
        conn.close()
    out.put({"writer_errors": errors, "seconds": seconds})


def _reader(path: str, holding, held, done, out) -> None:
    """Read through the workbench's read-only catalog while the writer commits."""
    bad, counts = [], []
    try:
        cat = Catalog(path, read_only=True)
        cat.conn.execute("BEGIN")  # one read transaction (a snapshot) across the writer's commits
        before = cat.count()
        holding.set()
        if not held.wait(20):
            raise RuntimeError("the writer did not commit while the reader held its snapshot")
        inside = cat.count()
        cat.conn.execute("COMMIT")
        after = cat.count()
        first = {"before": before, "inside": inside, "after": after}
        while True:
            finished = done.is_set()
            n = cat.count()
            tiles = cat.query()
            groups: dict[int, int] = {}
            for t in tiles:
                groups[t.extra["txn"]] = groups.get(t.extra["txn"], 0) + 1
            partial = cat.conn.execute("SELECT json_extract(extra, '$.txn'), COUNT(*) FROM tiles GROUP BY 1 "
                                       "HAVING COUNT(*) != ?", (K,)).fetchall()
            counts.append(n)
            if n % K or any(v != K for v in groups.values()) or partial:
                bad.append({"count": n, "groups": groups, "partial": [tuple(r) for r in partial]})
            if finished:
                break
        cat.close()
        out.put({"first": first, "counts": counts, "bad": bad, "reader_errors": []})
    except Exception as exc:
        holding.set()
        out.put({"reader_errors": [repr(exc)]})


def test_a_reader_never_blocks_the_writer_nor_sees_half_a_transaction(tmp_path):
    path = tmp_path / "catalog.sqlite"
    _new_catalog(path)
    ctx = multiprocessing.get_context("spawn")
    holding, held, done, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=f, args=(str(path), holding, held, done, out)) for f in (_reader, _writer)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        results.update(out.get(timeout=60))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert results["writer_errors"] == [] and results["reader_errors"] == [], results
    # the writer committed HELD transactions while the reader held a read transaction open, none
    # of them waited on it (timeout 0), and the reader's snapshot did not move meanwhile
    assert len(results["seconds"]) == HELD + MORE
    first = results["first"]
    assert first["before"] == first["inside"] == 0
    assert first["after"] >= HELD * K
    # every count and every query saw whole transactions only, and the reader saw them grow
    assert results["bad"] == []
    counts = results["counts"]
    assert counts == sorted(counts) and counts[-1] == (HELD + MORE) * K
    assert len(set(counts)) > 2, counts  # it read while the writer wrote, not only after


def test_an_immutable_reader_takes_no_lock_and_reads_no_wal(tmp_path):
    path = tmp_path / "catalog.sqlite"
    _new_catalog(path)
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)
    _insert(writer, 0)
    # a WAL holding commits: immutable would miss them, so it is refused, naming the file
    with pytest.raises(WorkbenchError, match="immutable") as exc:
        Catalog(path, read_only=True, immutable=True)
    assert str(path) in str(exc.value)
    writer.close()
    assert not Path(f"{path}-wal").exists()

    # rollback journal: a mode=ro reader mid-read holds SHARED, which stops a writer's commit;
    # an immutable reader holds nothing
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    for immutable, blocks in ((False, True), (True, False)):
        cat = Catalog(path, read_only=True, immutable=immutable)
        rows = cat.conn.execute("SELECT id FROM tiles")
        rows.fetchone()  # mid-read
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("ROLLBACK")
            blocked = False
        except sqlite3.OperationalError as e:
            assert "locked" in str(e)
            blocked = True
        writer.close()
        rows.fetchall()
        cat.close()
        assert blocked is blocks, f"immutable={immutable}"

    # WAL again: commits made while an immutable reader is open stay invisible to it (it reads
    # no WAL): why immutable is only for a file that does not change
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.close()
    cat = Catalog(path, read_only=True, immutable=True)
    assert cat.count() == K
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)
    _insert(writer, 1)
    assert cat.count() == K
    with Catalog(path, read_only=True) as fresh:
        assert fresh.count() == 2 * K
    writer.close()
    cat.close()


def test_a_catalog_opened_read_only_refuses_to_write(tmp_path):
    path = tmp_path / "catalog.sqlite"
    _new_catalog(path)
    with Catalog(path) as cat:
        ids = cat.add_tiles([Tile(path=str(tmp_path / "a.tif"), source="folder")])
    before = path.read_bytes()
    for immutable in (False, True):
        with Catalog(path, read_only=True, immutable=immutable) as cat:
            assert cat.conn.execute("PRAGMA query_only").fetchone()[0] == 1
            writes = [lambda: cat.add_tiles([Tile(path=str(tmp_path / "b.tif"), source="folder")]),
                      lambda: cat.set_predictions([(ids[0], "water", 0.9)], "m"),
                      lambda: cat.update(ids[0], label="land"), lambda: cat.remove(ids),
                      lambda: cat.set_meta("k", 1)]
            for write in writes:
                with pytest.raises(WorkbenchError, match="opened read-only") as exc:
                    write()
                assert str(path) in str(exc.value)
            assert cat.count() == 1 and cat.get(ids[0]).label is None
    assert path.read_bytes() == before
    with pytest.raises(ValueError):
        Catalog(path, immutable=True)  # immutable is a reader's promise


@pytest.fixture
def imported(home, cli):
    path = import_pairs(home, cli, 2)
    write_pair(home / "more", "t9", size=16, seed=9, origin=(600_000.0, 4_650_000.0))
    return path


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_catalog_asked_to_write_is_one_line(imported, home, cli, what):
    data = imported.parent
    target, mode = (imported, 0o444) if what == "file" else (data, 0o555)
    old = target.stat().st_mode
    target.chmod(mode)
    try:
        before, listing = imported.read_bytes(), sorted(p.name for p in data.iterdir())
        for writer in (("data", "import", home / "more", "--no-progress"), ("data", "remove", "--all")):
            code, _, err = cli(*writer)
            _one_line_refusal(code, err, imported)
            assert "read-only" in err
            assert imported.read_bytes() == before and sorted(p.name for p in data.iterdir()) == listing
        code, out, err = cli("data", "list")  # reading it still works, and so does a dry run
        assert code == 0 and "2 tile(s)" in out, err
        code, out, err = cli("data", "remove", "--all", "--dry-run")
        assert code == 0 and "would remove 2 tile row(s)" in out, err
    finally:
        target.chmod(old)


def test_immutable_is_refused_beside_a_wal_that_holds_commits(imported, cli):
    writer = sqlite3.connect(imported, isolation_level=None)  # a writer at work: the WAL holds its commit
    writer.execute("UPDATE tiles SET label = 'x' WHERE id = 1")
    try:
        code, _, err = cli("data", "list", "--catalog-immutable")
        _one_line_refusal(code, err, imported)
        code, out, err = cli("data", "list", "--label", "x")  # read-only, not immutable: sees the commit
        assert code == 0 and "1 tile(s)" in out, err
    finally:
        writer.close()
    code, out, err = cli("data", "stats", "--catalog-immutable", "--json")
    assert code == 0 and json.loads(out)["tiles"] == 2, err


def test_the_flag_is_on_every_reading_verb_and_writers_refuse_it(cli):
    from workbench.cli import build_parser

    parser = build_parser()
    for verb in (["data", "list"], ["data", "stats"], ["data", "export-stac", "d"], ["segment", "train"],
                 ["segment", "eval", "--run", "r"], ["segment", "predict", "--run", "r"], ["classify", "train"],
                 ["classify", "eval", "--run", "r"], ["generate", "train"]):
        assert parser.parse_args([*verb, "--catalog-immutable"]).catalog_immutable is True, verb
        assert parser.parse_args(verb).catalog_immutable is False, verb
    code, _, err = cli("data", "import", "x", "--catalog-immutable")
    assert code == 2 and "unrecognized arguments: --catalog-immutable" in err
    code, _, err = cli("segment", "predict", "--run", "r", "--write-masks", "--where", "1", "--catalog-immutable")
    assert code == 2 and "--write-masks writes the catalog" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_segment_train_and_eval_on_a_catalog_in_a_read_only_folder(home, cli, one_torch_thread):
    make_catalog(home, cli)
    catalog = home / "data" / "catalog.sqlite"
    data = catalog.parent
    catalog.chmod(0o444)
    data.chmod(0o555)
    try:
        before, listing = catalog.read_bytes(), sorted(p.name for p in data.iterdir())
        code, out, err = cli("segment", "train", "--preset", "water", *FAST)
        assert code == 0, err
        run = run_dir_of(out)
        assert json.loads((run / "tiles.json").read_text())["catalog"] == str(catalog)
        code, out, err = cli("segment", "eval", "--run", run, "--catalog-immutable", "--json")
        assert code == 0 and json.loads(out)["tiles"] == 2, err
        # opened immutable (no write bit on the folder): no -wal, -shm or journal made, no byte changed
        assert sorted(p.name for p in data.iterdir()) == listing == ["catalog.sqlite"]
        assert catalog.read_bytes() == before
    finally:
        data.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        catalog.chmod(0o644)
