"""The loss-curve PNG every run gets: train loss and eval metrics against step."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], path: Path, title: str = "") -> Path | None:
    """Draw ``train/loss`` (left) and every numeric eval metric (right) from metrics.jsonl records."""
    from matplotlib.figure import Figure  # no pyplot: no global backend switch, no GUI

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
    for key in loss_keys:
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax.plot(*zip(*points), marker="o", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    if keys:
        ax2 = axes[0][1]
        for key in keys:
            points = [(r["step"], r[key]) for r in evals if key in r]
            ax2.plot(*zip(*points), marker="o", label=key)
        ax2.set_xlabel("step")
        ax2.set_ylabel("eval metrics")
        ax2.legend(loc="best", fontsize=8)
        ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
