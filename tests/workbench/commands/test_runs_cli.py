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
        a = tiny_train.main([*quick, "--name", "a"])
        b = tiny_train.main([*quick, "--name", "b", "--set", "train.lr=0.01"])
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
    assert lines[0].split() == ["RUN", "TASK", "STATUS", "STEPS", "BEST", "STARTED"]
    assert len(lines) == 3
    for summary, line in zip(two_runs, lines[1:]):
        assert line.startswith(summary["run"]) and "finished" in line and "val/loss=" in line
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
    assert data["metrics"]["best val/loss"] == [two_runs[0]["best"]["value"], two_runs[1]["best"]["value"]]


def test_runs_compare_unknown_or_ambiguous_run_is_one_line_exit_2(two_runs, cli):
    code, out, err = cli("runs", "compare", two_runs[0]["run"], "no-such-run")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["workbench: error: no-such-run: no such run under runs/"]
    code, _, err = cli("runs", "compare", "tiny")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ambiguous" in err


def test_runs_list_with_no_runs(home, cli):
    code, out, err = cli("runs", "list")
    assert code == 0 and out == "" and "no runs" in err
