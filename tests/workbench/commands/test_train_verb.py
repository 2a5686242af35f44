"""The shared ``train`` verb: the run name is checked before any work, the command line's tile
filters are folded into the config's ``data`` section (selecting exactly the tiles train()
selects), and ``--print-config`` prints that config without opening the catalog."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import pytest
import yaml

from workbench.cli import common_options
from workbench.commands.train_verb import add_train_verb, drop_default_dataset, fold_query, train_config
from workbench.config import Presets, dump_yaml, to_dict
from workbench.data.catalog import Catalog, Tile, TileSelection, run_query
from workbench.data.query_args import filters_as_sql, query_from_args
from workbench.errors import WorkbenchError
from workbench.train.run_dir import RunDir

TASK_VERBS = ("segment", "classify", "generate")


@dataclass
class ToyConfig:
    name: str = "toy"
    data: TileSelection = field(default_factory=TileSelection)


@pytest.fixture
def presets(tmp_path) -> Presets:
    """A preset with a ``data.where`` of its own, like segmentation's ``water``."""
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "base.yaml").write_text("data: {source: bluemarble, where: 'water_fraction > 0.05 OR lat < -20'}\n")
    return Presets(ToyConfig, folder, "base")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_verb(parser.add_subparsers(), common_options(), default="base", task_dir="toy", func=lambda a: 0)
    return parser.parse_args(["train", *argv])


def no_resume(*_):
    raise AssertionError("no run is resumed in these tests")


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    """Tiles that every filter splits somewhere, NULLs included, and a label with a quote in it."""
    rows = [  # source, split, lon, lat, water, label, pred, date
        ("bluemarble", "train", 10.0, 45.0, 0.0, "land", None, "2004-06-15"),
        ("bluemarble", "test", -30.0, 0.0, 1.0, "water", "water", "2004-06-15"),
        ("bluemarble", "val", 29.5, 59.9, 0.1, "coast", "coast", None),
        ("folder", "test", 105.8, 21.0, 0.4, "coast", "water", "2023-03-01"),
        ("folder", "train", -60.0, -33.0, 0.25, None, None, "2023-06-30"),
        ("earthengine", "val", 12.5, 41.9, 0.1, "coast", "land", "2023-07-20"),
        ("earthengine", "train", -10.0, 35.0, 0.7, "it's wet", None, "2023-12-31"),
        ("generated", "train", 30.0, 60.0, 0.06, "water", None, "2024-01-01"),
    ]
    cat = Catalog(tmp_path / "catalog.sqlite")
    cat.add_tiles([Tile(path=str(tmp_path / f"{i}.tif"), source=s, split=sp, lon=lo, lat=la, water_fraction=w,
                        label=lb, date=d, bands=["red"])
                   for i, (s, sp, lo, la, w, lb, _, d) in enumerate(rows)])
    cat.set_predictions([(i + 1, r[6], 0.9) for i, r in enumerate(rows) if r[6]], "m")
    yield cat
    cat.close()


def ids(cat: Catalog, query: dict) -> list[int]:
    return [t.id for t in cat.query(**query)]


CLI_FILTERS = [
    (),
    ("--where", "lat > 0"),
    ("--source", "folder,earthengine"),
    ("--source", "generated"),
    ("--label", "coast"),
    ("--label", "coast,water", "--where", "lat > 0 OR lon < 0"),
    ("--label", "it's wet", "--source", "earthengine"),
    ("--pred-label", "water,land"),
    ("--bbox", "-10", "35", "30", "60"),
    ("--water-min", "0.1", "--water-max", "0.4"),
    ("--date-from", "2023", "--date-to", "2023-06", "--source", "folder,earthengine"),
    ("--date-from", "2004-06-15", "--label", "land,water", "--bbox", "-40", "-10", "20", "50", "--water-min", "0"),
]


