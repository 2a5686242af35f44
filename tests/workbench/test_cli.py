"""The CLI shell: help is instant (no torch), usage errors are one line with exit 2."""

from __future__ import annotations

import subprocess
import sys

from tests.support.runner import help_in_a_fresh_process
from workbench.cli import build_parser


def test_help_does_not_import_torch_or_rasterio():
    out = help_in_a_fresh_process([["--help"], ["data", "--help"], ["runs", "--help"]],
                                  ("torch", "rasterio", "numpy", "accelerate"))
    assert out.returncode == 0, out.stderr
    assert "workbench data bluemarble" in out.stdout  # --help shows examples


def test_every_command_has_examples_in_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command_parser in sub.choices.items():
        assert command_parser.epilog and "workbench " in command_parser.epilog, name


def test_usage_error_is_one_line_exit_2(cli):
    code, out, err = cli("data", "no-such-verb")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "no-such-verb" in err


def test_bare_command_prints_its_help(cli):
    code, out, _ = cli("data")
    assert code == 2 and "bluemarble" in out


def test_a_closed_pipe_ends_quietly_with_exit_0(home):
    """``workbench data list --json | head -1`` through a real pipe: head exits after one line while
    the command still has about a megabyte to write (more than a pipe holds), so the write fails."""
    import json
    import os

    from tests.support.runner import ROOT
    from workbench.data.catalog import Catalog, Tile

    with Catalog() as cat:
        cat.add_tiles([Tile(path=str(home / f"t{i}.tif"), source="folder", split="train", lon=0.0, lat=0.0,
                            caption="a long caption " * 20, bands=["red", "green", "blue"]) for i in range(2000)])
    env = {**os.environ, "WORKBENCH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" -m workbench data list --json | head -1',
                          sys.executable], capture_output=True, text=True, env=env, cwd=home, timeout=300)
    assert out.stderr == "" and out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 and json.loads(out.stdout)["id"] == 1
