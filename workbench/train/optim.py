"""Optimizer construction from ``TrainConfig`` and optional task param groups.

Every group carries ``base_lr`` (the schedule multiplies it) and may carry a
``name`` so an epoch hook can find, say, the backbone group and change its LR
during staged unfreezing. All parameters go into the optimizer, frozen ones too,
so unfreezing later needs no new optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.train.config import TrainConfig


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels only: biases and norm scales (1-D) are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim >= 2 else no_decay).append(param)
    if weight_decay == 0.0 or not no_decay or not decay:
        return [{"name": "all", "params": decay + no_decay}]
    return [{"name": "decay", "params": decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model: nn.Module, param_groups: Iterable[dict] | None = None
                    ) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer``.

    A group may give ``lr`` (absolute) or ``lr_scale`` (times ``cfg.lr``) and
    ``weight_decay``; whatever it leaves out comes from ``cfg``.
    """
    groups = []
    for i, group in enumerate(param_groups if param_groups is not None
                              else default_param_groups(model, cfg.weight_decay)):
        group = dict(group)
        params = list(group.pop("params"))
        if not params:
            continue
        scale = float(group.pop("lr_scale", 1.0))
        lr = float(group.pop("lr", cfg.lr * scale))
        group.setdefault("name", f"group{i}")
        groups.append({**group, "params": params, "lr": lr, "base_lr": lr})
    if not groups:
        raise WorkbenchError("the model has no parameters to train")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise WorkbenchError(f"train.optimizer: unknown optimizer {cfg.optimizer!r}")
