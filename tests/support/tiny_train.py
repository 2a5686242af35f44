"""A tiny end-to-end training run through the real ``Trainer``, for the trainer tests.

    python tests/support/tiny_train.py [--resume RUN] [--set train.lr=0.01 ...] [--step-delay S]
                                       [--record-indices] [--dump-weights] [--batched]
    python -m torch.distributed.run --nproc_per_node 2 --standalone tests/support/tiny_train.py ...

Runs under ``$WORKBENCH_HOME/runs``. Everything that can make a resume inexact is
switched on: shuffling, a dataset with ``set_epoch`` and per-(seed, epoch, index)
random noise, dropout, batch norm, gradient accumulation and clipping, EMA, a
warm-up + cosine schedule, a checkpoint every step, and a callback that freezes the first
conv in epoch 0 (staged unfreezing). The task module builds the model in ``setup``.
Prints the summary as JSON on its last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workbench.config import build, deep_merge, parse_overrides  # noqa: E402
from workbench.train.config import TrainConfig  # noqa: E402
from workbench.train.task import Callback, TaskModule  # noqa: E402

DEFAULTS = {
    "size": 32,
    "val_size": 8,
    "train": {
        "epochs": 3, "batch_size": 4, "eval_batch_size": 4, "lr": 0.05, "weight_decay": 0.01,
        "grad_accum": 2, "clip_grad_norm": 0.5, "ema_decay": 0.9, "seed": 7, "cpu": True,
        "checkpoint_every_steps": 1, "log_every_steps": 1, "trackers": ["none"],
        "schedule": {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
    },
}


@dataclass
class TinyConfig:
    size: int = 32
    val_size: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)


class NoisyTiles(torch.utils.data.Dataset):
    """8x8 3-band 'images' and a 0/1 mask; per-epoch noise drawn from (seed, epoch, index)."""

    def __init__(self, size: int, seed: int, batched: bool = False):
        g = torch.Generator().manual_seed(1234 + size)
        self.images = torch.randn(size, 3, 8, 8, generator=g)
        self.masks = (self.images[:, :1] + 0.3 * torch.randn(size, 1, 8, 8, generator=g) > 0).float()
        self.seed, self.epoch = seed, 0
        if batched:
            self.__getitems__ = self._getitems

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i)
        image = self.images[i] + 0.1 * torch.randn(3, 8, 8, generator=g)
        return {"image": image, "mask": self.masks[i], "index": torch.tensor(i)}

    def _getitems(self, indices: list[int]) -> dict:
        items = [self[i] for i in indices]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.conv2 = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(torch.relu(self.norm(self.conv1(x)))))


class TinyTask(TaskModule):
    """The tiny run as a task module: builds ``TinyNet`` on the trainer's device, BCE loss, IoU."""

    name = "tiny"

    def __init__(self, dataset: NoisyTiles, record: dict | None = None, delay: float = 0.0, freeze: bool = True):
        self.dataset, self.record, self.delay, self.freeze = dataset, record, delay, freeze
        self.bce = nn.BCEWithLogitsLoss()

    def setup(self, accelerator) -> nn.Module:
        return TinyNet().to(accelerator.device)

    def loss(self, model: nn.Module, batch: dict):
        if self.record is not None:
            self.record.setdefault(str(self.dataset.epoch), []).extend(batch["index"].tolist())
        if self.delay:
            time.sleep(self.delay)
        logits = model(batch["image"])
        loss = self.bce(logits, batch["mask"])
        return loss, {"pos_rate": float(batch["mask"].mean())}

    def evaluate(self, model: nn.Module, loader, accelerator) -> dict:
        losses, inter, union = [], 0.0, 0.0
        for batch in loader:
            logits = model(batch["image"])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["mask"], reduction="none")
            loss, pred, mask = accelerator.gather_for_metrics((loss.mean((1, 2, 3)), logits > 0, batch["mask"] > 0.5))
            losses.append(loss)
            inter += float((pred & mask).sum())
            union += float((pred | mask).sum())
        return {"val/loss": float(torch.cat(losses).mean()), "val/iou": inter / max(union, 1.0)}

    def callbacks(self) -> list[Callback]:
        return [FreezeFirstEpoch()] if self.freeze else []


class FreezeFirstEpoch(Callback):
    """Staged unfreezing in miniature: conv1 is frozen during epoch 0 only."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        trainer.unwrapped.conv1.requires_grad_(epoch >= 1)


def weight_digest(model: nn.Module) -> dict[str, str]:
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for k, v in model.state_dict().items()}


def main(argv: list[str] | None = None) -> dict:
    from workbench.train import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN")
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--step-delay", type=float, default=0.0, help="sleep per micro-batch (kill tests)")
    parser.add_argument("--record-indices", action="store_true", help="write indices_rank<R>.json to the run")
    parser.add_argument("--dump-weights", action="store_true", help="write weights_rank<R>.json to the run")
    parser.add_argument("--batched", action="store_true", help="dataset returns whole batches (__getitems__)")
    parser.add_argument("--no-freeze", action="store_true")
    args = parser.parse_args(argv)

    cfg = build(TinyConfig, deep_merge(DEFAULTS, parse_overrides(args.overrides)))
    train_data = NoisyTiles(cfg.size, cfg.train.seed, batched=args.batched)
    val_data = NoisyTiles(cfg.val_size, cfg.train.seed + 1, batched=args.batched)
    record: dict | None = {} if args.record_indices else None
    task = TinyTask(train_data, record, args.step_delay, freeze=not args.no_freeze)
    trainer = Trainer(task, cfg.train, train_data, val_data, name=args.name, config=cfg, resume=args.resume)
    summary = trainer.fit()
    rank = trainer.accelerator.process_index
    if record is not None:
        trainer.run.write_json(f"indices_rank{rank}.json", record)
    if args.dump_weights:
        trainer.run.write_json(f"weights_rank{rank}.json", weight_digest(trainer.unwrapped))
    if trainer.accelerator.is_main_process and __name__ == "__main__":
        print(json.dumps(summary, default=str))
    if __name__ == "__main__":
        trainer.close()
    return summary


if __name__ == "__main__":
    if "OMP_NUM_THREADS" not in os.environ:  # tiny tensors: threads only add contention
        torch.set_num_threads(1)
    main()
