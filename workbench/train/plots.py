"""The loss-curve PNG every run gets, and the two drawing steps every run plot shares.

Plots use matplotlib's ``Figure`` directly (no pyplot: no global backend switch, no GUI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw_series(ax: Any, evals: list[dict], keys: list[str], ylabel: str) -> None:
    """One line per metric key over ``step`` from metrics.jsonl eval records, styled alike in every plot."""
    for key in keys:
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax.plot(*zip(*points), marker="o", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)


def save_figure(fig: Any, path: str | Path, title: str = "", dpi: float | None = None) -> Path:
    """Title, tight layout, then the PNG (its folder made if needed)."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi if dpi is not None else "figure", format="png")
    return path


def plot_curves(records: list[dict], path: Path, title: str = "") -> Path | None:
    """Draw ``train/loss`` (left) and every numeric eval metric (right) from metrics.jsonl records."""
    from matplotlib.figure import Figure

    train = [(r["step"], r["train/loss"]) for r in records if r.get("event") == "train" and "train/loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    keys = sorted({k for r in evals for k, v in r.items() if "/" in k and isinstance(v, (int, float))})
    loss_keys = [k for k in keys if k.endswith("loss")]
    keys = [k for k in keys if k not in loss_keys]
    if not train and not loss_keys and not keys:
        return None
    fig = Figure(figsize=(11 if keys else 6, 4))
    axes = fig.subplots(1, 2 if keys else 1, squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train/loss", lw=1)
    draw_series(ax, evals, loss_keys, "loss")
    if keys:
        draw_series(axes[0][1], evals, keys, "eval metrics")
    return save_figure(fig, path, title, dpi=100)


def rgb(image: Any, low: float = 2.0, high: float = 98.0) -> Any:
    """(C, H, W) -> (H, W, 3) in [0, 1]: the first three bands (one band: grey), each stretched
    between its ``low`` and ``high`` percentiles."""
    import numpy as np

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    bands = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    out = np.empty(bands.shape, np.float64)
    for i, b in enumerate(bands):
        lo, hi = np.percentile(b, [low, high])
        out[i] = np.clip((b - lo) / (hi - lo), 0, 1) if hi > lo else 0.5
    return out.transpose(1, 2, 0)


def draw_plots(run: Any, plots: dict[str, Any]) -> None:
    """Draw each ``{file name: fn(path)}`` into the run's plots folder; a plot that fails is a
    warning, never a failed run (the metrics are already written)."""
    import logging

    for name, fn in plots.items():
        try:
            fn(run.plot_path(name))
        except Exception as exc:
            logging.getLogger(__name__).warning("could not draw %s: %s", name, exc)
