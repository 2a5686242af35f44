"""The loaded-run type of segmentation: ``load_run(ref) -> SegmentationRun`` for prediction and
evaluation of a finished (or running) run.

    run = load_run("segmentation-default")      # a path, a folder name under runs/, a unique prefix, 'latest'
    run.model, run.stats, run.threshold, run.bands, run.classes, run.crs

A run folder (written by the training side) holds ``config.yaml`` (the resolved
``SegmentationConfig``), ``band_stats.json`` (``BandStats.save``), ``threshold.json``
(``{"threshold": t, ...}``, binary models) and ``checkpoints/best.safetensors``
(or ``last``). The model is rebuilt from ``cfg.model`` with one input channel per
band the run reads, its weights loaded (EMA ones when the checkpoint has them)
and put in eval mode.

``inputs.json`` (``workbench.data.contract``) says which named bands in which units the model
reads; a scene is brought to them by name (and refused when it cannot be).

The CRS of the run's training tiles (``crs``) is taken from the config when it
records one (``data.crs``), else from the first file ``band_stats.json`` lists
that still exists; ``None`` when neither is known (prediction then skips the CRS
check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

from .config import SegmentationConfig


@dataclass
class SegmentationRun:
    """A run folder loaded for use: its config, the model with its best weights, the band
    statistics it normalises with, the threshold chosen on val."""

    path: Path
    cfg: SegmentationConfig
    model: Any                      # torch.nn.Module, eval mode, on CPU
    stats: Any                      # BandStats, one entry per model input band
    threshold: float = 0.5
    bands: list[int] | None = None  # 1-based band numbers read from a scene (None = all)
    classes: int = 1                # model output channels (1 = binary, sigmoid)
    crs: str | None = None          # CRS of the training tiles, when known
    weights: str = "model"          # "ema" or "model"
    contract: Any = None            # InputContract: the bands and units the model reads (inputs.json)

    @property
    def in_channels(self) -> int:
        return len(self.bands) if self.bands else len(self.stats)

    @property
    def name(self) -> str:
        return self.path.name

    def predict_defaults(self) -> dict:
        """window / overlap / batch_size / blend / tta / precision from ``cfg.predict`` (built-in defaults
        otherwise)."""
        p = getattr(self.cfg, "predict", None)
        return {"window": int(getattr(p, "window", 256) or 256), "overlap": int(getattr(p, "overlap", 32) or 0),
                "batch_size": int(getattr(p, "batch_size", 16) or 16),
                "blend": str(getattr(p, "blend", "gaussian") or "gaussian"),
                "tta": str(getattr(p, "tta", "none") or "none"),
                "precision": str(getattr(p, "precision", "auto") or "auto")}


def load_config(path: Path) -> SegmentationConfig:
    """The run's ``SegmentationConfig``; a file that does not fit the schema is a one-line error."""
    from workbench.config import build, read_yaml

    data = read_yaml(path)  # its errors name the file already
    try:
        return build(SegmentationConfig, data)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from None


def _training_crs(cfg: SegmentationConfig, stats: Any) -> str | None:
    crs = getattr(cfg.data, "crs", None)
    if crs:
        return str(crs)
    from workbench.data import geotiff

    for tile in list(getattr(stats, "tiles", []) or [])[:3]:
        if Path(tile).is_file():
            try:
                return geotiff.read_info(tile).crs
            except WorkbenchError:
                continue
    return None


def load_run(ref: str | Path, device: str | None = None) -> SegmentationRun:
    """Find a run (path, name under ``runs/``, unique prefix or ``latest``) and load its model
    (best weights, EMA ones when the checkpoint has them, eval mode; on ``device`` or CPU)."""
    from workbench.data.contract import load_contract
    from workbench.data.stats import BandStats
    from workbench.train.checkpoint import load_weights
    from workbench.train.run_dir import resolve_run

    path = Path(resolve_run(ref, "segmentation"))
    if not (path / "config.yaml").is_file():
        raise WorkbenchError(f"{ref}: run {path} has no config.yaml")
    cfg = load_config(path / "config.yaml")
    stats_path = path / "band_stats.json"
    if not stats_path.is_file():
        raise WorkbenchError(f"{ref}: run {path} has no band_stats.json")
    stats = BandStats.load(stats_path)

    bands = cfg.data.bands
    bands = [int(b) for b in bands] if bands else None
    if bands and any(b < 1 for b in bands):
        raise WorkbenchError(f"{path}/config.yaml: data.bands are 1-based band numbers, got {bands}")
    n_bands = len(bands) if bands else len(stats)
    if len(stats) != n_bands:
        if bands and len(stats) >= max(bands):
            stats = stats.select([b - 1 for b in bands])
        else:
            raise WorkbenchError(f"{stats_path}: {len(stats)} band statistics for a model of {n_bands} bands")

    classes = int(cfg.model.classes)
    from .models import model_from_config

    # spectral index channels (data.indices) follow the bands
    model = model_from_config(cfg, n_bands + len(stats.index_names), skip_missing_encoder_weights=True)
    state = load_weights(path, model, prefer_ema=True)
    model.eval()
    if device:
        model.to(device)

    threshold = 0.5
    tpath = path / "threshold.json"
    if tpath.is_file():
        try:
            threshold = float(json.loads(tpath.read_text())["threshold"])
        except (ValueError, KeyError, TypeError):
            raise WorkbenchError(f"{tpath}: expected {{\"threshold\": number}}") from None
    return SegmentationRun(path=path, cfg=cfg, model=model, stats=stats, threshold=threshold, bands=bands,
                           classes=classes, crs=_training_crs(cfg, stats), weights=state.get("weights", "model"),
                           contract=load_contract(path, stats, bands))

