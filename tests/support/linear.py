"""A linear-regression toy for the trainer's tests: per-item (x, y) pairs and their MSE."""

from __future__ import annotations

import torch
from torch import nn


class Pairs(torch.utils.data.Dataset):
    """Per-item (x, y) tuples: the default-collate path."""

    def __init__(self, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y), {}
