"""Data order and batching for the trainer.

Exact resume and multi-process sharding both need the order of samples to be a
pure function of (seed, epoch): ``EpochSampler`` draws one permutation from a
``torch.Generator`` seeded with ``seed + epoch`` — the same on every process — and
accelerate's ``BatchSamplerShard`` hands batch ``i`` of that global order to
process ``i % world_size``. No global RNG is touched, so evaluation or a resume
cannot shift it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by ``seed + epoch`` (or in order when ``shuffle`` is off)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True):
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        rng = torch.Generator()  # local: never named `generator`, so accelerate leaves it alone
        rng.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=rng).tolist())

    def __len__(self) -> int:
        return self.size


def collate(batch: Any) -> Any:
    """Default collation, except that a batch a dataset already built (``__getitems__``
    returning a mapping) passes through untouched."""
    if isinstance(batch, Mapping):
        return batch
    return default_collate(batch)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0,
                collate_fn: Callable | None = None, generator: torch.Generator | None = None,
                ) -> tuple[DataLoader, Sampler]:
    """A plain DataLoader with our sampler; accelerate shards it in ``prepare``.

    ``generator`` (reseeded by the trainer each epoch) is what the DataLoader draws
    its worker base seed from; without it that draw would consume the global torch
    RNG and shift dropout masks after a resume. Workers are not persistent so that
    ``dataset.set_epoch`` reaches them.
    """
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle) if shuffle else SequentialSampler(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_fn or collate, generator=generator, drop_last=False,
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
