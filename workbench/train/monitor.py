"""Tracking the monitored metric: best value so far and early stopping.

Kept apart from the loop so the rules ("improved" means better by more than
``min_delta``; stop after ``patience`` evaluations without improvement) are
testable on a scripted sequence of numbers.
"""

from __future__ import annotations

import math


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when ``value`` beats ``best`` by more than ``min_delta`` in direction ``mode``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping:
    """Counts evaluations without improvement; ``should_stop`` once the count reaches patience."""

    def __init__(self, patience: int | None, min_delta: float = 0.0, mode: str = "min"):
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.best: float | None = None
        self.bad_evals = 0

    def update(self, value: float) -> bool:
        """Record one evaluation; returns True when it counted as an improvement."""
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_evals = value, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.bad_evals = int(state["bad_evals"])
