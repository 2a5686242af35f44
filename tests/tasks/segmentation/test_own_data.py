"""Segmentation on the user's own imported chips with the default ``water`` preset: ``--source folder``
alone selects them (the preset's Blue Marble ``where`` goes with its source), ``make segment``'s
config is the preset's; and a val split without water never chooses the threshold."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support.rasters import write_pair
from tests.support.segmentation import FAST, SIZE, run_dir_of
from workbench.data import geotiff
from workbench.data.catalog import Catalog

pytestmark = pytest.mark.slow  # real (tiny) training runs

PRESET = Path(__file__).resolve().parents[3] / "tasks" / "segmentation" / "presets" / "water.yaml"


def test_make_segment_config_is_the_presets(home, cli):
    code, out, err = cli("segment", "train", "--preset", "water", "--print-config")
    assert code == 0, err
    data = yaml.safe_load(out)["data"]
    preset = yaml.safe_load(PRESET.read_text())["data"]
    assert data["source"] == preset["source"] == "bluemarble" and data["where"] == preset["where"]
    for argv in (["--source", "folder"], ["--where", "source = 'folder'"],
                 ["--source", "folder", "--set", "data.source=null"]):     # the old --help example
        code, out, err = cli("segment", "train", *argv, "--print-config")
        data = yaml.safe_load(out)["data"]
        assert code == 0 and data["where"] in (None, "source = 'folder'") and data["source"] in (None, "folder")
    code, out, err = cli("segment", "train", "--water-min", "0.2", "--print-config")   # narrows, keeps
    assert yaml.safe_load(out)["data"]["where"].startswith(f"({preset['where']}) AND")


def test_segment_train_on_imported_chips_with_the_water_preset(home, cli, one_torch_thread):
    folder = home / "chips"
    folder.mkdir()
    step = SIZE * 160.0                    # 32 px at 160 m: 5 km chips, a 25 km square of ground
    for r in range(5):
        for c in range(5):
            _, mask = write_pair(folder, f"chip_{r}_{c}", size=SIZE, res=160.0, seed=r * 5 + c,
                                 origin=(500_000.0 + step * c, 4_650_000.0 - step * r))
            if (r + c) % 3 == 0:          # land only
                info = geotiff.read_info(mask)
                geotiff.write(mask, np.zeros((SIZE, SIZE), "uint8"), info.affine, info.crs)
    code, out, err = cli("data", "import", folder, "--no-progress")
    assert code == 0, err
    tiles = Catalog().query()
    assert {t.split for t in tiles} == {"train", "val", "test"}
    # land-only chips pass none of the water preset's Blue Marble condition but id % 8 = 0:
    # with that where kept, most of them would be left out
    code, out, err = cli("segment", "train", *FAST, "--json")
    assert code == 0, err
    run = run_dir_of(out)
    picked = json.loads((run / "tiles.json").read_text())
    assert sorted(picked["train"] + picked["val"] + picked["test"]) == sorted(t.id for t in tiles)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["source"] == "folder" and config["data"]["where"] is None


def test_no_threshold_is_chosen_on_a_val_split_without_water(home, cli, one_torch_thread):
    for split, n in (("train", 4), ("val", 3), ("test", 3)):
        folder = home / "in" / split
        folder.mkdir(parents=True)
        for i in range(n):
            _, mask = write_pair(folder, f"{split}{i}", size=SIZE, seed=zlib.crc32(f"{split}{i}".encode()) % 1000,
                                 origin=(500_000.0 + 1000 * i, 4_650_000.0))
            if split == "val":             # land only
                info = geotiff.read_info(mask)
                geotiff.write(mask, np.zeros((SIZE, SIZE), "uint8"), info.affine, info.crs)
        code, out, err = cli("data", "import", folder, "--split", split, "--no-progress")
        assert code == 0, err
    code, out, err = cli("segment", "train", *FAST, "--set", "eval.thresholds=[0.25,0.5,0.75]")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any(line.startswith("warning: split val has no tile with water") for line in warnings), err
    assert any("val has no water pixels" in line and "val/miou" in line for line in warnings), err
    run = run_dir_of(out)
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["threshold"] == 0.5 and threshold["reason"] == "val split has no water pixels"
    assert threshold["scan"] is not None                       # scanned, for the record, not used
    summary = json.loads((run / "summary.json").read_text())
    assert summary["threshold"] == 0.5 and summary["threshold_reason"] == "val split has no water pixels"
    assert "0.5 (not chosen: val split has no water pixels)" in out
