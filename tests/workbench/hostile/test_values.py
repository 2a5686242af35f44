"""Hostile config values on the command line: one line naming the value, exit 2, before any work."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("verb", [("segment", "train"), ("classify", "train")])
@pytest.mark.parametrize("setting, needle", [("train.seed=-1", "train.seed -1"),
                                             ("train.seed=1099511627776", "train.seed 1099511627776"),
                                             ("train.lr=.inf", "train.lr"),
                                             ("train.lr=nan", "train.lr")])
def test_impossible_training_values_are_one_line(home, cli, verb, setting, needle):
    code, out, err = cli(*verb, "--set", setting)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (home / "runs").exists()
