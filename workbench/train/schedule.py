"""Learning-rate schedules as one small stateful class.

Written here rather than taken from transformers/torch so that the whole schedule is
a pure function of (optimizer step, plateau state): that is what makes exact resume
easy (the state is two numbers and a counter) and the values testable at known steps.
Each param group keeps its own ``base_lr``; the schedule only supplies a factor.
"""

from __future__ import annotations

import math
from typing import Any

from workbench.train.config import ScheduleConfig


class LRSchedule:
    """Warm-up, then constant / cosine / cosine with restarts / step / plateau.

    ``factor(step)`` is the multiplier for the update made *after* ``step`` optimizer
    steps have been taken (so step 0 is the very first update).
    """

    def __init__(self, cfg: ScheduleConfig, total_steps: int, mode: str = "min"):
        self.cfg = cfg
        self.total_steps = max(1, int(total_steps))
        self.mode = mode
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0

    # -- the math -------------------------------------------------------------------
    def factor(self, step: int | None = None) -> float:
        """LR multiplier at ``step`` (default: the current step)."""
        s = self.step_count if step is None else step
        cfg = self.cfg
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        t = s - cfg.warmup_steps
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "plateau":
            return self.plateau_scale
        if cfg.name == "step":
            return cfg.gamma ** (t // cfg.step_size)
        if cfg.name == "cosine":
            horizon = max(1, self.total_steps - cfg.warmup_steps)
            return self._cosine(min(1.0, t / horizon))
        if cfg.name == "cosine_restarts":
            period = cfg.restart_period
            if cfg.restart_mult == 1.0:
                t, period = t % period, period
            else:
                while t >= period:
                    t -= period
                    period = max(1, round(period * cfg.restart_mult))
            return self._cosine(t / period)
        raise ValueError(f"unknown schedule {cfg.name!r}")

    def _cosine(self, progress: float) -> float:
        low = self.cfg.min_lr_ratio
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))

    # -- state changes --------------------------------------------------------------
    def step(self) -> None:
        """Advance by one optimizer step."""
        self.step_count += 1

    def observe(self, value: float) -> bool:
        """Feed an evaluation of the monitored metric; True when the plateau LR was reduced."""
        if self.cfg.name != "plateau":
            return False
        better = self.plateau_best is None or (value < self.plateau_best if self.mode == "min"
                                               else value > self.plateau_best)
        if better:
            self.plateau_best, self.plateau_bad = value, 0
            return False
        self.plateau_bad += 1
        if self.plateau_bad <= self.cfg.plateau_patience:
            return False
        self.plateau_scale = max(self.plateau_scale * self.cfg.plateau_factor, self.cfg.min_lr_ratio)
        self.plateau_bad = 0
        return True

    def apply(self, optimizer: Any) -> float:
        """Set every group's ``lr`` to ``base_lr * factor``; returns the first group's LR."""
        f = self.factor()
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * f
        return optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = state["plateau_best"]
        self.plateau_bad = int(state["plateau_bad"])
