"""Which process am I, how many are we: ranks under ``torchrun`` and ``accelerate launch``.

    from workbench import distributed

    ranks = distributed.start()                       # world 1 without a launcher: no process group
    mine = distributed.share(scenes, ranks)           # this rank's share of a sorted list
    ...                                               # each rank maps its share
    distributed.barrier()                             # everyone done
    if ranks.is_main: ...                             # one process gathers and writes the catalog

Why from the environment: both launchers (torchrun, and accelerate launch, which runs
torchrun's agent) give every process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address (``MASTER_ADDR`` / ``MASTER_PORT``), on one node or many; ``env://`` is
torch.distributed's own way of reading them. One process started without a launcher is world
1 and never creates a process group, so a plain command needs nothing of this.

The group is gloo, whatever device the model runs on: the batch verbs exchange only
barriers and small Python objects (error lines, counts), never tensors, and gloo does that on
every machine (NCCL would need each rank bound to its GPU first). Its timeout is long
(:data:`TIMEOUT`), because a barrier waits for the slowest rank's whole share of scenes, hours on
a continent, not the 30 minutes torch defaults to.

:func:`share` is a deterministic split of the sorted list, every ``world``-th item from ``rank``
(round robin, so scenes of similar size spread evenly): it depends on nothing but the list and
the two numbers, never on timing, so no item is ever taken by two ranks, and a re-run with the
same processes gives each rank the same share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from workbench.errors import WorkbenchError

T = TypeVar("T")
TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    """This process's rank, world size and local rank from the launcher's environment
    (world 1 when there is none); numbers that do not fit are one line naming the variable."""
    def number(name: str, default: int) -> int:
        text = os.environ.get(name)
        if text in (None, ""):
            return default
        try:
            return int(text)
        except ValueError:
            raise WorkbenchError(f"${name}={text!r}: expected a whole number (set by torchrun / accelerate "
                                 "launch)") from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise WorkbenchError(f"$RANK={rank}, $WORLD_SIZE={world}: a rank must be in 0..world size - 1")
    return Ranks(rank=rank, world=world, local_rank=number("LOCAL_RANK", 0))


def start() -> Ranks:
    """:func:`ranks`, with the gloo process group joined when there are several processes
    (a no-op when it already is, or with one process)."""
    r = ranks()
    if r.world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", init_method="env://", rank=r.rank, world_size=r.world, timeout=TIMEOUT)
    return r


@contextmanager
def session() -> Iterator[Ranks]:
    """``with session() as ranks:`` :func:`start`, and at the end :func:`stop` the group if this
    call joined it (one a caller set up stays theirs)."""
    joined = ranks().world > 1 and _group() is None
    r = start()
    try:
        yield r
    finally:
        if joined:
            stop()


def rank_device(device: Any, r: Ranks) -> Any:
    """A plain ``cuda`` device made this rank's GPU (``cuda:<local rank>``, wrapping round when a
    node runs more processes than it has GPUs); any other device as it is."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None and r.world > 1:
        return torch.device("cuda", r.local_rank % max(torch.cuda.device_count(), 1))
    return device


def share(items: Sequence[T], r: Ranks) -> list[T]:
    """This rank's items of ``items`` (already sorted by the caller: the split follows that order)."""
    return list(items[r.rank::r.world])


def _group() -> Any | None:
    import sys

    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    dist = _group()
    if dist is not None:
        dist.barrier()


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` alone."""
    dist = _group()
    if dist is None:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def stop() -> None:
    """Leave the process group (a clean exit, so torch warns of no leaked group)."""
    dist = _group()
    if dist is not None:
        dist.destroy_process_group()
