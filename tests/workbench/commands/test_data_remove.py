"""``data remove`` (undo an import: rows only, never files) and ``data import DIR --resplit`` (redo the
splits of what an import added), each in one transaction; refusals leave the catalog as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.rasters import write_pair
from workbench.data.catalog import Catalog


def rows(catalog: Path) -> list[tuple]:
    conn = sqlite3.connect(catalog)
    try:
        return conn.execute("SELECT * FROM tiles ORDER BY id").fetchall()
    finally:
        conn.close()


def pairs(folder: Path, n: int, x0: float = 500_000.0, step: float = 6000.0) -> list[Path]:
    folder.mkdir(parents=True)
    return [write_pair(folder, f"t{i}", size=16, seed=i, origin=(x0 + step * i, 4_650_000.0))[0] for i in range(n)]


def imported(home: Path, cli) -> Path:
    pairs(home / "a", 4)
    pairs(home / "ab", 3, x0=600_000.0)             # a sibling whose name starts like "a"
    for d in ("a", "ab"):
        code, out, err = cli("data", "import", home / d, "--no-progress")
        assert code == 0, err
    return home / "data" / "catalog.sqlite"


def one_line_error(result, *needles) -> None:
    code, out, err = result
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err)
    for n in needles:
        assert n in err, err


def test_remove_an_import_rows_only(home, cli):
    cat = imported(home, cli)
    code, out, err = cli("data", "remove", "--imported-from", home / "a", "--dry-run")
    assert code == 0 and "would remove 4 tile row(s)" in out and out.count("t") >= 4
    assert len(rows(cat)) == 7                       # dry run: nothing went
    code, out, err = cli("data", "remove", "--imported-from", home / "a")
    assert code == 0 and "removed 4 tile row(s)" in out, err
    left = Catalog().query()
    assert len(left) == 3 and all(Path(t.path).parent == (home / "ab").resolve() for t in left)
    assert all(p.is_file() for p in (home / "a").glob("*.tif")) and len(list((home / "a").glob("*.tif"))) == 8
    # filters combine with --imported-from, and work alone
    code, out, err = cli("data", "remove", "--imported-from", home / "ab", "--where", "id < 0")
    assert code == 0 and "removed 0 tile row(s)" in out
    code, out, err = cli("data", "remove", "--source", "folder", "--where", f"id = {left[0].id}")
    assert code == 0 and "removed 1 tile row(s)" in out and len(Catalog().query()) == 2
    code, out, err = cli("data", "remove", "--all")
    assert code == 0 and "removed 2 tile row(s)" in out and Catalog().query() == []


def test_remove_refuses_without_a_filter_or_on_a_bad_one(home, cli):
    cat = imported(home, cli)
    before = rows(cat)
    one_line_error(cli("data", "remove"), "give a filter", "--all")
    one_line_error(cli("data", "remove", "--where", "no_such_column = 1"), "no_such_column")
    one_line_error(cli("data", "remove", "--source", "nowhere"), "nowhere")
    assert rows(cat) == before


def test_resplit_an_import(home, cli):
    imported(home, cli)
    before = {t.id: (t.split, t.extra["block"]) for t in Catalog().query()}
    code, out, err = cli("data", "import", home / "a", "--resplit")     # the same rule: nothing changes
    assert code == 0 and "4 tile(s) imported from there; 0 changed split" in out, err
    code, out, err = cli("data", "import", home / "a", "--resplit", "--split", "test")
    assert code == 0 and "changed split" in out
    after = {t.id: t for t in Catalog().query()}
    mine = [t for t in after.values() if Path(t.path).parent == (home / "a").resolve()]
    assert {t.split for t in mine} == {"test"} and all("block" not in t.extra for t in mine)
    n_moved = sum(before[t.id][0] != "test" for t in mine)
    assert f"{n_moved} changed split" in out
    others = [t for t in after.values() if t not in mine]
    assert all((t.split, t.extra["block"]) == before[t.id] for t in others)   # the sibling import untouched
    code, out, err = cli("data", "import", home / "a", "--resplit", "--block-size", "0.5")
    assert code == 0, err
    assert all(t.extra["block_deg"] == 0.5 for t in Catalog().query() if t.id in {m.id for m in mine})
    code, out, err = cli("data", "import", home / "a", "--resplit")     # back to the default rule
    assert {t.id: (t.split, t.extra["block"]) for t in Catalog().query()} == before


def test_resplit_refusals_leave_the_catalog_as_it_was(home, cli):
    cat = imported(home, cli)
    before = rows(cat)
    pairs(home / "never", 1)
    one_line_error(cli("data", "import", home / "never", "--resplit"), "never", "nothing to re-split")
    one_line_error(cli("data", "import", home / "a", "--resplit", "--split", "holdout"), "holdout")
    one_line_error(cli("data", "import", home / "a", "--resplit", "--block-size", "-1"), "--block-size")
    assert rows(cat) == before
