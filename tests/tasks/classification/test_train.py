"""Classification end to end on tiny synthetic tiles: a run writes its files and a report, the
linear probe leaves the backbone untouched, predictions go into the catalog and select the
tiles a segmentation run then trains on, and bad input fails in one line with exit status 2."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from tests.support.runner import run_workbench
from workbench.data import geotiff

pytestmark = pytest.mark.slow  # real training runs

SIZE = 32
KINDS = {"water": 1.0, "coast": 0.5, "land": 0.0}
FAST = ["--source", "folder", "--set", "data.source=null", "--set", f"data.size={SIZE}",
        "--set", "model.name=resnet18", "--set", "train.batch_size=8", "--set", "train.eval_batch_size=16",
        "--set", "train.log_every_steps=5", "--set", "train.schedule.warmup_steps=0"]


def write_tile(folder: Path, name: str, water: float, seed: int, bands: int = 3, x0: float = 500_000.0,
               with_mask: bool = True) -> Path:
    """Water on the left ``water`` share of the tile: dark and blue; land bright and green."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, : int(round(water * SIZE))] = 1
    img = rng.normal(0, 60, (bands, SIZE, SIZE)) + np.array([1800, 2000, 1200, 2500, 2600][:bands])[:, None, None]
    img[:, mask == 1] = rng.normal(0, 60, (bands, int(mask.sum()))) + \
        np.array([400, 700, 1500, 300, 200][:bands])[:, None]
    transform = from_origin(x0 + 2000 * seed, 4_650_000.0, 10.0, 10.0)
    path = geotiff.write(folder / f"{name}.tif", np.clip(img, 1, 9000).astype("uint16"), transform, "EPSG:32633")
    if with_mask:
        geotiff.write(folder / f"{name}_mask.tif", mask, transform, "EPSG:32633")
    return path


def make_catalog(home: Path, cli, per_class=(4, 2, 2), bands: int = 3, source_dir: str = "in") -> None:
    """Labelled tiles (land / coast / water from the masks' water fraction) in each split; each tile's
    noise seed is a checksum of its name (``hash()`` of a tuple changes from process to process)."""
    for split, n in zip(("train", "val", "test"), per_class):
        folder = home / source_dir / split
        folder.mkdir(parents=True)
        for kind, water in KINDS.items():
            for i in range(n):
                seed = zlib.crc32(f"{split}-{kind}{i}".encode()) % 997
                write_tile(folder, f"{kind}{i}", water, seed=seed, bands=bands)
        code, out, err = cli("data", "import", folder, "--split", split, "--no-progress")
        assert code == 0, err


@pytest.fixture
def labelled(home, cli):
    make_catalog(home, cli)
    return home


def last_line(out: str) -> Path:
    return Path(out.strip().splitlines()[-1])


