"""``workbench segment``: help, eval re-scoring, --where tile selection, user errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.runner import run_workbench
from tests.support.segmentation import FAST, make_catalog, run_dir_of


@pytest.fixture
def tiny(home, cli):
    make_catalog(home, cli, counts=(8, 2, 2))
    return home


def one_line_error(code, err):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_help_lists_verbs_and_examples():
    r = run_workbench("segment", "train", "--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and "--where" in r.stdout and "unet3plus" in r.stdout
    r = run_workbench("segment", "eval", "--help")
    assert r.returncode == 0 and "--water-min" in r.stdout and "--threshold" in r.stdout


def test_cli_import_is_light():
    import subprocess
    import sys

    code = ("import sys; import tasks.segmentation.cli, tasks.segmentation.config; "
            "bad = [m for m in ('torch', 'rasterio', 'segmentation_models_pytorch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_where_trains_on_exactly_the_selected_tiles_and_eval_rescores(tiny, cli):
    from workbench.data.catalog import Catalog

    with Catalog() as cat:
        all_tiles = cat.query(source="folder")
    chosen = [t for t in all_tiles if t.id % 2 == 0]
    code, out, err = cli("segment", "train", *FAST, "--where", "id % 2 = 0")
    assert code == 0, err
    run = run_dir_of(out)
    tiles = json.loads((run / "tiles.json").read_text())
    assert tiles["train"] == [t.id for t in chosen if t.split == "train"]
    assert tiles["val"] == [t.id for t in chosen if t.split == "val"]
    assert tiles["test"] == [t.id for t in chosen if t.split == "test"]
    assert tiles["query"]["where"] == "id % 2 = 0"

    # eval re-scores: on the run's test tiles it reproduces metrics.json
    code, out, err = cli("segment", "eval", "--run", str(run), "--json")
    assert code == 0, err
    again = json.loads(out)
    saved = json.loads((run / "metrics.json").read_text())
    assert again["matrix"] == saved["matrix"] and again["tiles"] == saved["tiles"]
    # ... the older positional spelling names the same run
    code, out, err = cli("segment", "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out)["matrix"] == saved["matrix"]
    # ... and on any split / query, with the table
    code, out, err = cli("segment", "eval", "--run", "latest", "--split", "train", "--where", "id > 0")
    assert code == 0, err
    assert "mean IoU" in out and "water" in out
    code, out, err = cli("segment", "eval", "--run", run.name[:-3], "--split", "val", "--threshold", "0.3", "--json")
    assert code == 0 and json.loads(out)["threshold"] == 0.3   # a unique prefix names the run too


def test_empty_query_is_a_one_line_error(tiny, cli):
    code, out, err = cli("segment", "train", *FAST, "--where", "id < 0")
    assert "no train tiles" in one_line_error(code, err)


def test_split_filter_is_refused(tiny, cli):
    code, out, err = cli("segment", "train", *FAST, "--split", "test")
    one_line_error(code, err)


def test_mask_with_a_value_that_is_not_a_class(home, cli):
    from workbench.data import geotiff

    make_catalog(home, cli, counts=(3, 1, 1))
    mask = home / "in" / "train" / "train1_mask.tif"
    with geotiff.open_raster(mask) as ds:
        data = ds.read(1)
        transform, crs = ds.transform, ds.crs
    data[:4, :4] = 7
    geotiff.write(mask, data.astype(np.uint8)[None], transform, crs.to_string(), band_names=["water"])
    code, out, err = cli("segment", "train", *FAST)
    line = one_line_error(code, err)
    assert "train1_mask.tif" in line and "7" in line


def test_unknown_preset_and_bad_set_key(tiny, cli):
    code, out, err = cli("segment", "train", "--preset", "nope")
    assert "unknown preset 'nope'" in one_line_error(code, err)
    code, out, err = cli("segment", "train", "--set", "train.lrr=0.1")
    assert "train.lrr" in one_line_error(code, err)
    code, out, err = cli("segment", "train", "--set", "train.lr=-1")
    one_line_error(code, err)


def test_eval_unknown_run(tiny, cli):
    code, out, err = cli("segment", "eval", "no-such-run")
    one_line_error(code, err)
    code, out, err = cli("segment", "eval", "--run", "no-such-run")
    assert "no-such-run" in one_line_error(code, err)


def test_eval_names_its_run_with_run(home, cli):
    code, out, err = cli("segment", "eval")
    assert "--run RUN" in one_line_error(code, err)
    code, out, err = cli("segment", "eval", "--run", "a-run", "another-run")
    assert "two runs" in one_line_error(code, err)
    r = run_workbench("segment", "eval", "--help")
    assert "--run RUN" in r.stdout and "run_positional" not in r.stdout
