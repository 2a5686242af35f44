"""Resolving the ``auto`` settings of ``TrainConfig`` against the machine we run on."""

from __future__ import annotations

import importlib.util
import os

import torch

from workbench.train.config import TrainConfig


def resolve_mixed_precision(cfg: TrainConfig) -> str:
    """``auto`` is bf16 wherever the hardware computes it natively, full precision elsewhere.

    On a CPU without bf16 units autocast emulates it and runs slower than fp32, so a CPU
    counts only with AMX or AVX512-BF16 (the project's machine: the water preset's step
    0.50 s -> 0.32 s, test mIoU 0.938 -> 0.940).
    """
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if not cfg.cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AMX tiles or AVX512-BF16 (torch's own dispatch checks)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in checks:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:
            continue
    return False


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
