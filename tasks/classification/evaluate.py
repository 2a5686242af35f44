"""Score and apply a classification run: tile-level metrics, the report PNGs, loading a run.

    run = load_run("latest")                     # model (eval mode), cfg, band stats, classes
    result = score_tiles(run.model, tiles, run.cfg, run.stats, run.classes, "cpu", 256)

Predictions are per tile (the mean of its crops' logits, ``data.tile_logits``); the score
is the softmax probability of the predicted class.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    path: Path
    cfg: Any                 # ClassificationConfig
    model: Any               # Classifier in eval mode
    stats: Any               # BandStats
    classes: list[str]
    in_chans: int

    @property
    def name(self) -> str:
        return self.path.name


def load_run(ref: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """A run folder, a name under runs/, a unique prefix, or ``latest``; best weights (EMA if any)."""
    from workbench.data.stats import BandStats
    from workbench.train.checkpoint import load_weights, resolve_checkpoint
    from workbench.train.run_dir import RunDir, resolve_run

    from .config import config_from_dict
    from .models import build_classifier

    run = RunDir(resolve_run(ref, "classification"))
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
    return LoadedRun(run.path, cfg, model, BandStats.load(run.path / "band_stats.json"), list(info["classes"]),
                     int(info["in_chans"]))


def json_file(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"{path}: unreadable ({exc.__class__.__name__})") from None


def check_bands(tiles: Sequence, run: LoadedRun) -> None:
    """Every tile must give the run's band count (a 4-band model cannot read 3-band tiles)."""
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


def score_tiles(model, tiles: Sequence, cfg, stats, classes: list[str], device, batch_size: int,
                progress: bool = False) -> dict:
    """Per-tile predictions and, for tiles whose label is one of ``classes``, the metrics."""
    from workbench.metrics import ConfusionMatrix

    from .data import eval_dataset, label_indices, tile_logits

    ds = eval_dataset(tiles, cfg, stats)
    logits = tile_logits(model, ds, device, batch_size, progress=progress)
    probs = torch.softmax(logits, dim=1)
    score, pred = probs.max(dim=1)
    labels = label_indices(tiles, cfg, classes)
    cm = ConfusionMatrix(len(classes))
    cm.update(pred, labels, labels >= 0)
    metrics = cm.compute(classes)
    metrics["tiles"] = int((labels >= 0).sum())
    return {"tiles": list(tiles), "probs": probs, "pred": pred, "score": score, "labels": labels,
            "metrics": metrics, "dataset": ds}


def write_report(run, result: dict, classes: list[str], title: str, verbose: bool = True) -> None:
    """confusion_matrix.png, examples.png (right and wrong tiles), and the printed report."""
    from workbench.metrics import format_report, plot_confusion
    from workbench.train.plots import draw_plots

    m = result["metrics"]
    draw_plots(run, {"confusion_matrix.png": lambda p: plot_confusion(m["matrix"], classes, p, title=title),
                     "examples.png": lambda p: plot_examples(result, classes, p, title=title)})
    if verbose:
        print(f"\n{title}: {m['tiles']} tiles")
        print(format_report(m, classes))


def plot_examples(result: dict, classes: list[str], path: Path, title: str = "", per_class: int = 4) -> Path | None:
    """A grid of tiles per true class: the first correct ones, then mistakes (red titles)."""
    from matplotlib.figure import Figure

    from workbench.train.plots import rgb, save_figure

    labels, pred, score = result["labels"], result["pred"], result["score"]
    picks: list[int] = []
    for c in range(len(classes)):
        idx = torch.nonzero(labels == c).flatten().tolist()
        idx = idx[::max(1, len(idx) // (4 * per_class))]   # spread over the split, not the first ids
        right = [i for i in idx if pred[i] == c][:per_class // 2]
        wrong = [i for i in idx if pred[i] != c][:per_class - len(right)]
        picks += right + wrong + [i for i in idx if i not in right and i not in wrong][:per_class - len(right) - len(wrong)]
    if not picks:
        return None
    cols = per_class
    rows = int(np.ceil(len(picks) / cols))
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    ds = result["dataset"]
    first_window = _first_windows(ds)
    for ax in axes.flat:
        ax.axis("off")
    # One stretch for the whole grid (images side by side): a per-tile stretch blows the
    # compression noise of a uniform sea or ice tile up into false texture.
    images = [ds[int(first_window[i])]["image"].numpy() for i in picks]
    joint = rgb(np.concatenate(images, axis=-1))
    width = images[0].shape[-1]
    for k, (ax, i) in enumerate(zip(axes.flat, picks)):
        ax.imshow(joint[:, k * width:(k + 1) * width], interpolation="nearest")
        ok = int(pred[i]) == int(labels[i])
        ax.set_title(f"{classes[int(labels[i])]} -> {classes[int(pred[i])]} {float(score[i]):.2f}",
                     fontsize=8, color="black" if ok else "red")
    return save_figure(fig, path, title or "test tiles: true -> predicted (score)", dpi=90)


def _first_windows(ds) -> np.ndarray:
    """Index of each tile's first grid window in ``ds``."""
    first = np.full(len(ds.tiles), -1, np.int64)
    windows = ds.windows(np.arange(len(ds)))
    tiles = np.asarray(windows.tile)
    for w in range(len(tiles) - 1, -1, -1):
        first[tiles[w]] = w
    return first
