"""``make bench`` row: what a checksummed checkpoint save costs against the plain safetensors write.

Why: the trainer saves ``last`` (weights and optimizer state: 172 MB for the ``water`` preset's
resnet18 Unet) and usually ``best`` at every epoch end, so a slow save is paid 48 times in a
``make segment`` run. The first checksummed save built the file in memory and copied it three
times (1.0-1.3 s of CPU for 172 MB against 0.13-0.15 s for the plain write, 4-5x its time on a loaded
2-core machine). The baseline is
``safetensors.torch.save_file`` of the same tensors plus the same ``fsync``, measured back to back
in this run; the ratio is the median of the per-pair ratios (robust to other people's load).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from workbench.bench import BenchResult


def _plain_save(path: Path, tensors: dict) -> None:
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(path))
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def bench_checkpoint(quick: bool = False) -> BenchResult:
    from workbench.train import checkpoint as ckpt

    mb, pairs = (32, 3) if quick else (172, 5)
    torch.manual_seed(0)
    tensors = {f"model.w{i}": torch.randn(250_000) for i in range(mb)}       # 1 MB each
    times: dict[str, list[float]] = {"safetensors save_file": [], "save_checkpoint (SHA-256)": [],
                                     "load_checkpoint (verified)": []}
    with tempfile.TemporaryDirectory() as tmp:
        plain, ours = Path(tmp) / "plain.safetensors", Path(tmp) / "ours.safetensors"
        for _ in range(pairs):
            for name, call in (("safetensors save_file", lambda: _plain_save(plain, tensors)),
                               ("save_checkpoint (SHA-256)", lambda: ckpt.save_checkpoint(ours, tensors, {"step": 0})),
                               ("load_checkpoint (verified)", lambda: ckpt.load_checkpoint(ours))):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    base = times["safetensors save_file"]
    rows = [{"operation": name, "MB": mb, "s (median)": statistics.median(t),
             "x save_file": statistics.median([a / b for a, b in zip(t, base)])} for name, t in times.items()]
    return BenchResult(f"checkpoint of {mb} MB of float32 tensors ({pairs} rounds, back to back)", rows,
                       [f"{os.cpu_count()} CPUs; the water preset's last checkpoint is 172 MB, best 57 MB"])
