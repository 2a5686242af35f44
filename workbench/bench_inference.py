"""``make bench`` row: a segmentation model's forward pass on the CPU under bf16 autocast vs fp32.

Why: ``predict.precision: auto`` turns bf16 on for CPUs with native bf16 (AMX / AVX512-BF16);
this measures what that buys on the machine at hand, both precisions over the very same
windows in the same run (a resnet18 Unet, 4 bands, random weights: speed does not depend on
them), and how many mask pixels the two disagree on.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from workbench.bench import BenchResult


def bench_precision(quick: bool = False) -> BenchResult:
    import segmentation_models_pytorch as smp

    from workbench.inference import ModelRunner
    from workbench.train.environment import cpu_has_native_bf16

    size, batch, batches = (128, 4, 2) if quick else (256, 8, 6)
    torch.manual_seed(0)
    # smp directly, not tasks.segmentation (the platform imports no task): the same Unet it builds
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=1)
    x = np.random.default_rng(0).normal(size=(batches, batch, 4, size, size)).astype(np.float32)
    rows, masks = [], {}
    for precision in ("fp32", "bf16"):
        runner = ModelRunner(model, precision=precision)
        runner(x[0])                                     # warm-up (oneDNN picks its kernels)
        t0 = time.perf_counter()
        out = [runner(b) for b in x]
        seconds = time.perf_counter() - t0
        masks[precision] = torch.cat(out) > 0
        rows.append({"precision": precision, "windows": batches * batch, "px": size,
                     "Mpx/s": batches * batch * size * size / seconds / 1e6, "s": seconds})
    for r in rows:
        r["x fp32"] = rows[0]["s"] / r["s"]
    agree = (masks["fp32"] == masks["bf16"]).float().mean().item()
    notes = [f"CPU native bf16 (AMX / AVX512-BF16): {cpu_has_native_bf16()}; auto picks "
             f"{'bf16' if cpu_has_native_bf16() else 'fp32'}",
             f"mask agreement bf16 vs fp32 (random weights, the hard case): {100 * agree:.2f} %",
             f"{torch.get_num_threads()} torch threads"]
    return BenchResult(f"segmentation forward on CPU, resnet18 Unet, 4 bands, {size} px windows, batch {batch}",
                       rows, notes)
