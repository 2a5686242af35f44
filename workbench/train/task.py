"""The contract between a task and the one ``Trainer``: ``TaskModule``, ``FunctionTask``, ``Callback``.

A task hands the trainer an object, not a bag of functions, because some of what a task
builds needs the device the trainer picks: a loss with class-weight tensors, a frozen
VAE, noise-scheduler tables. So the trainer creates the ``Accelerator`` first and then
asks the task to build its model on it (``setup``), in the spirit of TorchGeo's
``BaseTask`` without Lightning::

    class MyTask(TaskModule):
        name = "mytask"                       # runs/mytask-<run name>-<time>/

        def setup(self, accelerator):         # after seed_everything(cfg.seed)
            self.model = build_model().to(accelerator.device)
            return self.model

        def loss(self, model, batch):
            return F.mse_loss(model(batch["x"]), batch["y"]), {}

    summary = Trainer(MyTask(), cfg, train_ds, val_ds).fit()

The trainer seeds, calls ``setup``, then seeds again before it builds loaders and the
optimizer: a run is bit-for-bit what it was when a task seeded, built its model itself
and then built the trainer. No torch work happens at import beyond importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.train.data import batch_size_of

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, float]]"]
EvaluateFn = Callable[[nn.Module, Any, Any], "dict[str, float]"]


class Callback:
    """Hooks into the trainer's loop; override the ones you need. ``trainer`` is the running ``Trainer``.

    Hooks that change the model (``requires_grad`` for staged unfreezing, a group's
    ``base_lr``) must depend only on ``epoch`` / ``trainer.state``: a resumed run
    calls ``on_epoch_start`` again for the epoch it resumes in.
    """

    def on_fit_start(self, trainer: Any) -> None: ...
    def on_epoch_start(self, trainer: Any, epoch: int) -> None: ...
    def on_step_end(self, trainer: Any) -> None: ...
    def on_evaluate(self, trainer: Any, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Any, epoch: int) -> None: ...
    def on_fit_end(self, trainer: Any, summary: dict) -> None: ...


class TaskModule:
    """What one task brings to the trainer: its model, objective, metrics and hooks.

    ``name`` is the run folder's prefix (``runs/<name>-<run name>-<time>``) and the
    ``task`` field of the run's summary.
    """

    name: str = "task"

    def setup(self, accelerator: Any) -> nn.Module:
        """Build the model and everything that needs the device; return the model.

        Called once, after the trainer created ``accelerator`` and called
        ``seed_everything(cfg.seed)``, so random initialisation is the same as in a
        script that seeds and builds the model itself. The trainer wraps and moves the
        returned module (``accelerator.prepare``); keep a reference if ``loss`` or a
        callback needs the unwrapped one.
        """
        raise NotImplementedError(f"{type(self).__name__}.setup(accelerator) must build and return the model")

    def param_groups(self, model: nn.Module) -> list[dict] | None:
        """Optimizer groups (``params`` plus optional ``name``, ``lr`` or ``lr_scale``,
        ``weight_decay``); ``None`` gives the trainer's decay / no-decay groups."""
        return None

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch and extra values to log (``{name: float}``)."""
        raise NotImplementedError(f"{type(self).__name__}.loss(model, batch) must return (loss, logs)")

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """Validation metrics over ``loader`` (the same on every process: reduce or gather them).

        Default: the sample-weighted mean of ``loss`` as ``val/loss``, summed over processes.
        """
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            loss, _ = self.loss(model, batch)
            n = batch_size_of(batch) or 1
            total += torch.stack([loss.detach().double() * n, torch.tensor(float(n), device=total.device,
                                                                           dtype=torch.float64)])
        total = accelerator.reduce(total, "sum")
        return {"val/loss": (total[0] / total[1].clamp(min=1)).item()}

    def callbacks(self) -> list[Callback]:
        """The task's own hooks (e.g. staged unfreezing); called once, after ``setup``."""
        return []


class FunctionTask(TaskModule):
    """A ready model and plain functions as a ``TaskModule``, for small scripts and tests.

    Args:
        model: the ``nn.Module`` to train (built by the caller, after seeding).
        loss_fn: ``(model, batch) -> (loss tensor, {name: float})``.
        evaluate_fn: ``(model, val_loader, accelerator) -> {"val/loss": ..., ...}``
            (default: the mean of ``loss_fn``).
        param_groups: optimizer groups for ``model`` (default: decay / no-decay groups).
        name: the run folder prefix.
        callbacks: the task's hooks (see ``Callback``).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, evaluate_fn: EvaluateFn | None = None,
                 param_groups: Iterable[dict] | None = None, name: str = "task", callbacks: Sequence[Callback] = ()):
        self.model, self.loss_fn, self.evaluate_fn = model, loss_fn, evaluate_fn
        self.groups = None if param_groups is None else list(param_groups)
        self.name = name
        self._callbacks = list(callbacks)

    def setup(self, accelerator: Any) -> nn.Module:
        return self.model

    def param_groups(self, model: nn.Module) -> list[dict] | None:
        return self.groups

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(model, batch)

    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        if self.evaluate_fn is None:
            return super().evaluate(model, loader, accelerator)
        return self.evaluate_fn(model, loader, accelerator)

    def callbacks(self) -> list[Callback]:
        return list(self._callbacks)
