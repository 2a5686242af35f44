"""The classification loss: cross-entropy on each crop's tile label, with label smoothing,
optional class weights and optional mixup.

Mixup blends pairs of crops with a Beta(alpha, alpha) weight and the loss blends their two
labels' cross-entropies by the same weight. It needs the model (the mixed input is what is
forwarded), so the loss takes ``model`` and the batch's inputs rather than logits. Every
random draw (whether a batch is mixed, the weight, the pairing) comes from the global torch
RNG, which the trainer's checkpoints save: a resumed run mixes exactly as the first did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MixupCrossEntropy:
    """``loss(model, x, y) -> scalar``; ``mixup_alpha`` 0 is plain (smoothed, weighted) cross-entropy.

    Args:
        label_smoothing: as in ``F.cross_entropy``.
        mixup_alpha: > 0 mixes a share ``mixup_prob`` of batches with Beta(alpha, alpha) weights.
        weight: per-class weights (moved to the batch's device), or None.
    """

    def __init__(self, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, mixup_prob: float = 1.0,
                 weight: torch.Tensor | None = None):
        self.smoothing, self.prob, self.weight = label_smoothing, mixup_prob, weight
        self.beta = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha > 0 else None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.device)
        if self.beta is not None and float(torch.rand(())) < self.prob:
            lam = float(self.beta.sample())
            perm = torch.randperm(x.shape[0], device=x.device)
            logits = model(lam * x + (1 - lam) * x[perm])
            return lam * F.cross_entropy(logits, y, weight=w, label_smoothing=self.smoothing) + \
                (1 - lam) * F.cross_entropy(logits, y[perm], weight=w, label_smoothing=self.smoothing)
        return F.cross_entropy(model(x), y, weight=w, label_smoothing=self.smoothing)


def balanced_class_weights(counts, num_classes: int) -> torch.Tensor:
    """``total / (classes * count)`` per class (a class never seen counts as one tile), so each
    class contributes about equally to the loss whatever its share of the train tiles."""
    c = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    return c.sum() / (num_classes * c)
