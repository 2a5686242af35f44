"""Segmentation training end to end on tiny synthetic tiles: every preset trains a few steps
on CPU (small encoder/window via --set, same architecture and loss), the run folder holds
the files prediction relies on, and the numbers are finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support.segmentation import FAST, SIZE, make_catalog, run_dir_of

pytestmark = pytest.mark.slow  # end to end: real data build / real training runs

# Per preset: a smaller encoder where the preset's is big (architecture and loss unchanged).
PRESETS = {
    "water": [],
    "unet-resnet34": ["--set", "model.encoder=resnet18"],
    "attention-unet": ["--set", "model.encoder=resnet18"],
    "unet3plus": ["--set", "model.encoder=resnet18", "--set", "model.kwargs.cat_channels=8"],
    "deeplabv3plus-mobilenet": [],
    "unetpp-bce-focal-jaccard": ["--set", "model.encoder=resnet18"],
}


@pytest.fixture
def tiny(home, cli):
    make_catalog(home, cli)
    return home


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_a_few_steps(tiny, cli, preset):
    code, out, err = cli("segment", "train", "--preset", preset, *FAST, *PRESETS[preset])
    assert code == 0, err
    run = run_dir_of(out)
    for name in ("config.yaml", "band_stats.json", "threshold.json", "metrics.json", "tiles.json",
                 "checkpoints/best.safetensors", "plots/confusion_matrix.png", "plots/test_panel.png",
                 "plots/loss_curve.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(finite(v) for v in losses)
    evals = [r for r in records if r.get("event") == "eval"]
    assert evals and finite(evals[-1]["val/loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tiles"] == 2 and finite(metrics["mean_iou"])
    assert {r["name"] for r in metrics["per_class"]} == {"land", "water"}
    for row in metrics["per_class"]:
        assert {"iou", "f1", "precision", "recall", "specificity", "accuracy", "tp", "tn", "fp", "fn"} <= set(row)
    threshold = json.loads((run / "threshold.json").read_text())
    if preset in ("water", "unet-resnet34", "unetpp-bce-focal-jaccard"):  # binary: scanned on val
        assert threshold["threshold"] in (0.25, 0.5, 0.75)
        assert len(threshold["scan"]["results"]) == 3
    else:  # argmax: recorded, not scanned
        assert threshold["threshold"] == 0.5 and threshold["binary"] is False and threshold["scan"] is None
    assert "test mean IoU" in out and "Class" in out
    assert (home_runs(run) / "latest-segmentation").read_text().strip() == str(run.resolve())


def home_runs(run: Path) -> Path:
    return run.parent


def test_resolved_config_roundtrips(tiny, cli):
    from tasks.segmentation.config import config_from_dict
    from workbench.config import read_yaml

    code, out, err = cli("segment", "train", *FAST, "--set", "train.lr=0.003", "--name", "cfgcheck")
    assert code == 0, err
    run = run_dir_of(out)
    cfg = config_from_dict(read_yaml(run / "config.yaml"))
    assert cfg.train.lr == 0.003 and cfg.name == "cfgcheck" and cfg.data.window == SIZE
    assert "cfgcheck" in run.name


def test_refinement_head_trains_saves_and_rescores(tiny, cli):
    """A run with model.kwargs.refine is rebuilt from its config with the head, whose trained
    weights load, and re-scoring the test split reproduces metrics.json."""
    code, out, err = cli("segment", "train", *FAST, "--set", "model.kwargs.refine=8")
    assert code == 0, err
    run = run_dir_of(out)
    from tasks.segmentation.run import load_run

    model = load_run(run).model
    assert model.workbench_spec["refine"] == 8 and hasattr(model, "refine")
    assert any(p.abs().sum() > 0 for p in model.refine.body[-1].parameters())   # trained off zero
    code, out, err = cli("segment", "eval", str(run), "--json")
    assert code == 0, err
    assert json.loads(out)["matrix"] == json.loads((run / "metrics.json").read_text())["matrix"]


def test_resume_latest_continues_the_last_segmentation_run(tiny, cli):
    """``--resume latest`` continues this task's last run, with its own config and band statistics,
    even when another task's run is newer."""
    from workbench.config import dump_yaml
    from workbench.train.run_dir import RunDir

    code, out, err = cli("segment", "train", *FAST, "--name", "first")
    assert code == 0, err
    run = run_dir_of(out)
    stats = (run / "band_stats.json").read_text()
    other = RunDir.create("classification", "newer")          # another task's run, started later
    dump_yaml({"name": "newer"}, other.config_path)
    other.update_summary(status="finished", started="2999-01-01T00:00:00")

    code, out, err = cli("segment", "train", "--resume", "latest", "--set", "train.max_steps=4",
                         "--set", "train.epochs=2")
    assert code == 0, err
    assert run_dir_of(out) == run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["name"] == "first"
    assert (run / "band_stats.json").read_text() == stats
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r.get("event") == "train"]
    assert steps == [1, 2, 3, 4]


def test_resume_keeps_the_command_line_filters_and_refuses_other_tiles(tiny, cli):
    """Filters given on the command line are the run's: --resume reuses them (not the preset's), refuses
    different ones, and refuses when the catalog now gives other tiles for them."""
    from tests.support.rasters import write_pair

    where = "id % 2 = 0 OR split != 'train'"
    code, out, err = cli("segment", "train", *FAST, "--where", where, "--set", "train.max_steps=2",
                         "--set", "train.epochs=3")
    assert code == 0, err
    run = run_dir_of(out)
    tiles = json.loads((run / "tiles.json").read_text())
    assert tiles["query"]["where"] == where and len(tiles["train"]) == 3

    before = {p: p.read_bytes() for p in (run / "tiles.json", run / "checkpoints" / "last.safetensors")}
    code, out, err = cli("segment", "train", "--resume", run.name, "--where", "id % 3 = 0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "contradicts the resumed run" in err, err
    assert {p: p.read_bytes() for p in before} == before

    code, out, err = cli("segment", "train", "--resume", run.name, "--set", "train.max_steps=3")
    assert code == 0, err
    assert json.loads((run / "tiles.json").read_text())["train"] == tiles["train"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 3

    extra = tiny / "in" / "more"
    for i in range(2):
        write_pair(extra, f"more{i}", size=SIZE, seed=50 + i, origin=(520_000.0 + 1000 * i, 4_650_000.0))
    assert cli("data", "import", extra, "--split", "train", "--no-progress")[0] == 0
    code, out, err = cli("segment", "train", "--resume", run.name, "--set", "train.max_steps=4")
    assert code == 2 and "the catalog changed" in err and len(err.strip().splitlines()) == 1, err