def test_train_writes_the_run_and_scores_the_test_split(labelled, cli, one_torch_thread):
    code, out, err = cli("classify", "train", *FAST, "--set", "train.epochs=6", "--set", "train.lr=0.003",
                         "--set", "loss.mixup_alpha=0.2", "--set", "loss.class_weights=balanced", "--name", "t")
    assert code == 0, err
    run = last_line(out)
    for name in ("config.yaml", "band_stats.json", "classes.json", "tiles.json", "metrics.json",
                 "checkpoints/best.safetensors", "plots/confusion_matrix.png", "plots/examples.png",
                 "plots/loss_curve.png"):
        assert (run / name).is_file(), name
    classes = json.loads((run / "classes.json").read_text())
    assert classes["classes"] == ["water", "coast", "land"] and classes["in_chans"] == 3
    assert classes["train_counts"] == [4, 4, 4]
    m = json.loads((run / "metrics.json").read_text())
    assert m["tiles"] == 6 and sum(map(sum, m["matrix"])) == 6
    assert 0.0 <= m["mean_f1"] <= 1.0 and m["weighted_f1"] is not None
    for word in ("precision", "recall", "f1-score", "macro avg", "weighted avg", "test macro-F1"):
        assert word in out
    assert (labelled / "runs" / "latest-classification").read_text().strip() == str(run.resolve())

    tiles = json.loads((run / "tiles.json").read_text())
    assert tiles["splits"] == {"train": "train", "val": "val", "test": "test"}
    assert len(tiles["train"]) == 12 and len(tiles["val"]) == len(tiles["test"]) == 6

    code, out, err = cli("classify", "eval", "latest", "--split", "val", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["split"] == "val" and ev["tiles"] == 6
    code, out, err = cli("classify", "eval", "--run", "latest", "--split", "val", "--json")
    assert code == 0, err
    assert json.loads(out) == ev


def test_linear_probe_trains_only_the_head(labelled, cli, one_torch_thread):
    import torch

    from tasks.classification.config import ModelConfig
    from tasks.classification.models import build_classifier
    from workbench.train.checkpoint import load_checkpoint

    code, out, err = cli("classify", "train", *FAST, "--set", "train.epochs=1",
                         "--set", "finetune.linear_probe_epochs=1",
                         "--set", "train.seed=3")
    assert code == 0, err
    tensors, _ = load_checkpoint(last_line(out) / "checkpoints" / "last.safetensors")
    torch.manual_seed(3)
    fresh = build_classifier(ModelConfig(name="resnet18"), 3, 3, SIZE).state_dict()
    trained = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    assert torch.equal(trained["net.layer2.0.conv1.weight"], fresh["net.layer2.0.conv1.weight"])
    assert torch.equal(trained["net.bn1.running_mean"], fresh["net.bn1.running_mean"])   # frozen statistics
    assert not torch.equal(trained["net.fc.weight"], fresh["net.fc.weight"])


def test_round_trip_predicted_tiles_feed_segmentation(labelled, cli, one_torch_thread):
    from workbench.data.catalog import Catalog

    code, out, err = cli("classify", "train", *FAST, "--set", "train.epochs=8", "--set", "train.lr=0.003")
    assert code == 0, err
    run = last_line(out)
    code, out, err = cli("classify", "predict", "--run", "latest")
    assert code == 0, err
    assert "written to the catalog: 24 tiles" in out and (run / "predictions").is_dir()
    assert "against the labels of the 6 predicted tiles the run did not train" in out   # test split only

    with Catalog() as cat:
        tiles = cat.query()
        assert all(t.pred_label in KINDS and 0 < t.pred_score <= 1 and t.model_id == run.name for t in tiles)
        by_split = {s: [t for t in tiles if t.split == s] for s in ("train", "val")}
        # a class predicted in both train and val, so the segmentation run has tiles to train and validate on
        label = next(c for c in ("coast", "water", "land")
                     if all(any(t.pred_label == c for t in ts) for ts in by_split.values()))
        where = f"pred_label = '{label}' AND pred_score > 0.0"
        expected = sorted(t.id for t in cat.query(split="train", where=where))
    assert expected

    code, out, err = cli("segment", "train", "--source", "folder", "--where", where, "--set", f"data.window={SIZE}",
                         "--set", "train.max_steps=1", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                         "--set", "model.encoder=resnet18")
    assert code == 0, err
    seg = json.loads((last_line(out) / "tiles.json").read_text())
    assert sorted(seg["train"]) == expected and seg["query"]["where"] == where


def test_class_folder_import_trains(home, cli, one_torch_thread):
    for kind, water in (("sea", 1.0), ("field", 0.0)):
        folder = home / "classes" / kind
        folder.mkdir(parents=True)
        for i in range(6):
            write_tile(folder, f"{kind}{i}", water, seed=i + (0 if kind == "sea" else 50), with_mask=False,
                       x0=100_000.0 * (1 + i % 3))
    code, out, err = cli("data", "import", home / "classes", "--mode", "classes", "--block-size", "0.5",
                         "--no-progress")
    assert code == 0, err
    code, out, err = cli("classify", "train", *FAST, "--set", "train.epochs=1", "--set", "data.labels=label",
                         "--set", "data.classes=null")
    assert code == 0, err
    assert json.loads((last_line(out) / "classes.json").read_text())["classes"] == ["field", "sea"]


def test_bad_input_is_one_line_exit_2(home, cli, one_torch_thread):
    # a class folder holding an unreadable image
    folder = home / "bad" / "sea"
    folder.mkdir(parents=True)
    write_tile(folder, "ok", 1.0, seed=1, with_mask=False)
    (folder / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    code, out, err = cli("data", "import", home / "bad", "--mode", "classes", "--no-progress")
    assert code == 2 and "broken.tif" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err

    # tiles without labels
    folder = home / "unlabelled"
    folder.mkdir()
    for i in range(3):
        write_tile(folder, f"u{i}", 0.5, seed=i, with_mask=False)
    code, out, err = cli("data", "import", folder, "--split", "train", "--no-progress")
    assert code == 0, err
    code, out, err = cli("classify", "train", *FAST, "--set", "data.labels=label")
    assert code == 2 and "3 of 3 train tiles have no label" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_on_tiles_of_another_band_count(home, cli, one_torch_thread):
    make_catalog(home, cli)
    code, out, err = cli("classify", "train", *FAST, "--set", "train.max_steps=1", "--set", "train.epochs=1")
    assert code == 0, err
    folder = home / "four"
    folder.mkdir()
    for i in range(2):
        write_tile(folder, f"f{i}", 0.5, seed=i, bands=4)
    code, out, err = cli("data", "import", folder, "--source", "earthengine", "--split", "test", "--no-progress")
    assert code == 0, err
    code, out, err = cli("classify", "predict", "--run", "latest", "--source", "earthengine")
    assert code == 2 and "has 4 bands" in err and "3-band" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_subprocess_help_and_errors(home):
    r = run_workbench("classify", "train", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "water-coast-land" in r.stdout
    r = run_workbench("classify", "train", "--set", "model.vit.head_dim=null", "--preset", "vit-scratch")
    assert r.returncode == 2 and "not divisible by num_heads" in r.stderr and "Traceback" not in r.stderr
    r = run_workbench("classify", "predict", "--run", "nope")
    assert r.returncode == 2 and "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
