"""``classify train --source folder`` on a class-per-folder import trains with the default preset and
no other override: labels from the label column (the tiles have no masks), classes from the
train labels (the preset's water/coast/land do not fit), splits from the import's ground blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from workbench.data import geotiff
from workbench.data.catalog import Catalog

pytestmark = pytest.mark.slow  # a real (tiny) training run

SIZE = 32
TINY = ["--set", f"data.size={SIZE}", "--set", "train.max_steps=2", "--set", "train.epochs=1",
        "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8", "--set", "train.log_every_steps=1",
        "--set", "train.schedule.warmup_steps=0"]


def class_tiles(root: Path, kind: str, n: int, bright: float, x0: float) -> None:
    """``n`` tiles of one class, 20 km apart (each in a ground block of its own)."""
    folder = root / kind
    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i + int(bright))
        img = np.clip(rng.normal(bright, 80, (3, SIZE, SIZE)), 1, 9000).astype("uint16")
        geotiff.write(folder / f"{kind}{i}.tif", img, from_origin(x0 + 20_000.0 * i, 4_650_000.0, 10.0, 10.0),
                      "EPSG:32633")


def last_line(out: str) -> Path:
    return Path(out.strip().splitlines()[-1])


def test_classify_train_on_a_class_folder_import(home, cli, one_torch_thread):
    class_tiles(home / "classes", "field", 10, 2400.0, 300_000.0)
    class_tiles(home / "classes", "sea", 10, 600.0, 310_000.0)
    code, out, err = cli("data", "import", home / "classes", "--mode", "classes", "--no-progress")
    assert code == 0, err
    splits = {t.split for t in Catalog().query()}
    assert splits == {"train", "val", "test"}, out

    code, out, err = cli("classify", "train", "--source", "folder", *TINY)
    assert code == 0, err
    run = last_line(out)
    assert json.loads((run / "classes.json").read_text())["classes"] == ["field", "sea"]
    assert "not all in data.classes" in err                       # said in one line
    config = (run / "config.yaml").read_text()
    assert "labels: label" in config and "source: folder" in config   # what was used, recorded


def test_class_folder_tiles_without_masks_need_another_label_source(home, cli):
    class_tiles(home / "classes", "field", 3, 2400.0, 300_000.0)
    code, out, err = cli("data", "import", home / "classes", "--mode", "classes", "--split", "train", "--no-progress")
    assert code == 0, err
    code, out, err = cli("classify", "train", "--source", "folder", *TINY, "--set", "data.labels=water_fraction")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--set data.labels=label" in err and "label IS NOT NULL" not in err   # a fix that helps
