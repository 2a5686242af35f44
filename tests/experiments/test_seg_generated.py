"""``workbench generate seg-experiment``: the second run's query (where / source composition, replayed
filters) on a real catalog, the one-line errors, and the whole experiment end to end on a tiny
catalog, a tiny generator and a segmentation run of a few steps (each segmentation step a plain call
into the segmentation task, in this process)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.generated_tiles import (
    Steps,
    experiment_where,
    places_for,
    replay_filters,
    replay_query,
    shell_quote,
    sql_text,
    with_generated,
)
from tests.support.generation import make_catalog
from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile
from workbench.errors import WorkbenchError

# A segmentation run of two optimizer steps on 32 px windows (the 'water' preset's model, loss and where)
TINY_SEG = ["--set", "data.window=32", "--set", "train.epochs=1", "--set", "train.max_steps=2",
            "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8", "--set", "train.log_every_steps=1",
            "--set", "predict.window=32", "--set", "predict.overlap=0"]


def make_masked_catalog(home: Path, n: int = 25) -> Path:
    """``make_catalog``'s Blue-Marble-like tiles, each with its 0/1 water mask (the water strip on the
    left, as wide as the water fraction says) on the tile's grid."""
    path = make_catalog(home, n=n)
    changes = []
    with Catalog(path) as cat:
        for t in cat.query():
            info = geotiff.read_info(t.path)
            water = np.mgrid[0:info.height, 0:info.width][1] < round(t.water_fraction * info.width)
            mask = geotiff.write(Path(t.path).with_name(Path(t.path).stem + "_mask.tif"), water.astype(np.uint8),
                                 info.affine, info.crs, band_names=["water"])
            changes.append((t.id, {"mask_path": str(mask)}))
        cat.update_many(changes)
    return path


# ------------------------------------------------------------------------------ the second run's query

def test_where_composition():
    where = experiment_where("(water_fraction BETWEEN 0.01 AND 0.99) OR id % 8 = 0", "exp-1")
    assert where == ("((water_fraction BETWEEN 0.01 AND 0.99) OR id % 8 = 0) AND (source != 'generated' OR "
                     "(json_extract(extra, '$.experiment') = 'exp-1' AND mask_path IS NOT NULL "
                     "AND water_fraction IS NOT NULL))")
    assert experiment_where(None, "e").startswith("(source != 'generated' OR (json_extract")
    assert experiment_where("  ", "e") == experiment_where(None, "e")
    with_terms = experiment_where("lat > 0", "e", ["label IN ('coast')"])
    assert "(source = 'generated' OR label IN ('coast'))" in with_terms and with_terms.startswith("(lat > 0) AND ")
    assert sql_text("it's") == "'it''s'" and "= 'it''s'" in experiment_where(None, "it's")


def test_where_selects_real_tiles_and_only_this_experiments_usable_tiles(tmp_path):
    rows = [  # name, source, extra, mask, water fraction, label
        ("real", "bluemarble", {}, True, 0.5, "coast"),
        ("real_land", "bluemarble", {}, True, 0.0, "land"),
        ("ours", "generated", {"experiment": "e1"}, True, 0.3, None),
        ("ours_no_mask", "generated", {"experiment": "e1"}, False, None, None),
        ("ours_all_nodata", "generated", {"experiment": "e1"}, True, None, None),
        ("other_experiment", "generated", {"experiment": "e2"}, True, 0.3, None),
        ("eval_tile", "generated", {"eval_batch": "x"}, True, 0.3, None),
    ]
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        cat.add_tiles([Tile(path=str(tmp_path / f"{n}.tif"), source=s, extra=e, water_fraction=wf, label=label,
                            mask_path=str(tmp_path / f"{n}_mask.tif") if m else None, split="train")
                       for n, s, e, m, wf, label in rows])
        names = lambda q: [Path(t.path).stem for t in cat.query(**q)]  # noqa: E731
        query = {"source": ["bluemarble", "generated"], "where": experiment_where("water_fraction > 0.1", "e1")}
        assert names(query) == ["real", "ours"]
        _, terms = replay_query({"label": ["coast"]})        # a label filter holds for real tiles only
        assert names({**query, "where": experiment_where(None, "e1", terms)}) == ["real", "ours"]
        assert names({"where": experiment_where(None, "e2")}) == ["real", "real_land", "other_experiment"]


def test_source_gets_generated_added():
    assert with_generated("bluemarble") == "bluemarble,generated"
    assert with_generated("bluemarble, folder") == "bluemarble,folder,generated"
    assert with_generated(["earthengine"]) == "earthengine,generated"
    assert with_generated("folder,generated") == "folder,generated"
    assert with_generated(None) is None and with_generated("") is None


