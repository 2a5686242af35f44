"""The trainer finishes raw batches (datasets with ``finish_on_device``) in the training step."""

from __future__ import annotations

import torch
from torch import nn

from tests.support.rasters import write_pair
from workbench.config import build
from workbench.data.augment import Augment
from workbench.data.catalog import Tile
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import RandomWindows
from workbench.data.stats import BandStats
from workbench.train.config import TrainConfig
from workbench.train.task import FunctionTask


def _train(tiles, finish_on_device: bool, seen: list) -> dict[str, torch.Tensor]:
    from workbench.train import Trainer

    ds = WindowDataset(tiles, RandomWindows(16, per_tile=8), stats=BandStats([1500.0] * 3, [300.0] * 3),
                       augment=Augment(contrast=0.1), seed=1, finish_on_device=finish_on_device)

    def loss(model, batch):
        seen.append((batch["image"].dtype, batch["mask"].dtype, sorted(batch)))
        valid = batch["valid"] & (batch["mask"] >= 0)
        out = model(batch["image"])[:, 0]
        return nn.functional.binary_cross_entropy_with_logits(out[valid], batch["mask"][valid].float()), {}

    torch.manual_seed(0)
    model = nn.Conv2d(3, 1, 1)
    cfg = build(TrainConfig, {"epochs": 2, "batch_size": 4, "lr": 0.05, "cpu": True, "trackers": ["none"],
                              "monitor": "train/loss"})
    Trainer(FunctionTask(model, loss, name="raw"), cfg, ds, name="raw").fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_raw_batches_train_exactly_like_finished_ones(home):
    tiles = []
    for i in range(2):
        img, mask = write_pair(home / "tiles", f"t{i}", size=48, seed=i, nodata=0,
                               origin=(500_000.0 + 10_000 * i, 4_650_000.0))
        tiles.append(Tile(path=str(img), mask_path=str(mask), source="folder", split="train"))
    seen_cpu, seen_raw = [], []
    finished = _train(tiles, False, seen_cpu)
    raw = _train(tiles, True, seen_raw)
    assert seen_raw and seen_raw == seen_cpu          # the step saw the same contract: float32, int64, no wire_*
    assert seen_raw[0][:2] == (torch.float32, torch.int64) and not any(k.startswith("wire") for k in seen_raw[0][2])
    for k in finished:
        assert torch.equal(finished[k], raw[k]), k
