"""workbench.fastpaths: every private-API trick gives what its public fallback gives, and one
switch turns them all off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from tests.support.rasters import write_pair
from workbench import fastpaths
from workbench.data.augment import Augment
from workbench.data.catalog import Tile
from workbench.data.collate import passthrough_collate
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import EpochSampler, RandomWindows
from workbench.data.stats import BandStats
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


def test_the_switch_is_read_once_from_the_environment():
    code = "import workbench.fastpaths as f; print(f.ENABLED)"
    env = {k: v for k, v in os.environ.items() if k != fastpaths.ENV}
    on = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                        text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT), fastpaths.ENV: "0"},
                         capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True" and off.stdout.strip() == "False"


@pytest.mark.parametrize("dtype,nodata", [("uint16", None), ("float32", -9999.0)])
def test_read_window_fast_and_safe_give_the_same_pixels(tmp_path, monkeypatch, dtype, nodata):
    monkeypatch.setattr(fastpaths, "_FAST_READ", None)  # probe again in this test
    img, _ = write_pair(tmp_path, "t", size=48, bands=4, dtype=dtype, nodata=nodata)
    with rasterio.open(img) as ds:
        for row, col, size, bands in [(0, 0, 16, [1, 2, 3, 4]), (7, 21, 24, [3, 1]), (32, 32, 16, [2])]:
            window = Window(col, row, size, size)
            fast = np.full((len(bands), size, size), 7, np.dtype(dtype))
            safe = np.full_like(fast, 3)
            fastpaths.read_window(ds, bands, fast, window, fast=True)
            fastpaths.read_window(ds, bands, safe, window, fast=False)
            assert np.array_equal(fast, safe)
            assert np.array_equal(safe, ds.read(bands, window=window))
    assert fastpaths._FAST_READ is True  # the probe found both paths equal: the fast one is in use


def _dataset(tmp_path) -> WindowDataset:
    tiles = []
    for i in range(3):
        img, mask = write_pair(tmp_path, f"t{i}", size=64, seed=i, origin=(500_000.0 + 10_000 * i, 4_650_000.0))
        tiles.append(Tile(path=str(img), mask_path=str(mask), source="folder", split="train"))
    return WindowDataset(tiles, RandomWindows(16, per_tile=6), stats=BandStats([1500.0] * 3, [300.0] * 3),
                         augment=Augment(contrast=0.1), seed=2)


def _batches(ds, workers: int) -> list[dict]:
    sampler = EpochSampler(ds, seed=7)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers, sampler=sampler,
                                         collate_fn=passthrough_collate)
    out = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        out += [{k: v.clone() for k, v in b.items()} for b in loader]   # clone: let recycled storage go
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_the_same_with_the_fast_paths_off(tmp_path, monkeypatch, workers):
    """Storage recycling and pre-faulting (main process), shared-memory batches (workers)."""
    ds = _dataset(tmp_path)
    fast = _batches(ds, workers)
    monkeypatch.setattr(fastpaths, "ENABLED", False)
    safe = _batches(ds, workers)
    assert len(fast) == len(safe) == 8
    for a, b in zip(fast, safe):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_storage_is_recycled_only_on_the_fast_path(tmp_path, monkeypatch):
    monkeypatch.setattr(fastpaths, "ENABLED", True)     # whatever the switch says for this session
    ds = _dataset(tmp_path)
    assert fastpaths.counts_storage_references()
    first = ds.__getitems__(list(range(5)))
    ptr = first["image"].untyped_storage().data_ptr()
    del first
    again = ds.__getitems__(list(range(5, 10)))
    assert again["image"].untyped_storage().data_ptr() == ptr      # the dropped batch's memory, refilled
    held = again
    other = ds.__getitems__(list(range(5)))
    assert other["image"].untyped_storage().data_ptr() != held["image"].untyped_storage().data_ptr()
    storage = torch.UntypedStorage(16)
    assert fastpaths.sole_reference(storage, fast=True)
    view = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (16,), (1,))
    assert not fastpaths.sole_reference(storage, fast=True)
    del view
    assert not fastpaths.sole_reference(storage, fast=False)       # safe: never claims a storage is free
    monkeypatch.setattr(fastpaths, "ENABLED", False)
    assert not fastpaths.counts_storage_references()


def test_shared_storage_fast_and_safe():
    for fast in (True, False):
        st = fastpaths.shared_storage(4096, fast=fast)
        assert st.nbytes() == 4096 and st.is_shared()


def test_prefault_leaves_memory_as_it_was():
    for fast in (True, False):
        t = torch.arange(1 << 19, dtype=torch.int32)          # 2 MiB: above the 1 MiB threshold
        before = t.clone()
        fastpaths.prefault(t.data_ptr(), t.numel() * t.element_size(), fast=fast)
        assert torch.equal(t, before)


def _header_and_data(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (its JSON header, every byte after it). The header is compared
    parsed: safetensors writes the metadata map in hash order, which differs from save to save."""
    import json
    import struct

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_checkpoint_bytes_are_the_same_with_the_fast_paths_off(tmp_path, monkeypatch):
    from workbench.train import checkpoint as ckpt

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"tied.a": base, "tied.b": base, "view": base[:, 1:3], "t": base.t(), "empty": torch.zeros(0),
               "own": torch.ones(3, dtype=torch.bfloat16), "int": torch.arange(5)}
    state = {"step": 3, "epoch": 1}
    fast = ckpt.save_checkpoint(tmp_path / "fast.safetensors", tensors, state)
    monkeypatch.setattr(fastpaths, "ENABLED", False)
    safe = ckpt.save_checkpoint(tmp_path / "safe.safetensors", tensors, state)
    assert _header_and_data(fast) == _header_and_data(safe)
    loaded, _ = ckpt.load_checkpoint(safe)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), k
    for k in tensors:                       # neither path changed the caller's tensors
        assert fastpaths.save_ready(tensors, fast=True)[k].is_contiguous()
        assert fastpaths.save_ready(tensors, fast=False)[k].is_contiguous()


def _accelerator_state():
    from accelerate.state import AcceleratorState, PartialState

    return dict(AcceleratorState._shared_state), dict(PartialState._shared_state)


def test_accelerator_state_release_fast_and_safe():
    from accelerate import Accelerator
    from accelerate.state import PartialState

    # an earlier in-process training may have left another precision (fp32 on a CPU without bf16)
    fastpaths.release_accelerator_state("bf16", fast=True)
    Accelerator(cpu=True, mixed_precision="bf16")
    before = _accelerator_state()
    for fast in (True, False):                    # same precision: nothing to release on either path
        fastpaths.release_accelerator_state("bf16", fast=fast)
        assert _accelerator_state() == before
    with pytest.raises(WorkbenchError, match="mixed precision 'bf16'.*new process"):
        fastpaths.release_accelerator_state("no", fast=False)
    assert _accelerator_state() == before         # the safe path touches nothing
    process = dict(PartialState._shared_state)
    fastpaths.release_accelerator_state("no", fast=True)
    assert dict(PartialState._shared_state) == process   # the process group stays
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    fastpaths.release_accelerator_state("bf16", fast=True)
    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