def test_replay_query():
    flags, terms = replay_query({"source": "bluemarble", "where": "x", "bbox": [-10.0, -5.0, 10.0, 5.0],
                                 "water_min": 0.05, "date_to": "2023-12-31", "label": ["coast", "land"],
                                 "pred_label": "water", "ids": [3, 1]})
    assert flags == ["--bbox", "-10.0", "-5.0", "10.0", "5.0", "--water-min", "0.05", "--date-to", "2023-12-31"]
    assert terms == ["label IN ('coast', 'land')", "pred_label IN ('water')", "id IN (3, 1)"]
    with pytest.raises(WorkbenchError, match="limit=5"):
        replay_query({"limit": 5})


def test_places_are_spread_then_repeated():
    assert places_for(range(10), 4) == [0, 3, 6, 9]
    assert places_for(range(10), 10) == list(range(10))
    assert places_for(range(3), 7) == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("arg", ["plain", "a b", "json_extract(extra, '$.experiment') = 'x'",
                                 "data.where=(source != 'generated' OR x) \"q\" $HOME `x` \\ it's", "it's !x"])
def test_recorded_commands_quote_for_the_shell(arg):
    import subprocess

    assert subprocess.run(["bash", "-c", f"printf %s {shell_quote(arg)}"], capture_output=True,
                          text=True).stdout == arg
    assert shell_quote("x = 'a'") == "\"x = 'a'\""


def test_replay_filters_are_what_the_command_line_gives():
    import argparse

    from workbench.data.query_args import add_query_args, query_from_args

    query = {"source": "bluemarble", "where": "x", "bbox": [-10, -5.0, 10.0, 5], "water_min": 0.05,
             "date_to": "2023-12-31", "label": ["coast"]}
    flags, _ = replay_query(query)
    parser = argparse.ArgumentParser()
    add_query_args(parser)
    assert replay_filters(query) == query_from_args(parser.parse_args(flags))
    assert replay_filters({"source": "bluemarble", "where": "x"}) == {}


def test_a_step_runs_in_process_into_its_log(tmp_path, capsys):
    steps = Steps(tmp_path / "logs", echo=False)

    def step():
        print("the run table")
        print("a progress bar", file=sys.stderr)
        return 42

    assert steps.run("baseline", ["segment", "train", "--where", "x = 'a'"], step) == 42
    assert capsys.readouterr() == ("", "")                           # --no-progress: the log only
    log = (tmp_path / "logs" / "baseline.log").read_text()
    assert "the run table" in log and "a progress bar" in log
    assert steps.commands == [{"step": "baseline", "command": "workbench segment train --where \"x = 'a'\""}]

    def fails():
        raise WorkbenchError("unknown preset 'x'")

    loud = Steps(tmp_path / "logs", echo=True)
    with pytest.raises(WorkbenchError, match=r"^step 'real\+generated' failed: unknown preset 'x' \(log: "):
        loud.run("real+generated", ["segment", "train"], lambda: (print("live", file=sys.stderr), fails()))
    assert capsys.readouterr().err == "live\n"                       # echo: stderr passes through as well
    assert (tmp_path / "logs" / "real+generated.log").is_file()


# ------------------------------------------------------------------------------ one-line errors

def _one_line_error(cli, *args) -> str:
    code, _, err = cli("generate", "seg-experiment", *map(str, args))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_n_is_one_line(home, cli, model_dir):
    make_catalog(home, n=10)
    assert "--n 0: must be at least 1" in _one_line_error(cli, "--model", model_dir, "--n", 0)
    assert not (home / "experiments").exists() and not (home / "runs").exists()


def test_unknown_baseline_is_one_line(home, cli, model_dir):
    make_catalog(home, n=10)
    assert "--baseline nope" in _one_line_error(cli, "--model", model_dir, "--baseline", "nope")
    assert "no segmentation run" in _one_line_error(cli, "--model", model_dir, "--baseline", "latest")
    assert "drop --preset" in _one_line_error(cli, "--baseline", "latest", "--preset", "water")
    assert not (home / "runs" / "experiments").exists()


def test_missing_catalog_and_model_are_one_line(home, cli, model_dir):
    assert "no such catalog" in _one_line_error(cli, "--model", model_dir, "--catalog", home / "none.sqlite")
    make_catalog(home, n=10)
    assert "no such model folder" in _one_line_error(cli, "--model", home / "nowhere")
    assert "--min-confidence 2" in _one_line_error(cli, "--model", model_dir, "--min-confidence", 2)
    assert not (home / "runs" / "experiments").exists()


def test_a_failing_step_is_named(home, cli, model_dir):
    make_catalog(home, n=10)
    code, _, err = cli("generate", "seg-experiment", "--model", str(model_dir), "--preset", "no-such-preset",
                       "--out", str(home / "x"), "--no-progress")
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]            # after the progress line, the error is one line
    assert last.startswith("workbench: error: step 'baseline' failed: unknown preset 'no-such-preset'")
    assert (home / "x" / "logs" / "baseline.log").is_file()


# ------------------------------------------------------------------------------ end to end

