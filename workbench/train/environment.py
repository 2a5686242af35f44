"""Resolving the ``auto`` settings of ``TrainConfig`` against the machine we run on."""

from __future__ import annotations

import importlib.util
import os

import torch

from workbench.train.config import TrainConfig


def resolve_mixed_precision(cfg: TrainConfig) -> str:
    """``auto`` is bf16 on a GPU that supports it and full precision on CPU."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if not cfg.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_trackers(names: list[str]) -> list[str]:
    """``auto`` = tensorboard when installed, plus wandb when installed and configured."""
    out: list[str] = []
    for name in names:
        if name == "none":
            return []
        if name == "auto":
            if _installed("tensorboard") or _installed("tensorboardX"):
                out.append("tensorboard")
            if _installed("wandb") and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
                out.append("wandb")
        else:
            out.append(name)
    return list(dict.fromkeys(out))
