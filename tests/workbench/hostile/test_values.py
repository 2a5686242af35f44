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


@pytest.mark.parametrize("device, needle", [("bogus", "--device bogus: not a device"),
                                            ("cuda:7", "--device cuda:7")])
@pytest.mark.parametrize("verb", [("segment", "predict", "--input", "scene.tif", "--out", "m.tif"),
                                  ("classify", "predict", "--input", "scene.tif", "--out", "c.tif")])
def test_a_device_this_machine_lacks_is_one_line(home, cli, verb, device, needle):
    import torch

    from tests.support.rasters import write_pair

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    image, _ = write_pair(home, "scene", size=32)
    argv = [str(image) if a == "scene.tif" else str(home / a) if a.endswith(".tif") else a for a in verb]
    code, out, err = cli(*argv, "--run", "latest", "--device", device)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err   # checked before the run is looked up: there is none here


@pytest.mark.parametrize("args, needle", [(["--num-images", "100000000000000000000"], "--num-images 1000"),
                                          (["--seed", str(2 ** 62 - 1), "--num-images", "2"], "--seed")])
def test_generation_that_would_never_end_is_one_line(home, cli, args, needle):
    """A typo in --num-images must not sample (and write) images until the disk is full; seed + k
    must stay a valid seed for every image k."""
    code, out, err = cli("generate", "--lat", 1, "--lon", 2, "--prompt", "a satellite image", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (home / "generated").exists()
