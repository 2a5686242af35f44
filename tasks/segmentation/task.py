"""``SegmentationTask``: what the shared trainer drives for a segmentation model.

    task = SegmentationTask(cfg, in_channels=train_ds.channels, class_counts=counts)
    summary = Trainer(task, cfg.train, train_ds, val_ds, collate_fn=passthrough_collate, ...).fit()

A batch is a dict of ``image`` (N, C, H, W), ``mask`` (N, H, W) class indices and ``valid``
(N, H, W); nodata pixels (``valid`` False, mask 255 or the datasets' ignore value -100) are
neither trained on nor scored (``data.batch_valid``). ``setup`` builds the model and the
loss on the trainer's device: the loss is built from the run's config and the train split's
pixel counts per class (``"auto"`` class weights / pos_weight), and keeps its weights as
buffers, so it must follow the model to the device. Models with deep supervision and the
classification-guided module return a dict; the loss combines its parts, validation scores
its ``out``. Validation gives the pixel-weighted loss, the water IoU (binary: class 1; multi-class:
the mean IoU) and the mean IoU, summed over processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from workbench.train.task import TaskModule

from .config import SegmentationConfig
from .data import batch_valid


class SegmentationTask(TaskModule):
    """Args:
        cfg: the run's config (``model``, ``loss``, ``class_names``).
        in_channels: bands per window (the train dataset's ``channels``).
        class_counts: pixel counts per class on the train split (``data.scan_masks``), for
            ``"auto"`` loss weights; None when the loss needs none.
        band_names: the run's band names (its input contract), so pretrained weights of known
            bands get their first layer built by band name (``model.weight_layout``).
    """

    name = "segmentation"

    def __init__(self, cfg: SegmentationConfig, in_channels: int, class_counts: Sequence[float] | None = None,
                 band_names: Sequence[str] | None = None):
        self.cfg, self.in_channels, self.class_counts = cfg, int(in_channels), class_counts
        self.band_names = list(band_names) if band_names else None
        self.model: nn.Module | None = None
        self.criterion: nn.Module | None = None

    def setup(self, accelerator: Any) -> nn.Module:
        """The model, then the loss (that order: the model's initialisation draws from the seeded RNG
        first, as it always has), both on ``accelerator.device``."""
        from .losses import loss_from_config
        from .models import model_from_config

        device = accelerator.device
        self.model = model_from_config(self.cfg, self.in_channels, bands=self.band_names).to(device)
        self.criterion = loss_from_config(self.cfg, self.class_counts).to(device)
        return self.model

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.criterion(model(batch["image"]), batch["mask"], batch_valid(batch)), {}

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """``val/loss`` (weighted by valid pixels), ``val/iou`` and ``val/miou`` at threshold 0.5 over
        ``loader``, the loss sums and the confusion matrix summed over processes."""
        from .metrics import ConfusionMatrix, logits_to_labels, metrics_from_matrix

        classes = max(2, self.cfg.model.classes)
        cm = ConfusionMatrix(classes, device=accelerator.device)
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            out = model(batch["image"])
            if isinstance(out, dict):
                out = out["out"]
            valid = batch_valid(batch)
            loss = self.criterion(out, batch["mask"], valid)
            n = valid.sum().double()
            total += torch.stack([loss.detach().double() * n, n])
            cm.update(logits_to_labels(out.float(), 0.5), batch["mask"], valid)
        matrix = accelerator.reduce(cm.matrix, "sum")
        total = accelerator.reduce(total, "sum")
        m = metrics_from_matrix(matrix, self.cfg.class_names)
        nan = float("nan")
        water = m["per_class"][1]["iou"] if classes == 2 else m["mean_iou"]
        return {"val/loss": float(total[0] / total[1].clamp(min=1)),
                "val/iou": nan if water is None else float(water),
                "val/miou": nan if m["mean_iou"] is None else float(m["mean_iou"])}
