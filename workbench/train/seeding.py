"""Seeding and RNG snapshots.

Everything random in a run flows from ``seed``: the global generators (python,
numpy, torch, CUDA) are seeded once, the data order is a pure function of
(seed, epoch) (see ``data.EpochSampler``), and the generator states are saved in
every checkpoint so that dropout masks after a resume are the ones an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and every CUDA device (call it before building the model)."""
    from accelerate.utils import set_seed

    set_seed(seed)


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """Generator states: torch/CUDA as uint8 tensors, python/numpy as JSON-able values."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Put back what ``capture_rng`` took (CUDA states only for devices that exist)."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8).cpu())
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                           key=lambda k: int(k.rsplit(".", 1)[1]))]
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.to(torch.uint8).cpu(), i)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
