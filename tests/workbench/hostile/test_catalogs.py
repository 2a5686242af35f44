"""Hostile catalogs: corrupt pages, unknown schema versions and columns, read-only folders, typos.

Each case is refused in one line with exit 2 and leaves the catalog file byte-for-byte as it was."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from tests.support.rasters import write_pair
from tests.support.runner import import_pairs


def _one_line_refusal(code: int, err: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.fixture
def catalog(home, cli):
    path = import_pairs(home, cli, 3)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, so the tests can edit it
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    return path


def _edit(path, *sql: str) -> None:
    con = sqlite3.connect(path)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


@pytest.mark.parametrize("edit, message", [
    (("UPDATE meta SET value = '99' WHERE key = 'schema_version'",), "schema version 99"),
    (("ALTER TABLE tiles ADD COLUMN colour TEXT",), "unknown: colour"),
    (("ALTER TABLE tiles RENAME COLUMN label TO labels",), "missing: label"),
    (("DROP TABLE meta",), "no tiles/meta tables"),
])
@pytest.mark.parametrize("verb", [("data", "list"), ("data", "stats"), ("data", "import", "IN", "--no-progress")])
def test_an_unknown_schema_is_refused_by_readers_and_writers(catalog, cli, edit, message, verb):
    _edit(catalog, *edit)
    before = catalog.read_bytes()
    verb = [str(catalog.parent.parent / "in") if v == "IN" else v for v in verb]
    code, _, err = cli(*verb)
    _one_line_refusal(code, err)
    assert message in err and str(catalog) in err
    assert catalog.read_bytes() == before


def _corrupt(path) -> None:
    """Overwrite the middle of every page after the first two: the header and schema stay readable."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for start in range(2 * page, len(data), page):
        data[start + 8:start + page - 8] = os.urandom(page - 16)
    path.write_bytes(bytes(data))


def test_an_import_into_a_corrupt_catalog_is_refused_before_writing(catalog, cli, home):
    for i in range(200):  # enough rows for several pages
        write_pair(home / "in", f"more{i}", size=8, seed=i, origin=(600_000.0 + 100 * i, 4_650_000.0))
    assert cli("data", "import", home / "in", "--no-progress")[0] == 0
    _edit(catalog, "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA journal_mode = DELETE")
    _corrupt(catalog)
    before = catalog.read_bytes()
    write_pair(home / "in2", "new", size=16, seed=9, origin=(700_000.0, 4_650_000.0))
    code, _, err = cli("data", "import", home / "in2", "--no-progress")
    _one_line_refusal(code, err)
    assert "corrupt" in err
    assert catalog.read_bytes() == before


def test_listing_a_corrupt_catalog_is_one_line(catalog, cli, home):
    for i in range(200):
        write_pair(home / "in", f"more{i}", size=8, seed=i, origin=(600_000.0 + 100 * i, 4_650_000.0))
    assert cli("data", "import", home / "in", "--no-progress")[0] == 0
    _edit(catalog, "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA journal_mode = DELETE")
    _corrupt(catalog)
    code, _, err = cli("data", "list")
    _one_line_refusal(code, err)
    assert str(catalog) in err


def test_a_typo_catalog_is_not_created_by_a_reader(home, cli):
    code, _, err = cli("data", "list", "--catalog", home / "typo" / "x.sqlite")
    _one_line_refusal(code, err)
    assert "no such catalog" in err and not (home / "typo").exists()
    code, _, err = cli("data", "stats", "--catalog", home / "typo" / "x.sqlite")
    _one_line_refusal(code, err)
    assert not (home / "typo").exists()


def test_a_catalog_in_a_read_only_folder_can_be_listed(home, cli):
    folder = home / "in"
    folder.mkdir()
    write_pair(folder, "t0", size=16, seed=0, origin=(500_000.0, 4_650_000.0))
    assert cli("data", "import", folder, "--no-progress")[0] == 0
    data = home / "data"
    mode = data.stat().st_mode
    data.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out, err = cli("data", "list")
        assert code == 0 and "1 tile(s)" in out, err
        code, _, err = cli("data", "import", folder, "--no-progress")  # a writer: one line, not a traceback
        _one_line_refusal(code, err)
    finally:
        data.chmod(mode)


def test_a_catalog_under_a_regular_file_is_one_line(home, cli):
    (home / "afile").write_text("x")
    code, _, err = cli("data", "import", home, "--catalog", home / "afile" / "c.sqlite", "--no-progress")
    _one_line_refusal(code, err)
    assert "afile" in err
