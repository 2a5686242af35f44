"""Malformed run folders: every broken part is one line naming the file, never read as defaults."""

from __future__ import annotations

import json

import pytest


def _run(home, name: str, summary=None, config: str | None = None):
    path = home / "runs" / name
    path.mkdir(parents=True)
    if summary is not None:
        (path / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    if config is not None:
        (path / "config.yaml").write_text(config)
    return path


def _one_line(code: int, err: str, needle: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


@pytest.mark.parametrize("summary", ["[1, 2]", "{not json", "42"])
def test_runs_list_shows_a_broken_summary_and_compare_refuses_it(home, cli, summary):
    _run(home, "segmentation-broken", summary, "train:\n  lr: 0.001\n")
    _run(home, "segmentation-fine", {"task": "segmentation", "status": "finished"}, "train:\n  lr: 0.002\n")
    code, out, err = cli("runs", "list")
    assert code == 0 and "unreadable summary.json" in out and "finished" in out, err
    code, _, err = cli("runs", "compare", "segmentation-broken", "segmentation-fine")
    _one_line(code, err, "segmentation-broken/summary.json")


@pytest.mark.parametrize("config, needle", [("- [1\n", "not valid YAML"), ("[1, 2]\n", "expected a mapping")])
def test_a_malformed_config_is_one_line_for_compare_resume_and_predict(home, cli, config, needle):
    path = _run(home, "segmentation-bad", {"task": "segmentation", "status": "running"}, config)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    for argv in (("runs", "compare", "segmentation-bad", "latest"),
                 ("segment", "train", "--resume", "segmentation-bad"),
                 ("segment", "predict", "--run", "segmentation-bad", "--input", home / "x.tif", "--out",
                  home / "o.tif")):
        code, _, err = cli(*argv)
        if argv[1] == "compare" and "same run" in err:
            continue  # latest is this run itself
        _one_line(code, err, "config.yaml")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_resume_without_a_config_is_refused_not_run_on_defaults(home, cli):
    path = _run(home, "segmentation-noconfig", {"task": "segmentation", "status": "running"})
    code, _, err = cli("segment", "train", "--resume", "segmentation-noconfig")
    _one_line(code, err, "config.yaml: missing")
    assert sorted(p.name for p in path.iterdir()) == ["summary.json"]