@pytest.mark.parametrize("argv", CLI_FILTERS, ids=lambda a: " ".join(a) or "none")
def test_the_folded_config_selects_exactly_what_train_selects(presets, catalog, argv):
    args = parse(*argv)
    override = query_from_args(args)
    before = presets.load("base")
    drop_default_dataset(before, override)  # a dataset on the command line replaces the preset's
    trained = ids(catalog, run_query(before.data.source, before.data.where, override))  # what train() selects
    cfg = train_config(args, presets, no_resume)
    assert ids(catalog, run_query(cfg.data.source, cfg.data.where)) == trained     # the config alone
    assert ids(catalog, run_query(cfg.data.source, cfg.data.where, override)) == trained  # the live run
    assert 0 < len(trained) < len(ids(catalog, {})) or not argv  # every case really filters
    columns = {"--label": "label ", "--pred-label": "pred_label ", "--bbox": "lon BETWEEN",
               "--water-min": "water_fraction >=", "--date-from": "date >="}
    for flag, column in columns.items():
        if flag in argv:
            assert column in cfg.data.where  # recorded where runs compare can show it


def test_where_and_source_replace_the_presets_as_train_does(presets):
    cfg = train_config(parse("--where", "lat > 0", "--source", "folder,generated"), presets, no_resume)
    assert cfg.data.where == "lat > 0" and cfg.data.source == "folder,generated"
    cfg = train_config(parse("--label", "coast"), presets, no_resume)
    assert cfg.data.where == "(water_fraction > 0.05 OR lat < -20) AND label = 'coast'"
    assert cfg.data.source == "bluemarble"
    cfg = train_config(parse(), presets, no_resume)
    assert to_dict(cfg) == to_dict(presets.load("base"))  # no filters: the preset as it is


def test_split_and_limit_are_left_to_train(presets):
    cfg = train_config(parse("--split", "test", "--limit", "3"), presets, no_resume)
    assert to_dict(cfg) == to_dict(presets.load("base"))
    assert fold_query(ToyConfig(), {"limit": 3, "split": "val"}) == ToyConfig()


def test_filters_as_sql_is_the_catalogs_own_condition(catalog):
    cases = [{"label": "coast"}, {"label": ["coast", "it's wet"]}, {"pred_label": "water"},
             {"bbox": (-10.0, 35.0, 30.0, 60.0)}, {"water_min": 0.1}, {"water_max": 0.1},
             {"date_from": "2023-06-30"}, {"date_to": "2023-12-31"},
             {"label": "water", "water_min": 0.05, "date_to": "2024-01-01"}]
    for q in cases:
        assert ids(catalog, {"where": filters_as_sql(q)}) == ids(catalog, q), q
    assert filters_as_sql({}) is None
    with pytest.raises(ValueError, match="limit"):
        filters_as_sql({"limit": 3})


def test_a_bad_name_is_refused_before_any_work(presets):
    class Untouchable:
        def load(self, *_):
            raise AssertionError("the preset was loaded before the name was checked")

    with pytest.raises(WorkbenchError, match=r"^--name 'water/lr': a run name cannot contain '/'"):
        train_config(parse("--name", "water/lr"), Untouchable(), no_resume)
    with pytest.raises(WorkbenchError, match=r"^--name '\.\./up'"):
        train_config(parse("--name", "../up", "--resume", "x"), Untouchable(), no_resume)
    with pytest.raises(WorkbenchError, match=r"^name 'a:b': a run name cannot contain ':'"):
        train_config(parse("--set", "name=a:b"), presets, no_resume)  # a name from --set or a preset too
    assert train_config(parse("--name", "water-lr3e-4"), presets, no_resume).name == "water-lr3e-4"


