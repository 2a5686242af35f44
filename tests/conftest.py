"""Fixtures every test folder shares: an isolated WORKBENCH_HOME, the CLI run in-process, one
torch thread. Data makers and runners that tests import live in ``tests/support``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh WORKBENCH_HOME: catalog and runs live under it."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Run ``workbench ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from workbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse exits
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def one_torch_thread():
    """Tiny convolutions run fastest on one thread (two OpenMP threads spin badly on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny untrained DiffusionSat folder (the generator's tests and the experiments share it)."""
    from tasks.generation.models import build_model

    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")
