"""Score a classifier on tiles: tile-level metrics, the report PNGs, a run on a split.

    result = evaluate_run(load_run("latest"), {"bbox": [-30, 30, 60, 75]}, split="val")
    result = score_tiles(run.model, tiles, run.cfg, run.stats, run.classes, "cpu", 256)

Predictions are per tile (the mean of its crops' logits, ``data.tile_logits``); the score
is the softmax probability of the predicted class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def evaluate_run(run, query: dict, split: str | None = None, catalog: str | Path | None = None,
                 batch_size: int = 256, device: str | torch.device = "cpu", progress: bool = False,
                 catalog_immutable: bool = False) -> dict:
    """Score a loaded run (``run.load_run``) on the labelled tiles of ``split`` (default: the run's
    test split) that its own query, narrowed by ``query``, selects. Returns the metrics with
    ``run``, ``split`` and the ``query`` used."""
    from workbench.data.catalog import open_existing

    from .data import select_tiles
    from .run import check_bands

    split = split or run.cfg.data.test_split
    q = run.cfg.data.query(query)
    with open_existing(catalog or run.cfg.data.catalog, read_only=True, immutable=catalog_immutable) as cat:
        tiles = select_tiles(cat, q, split, run.cfg)
    check_bands(tiles, run)
    from workbench.data.contract import tile_positions
    from workbench.train.run_steps import config_reading

    cfg = config_reading(run.cfg, tile_positions(run.contract, tiles, run=run.name))
    result = score_tiles(run.model, tiles, cfg, run.stats, run.classes, torch.device(device), batch_size,
                         progress=progress)
    return {"run": str(run.path), "split": split, "query": q, **result["metrics"]}


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
        rest = [i for i in idx if i not in right and i not in wrong]
        picks += right + wrong + rest[:per_class - len(right) - len(wrong)]
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
