"""``SegmentationTask``, the trainer's view of a segmentation run: ``setup`` builds the model and
the loss on the accelerator's device, ``loss`` is the configured loss on a batch's valid pixels,
``evaluate`` scores the main output."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tasks.segmentation.config import load_config
from tasks.segmentation.losses import loss_from_config
from tasks.segmentation.task import SegmentationTask
from workbench.train.seeding import seed_everything

SIZE = 32
# The default binary preset (bce: smp keeps its weights as buffers) and UNet 3+ with deep
# supervision and the CGM head, its CE term weighted from the class counts (a buffer too).
CASES = {
    "water": (["model.encoder=resnet18"], None),
    "unet3plus": (["model.encoder=resnet18", "model.kwargs.cat_channels=8"],
                  [{"name": "ce", "weight": 1.0, "class_weights": "auto"}, {"name": "dice", "weight": 1.0}]),
}
COUNTS = [300.0, 100.0]


def task_for(case: str) -> SegmentationTask:
    overrides, terms = CASES[case]
    cfg = load_config(case, overrides)
    if terms is not None:
        cfg.loss.terms = terms
    return SegmentationTask(cfg, in_channels=3, class_counts=COUNTS)


def batch_with_nodata(classes: int) -> dict:
    g = torch.Generator().manual_seed(3)
    mask = torch.randint(0, max(2, classes), (2, SIZE, SIZE), generator=g)
    mask[0, :4] = 255                 # nodata in the mask
    mask[1, :, :3] = -100             # the datasets' ignore value
    valid = torch.ones(2, SIZE, SIZE, dtype=torch.bool)
    valid[1, -5:] = False             # nodata in the image
    return {"image": torch.randn(2, 3, SIZE, SIZE, generator=g), "mask": mask, "valid": valid}


@pytest.mark.parametrize("case", sorted(CASES))
def test_setup_puts_the_model_and_the_loss_buffers_on_the_accelerators_device(case):
    task = task_for(case)
    meta = torch.device("meta")   # a device no module starts on: every tensor must have been moved
    model = task.setup(SimpleNamespace(device=meta))
    assert model is task.model
    buffers = list(task.criterion.buffers())
    assert buffers, "the loss keeps weights as buffers"
    for name, t in [*model.named_parameters(), *model.named_buffers(), *task.criterion.named_buffers()]:
        assert t.device == meta, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_of_a_batch_is_the_configured_loss_on_its_valid_pixels(case, one_torch_thread):
    task = task_for(case)
    seed_everything(0)
    model = task.setup(SimpleNamespace(device=torch.device("cpu")))
    model.train()
    batch = batch_with_nodata(task.cfg.model.classes)
    torch.manual_seed(1)          # the same dropout draws (UNet 3+'s CGM head) for both forwards
    loss, logs = task.loss(model, batch)
    assert logs == {} and loss.ndim == 0 and torch.isfinite(loss)

    fresh = loss_from_config(task.cfg, COUNTS)     # built apart from the task: the same value
    valid = batch["valid"] & (batch["mask"] != 255) & (batch["mask"] >= 0)
    torch.manual_seed(1)
    output = model(batch["image"])
    if case == "unet3plus":
        assert isinstance(output, dict) and output["aux"] and output["cls"] is not None
    expected = fresh(output, batch["mask"], valid)
    assert torch.equal(loss.detach(), expected.detach())
    assert torch.equal(loss.detach(), task.criterion(output, batch["mask"], valid).detach())
    # Nodata counts: scoring every pixel gives another value.
    everything = batch["mask"].clamp(0, max(1, task.cfg.model.classes - 1))
    assert not torch.equal(fresh(output, everything).detach(), expected.detach())


def test_evaluate_scores_the_main_output_weighted_by_valid_pixels(one_torch_thread):
    task = task_for("unet3plus")
    seed_everything(0)
    cpu = SimpleNamespace(device=torch.device("cpu"), reduce=lambda t, op: t)
    model = task.setup(cpu)
    model.eval()
    batch = batch_with_nodata(2)
    with torch.no_grad():
        metrics = task.evaluate(model, [batch], cpu)
        out = model(batch["image"])
        out = out["out"] if isinstance(out, dict) else out
        valid = batch["valid"] & (batch["mask"] != 255) & (batch["mask"] >= 0)
        expected = task.criterion(out, batch["mask"], valid)
    assert set(metrics) == {"val/loss", "val/iou", "val/miou"}
    assert metrics["val/loss"] == pytest.approx(float(expected), rel=1e-12)
    assert 0.0 <= metrics["val/iou"] <= 1.0 and 0.0 <= metrics["val/miou"] <= 1.0
