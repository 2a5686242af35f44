"""The shared pieces of scene prediction: a window grid that covers every pixel without padding, the
geotransform of a map with one pixel per window, strips read in order, and a model runner whose
output is the model's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from workbench.errors import WorkbenchError
from workbench.inference import ModelRunner, plan_grid, read_strips


def test_the_grid_covers_every_pixel_with_the_last_window_snapped_to_the_edge():
    g = plan_grid(100, 70, 32)
    assert g.stride == 32 and g.rows == (0, 32, 64, 68) and g.cols == (0, 32, 38)
    assert g.shape == (4, 3) and g.windows == 12
    g = plan_grid(64, 64, 32, stride=16)
    assert g.rows == g.cols == (0, 16, 32)
    assert plan_grid(32, 32, 32).shape == (1, 1)


@pytest.mark.parametrize("args, words", [
    ((20, 100, 32, None, "small.tif"), ("small.tif", "100x20", "32 px")),
    ((100, 100, 32, 0, "s"), ("stride 0",)),
    ((100, 100, 32, 33, "s"), ("stride 33", "32 px")),
])
def test_grids_that_cannot_be_are_one_line(args, words):
    with pytest.raises(WorkbenchError) as e:
        plan_grid(*args[:3], stride=args[3], where=args[4])
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


@pytest.mark.parametrize("size, stride", [(32, 32), (32, 16), (64, 24)])
def test_each_output_pixel_is_centred_on_its_window(size, stride):
    scene = from_origin(500_000.0, 4_600_000.0, 10.0, 10.0)
    g = plan_grid(300, 300, size, stride)
    t = g.transform(scene)
    assert (t.a, -t.e) == (10.0 * stride, 10.0 * stride)
    for i, j in [(0, 0), (2, 3), (len(g.rows) - 2, 1)]:
        x, y = t * (j + 0.5, i + 0.5)                               # the output pixel's centre
        assert (x, y) == pytest.approx(scene * (g.cols[j] + size / 2, g.rows[i] + size / 2))


def test_strips_come_in_order_one_row_of_windows_each():
    g = plan_grid(50, 40, 16, stride=12)
    asked = []

    def read(w: Window):
        asked.append(w)
        x = np.full((2, int(w.height), int(w.width)), float(w.row_off), np.float32)
        return x, np.ones(x.shape[1:], bool)

    got = list(read_strips(read, g))
    assert [i for i, *_ in got] == list(range(len(g.rows))) and [r for _, r, *_ in got] == list(g.rows)
    assert all(x.shape == (2, 16, 40) and (x == r).all() and v.shape == (16, 40) for _, r, x, v in got)
    assert sorted(int(w.row_off) for w in asked) == list(g.rows)
    assert all((w.col_off, w.width, w.height) == (0, 40, 16) for w in asked)


class DictOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return {"out": self.bn(self.conv(x))}


def test_the_runner_gives_the_models_own_output_in_eval_mode():
    torch.manual_seed(0)
    model = DictOut()
    model.bn.running_mean.fill_(0.5)                  # eval mode or not makes a difference
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    model.train()
    out = ModelRunner(model)(x)
    assert not model.training and out.dtype == torch.float32 and out.device.type == "cpu"
    with torch.no_grad():
        want = model(torch.from_numpy(x))["out"]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ModelRunner(model, channels_last=False)(x), want, atol=1e-5, rtol=1e-5)
