"""Every use of a private API (rasterio, torch, libc, accelerate) in one place, behind one switch.

A few hot paths go faster through interfaces their libraries do not promise to keep:
rasterio's ``DatasetReader._read``, torch's storage reference count and shared-memory
constructor, libc's ``madvise``, and accelerate's ``AcceleratorState._reset_state``.
Each is wrapped here in a small function with a public-API fallback that gives the same
result (the same pixels, the same batch tensors, the same checkpoint bytes), so a library
release that changes or drops one of them costs speed, never correctness, and the rest of
the code never names a private attribute.

``WORKBENCH_FAST_PATHS=0`` in the environment (read once, at import) turns every fast path
off, for bisecting a suspected difference or for a library version nobody has tried. Each
function also takes ``fast=`` (``None``: the switch) so a test can run both paths in one
process and compare them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

ENV = "WORKBENCH_FAST_PATHS"
ENABLED: bool = os.environ.get(ENV, "").strip() != "0"


def _on(fast: bool | None) -> bool:
    return ENABLED if fast is None else bool(fast)


# ---- rasterio: windowed reads -----------------------------------------------------------------

# rasterio's public ``DatasetReader.read`` spends about 2/3 of a small window read in
# Python-level argument checks (enums, dtype helpers, window cropping). The callers' windows
# are in bounds (the samplers guarantee it), so the reader's internal ``_read`` (the same GDAL
# call) gives the same pixels. It is compared with ``read`` on the first read of each process
# and abandoned on any difference or error. None: not probed yet in this process.
_FAST_READ: bool | None = None


def read_window(ds: Any, indexes: list[int], out: Any, window: Any, *, fast: bool | None = None) -> None:
    """Read bands ``indexes`` (1-based) of ``window`` from the open rasterio dataset ``ds`` into
    ``out`` (bands, rows, cols); what ``ds.read(indexes, window=window, out=out)`` does."""
    global _FAST_READ
    if not _on(fast) or _FAST_READ is False:
        ds.read(indexes, window=window, out=out)
        return
    if _FAST_READ:
        ds._read(indexes, out, window, out.dtype)
        return
    import numpy as np

    ds.read(indexes, window=window, out=out)   # first read in this process: do both paths agree?
    try:
        probe = np.empty_like(out)
        ds._read(indexes, probe, window, probe.dtype)
        _FAST_READ = bool(np.array_equal(probe, out, equal_nan=np.issubdtype(out.dtype, np.floating)))
    except Exception:
        _FAST_READ = False


# ---- torch: storage reference counts and shared memory -----------------------------------------

_use_count: Callable[[Any], int] | None | bool = False   # False: not probed yet; None: unavailable


def _probe_use_count() -> Callable[[Any], int] | None:
    """torch's reference count of a storage, if ``torch._C._storage_Use_Count`` still counts
    what it did (checked on a probe storage and one view of it)."""
    import torch

    fn = getattr(torch._C, "_storage_Use_Count", None)
    if fn is None:
        return None
    try:
        probe = torch.UntypedStorage(8)
        if fn(probe._cdata) != 1:
            return None
        view = torch.empty(0, dtype=torch.uint8).set_(probe, 0, (8,), (1,))
        if fn(probe._cdata) != 2:
            return None
        del view
    except Exception:
        return None
    return lambda st: fn(st._cdata)


def counts_storage_references(*, fast: bool | None = None) -> bool:
    """Whether :func:`sole_reference` can tell that a storage is free for reuse."""
    global _use_count
    if not _on(fast):
        return False
    if _use_count is False:
        _use_count = _probe_use_count()
    return _use_count is not None


def sole_reference(storage: Any, *, fast: bool | None = None) -> bool:
    """True when nothing but the caller's own reference (one in a list is fine) points at
    ``storage``: every tensor and view carved from it has been dropped, so it may be refilled.
    False whenever that cannot be known (the safe answer: allocate a new one)."""
    if not counts_storage_references(fast=fast):
        return False
    return _use_count(storage) == 1   # type: ignore[operator]


def shared_storage(nbytes: int, *, fast: bool | None = None) -> Any:
    """An untyped storage of ``nbytes`` in shared memory, as torch's own collate makes in a
    DataLoader worker: handing it to the main process costs no copy. The public route
    (``share_memory_`` on a fresh tensor) makes the same kind of storage in two steps."""
    import torch

    if _on(fast):
        try:
            return torch.UntypedStorage._new_shared(nbytes)
        except Exception:  # private constructor changed: the public route below
            pass
    return torch.empty(nbytes, dtype=torch.uint8).share_memory_().untyped_storage()


def save_ready(tensors: dict[str, Any], *, fast: bool | None = None) -> dict[str, Any]:
    """Detached, contiguous CPU tensors that own their memory, as safetensors requires (it
    refuses tensors that share storage). The fast path clones only the tensors that need it,
    judged from their storages; the safe path clones every one. The file's bytes are the same."""
    import torch

    out: dict[str, Any] = {}
    if not _on(fast):
        for name, value in tensors.items():
            t = value.detach()
            t = t.cpu() if t.device.type != "cpu" else t
            out[name] = t.clone(memory_format=torch.contiguous_format)
        return out
    seen: set[int] = set()
    for name, value in tensors.items():
        t = value.detach()
        t = t.cpu() if t.device.type != "cpu" else t
        if t.numel():
            storage = t.untyped_storage()
            if (storage.data_ptr() in seen or not t.is_contiguous()
                    or storage.nbytes() != t.numel() * t.element_size()):
                t = t.clone(memory_format=torch.contiguous_format)   # a transposed view stays contiguous
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