# ---------------------------------------------------------------------- through the real task verbs
@pytest.mark.parametrize("verb", TASK_VERBS)
def test_print_config_prints_the_resolved_config_and_opens_no_catalog(home, cli, verb):
    missing = home / "nowhere" / "catalog.sqlite"
    code, out, err = cli(verb, "train", "--print-config", "--name", "water-lr3e-4", "--set", "train.seed=11",
                         "--where", "lat > 10", "--label", "coast", "--catalog", missing)
    assert code == 0, err
    assert err == ""
    cfg = yaml.safe_load(out)
    assert cfg["name"] == "water-lr3e-4" and cfg["train"]["seed"] == 11
    assert cfg["data"]["where"] == "(lat > 10) AND label = 'coast'"
    assert not missing.parent.exists() and not (home / "runs").exists() and not (home / "data").exists()


@pytest.mark.parametrize("verb", TASK_VERBS)
def test_a_bad_run_name_is_one_line_exit_2_on_every_train_verb(home, cli, verb):
    code, out, err = cli(verb, "train", "--name", "water/lr3e-4")
    assert code == 2 and out == ""
    expected = "workbench: error: --name 'water/lr3e-4': a run name cannot contain '/' (it names a folder)"
    assert err.strip().splitlines() == [expected]
    assert not (home / "runs").exists() and not (home / "data").exists()


def test_print_config_on_resume_shows_the_runs_config_with_set(home, cli):
    code, out, err = cli("segment", "train", "--print-config", "--where", "lat > 10")
    assert code == 0, err
    run = RunDir.create("segmentation", "water", when=1_700_000_000)
    run.config_path.write_text(out)
    code, out, err = cli("segment", "train", "--resume", "water", "--print-config", "--set", "train.lr=0.125")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["train"]["lr"] == 0.125 and cfg["data"]["where"] == "lat > 10"


def test_runs_compare_names_the_where_two_runs_differ_in(home, cli):
    for i, where in enumerate(("water_fraction > 0.3", "water_fraction > 0.5")):
        code, out, err = cli("segment", "train", "--print-config", "--name", f"w{i}", "--where", where)
        assert code == 0, err
        run = RunDir.create("segmentation", f"w{i}", when=1_700_000_000 + i)
        run.update_summary(task="segmentation", name=f"w{i}", status="finished")
        dump_yaml(yaml.safe_load(out), run.config_path)  # what the trainer writes from the resolved config
    code, out, err = cli("runs", "compare", "w0", "w1", "--json")
    assert code == 0, err
    differing = json.loads(out)["config"]
    assert differing == {"name": ["w0", "w1"], "data.where": ["water_fraction > 0.3", "water_fraction > 0.5"]}
    code, out, _ = cli("runs", "compare", "w0", "w1")
    config = out.split("config (differing keys)", 1)[1]
    assert "data.where" in config and "water_fraction > 0.5" in config


def test_train_verb_help_mentions_print_config(cli):
    for verb in TASK_VERBS:
        code, out, _ = cli(verb, "train", "--help")
        assert code == 0 and "--print-config" in out and "kept as given" in " ".join(out.split())


def test_fold_needs_a_data_section():
    @dataclass
    class NoData:
        name: str = "x"

    with pytest.raises(WorkbenchError, match="no data.source / data.where"):
        fold_query(NoData(), {"where": "lat > 0"})
    assert fold_query(NoData(), {}) == NoData()



def test_a_dataset_on_the_command_line_replaces_the_presets_whole(presets):
    """--source / --where / --set data.source / --set data.where drop the preset's source AND where;
    narrowing filters keep them (see test_where_and_source_replace_the_presets_as_train_does)."""
    cfg = train_config(parse("--source", "folder"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == ("folder", None)
    cfg = train_config(parse("--where", "source = 'folder'"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == (None, "source = 'folder'")
    cfg = train_config(parse("--source", "folder", "--set", "data.source=null"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == ("folder", None)
    cfg = train_config(parse("--set", "data.source=folder"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == ("folder", None)
    cfg = train_config(parse("--source", "folder", "--set", "data.where=lat > 0"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == ("folder", "lat > 0")
    cfg = train_config(parse("--source", "folder", "--water-min", "0.2"), presets, no_resume)
    assert (cfg.data.source, cfg.data.where) == ("folder", "water_fraction >= 0.2")
