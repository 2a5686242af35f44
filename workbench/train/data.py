"""Data order and batching for the trainer.

Exact resume and multi-process sharding both need the order of samples to be a
pure function of (seed, epoch): the data layer's one
:class:`~workbench.data.samplers.EpochSampler` draws one permutation per epoch
(:func:`~workbench.data.samplers.torch_permutation`, seeded with ``seed + epoch``) —
the same on every process — and accelerate's ``BatchSamplerShard`` hands batch ``i``
of that global order to process ``i % world_size``. No global RNG is touched, so
evaluation or a resume cannot shift it. Batches are collated by the data layer's one
:func:`~workbench.data.collate.passthrough_collate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from workbench.data.collate import finish_batch, passthrough_collate
from workbench.data.samplers import EpochSampler, torch_permutation

__all__ = ["EpochSampler", "batch_size_of", "finish_batch", "finish_on", "make_loader"]


def finish_on(dataset: Dataset, device: torch.device) -> None:
    """Let a dataset that can (``finish_on_device``) ship raw batches when training on an
    accelerator: the loader's CPUs then only read windows, and :func:`finish_batch` (in the
    training step, after the host-to-device copy) normalises, augments and builds the masks
    on the device. On a CPU the loader's worker processes do that work in parallel instead of
    the training process, so nothing changes there."""
    if torch.device(device).type != "cpu" and hasattr(dataset, "finish_on_device"):
        dataset.finish_on_device = True


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0,
                collate_fn: Callable | None = None, generator: torch.Generator | None = None,
                ) -> tuple[DataLoader, Sampler]:
    """A plain DataLoader with our sampler; accelerate shards it in ``prepare``.

    ``generator`` (reseeded by the trainer each epoch) is what the DataLoader draws
    its worker base seed from; without it that draw would consume the global torch
    RNG and shift dropout masks after a resume. Workers are not persistent so that
    ``dataset.set_epoch`` reaches them.
    """
    sampler: Sampler = (EpochSampler(len(dataset), seed=seed, with_epoch=False, permutation=torch_permutation)
                        if shuffle else SequentialSampler(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_fn or passthrough_collate, generator=generator, drop_last=False,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    return loader, sampler


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch: the length of its first tensor."""
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            n = batch_size_of(value)
            if n:
                return n
    if isinstance(batch, (list, tuple)):
        for value in batch:
            n = batch_size_of(value)
            if n:
                return n
    return 0
