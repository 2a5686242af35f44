"""Hostile --where filters: one expression or a one-line refusal, never a way around the other filters."""

from __future__ import annotations

import pytest

from tests.support.rasters import write_pair


@pytest.fixture
def catalog(home, cli):
    for split in ("train", "test"):
        folder = home / "in" / split
        folder.mkdir(parents=True)
        for i in range(2):
            write_pair(folder, f"{split}{i}", size=16, seed=i, origin=(500_000.0 + 1000 * i, 4_650_000.0))
        assert cli("data", "import", folder, "--split", split, "--no-progress")[0] == 0
    return home


@pytest.mark.parametrize("where", ["1=1) OR (1=1", "1=1 --", "1=1; DROP TABLE tiles", "(1=1", "label = 'x",
                                   "1=1 /* ) OR (1=1 */"])
def test_a_where_cannot_break_out_of_its_parentheses(catalog, cli, where):
    code, out, err = cli("data", "list", "--split", "test", "--where", where)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (out, err)


def test_quoted_parentheses_and_braces_are_plain_sql(catalog, cli):
    code, out, err = cli("data", "list", "--split", "test", "--where", "label != ')' OR label IS NULL")
    assert code == 0 and "2 tile(s)" in out, err
    code, out, err = cli("data", "stats", "--where", "path NOT LIKE '{x}'")
    assert code == 0 and "tiles: 4" in out, err


@pytest.mark.parametrize("args, needle", [(["--limit", "99999999999999999999"], "--limit"),
                                          (["--date-from", "2023-02-30"], "2023-02-30"),
                                          (["--date-to", "2023-13"], "2023-13")])
def test_values_out_of_range_are_one_line(catalog, cli, args, needle):
    code, out, err = cli("data", "list", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (out, err)
