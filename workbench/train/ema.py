"""Exponential moving average of model weights.

A shadow copy ``s <- decay * s + (1 - decay) * w`` after every optimizer step.
Evaluation and the best checkpoint use the shadow when EMA is on; ``applied`` swaps
it in and back by exact copies, so evaluating never perturbs the training weights
(exact resume depends on that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow of every parameter and buffer of ``model`` (integer buffers are copied, not averaged)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the shadow."""
        self.num_updates += 1
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run a block with the EMA weights in ``model``, then put the training weights back."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                model.load_state_dict(backup, strict=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor], num_updates: int = 0) -> None:
        for name, shadow in self.shadow.items():
            shadow.copy_(tensors[name])
        self.num_updates = num_updates
