"""The one ``collate_fn`` the workbench's DataLoaders use, and the one way a batch is finished
on the training device.

:class:`~workbench.data.dataset.WindowDataset` builds a whole batch in ``__getitems__``
(one vectorised pass, in shared memory in a worker), so the batch it returns must pass
through untouched; any other dataset's list of samples is collated as torch would by
default. One function serves both, so the trainer's default and a task's explicit
``collate_fn=passthrough_collate`` can never drift apart. Lives apart from the dataset
module so that the trainer can use it without importing rasterio.

A dataset with ``finish_on_device`` set ships *raw* batches instead: the digital numbers
as read (uint16 for Sentinel-2, half the bytes of float32 through shared memory and the
host-to-device copy), the mask as read (uint8), and per sample the parameters of what is
left to do (keys starting with ``wire_``). At 256-512 px the float conversion, the
normalisation, the nodata test, the flip/turn and the int64 mask cost the CPU several times
the windowed read itself; on a GPU they cost microseconds. :func:`finish_batch`, called by
the trainer after the batch is on the device, turns such a batch into exactly the batch the
dataset would have built on the CPU (the item contract of :mod:`workbench.data.dataset`),
and leaves every other batch as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

WIRE_KEYS = ("wire_affine", "wire_transform", "wire_nodata", "wire_mask_nodata", "wire_ignore")


def passthrough_collate(batch: Any) -> Any:
    """A batch a dataset already built (a mapping, e.g. from ``__getitems__``) as it is;
    anything else (a list of samples: tensors, tuples, dicts) through torch's
    ``default_collate``."""
    if isinstance(batch, Mapping):
        return batch
    from torch.utils.data import default_collate

    return default_collate(batch)


def is_raw_batch(batch: Any) -> bool:
    """Whether ``batch`` still has to go through :func:`finish_batch`."""
    return isinstance(batch, Mapping) and "wire_affine" in batch


def finish_batch(batch: Any) -> Any:
    """A raw batch (see the module docs) finished where its tensors are, usually the GPU:
    ``image`` float32 ``DN * scale + bias`` per sample and band (reflectance, normalisation
    and jitter in one affine), flipped/turned, 0 where not ``valid``; ``valid`` bool
    (no image nodata in any band, finite, mask not nodata); ``mask`` int64 with the
    dataset's ignore index where not valid. Anything else is returned unchanged, so a
    training loop can call it on every batch of any dataset.

    No value is read back to the host (no synchronisation): the flips/turns are one gather
    through a per-size index table, and the affine is applied even where it is the identity.
    """
    if not is_raw_batch(batch):
        return batch
    raw = batch["image"]
    n, c = raw.shape[:2]
    # Values compared exactly: 8/16-bit integers and float32 are exact in float32, wider ones in float64.
    work = torch.float32 if raw.dtype in _EXACT_IN_FLOAT32 else torch.float64
    perm = _dihedral_index(raw.shape[-1], raw.device)[batch["wire_transform"]]  # (B, H*W)
    flat = raw.to(work).reshape(n, c, -1)
    x = flat.gather(2, perm[:, None, :].expand(n, c, perm.shape[1])).reshape(raw.shape)
    nodata = batch["wire_nodata"].to(work).view(n, 1, 1, 1)     # NaN: no nodata value (never equal)
    bad = (x == nodata).any(1)
    if raw.dtype.is_floating_point:
        bad |= ~torch.isfinite(x).all(1)
    out = {}
    if "mask" in batch:
        mraw = batch["mask"]
        mwork = mraw.to(torch.float64) if mraw.dtype.is_floating_point else mraw.long()
        m = mwork.reshape(n, -1).gather(1, perm).reshape(mraw.shape)
        bad |= m == batch["wire_mask_nodata"].to(torch.float64).view(n, 1, 1)
        mask = m.long().masked_fill_(bad, int(batch["wire_ignore"]))
    # Reflectance and normalisation are one affine here (see WindowDataset._affine).
    aff = batch["wire_affine"]
    image = x.to(torch.float32).mul_(aff[:, 0, :, None, None]).add_(aff[:, 1, :, None, None])
    image.masked_fill_(bad[:, None], 0.0)
    out["image"] = image
    if "mask" in batch:
        out["mask"] = mask
    out["valid"] = ~bad
    for k, v in batch.items():
        if k not in out and k not in WIRE_KEYS:
            out[k] = v
    return out


_EXACT_IN_FLOAT32 = (torch.uint8, torch.int8, torch.int16, torch.uint16, torch.float16, torch.bfloat16, torch.float32)
_INDEX: dict[tuple[int, str], torch.Tensor] = {}


def _dihedral_index(size: int, device: torch.device) -> torch.Tensor:
    """(8, size*size) int64: row ``t`` lists, for each output pixel of transform ``t``
    (:func:`workbench.data.augment.dihedral`), the input pixel it comes from."""
    key = (int(size), str(device))
    table = _INDEX.get(key)
    if table is None:
        import numpy as np

        from workbench.data.augment import dihedral

        base = np.arange(size * size, dtype=np.int64).reshape(size, size)
        rows = np.stack([np.ascontiguousarray(dihedral(base, t)).reshape(-1) for t in range(8)])
        table = _INDEX[key] = torch.from_numpy(rows).to(device)
    return table


__all__ = ["WIRE_KEYS", "finish_batch", "is_raw_batch", "passthrough_collate"]
