"""Segmentation metrics: threshold scans for binary water models, on top of the shared
confusion-matrix metrics of :mod:`workbench.metrics` (re-exported here for the task's callers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.errors import WorkbenchError
from workbench.metrics import (  # noqa: F401
    ConfusionMatrix,
    flatten_metrics,
    format_table,
    logits_to_labels,
    metrics_from_matrix,
    plot_confusion,
)

# ----------------------------------------------------------------------------- threshold scan


class ThresholdScan:
    """Accumulate binary confusion matrices at several thresholds over many batches.

    ``update(probs, target, valid)`` with foreground probabilities (N, H, W) or (N, 1, H, W),
    target 0/1; ``result(select)`` gives what ``threshold_scan`` returns.
    """

    def __init__(self, thresholds: Sequence[float] = (0.25, 0.5, 0.75), skip_empty_tiles: bool = False,
                 device=None):
        ts = [float(t) for t in thresholds]
        if not ts or any(not 0.0 <= t <= 1.0 for t in ts):
            raise WorkbenchError(f"thresholds must be numbers in [0, 1], got {list(thresholds)}")
        self.thresholds = ts
        self.matrices = [ConfusionMatrix(2, device=device, skip_empty_tiles=skip_empty_tiles) for _ in ts]

    def update(self, probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        if probs.ndim == 4:
            if probs.shape[1] != 1:
                raise WorkbenchError("threshold scans are for binary models: give (N, H, W) foreground probabilities")
            probs = probs[:, 0]
        for t, cm in zip(self.thresholds, self.matrices):
            cm.update((probs > t).long(), target, valid)

    def result(self, select: str = "iou", class_names: Sequence[str] | None = None) -> dict:
        if select not in ("iou", "mean_iou", "f1"):
            raise WorkbenchError(f"select must be 'iou' (foreground IoU), 'mean_iou' or 'f1', got {select!r}")
        rows = []
        for t, cm in zip(self.thresholds, self.matrices):
            m = cm.compute(class_names)
            fg = m["per_class"][1]
            rows.append({"threshold": t, "iou": fg["iou"], "f1": fg["f1"], "precision": fg["precision"],
                         "recall": fg["recall"], "mean_iou": m["mean_iou"],
                         "overall_accuracy": m["overall_accuracy"],
                         "tp": fg["tp"], "fp": fg["fp"], "fn": fg["fn"], "tn": fg["tn"]})
        best = None
        for row in rows:  # first threshold wins a tie
            score = row[select]
            if score is not None and (best is None or score > best[select]):
                best = row
        return {"results": rows, "select": select,
                "best_threshold": None if best is None else best["threshold"],
                "best_score": None if best is None else best[select]}


def threshold_scan(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                   thresholds: Sequence[float] = (0.25, 0.5, 0.75), select: str = "iou",
                   skip_empty_tiles: bool = False) -> dict:
    """Score a binary model at several probability thresholds (by default 25/50/75 %).

    Returns ``{"results": [{"threshold", "iou", "f1", "precision", "recall", "mean_iou",
    "overall_accuracy", "tp", "fp", "fn", "tn"}, ...], "select", "best_threshold",
    "best_score"}``; ``iou``/``f1``/... are the foreground's (water). ``select`` picks the best
    by foreground ``"iou"``, ``"mean_iou"`` (background and foreground) or ``"f1"``; a tie keeps
    the first (lowest) threshold. For a whole validation set use ``ThresholdScan``.
    """
    scan = ThresholdScan(thresholds, skip_empty_tiles=skip_empty_tiles)
    scan.update(probs, target, valid)
    return scan.result(select)
