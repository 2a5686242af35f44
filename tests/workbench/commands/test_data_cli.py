"""``workbench data list`` / ``stats`` and the shared filter options."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.support.runner import help_in_a_fresh_process
from workbench.data.catalog import Catalog, Tile
from workbench.data.query_args import add_query_args, query_from_args
from workbench.errors import WorkbenchError

REQUIRED_KEYS = {"id", "path", "mask_path", "source", "split", "lon", "lat", "gsd", "date", "cloud_cover", "bands",
                 "water_fraction", "label", "pred_label", "pred_score", "model_id", "caption", "parent_id"}


@pytest.fixture
def filled(home):
    rows = [
        ("a", "bluemarble", "train", 10.0, 45.0, 0.0, "land", "2004-06-15"),
        ("b", "bluemarble", "test", -30.0, 0.0, 1.0, "water", "2004-06-15"),
        ("c", "folder", "test", 105.8, 21.0, 0.4, "coast", "2023-03-01"),
        ("d", "earthengine", "val", 12.5, 41.9, 0.1, "coast", "2023-07-20"),
    ]
    with Catalog() as cat:
        cat.add_tiles([Tile(path=str(home / "data" / f"{n}.tif"), mask_path=str(home / "data" / f"{n}_m.tif"),
                            source=s, split=sp, lon=lo, lat=la, water_fraction=w, label=lb, date=d, gsd=10.0,
                            bands=["red", "green", "blue"], caption=f"tile {n}")
                       for n, s, sp, lo, la, w, lb, d in rows])
        cat.set_predictions([(2, "water", 0.97)], "cls-test")
    return home


def listed(cli, *args) -> list[str]:
    code, out, err = cli("data", "list", "--json", *args)
    assert code == 0, err
    return [json.loads(line)["path"].rsplit("/", 1)[-1][:-4] for line in out.splitlines()]


def test_list_table_default(filled, cli):
    code, out, err = cli("data", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "source", "split", "lon"]
    assert "water 0.97" in out and "bluemarble" in out and "a.tif" in out
    assert lines[-1].startswith("4 tile(s)")


def test_list_json_has_the_stable_keys(filled, cli):
    code, out, err = cli("data", "list", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 and all(REQUIRED_KEYS <= set(r) for r in rows)
    b = rows[1]
    assert (b["pred_label"], b["pred_score"], b["model_id"]) == ("water", 0.97, "cls-test")
    assert b["path"] == str(filled / "data" / "b.tif")


@pytest.mark.parametrize("args, expected", [
    (["--source", "bluemarble"], ["a", "b"]),
    (["--source", "folder,earthengine"], ["c", "d"]),
    (["--split", "test"], ["b", "c"]),
    (["--label", "coast"], ["c", "d"]),
    (["--pred-label", "water"], ["b"]),
    (["--bbox", "0", "40", "20", "50"], ["a", "d"]),
    (["--water-min", "0.1"], ["b", "c", "d"]),
    (["--water-max", "0.1"], ["a", "d"]),
    (["--date-from", "2023-01-01"], ["c", "d"]),
    (["--date-to", "2023-06"], ["a", "b", "c"]),
    (["--date-from", "2023", "--date-to", "2023"], ["c", "d"]),
    (["--where", "lat > 40"], ["a", "d"]),
    (["--where", "lat > 40", "--split", "val"], ["d"]),
    (["--limit", "1"], ["a"]),
])
def test_list_filters(filled, cli, args, expected):
    assert listed(cli, *args) == expected


def test_list_limit_shows_total_in_table(filled, cli):
    code, out, _ = cli("data", "list", "--limit", "2")
    assert code == 0 and out.splitlines()[-1].startswith("2 of 4 tile(s)")


def test_stats_table_and_json(filled, cli):
    code, out, err = cli("data", "stats")
    assert code == 0, err
    assert "tiles: 4" in out and "train 1" in out and "test 2" in out and "val 1" in out
    assert "bluemarble 2" in out and "coast 2" in out and "water 1" in out
    code, out, err = cli("data", "stats", "--split", "test", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["tiles"] == 2 and s["by_source"] == {"bluemarble": 1, "folder": 1}
    assert s["by_pred_label"] == {"-": 1, "water": 1}


def test_empty_catalog_lists_nothing(home, cli):
    code, out, err = cli("data", "list")  # no catalog yet: a hint, and none is created
    assert code == 2 and "no such catalog" in err and not (home / "data").exists()
    from workbench.data.catalog import Catalog

    Catalog(home / "data" / "catalog.sqlite").close()
    code, out, err = cli("data", "list")
    assert code == 0 and "0 tile(s)" in out
    code, out, err = cli("data", "stats")
    assert code == 0 and "tiles: 0" in out


def test_explicit_catalog_option(filled, cli, tmp_path):
    other = tmp_path / "other" / "cat.sqlite"
    code, out, _ = cli("data", "list", "--catalog", other)
    assert code == 2 and not other.parent.exists()  # a reader never creates the catalog it was given


@pytest.mark.parametrize("args, needle", [
    (["--where", "lat >> AND"], "--where"),
    (["--where", "1=1; DROP TABLE tiles"], "--where"),
    (["--where", "(DELETE FROM tiles)"], "--where"),
    (["--source", "martian"], "martian"),
    (["--bbox", "20", "40", "10", "50"], "--bbox"),
    (["--water-min", "1.5"], "--water-min"),
    (["--water-min", "0.8", "--water-max", "0.2"], "--water-min"),
    (["--date-from", "yesterday"], "--date-from"),
    (["--limit", "-1"], "--limit"),
])
def test_bad_filters_are_one_line_errors_and_change_nothing(filled, cli, args, needle):
    before = [t.to_json() for t in Catalog().query()]
    for verb in ("list", "stats"):
        if verb == "stats" and args[0] == "--limit":
            continue
        code, out, err = cli("data", verb, *args)
        assert code == 2, (verb, out, err)
        assert len(err.strip().splitlines()) == 1 and needle in err
    assert [t.to_json() for t in Catalog().query()] == before


# ---- the shared helper, as other commands use it -------------------------------------------------

def test_query_args_helper_round_trip():
    p = argparse.ArgumentParser()
    add_query_args(p)
    add_query_args(p, limit=False, prefix="val-")
    args = p.parse_args(["--source", "bluemarble", "--split", "train,val", "--bbox", "-10", "35", "30", "60",
                         "--water-min", "0.3", "--water-max", "0.7", "--date-from", "2004-01-01",
                         "--where", "lat > 0", "--limit", "5", "--val-split", "test", "--val-label", "coast"])
    assert query_from_args(args) == dict(source="bluemarble", split=["train", "val"], bbox=(-10, 35, 30, 60),
                                         water_min=0.3, water_max=0.7, date_from="2004-01-01",
                                         where="lat > 0", limit=5)
    assert query_from_args(args, prefix="val-") == dict(split="test", label="coast")
    assert query_from_args(p.parse_args([])) == {}


def test_query_args_feed_the_catalog_directly(filled):
    p = argparse.ArgumentParser()
    add_query_args(p)
    q = query_from_args(p.parse_args(["--split", "test", "--water-min", "0.5"]))
    assert [t.label for t in Catalog().query(**q)] == ["water"]
    with pytest.raises(WorkbenchError, match="--bbox"):
        query_from_args(p.parse_args(["--bbox", "0", "0", "0", "0"]))


def test_data_help_is_cheap_and_has_examples():
    out = help_in_a_fresh_process([["data", verb, "--help"] for verb in ("list", "import", "bluemarble", "stats")],
                                  ("torch", "rasterio", "numpy", "PIL", "tqdm"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("examples:") == 4
    assert "--water-min" in out.stdout and "Original_Image_" in out.stdout
