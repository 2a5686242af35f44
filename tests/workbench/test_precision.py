"""bf16 autocast at prediction: the mask of a briefly trained segmentation model under bf16 equals
fp32's on >= 99.9 % of a small Sentinel-2-like scene's pixels; ``fp32`` pins full precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import sentinel2 as s2
from workbench.inference import ModelRunner, plan_grid, resolve_precision
from workbench.train.environment import cpu_has_native_bf16

BANDS = ("B02", "B03", "B04", "B08")


def test_settings_resolve():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert ModelRunner(torch.nn.Conv2d(1, 1, 1)).precision == "fp32"          # no setting: as before on a CPU
    with pytest.raises(Exception, match="precision 'fp16'"):
        resolve_precision("fp16", "cpu")


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AMX / AVX512-BF16): "
                                                        "autocast would emulate it, auto picks fp32")
def test_bf16_mask_equals_fp32_on_almost_every_pixel():
    from tasks.segmentation.models import build_model

    g = s2.ground(192, seed=0)
    x = np.stack([g.reflectance[b] for b in BANDS]).astype(np.float32)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    y = torch.from_numpy(g.water.astype(np.float32))
    torch.manual_seed(0)
    model = build_model("attentionunet", None, in_channels=4, classes=1, filters=(8, 16, 32, 64, 128))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(25):       # a model with decisive logits, as a trained run's are (random ones sit at 0.5)
        rc = rng.integers(0, 192 - 64, (8, 2))
        xb = torch.from_numpy(np.stack([x[:, r:r + 64, c:c + 64] for r, c in rc]))
        yb = torch.stack([y[r:r + 64, c:c + 64] for r, c in rc])[:, None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = plan_grid(192, 192, 64)
    windows = np.stack([x[:, r:r + 64, c:c + 64] for r in grid.rows for c in grid.cols])
    fp32 = ModelRunner(model, precision="fp32")
    bf16 = ModelRunner(model, precision="bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    a, b = fp32(windows), bf16(windows)
    assert not torch.equal(a, b)                                  # autocast did run in bf16
    agree = ((a > 0) == (b > 0)).float().mean().item()
    assert agree >= 0.999, agree
    assert 0.05 < (a > 0).float().mean().item() < 0.6             # a real mask, not all land or all water
