"""The shared trainer: ``Trainer``, the ``TaskModule`` contract, ``TrainConfig``, ``RunDir``, ``load_weights``,
and the run steps every task shares (``run_steps``).

Names are imported lazily so that reading a config or listing runs never pulls in
torch (``workbench --help`` must stay fast).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "workbench.train.config",
    "ScheduleConfig": "workbench.train.config",
    "EarlyStoppingConfig": "workbench.train.config",
    "RunDir": "workbench.train.run_dir",
    "find_run": "workbench.train.run_dir",
    "list_runs": "workbench.train.run_dir",
    "Trainer": "workbench.train.trainer",
    "TrainState": "workbench.train.trainer",
    "TaskModule": "workbench.train.task",
    "FunctionTask": "workbench.train.task",
    "Callback": "workbench.train.task",
    "load_weights": "workbench.train.checkpoint",
    "seed_everything": "workbench.train.seeding",
    "EMA": "workbench.train.ema",
    "LRSchedule": "workbench.train.schedule",
    "EarlyStopping": "workbench.train.monitor",
    "EpochSampler": "workbench.data.samplers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench.train' has no attribute {name!r}")
