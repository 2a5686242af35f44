"""``ClassificationTask``: what the shared trainer drives for a tile classifier.

    task = ClassificationTask(cfg, classes, in_chans, train_labels, val_labels, class_weights)
    summary = Trainer(task, cfg.train, train_ds, val_ds, ...).fit()

A batch is a set of crops with the index of the tile each came from (``batch["tile"]``);
the labels are per tile, looked up here, so one dataset serves any label source. ``setup``
builds the classifier on the trainer's device; the loss is cross-entropy with label
smoothing, class weights and mixup as configured (``losses``); validation gives crop-level
loss, accuracy and macro-F1 summed over processes; the optimizer has ``head`` and
``backbone`` groups and, when ``finetune`` asks for it, a callback opens the backbone
stage by stage (``finetune``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.train.task import Callback, TaskModule

from .config import ClassificationConfig
from .losses import MixupCrossEntropy


class ClassificationTask(TaskModule):
    """Args:
        cfg: the run's config.
        classes: the class order (index = logit position).
        in_chans: bands per crop.
        train_labels / val_labels: class index per tile of each dataset (-1: not scored).
        class_weights: per-class loss weights, or None.
    """

    name = "classification"

    def __init__(self, cfg: ClassificationConfig, classes: Sequence[str], in_chans: int, train_labels: torch.Tensor,
                 val_labels: torch.Tensor, class_weights: torch.Tensor | None = None,
                 band_names: Sequence[str] | None = None):
        self.cfg, self.classes, self.in_chans = cfg, list(classes), in_chans
        self.band_names = list(band_names) if band_names else None   # for band-aware pretrained weights
        self.train_labels, self.val_labels = train_labels, val_labels
        lc = cfg.loss
        self.criterion = MixupCrossEntropy(lc.label_smoothing, lc.mixup_alpha, lc.mixup_prob, class_weights)
        self.model: nn.Module | None = None

    def setup(self, accelerator: Any) -> nn.Module:
        from .models import build_classifier

        model = build_classifier(self.cfg.model, self.in_chans, len(self.classes), self.cfg.data.size,
                                 bands=self.band_names)
        model.freeze_norm = self.cfg.finetune.freeze_norm
        self.model = model.to(accelerator.device)
        return self.model

    def param_groups(self, model: nn.Module) -> list[dict]:
        from .finetune import param_groups

        return param_groups(model, self.cfg.train.weight_decay, self.cfg.finetune)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["image"]
        y = self.train_labels.to(x.device)[batch["tile"].long()]
        return self.criterion(model, x, y), {}

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """Crop-level loss, accuracy and macro-F1 on the validation tiles (summed over processes)."""
        from workbench.metrics import ConfusionMatrix, metrics_from_matrix

        cm = ConfusionMatrix(len(self.classes), device=accelerator.device)
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            logits = model(batch["image"]).float()
            y = self.val_labels.to(logits.device)[batch["tile"].long()]
            keep = y >= 0
            if keep.any():
                loss = F.cross_entropy(logits[keep], y[keep], reduction="sum")
                total += torch.stack([loss.double(), keep.sum().double()])
            cm.update(logits.argmax(1), y, keep)
        matrix = accelerator.reduce(cm.matrix, "sum")
        total = accelerator.reduce(total, "sum")
        m = metrics_from_matrix(matrix, self.classes)
        nan = float("nan")
        return {"val/loss": float(total[0] / total[1].clamp(min=1)),
                "val/accuracy": nan if m["overall_accuracy"] is None else m["overall_accuracy"],
                "val/macro_f1": nan if m["mean_f1"] is None else m["mean_f1"]}

    def callbacks(self) -> list[Callback]:
        from .finetune import StagedUnfreezing

        ft = self.cfg.finetune
        if self.model is None or not (ft.staged or ft.warmup_epochs):
            return []
        return [StagedUnfreezing(self.model, ft, self.cfg.train.lr * ft.backbone_lr_scale)]
