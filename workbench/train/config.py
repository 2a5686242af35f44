"""``TrainConfig``: the ``train:`` section every task config embeds.

One schema for every task so that a learning rate, a schedule or an early-stopping
rule means the same thing in segmentation, classification and generation, and so
``workbench runs compare`` can line runs of different tasks up key by key.
All step counts are *optimizer* steps (one step = ``grad_accum`` micro-batches).
This module imports no torch: configs are read by ``--help``-speed code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from workbench.errors import WorkbenchError

KNOWN_TRACKERS = ("auto", "none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WorkbenchError(message)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: a linear warm-up, then one of the named shapes.

    The factor multiplies each param group's base LR. ``cosine`` decays to
    ``min_lr_ratio`` over ``total_steps`` (None = the run's length); ``cosine_restarts``
    restarts every ``restart_period`` steps, each period ``restart_mult`` times longer;
    ``step`` multiplies by ``gamma`` every ``step_size`` steps; ``plateau`` multiplies by
    ``plateau_factor`` after ``plateau_patience`` evaluations without improvement of the
    monitored metric.
    """

    name: Literal["constant", "cosine", "cosine_restarts", "step", "plateau"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    total_steps: int | None = None
    restart_period: int = 1000
    restart_mult: float = 1.0
    step_size: int = 1000
    gamma: float = 0.1
    plateau_patience: int = 3
    plateau_factor: float = 0.1

    def validate(self) -> None:
        _check(self.warmup_steps >= 0, "train.schedule.warmup_steps: must be >= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "train.schedule.min_lr_ratio: must be between 0 and 1")
        _check(self.total_steps is None or self.total_steps >= 1, "train.schedule.total_steps: must be >= 1")
        _check(self.restart_period >= 1, "train.schedule.restart_period: must be >= 1 step")
        _check(self.restart_mult >= 1.0, "train.schedule.restart_mult: must be >= 1")
        _check(self.step_size >= 1, "train.schedule.step_size: must be >= 1 step")
        _check(0.0 < self.gamma <= 1.0, "train.schedule.gamma: must be in (0, 1]")
        _check(self.plateau_patience >= 0, "train.schedule.plateau_patience: must be >= 0")
        _check(0.0 < self.plateau_factor < 1.0, "train.schedule.plateau_factor: must be in (0, 1)")


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored metric has not improved by ``min_delta`` for ``patience`` evaluations."""

    patience: int | None = None
    min_delta: float = 0.0

    def validate(self) -> None:
        _check(self.patience is None or self.patience >= 1, "train.early_stopping.patience: must be >= 1 or null")
        _check(self.min_delta >= 0.0, "train.early_stopping.min_delta: must be >= 0")


@dataclass
class TrainConfig:
    """Everything the shared trainer needs; tasks embed it as ``train: TrainConfig``."""

    epochs: int = 10
    max_steps: int | None = None          # stop after this many optimizer steps (None = run all epochs)
    batch_size: int = 16                     # per process
    eval_batch_size: int | None = None    # None = batch_size
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9                    # sgd only
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    ema_decay: float | None = None
    seed: int = 0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where native (GPU, AMX CPU)
    checkpoint_every_steps: int | None = None  # None: at each epoch end only
    eval_every_epochs: int = 1
    num_workers: int = 0
    log_every_steps: int = 10
    trackers: list[str] = field(default_factory=lambda: ["auto"])
    cpu: bool = False                        # force CPU even when a GPU is present

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs: must be >= 1")
        # numpy, torch and Python all take it: numpy's generators refuse negatives, 2**32 and up
        _check(0 <= self.seed < 2 ** 32, f"train.seed {self.seed}: must be between 0 and {2 ** 32 - 1}")
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps: must be >= 1 or null")
        _check(self.batch_size >= 1, "train.batch_size: must be >= 1")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1, "train.eval_batch_size: must be >= 1")
        _check(self.lr > 0, "train.lr: must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay: must be >= 0")
        _check(0.0 <= self.momentum < 1.0, "train.momentum: must be in [0, 1)")
        _check(self.grad_accum >= 1, "train.grad_accum: must be >= 1")
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0, "train.clip_grad_norm: must be > 0 or null")
        _check(self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "train.ema_decay: must be in (0, 1) or null")
        _check(bool(self.monitor.strip()), "train.monitor: must name a metric, e.g. val/loss")
        _check(self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
               "train.checkpoint_every_steps: must be >= 1 or null")
        _check(self.eval_every_epochs >= 1, "train.eval_every_epochs: must be >= 1")
        _check(self.num_workers >= 0, "train.num_workers: must be >= 0")
        _check(self.log_every_steps >= 1, "train.log_every_steps: must be >= 1")
        for name in self.trackers:
            _check(name in KNOWN_TRACKERS,
                   f"train.trackers: unknown tracker {name!r} (known: {', '.join(KNOWN_TRACKERS)})")
        self.schedule.validate()
        self.early_stopping.validate()
