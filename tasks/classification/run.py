"""``load_run``: a finished (or interrupted) classification run, ready to score or predict.

    run = load_run("latest")            # or a run folder, a name under runs/, a unique prefix
    run.model, run.cfg, run.stats, run.classes, run.in_chans

The run's best weights (EMA ones first) go into a classifier rebuilt from its own
``config.yaml`` and ``classes.json``; its band statistics normalise new tiles exactly as
the training tiles were. ``check_bands`` refuses tiles the model cannot read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

TASK = "classification"


@dataclass
class ClassificationRun:
    path: Path
    cfg: Any                 # ClassificationConfig
    model: Any               # Classifier in eval mode
    stats: Any               # BandStats
    classes: list[str]
    in_chans: int
    contract: Any = None     # InputContract (inputs.json): the bands and units the model reads

    @property
    def name(self) -> str:
        return self.path.name


def load_run(ref: str | Path, device: str | torch.device = "cpu") -> ClassificationRun:
    """A run folder, a name under runs/, a unique prefix, or ``latest``; best weights (EMA if any)."""
    from workbench.data.stats import BandStats
    from workbench.train.checkpoint import load_weights, resolve_checkpoint
    from workbench.train.run_dir import RunDir, resolve_run

    from .config import config_from_dict
    from .models import build_classifier

    run = RunDir(resolve_run(ref, TASK))
    for name in ("config.yaml", "band_stats.json", "classes.json"):
        if not (run.path / name).is_file():
            raise WorkbenchError(f"{run.path}: not a classification run (no {name})")
    cfg = config_from_dict(run.read_config())
    info = json_file(run.path / "classes.json")
    # The run's own weights replace any pretrained file it started from: do not require that file.
    model = build_classifier(dataclasses.replace(cfg.model, weights_path=None), int(info["in_chans"]),
                             len(info["classes"]), cfg.data.size)
    load_weights(resolve_checkpoint(run.path), model, prefer_ema=True)
    model.to(device).eval()
    from workbench.data.contract import load_contract

    stats = BandStats.load(run.path / "band_stats.json")
    return ClassificationRun(run.path, cfg, model, stats, list(info["classes"]), int(info["in_chans"]),
                             load_contract(run.path, stats, cfg.data.bands))


def json_file(path: Path) -> dict:
    """A run's JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"{path}: unreadable ({exc.__class__.__name__})") from None


def check_bands(tiles: Sequence, run: ClassificationRun) -> None:
    """Every tile must give the run's band count (a 4-band model cannot read 3-band tiles); runs
    that read named bands find them by name instead (``contract.tile_positions``)."""
    if run.contract is not None and run.contract.named and not run.contract.legacy:
        return
    want = run.cfg.data.bands
    for t in tiles:
        have = len(t.bands or [])
        if not have:
            continue
        if want is not None:
            if max(want) > have:
                raise WorkbenchError(f"{t.path}: has {have} bands, the run {run.name} reads bands {want}")
        elif have != run.in_chans:
            raise WorkbenchError(f"{t.path}: has {have} bands but the run {run.name} was trained on "
                                 f"{run.in_chans}-band tiles")
