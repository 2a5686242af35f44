"""``workbench runs list|compare`` over two tiny finished runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two finished one-epoch runs that differ only in train.lr (trained once per module)."""
    from tests.support import tiny_train

    root = tmp_path_factory.mktemp("runs-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(root))
        quick = ["--set", "train.epochs=1", "--set", "size=16", "--no-freeze"]
        a = tiny_train.main([*quick, "--name", "a-lr5e-2"])
        b = tiny_train.main([*quick, "--name", "b-lr1e-2", "--set", "train.lr=0.01"])
    return root, [a, b]


@pytest.fixture
def two_runs(trained, home) -> list[dict]:
    """The trained runs, copied into this test's WORKBENCH_HOME."""
    root, summaries = trained
    shutil.copytree(root / "runs", home / "runs")
    return [{**s, "run_dir": str(home / "runs" / s["run"])} for s in summaries]


def test_runs_list_table_and_json(two_runs, cli):
    code, out, err = cli("runs", "list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["RUN", "TASK", "STATUS", "STEPS", "BEST", "TEST", "STARTED", "(oldest", "first)"]
    assert len(lines) == 3
    for summary, line in zip(two_runs, lines[1:]):
        assert line.startswith(summary["run"]) and "finished" in line and "val/loss=" in line
    assert two_runs[0]["run"].startswith("tiny-a-lr5e-2-")  # the name as given
    code, out, _ = cli("runs", "list", "--json")
    rows = json.loads(out)
    assert [r["run"] for r in rows] == [s["run"] for s in two_runs]
    assert rows[0]["task"] == "tiny" and rows[0]["steps"] == 2 and rows[0]["best"] == two_runs[0]["best"]["value"]
    code, out, err = cli("runs", "list", "--task", "segmentation", "--json")
    assert code == 0 and json.loads(out) == []


def test_runs_compare_shows_metrics_and_only_differing_keys(two_runs, cli):
    a, b = (s["run"] for s in two_runs)
    code, out, err = cli("runs", "compare", a, Path(two_runs[1]["run_dir"]))  # a name and a path
    assert code == 0, err
    assert a in out.splitlines()[0] and b in out.splitlines()[0]
    assert "best val/loss" in out and "final val/iou" in out
    config = out.split("config (differing keys)", 1)[1]
    assert "train.lr" in config and "0.05" in config and "0.01" in config
    assert "train.epochs" not in out and "train.batch_size" not in out  # equal keys are left out
    code, out, _ = cli("runs", "compare", a, "tiny-b", "--json")  # a unique prefix is enough
    data = json.loads(out)
    assert data["config"] == {"train.lr": [0.05, 0.01]}
    code, out, err = cli("runs", "compare", "a-lr5e-2", "b-lr1e-2", "--json")  # the names they were given
    assert code == 0, err
    assert json.loads(out)["runs"] == [a, b] and json.loads(out)["config"]["train.lr"] == [0.05, 0.01]
    assert data["metrics"]["best val/loss"] == [two_runs[0]["best"]["value"], two_runs[1]["best"]["value"]]


def test_runs_compare_unknown_or_ambiguous_run_is_one_line_exit_2(two_runs, cli):
    code, out, err = cli("runs", "compare", two_runs[0]["run"], "no-such-run")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["workbench: error: no-such-run: no such run under runs/"]
    code, _, err = cli("runs", "compare", "tiny")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ambiguous" in err
    assert two_runs[0]["run"] in err and two_runs[1]["run"] in err  # the candidates are listed
    code, out, err = cli("runs", "compare", two_runs[0]["run"], "b-lr1e2")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"workbench: error: b-lr1e2: no such run under runs/; did you mean: {two_runs[1]['run']}")


def test_runs_list_with_no_runs(home, cli):
    code, out, err = cli("runs", "list")
    assert code == 0 and out == "" and "no runs" in err


def write_run(home: Path, folder: str, summary: dict) -> Path:
    path = home / "runs" / folder
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text("train: {lr: 0.1}\n")
    return path


def test_runs_list_is_in_start_order_with_each_runs_test_headline(home, cli):
    """Folders written by hand as the tasks leave them: the folder names sort the other way round."""
    write_run(home, "segmentation-b-20261121-120000", {
        "task": "segmentation", "name": "b", "status": "finished", "steps": 10, "started": "2026-11-21T09:00:00+01:00",
        "monitor": "val/iou", "best": {"value": 0.5, "step": 10},
        "test": {"mean_iou": 0.8125, "water_iou": 0.7, "water_f1": 0.8, "overall_accuracy": 0.9}})
    write_run(home, "classification-a-20261122-080000", {
        "task": "classification", "name": "a", "status": "finished", "steps": 4, "started": "2026-11-21T10:30:00+01:00",
        "test": {"macro_f1": 0.625, "accuracy": 0.75, "weighted_f1": 0.7, "tiles": 12}})
    write_run(home, "generation-c-20261120-100000", {
        "task": "generation", "name": "c", "status": "finished", "steps": 3, "started": "2026-11-21T11:00:00+01:00",
        "monitor": "val/loss", "best": {"value": 0.25, "step": 3}})
    code, out, err = cli("runs", "list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "STARTED (oldest first)" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["segmentation-b-20261121-120000",
                                                        "classification-a-20261122-080000",
                                                        "generation-c-20261120-100000"]
    assert "mean_iou=0.8125" in lines[1] and "macro_f1=0.625" in lines[2]
    assert lines[3].split()[5] == "-"  # no test block: no test figure
    code, out, _ = cli("runs", "list", "--json")
    rows = json.loads(out)
    assert [r["task"] for r in rows] == ["segmentation", "classification", "generation"]
    assert rows[1]["test"] == {"macro_f1": 0.625, "accuracy": 0.75, "weighted_f1": 0.7, "tiles": 12}
    assert rows[2]["test"] is None
    code, out, err = cli("runs", "compare", "b", "a", "--json")  # run names
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["test mean_iou"] == [0.8125, None] and metrics["test macro_f1"] == [None, 0.625]