# ---- libc: pre-faulting fresh memory ------------------------------------------------------------

_MADV_POPULATE_WRITE = 23      # Linux >= 5.14
_madvise: Any = None           # None: not looked up yet; False: unavailable


def prefault(addr: int, nbytes: int, *, fast: bool | None = None) -> None:
    """Fault in ``nbytes`` of fresh memory at ``addr`` in one system call
    (``madvise(MADV_POPULATE_WRITE)``) instead of one page fault per 4 KiB page as it is
    first written: about 40 % less time for a large batch. Only when and where it does nothing
    else: the memory's contents are untouched, and the safe path simply skips it."""
    global _madvise
    if not _on(fast) or nbytes < (1 << 20):
        return
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                _madvise = libc.madvise
            except Exception:
                pass
    if not _madvise:
        return
    start = addr & ~4095
    if _madvise(start, (addr + nbytes - start + 4095) & ~4095, _MADV_POPULATE_WRITE) != 0:
        _madvise = False  # EINVAL on older kernels: stop trying


# ---- accelerate: more than one mixed precision per process ----------------------------------------

def release_accelerator_state(mixed_precision: str, *, fast: bool | None = None) -> None:
    """Let the next ``Accelerator`` of this process use ``mixed_precision``.

    accelerate keeps one process-wide ``AcceleratorState`` and refuses a second
    ``Accelerator`` whose mixed precision differs, yet a two-stage recipe (a fp32 VAE, then a
    bf16 UNet), a notebook or a test session legitimately trains several models in turn. The
    fast path drops the per-accelerator settings with accelerate's ``_reset_state`` and keeps
    the process group (``PartialState``). accelerate has no public way to do that: with the
    switch off nothing is reset, the same precision goes on working and another one is a
    one-line error instead of accelerate's traceback.
    """
    from accelerate.state import AcceleratorState, is_initialized

    if _on(fast):
        shared = AcceleratorState._shared_state
        if shared and shared.get("_mixed_precision") not in (None, mixed_precision):
            AcceleratorState._reset_state(reset_partial_state=False)
        return
    if not is_initialized():
        return
    current = getattr(AcceleratorState(), "mixed_precision", None)
    if current not in (None, mixed_precision):
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"this process already trained with mixed precision {current!r}, and accelerate "
                             f"allows one per process: train the {mixed_precision!r} model in a new process, "
                             f"or leave {ENV} unset")


__all__ = ["ENABLED", "ENV", "counts_storage_references", "prefault", "read_window", "release_accelerator_state",
           "save_ready", "shared_storage", "sole_reference"]
