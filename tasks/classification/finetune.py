"""Linear probe then staged unfreezing: optimizer groups plus one callback (``StagedUnfreezing``).

Groups: ``head`` at ``train.lr`` and ``backbone`` at ``train.lr * finetune.backbone_lr_scale``.
Epochs ``0 .. linear_probe_epochs-1`` train the head alone (a linear probe); then one more
of timm's coarse layer groups opens every ``stage_epochs`` epochs, from the top down
(``stage_epochs: 0`` opens them all at once), and the backbone's learning rate ramps up
linearly over ``warmup_epochs`` after each opening, so freshly unfrozen layers are not
hit by the full rate. Every decision is a function of the epoch alone, which is what
the trainer's exact resume requires of a hook.
"""

from __future__ import annotations

import logging

from torch import nn

from workbench.train.task import Callback

from .config import FinetuneConfig

log = logging.getLogger(__name__)


def param_groups(model, weight_decay: float, ft: FinetuneConfig) -> list[dict]:
    """``head`` and ``backbone`` groups; biases and norm scales are not decayed."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[str, list[nn.Parameter]] = {"head": [], "head_no_decay": [], "backbone": [], "backbone_no_decay": []}
    for p in model.parameters():
        part = "head" if id(p) in head_ids else "backbone"
        groups[part + ("_no_decay" if p.ndim < 2 and weight_decay else "")].append(p)
    out = []
    for name, params in groups.items():
        if not params:
            continue
        group = {"name": name, "params": params}
        if name.startswith("backbone"):
            group["lr_scale"] = ft.backbone_lr_scale
        if name.endswith("_no_decay"):
            group["weight_decay"] = 0.0
        out.append(group)
    return out


def open_groups(ft: FinetuneConfig, epoch: int, n_groups: int) -> int:
    """How many backbone layer groups (counted from the top) train in ``epoch``."""
    if epoch < ft.linear_probe_epochs:
        return 0
    cap = n_groups if ft.stages is None else min(ft.stages, n_groups)
    if ft.stage_epochs <= 0:
        return cap
    return min(cap, 1 + (epoch - ft.linear_probe_epochs) // ft.stage_epochs)


def backbone_lr_factor(ft: FinetuneConfig, epoch: int) -> float:
    """Linear warm-up of the backbone rate over ``warmup_epochs`` after the latest stage opened."""
    if ft.warmup_epochs <= 0 or epoch < ft.linear_probe_epochs:
        return 1.0
    since = epoch - ft.linear_probe_epochs
    if ft.stage_epochs > 0:
        since %= ft.stage_epochs
    return min(1.0, (since + 1) / (ft.warmup_epochs + 1))


class StagedUnfreezing(Callback):
    """At each epoch start: ``requires_grad`` per backbone layer group and the backbone groups'
    ``base_lr`` (the trainer's schedule scales it), both functions of the epoch alone."""

    def __init__(self, model, ft: FinetuneConfig, base_backbone_lr: float):
        self.model, self.ft, self.base_backbone_lr = model, ft, base_backbone_lr
        self.layers = model.layer_groups()

    def on_epoch_start(self, trainer, epoch: int) -> None:
        layers, model = self.layers, self.model
        n_open = open_groups(self.ft, epoch, len(layers))
        for i, params in enumerate(layers):
            trainable = i >= len(layers) - n_open
            for p in params:
                p.requires_grad_(trainable)
        lr = self.base_backbone_lr * backbone_lr_factor(self.ft, epoch)
        for group in trainer.optimizer.param_groups:
            if str(group.get("name", "")).startswith("backbone"):
                group["base_lr"] = lr
        model.train(model.training)   # re-apply the frozen-norm rule for the new set
        log.info("epoch %d: %d/%d backbone layer groups train, backbone lr %.2e", epoch, n_open, len(layers), lr)
