"""Plots of a segmentation run: confusion matrix, image | truth | prediction panel, IoU curve.

matplotlib through ``Figure`` + the Agg canvas only (no pyplot global state, no GUI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.train.plots import draw_series, rgb, save_figure


def plot_confusion_png(metrics: dict, cfg, path: Path) -> Path:
    from .metrics import plot_confusion

    return plot_confusion(metrics["matrix"], cfg.class_names, path, title="test confusion matrix")


def plot_panel(examples: Sequence[dict], path: Path, title: str = "") -> Path | None:
    """One row per example: image (RGB stretch) | truth | prediction; nodata shown grey."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not examples:
        return None
    n = len(examples)
    fig = Figure(figsize=(7.5, 2.5 * n), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 3, squeeze=False)
    for r, ex in enumerate(examples):
        valid = np.asarray(ex.get("valid", np.ones_like(ex["truth"], bool)), bool)
        for c, (name, arr) in enumerate((("image", None), ("truth", ex["truth"]), ("prediction", ex["pred"]))):
            ax = axes[r][c]
            if arr is None:
                ax.imshow(rgb(ex["image"]), interpolation="nearest")
            else:
                shown = np.where(valid, np.asarray(arr, np.float64), np.nan)
                vmax = max(1.0, float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0)
                ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        axes[r][0].set_ylabel(f"tile #{ex.get('tile', r)}", fontsize=8)
    return save_figure(fig, path, title)


def plot_iou_curve(records: list[dict], path: Path, title: str = "") -> Path | None:
    """val/iou and val/miou against step (the trainer's loss_curve.png shows the losses)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evals = [r for r in records if r.get("event") == "eval"]
    keys = [k for k in ("val/iou", "val/miou") if any(k in r for r in evals)]
    if not keys:
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    draw_series(ax, evals, keys, "IoU")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