def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@pytest.mark.slow
def test_experiment_end_to_end(home, cli, model_dir, one_torch_thread):
    make_masked_catalog(home)
    out = home / "exp"
    # A where every generated tile passes (the preset's keeps tiles by water fraction, and an untrained
    # baseline's pseudo-masks may be all land): composed with the experiment's, it must still hold.
    code, stdout, err = cli("generate", "seg-experiment", "--model", model_dir, "--n", 6, "--steps", 2,
                            "--batch-size", 6, "--min-confidence", 0.5, *TINY_SEG, "--set", "data.where=gsd > 0",
                            "--out", out, "--no-progress")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    for needle in ("real-only", "real+generated", "difference", "test mIoU", "equal optimizer steps"):
        assert needle in stdout
    result = json.loads((out / "experiment.json").read_text())
    assert result["experiment"] == "exp" and result["fairness"] == "equal optimizer steps"
    base_row, mixed_row = result["runs"]
    base, mixed = Path(base_row["run"]), Path(mixed_row["run"])
    base_tiles = json.loads((base / "tiles.json").read_text())
    mixed_tiles = json.loads((mixed / "tiles.json").read_text())

    # the generated rows: split train, this experiment, parent = a baseline train tile, a pseudo-mask
    with Catalog() as cat:
        generated = cat.query(source="generated")
    assert len(generated) == 6 and [r.id for r in generated] == result["generated"]["ids"]
    assert {r.split for r in generated} == {"train"} and {r.extra["experiment"] for r in generated} == {"exp"}
    assert {r.parent_id for r in generated} <= set(base_tiles["train"])
    assert len({r.extra["seed"] for r in generated}) == 6 and min(r.extra["seed"] for r in generated) == 10_000
    for r in generated:
        assert r.mask_path and Path(r.mask_path).is_file() and r.water_fraction is not None
        with geotiff.open_raster(r.mask_path) as ds:
            assert ds.nodata == 255 and ds.read(1).shape == (32, 32)
    assert result["generated"]["usable"] == result["generated"]["joining"] == 6

    # the second run: the baseline's config plus the generated tiles, in train only, same steps and test tiles
    ids = {r.id for r in generated}
    config = yaml.safe_load((mixed / "config.yaml").read_text())
    assert config["data"]["source"] == "bluemarble,generated" and "'exp'" in config["data"]["where"]
    assert config["data"]["where"].startswith("(gsd > 0) AND (source != 'generated' OR (json_extract")
    assert config["name"] == "exp-real+generated" and config["train"]["max_steps"] == 2
    assert yaml.safe_load((base / "config.yaml").read_text())["name"] == "exp-real"
    assert ids <= set(mixed_tiles["train"]) and not ids & set(base_tiles["train"])
    assert not ids & set(mixed_tiles["val"] + mixed_tiles["test"])
    assert sorted(mixed_tiles["test"]) == sorted(base_tiles["test"]) and base_tiles["test"]
    assert result["checks"]["same_test_tiles"] and result["checks"]["generated_in_test"] == 0

    # the report: both rows, finite IoUs, the same number of steps
    assert base_row["train_tiles"] == {"real": len(base_tiles["train"]), "generated": 0}
    assert mixed_row["train_tiles"] == {"real": len(base_tiles["train"]), "generated": 6}
    assert base_row["steps"] == mixed_row["steps"] == 2
    for row in (base_row, mixed_row):
        assert _finite(row["test_miou"]) and _finite(row["test_water_iou"])
    assert result["difference"]["test_miou"] == pytest.approx(mixed_row["test_miou"] - base_row["test_miou"])
    assert [c["step"] for c in result["commands"]] == ["baseline", "pseudo-masks", "real+generated"]
    assert (out / "panel.png").is_file() and result["panel"] == str(out / "panel.png")
    assert {p.name for p in (out / "logs").iterdir()} == {"baseline.log", "pseudo-masks.log", "real+generated.log"}
    # the pseudo-labelled run is not what a later `--run latest` gets: the real-only baseline is
    assert (home / "runs" / "latest-segmentation").read_text().strip() == str(base.resolve())

    # reusing the baseline: pseudo-masks that know no pixel (confidence 1) leave nothing to add, said in one line
    code, _, err = cli("generate", "seg-experiment", "--model", model_dir, "--baseline", base.name, "--n", 2,
                       "--steps", 1, "--min-confidence", 1, "--out", home / "exp2", "--no-progress")
    assert code == 2 and "no generated tile got a pixel at confidence >= 1" in err.strip().splitlines()[-1]
    with Catalog() as cat:
        assert cat.count(source="generated", where="json_extract(extra, '$.experiment') = 'exp2'") == 2
    assert len(list((home / "runs").glob("segmentation-*"))) == 2      # no third training

    # the same experiment name again is refused before anything runs
    code, _, err = cli("generate", "seg-experiment", "--model", model_dir, "--baseline", base, "--name", "exp",
                       "--out", home / "again")
    assert code == 2 and "already holds 6 generated tile(s) of an experiment named 'exp'" in err
