"""Confusion-matrix metrics shared by every task: the accumulator, the metrics dict, the
per-class tables and the confusion-matrix PNG.

``ConfusionMatrix(num_classes)`` accumulates an integer (C, C) matrix on any device:
rows are the TRUE class, columns the PREDICTED class. Segmentation feeds it pixels
(N, H, W), classification feeds it tiles (N,); a binary model (one logit) is scored
as two classes, 0 = background and 1 = foreground. Only entries with ``valid`` True
count. For multi-process runs reduce ``cm.matrix`` with a sum
(``accelerator.reduce(cm.matrix, "sum")``, or ``cm.all_reduce()``), then ``compute()``.

Per class c (one-vs-rest): TP = M[c, c], FP = column sum - TP, FN = row sum - TP,
TN = total - TP - FP - FN; IoU = TP / (TP + FP + FN); F1 = Dice = 2TP / (2TP + FP + FN);
precision = TP / (TP + FP); recall = TP / (TP + FN); specificity = TN / (TN + FP);
accuracy = (TP + TN) / total. A ratio with a zero denominator is ``None`` (JSON-safe);
means (``mean_iou``, ``mean_f1`` = macro F1, ...) are over the classes where the value is
defined; ``weighted_*`` weight each class by its support. ``overall_accuracy`` = trace / total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.train.plots import save_figure

_RATIOS = ("iou", "f1", "precision", "recall", "specificity", "accuracy")


def logits_to_labels(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class labels from logits (N, C, ...): ``sigmoid > threshold`` for one channel, else ``argmax``
    over C. Pixels (N, C, H, W) give (N, H, W); tiles (N, C) give (N,)."""
    if logits.ndim < 2:
        raise WorkbenchError(f"expected logits (N, C, ...), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0].float()) > threshold).long()
    return logits.argmax(dim=1)


def _div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b > 0 else None


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


class ConfusionMatrix:
    """Pixel confusion-matrix accumulator (see module docstring).

    Args:
        num_classes: classes scored (2 for a binary model).
        device: where the matrix lives (default: the device of the first update).
        threshold: for float one-channel predictions passed to ``update`` (sigmoid > threshold).
        skip_empty_tiles: exclude from scoring every tile whose valid target is all
            background (no pixel != ``background_index``): its false positives are not counted.
            ``tiles_skipped`` counts them.
        background_index: the background class.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None, threshold: float = 0.5,
                 skip_empty_tiles: bool = False, background_index: int = 0):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise WorkbenchError(f"ConfusionMatrix needs num_classes >= 2 (a binary model is 2), got {num_classes!r}")
        if not 0 <= background_index < num_classes:
            raise WorkbenchError(f"background_index {background_index} is not a class of {num_classes}")
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.skip_empty_tiles = bool(skip_empty_tiles)
        self.background_index = int(background_index)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long,
                                  device=torch.device(device) if device is not None else None)
        self._device_fixed = device is not None
        self.tiles_skipped = torch.zeros((), dtype=torch.long, device=self.matrix.device)

    def reset(self) -> None:
        self.matrix.zero_()
        self.tiles_skipped.zero_()

    def to(self, device) -> ConfusionMatrix:
        self.matrix = self.matrix.to(device)
        self.tiles_skipped = self.tiles_skipped.to(device)
        self._device_fixed = True
        return self

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
               sample_mask: torch.Tensor | None = None) -> None:
        """Add a batch.

        ``pred``: (N, H, W) integer labels, or float logits (N, C, H, W) (turned into labels
        with ``logits_to_labels(pred, self.threshold)``). ``target``: (N, H, W) integers.
        ``valid``: (N, H, W) bool, False = nodata. ``sample_mask``: (N,) bool, False drops a
        whole tile (applied in addition to ``skip_empty_tiles``).
        """
        if pred.is_floating_point():
            pred = logits_to_labels(pred, self.threshold)
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if pred.shape != target.shape:
            raise WorkbenchError(f"prediction shape {tuple(pred.shape)} does not match target {tuple(target.shape)}")
        if not self._device_fixed:
            self.to(pred.device)
        dev = self.matrix.device
        pred = pred.to(dev).long()
        target = target.to(dev).long()
        keep = torch.ones_like(target, dtype=torch.bool) if valid is None else valid.to(dev).bool()
        if valid is not None and valid.shape != target.shape:
            raise WorkbenchError(f"valid mask shape {tuple(valid.shape)} does not match target {tuple(target.shape)}")
        if target.ndim >= 2:
            tile_keep = torch.ones(target.shape[0], dtype=torch.bool, device=dev)
            if sample_mask is not None:
                tile_keep &= sample_mask.to(dev).bool().reshape(-1)
            if self.skip_empty_tiles:
                has_fg = ((target != self.background_index) & keep).flatten(1).any(dim=1)
                self.tiles_skipped += (tile_keep & ~has_fg).sum()
                tile_keep &= has_fg
            keep = keep & tile_keep.reshape(-1, *([1] * (target.ndim - 1)))
        c = self.num_classes
        # Labels outside 0..C-1 (e.g. an ignore value) on a valid pixel would corrupt the
        # matrix: treat them as not valid.
        keep = keep & (target >= 0) & (target < c) & (pred >= 0) & (pred < c)
        idx = (target * c + pred)[keep]
        self.matrix += torch.bincount(idx, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts (e.g. from another process) into this one."""
        if other.num_classes != self.num_classes:
            raise WorkbenchError("cannot merge confusion matrices of different class counts")
        self.matrix += other.matrix.to(self.matrix.device)
        self.tiles_skipped += other.tiles_skipped.to(self.matrix.device)
        return self

    __iadd__ = merge

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over ``torch.distributed`` processes (no-op when not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
            dist.all_reduce(self.tiles_skipped, op=dist.ReduceOp.SUM)
        return self

    @classmethod
    def from_matrix(cls, matrix, **kwargs) -> ConfusionMatrix:
        m = torch.as_tensor(matrix).long()
        cm = cls(m.shape[0], device=m.device, **kwargs)
        cm.matrix = m.clone()
        return cm

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """Metrics as plain Python numbers (see module docstring for the definitions)."""
        return metrics_from_matrix(self.matrix, class_names, tiles_skipped=int(self.tiles_skipped))


def metrics_from_matrix(matrix, class_names: Sequence[str] | None = None, tiles_skipped: int = 0) -> dict:
    """The metrics dict of a (C, C) confusion matrix (rows true, columns predicted)."""
    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    c = m.shape[0]
    names = _names(class_names, c)
    total = float(m.sum())
    per_class = []
    for i in range(c):
        tp = float(m[i, i])
        fp = float(m[:, i].sum()) - tp
        fn = float(m[i, :].sum()) - tp
        tn = total - tp - fp - fn
        per_class.append({
            "name": names[i], "index": i,
            "iou": _div(tp, tp + fp + fn), "f1": _div(2 * tp, 2 * tp + fp + fn),
            "precision": _div(tp, tp + fp), "recall": _div(tp, tp + fn),
            "specificity": _div(tn, tn + fp), "accuracy": _div(tp + tn, total),
            "tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn), "support": int(tp + fn),
        })
    out = {
        "num_classes": c,
        "pixels": int(total),
        "tiles_skipped": int(tiles_skipped),
        "overall_accuracy": _div(float(m.diagonal().sum()), total),
        "mean_iou": _mean(p["iou"] for p in per_class),
        "mean_f1": _mean(p["f1"] for p in per_class),
        "mean_precision": _mean(p["precision"] for p in per_class),
        "mean_recall": _mean(p["recall"] for p in per_class),
        "weighted_f1": _weighted(per_class, "f1"),
        "weighted_precision": _weighted(per_class, "precision"),
        "weighted_recall": _weighted(per_class, "recall"),
        "per_class": per_class,
        "matrix": m.long().tolist(),
    }
    return out


def _weighted(per_class: list[dict], key: str) -> float | None:
    """Support-weighted mean of ``key`` over classes where it is defined (sklearn's 'weighted avg')."""
    pairs = [(r[key], r["support"]) for r in per_class if r[key] is not None and r["support"] > 0]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


def _names(class_names: Sequence[str] | None, c: int) -> list[str]:
    if class_names is None:
        return ["background", "foreground"] if c == 2 else [f"class_{i}" for i in range(c)]
    names = [str(n) for n in class_names]
    if len(names) != c:
        raise WorkbenchError(f"{len(names)} class names given for {c} classes: {names}")
    return names


def flatten_metrics(metrics: Mapping, prefix: str = "", undefined: float | None = None) -> dict[str, float | None]:
    """One flat dict for ``metrics.jsonl``: ``mean_iou``, ``overall_accuracy``, ...,
    ``iou/<class>``, ``f1/<class>``, ``precision/<class>``, ``recall/<class>``.

    ``undefined`` replaces ``None`` (a 0/0 ratio): pass ``float("nan")`` where every value
    must be a float (the trainer's ``evaluate_fn`` contract)."""
    flat = {f"{prefix}{k}": metrics[k] for k in ("overall_accuracy", "mean_iou", "mean_f1",
                                                 "mean_precision", "mean_recall") if k in metrics}
    for row in metrics.get("per_class", []):
        for k in ("iou", "f1", "precision", "recall"):
            flat[f"{prefix}{k}/{row['name']}"] = row[k]
    return {k: (undefined if v is None else v) for k, v in flat.items()}


# ----------------------------------------------------------------------------- table and plot


def format_table(metrics: Mapping | ConfusionMatrix, class_names: Sequence[str] | None = None,
                 digits: int = 4) -> str:
    """The per-pixel table a segmentation run prints: one row per class with IoU and the counts,
    then the means. (Classification prints :func:`format_report`.)"""
    if isinstance(metrics, ConfusionMatrix):
        metrics = metrics.compute(class_names)
    rows = metrics["per_class"]
    names = [r["name"] for r in rows] if class_names is None else _names(class_names, len(rows))
    ratio_cols = [("IoU", "iou"), ("F1", "f1"), ("Precision", "precision"), ("Recall", "recall"),
                  ("Specificity", "specificity"), ("Accuracy", "accuracy")]
    count_cols = [("TP", "tp"), ("FP", "fp"), ("FN", "fn"), ("TN", "tn"), ("Support", "support")]

    def num(v):
        return "-" if v is None else f"{v:.{digits}f}"

    header = ["Class"] + [h for h, _ in ratio_cols] + [h for h, _ in count_cols]
    body = []
    for name, r in zip(names, rows):
        body.append([name] + [num(r[k]) for _, k in ratio_cols] + [str(r[k]) for _, k in count_cols])
    means = {"iou": metrics.get("mean_iou"), "f1": metrics.get("mean_f1"),
             "precision": metrics.get("mean_precision"), "recall": metrics.get("mean_recall")}
    body.append(["mean"] + [num(means[k]) if k in means else "" for _, k in ratio_cols] + [""] * len(count_cols))
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule] + [line(r) for r in body[:-1]] + [rule, line(body[-1])]
    out.append(f"overall accuracy {num(metrics.get('overall_accuracy'))}   mean IoU {num(metrics.get('mean_iou'))}"
               f"   pixels {metrics.get('pixels', 0)}"
               + (f"   tiles skipped {metrics['tiles_skipped']}" if metrics.get("tiles_skipped") else ""))
    return "\n".join(out)


def plot_confusion(cm, class_names: Sequence[str] | None, path: str | Path, normalize: bool = True,
                   title: str | None = None) -> Path:
    """Write the confusion matrix as a PNG (matplotlib, Agg canvas, no pyplot state).

    ``cm``: a ``ConfusionMatrix``, a tensor, an array or nested lists (rows true, columns
    predicted). Colours show row-normalised fractions (recall per true class) when
    ``normalize``; every cell is annotated with its count (and percentage of its row).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = cm.matrix if isinstance(cm, ConfusionMatrix) else cm
    m = np.asarray(torch.as_tensor(m).detach().cpu().numpy(), dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise WorkbenchError(f"a confusion matrix must be square, got shape {m.shape}")
    c = m.shape[0]
    names = _names(class_names, c)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    shown = frac if normalize else m

    size = max(3.5, 0.9 * c + 2.0)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shown.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(c), labels=names, rotation=45 if c > 3 else 0, ha="right" if c > 3 else "center")
    ax.set_yticks(range(c), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    fontsize = 9 if c <= 6 else 7
    for i in range(c):
        for j in range(c):
            dark = frac[i, j] > 0.5 if normalize else shown[i, j] > 0.5 * shown.max()
            ax.text(j, i, f"{int(m[i, j]):,}\n{100 * frac[i, j]:.1f}%", ha="center", va="center",
                    fontsize=fontsize, color="white" if dark else "black")
    return save_figure(fig, path)


def format_report(metrics: Mapping | ConfusionMatrix, class_names: Sequence[str] | None = None,
                  digits: int = 4) -> str:
    """The classification report users know from scikit-learn: precision, recall, F1 and
    support per class, then accuracy, the macro average and the support-weighted average."""
    if isinstance(metrics, ConfusionMatrix):
        metrics = metrics.compute(class_names)
    rows = metrics["per_class"]
    names = [r["name"] for r in rows] if class_names is None else _names(class_names, len(rows))
    total = sum(r["support"] for r in rows)

    def num(v):
        return "-" if v is None else f"{v:.{digits}f}"

    header = ["", "precision", "recall", "f1-score", "support"]
    body = [[n, num(r["precision"]), num(r["recall"]), num(r["f1"]), str(r["support"])] for n, r in zip(names, rows)]
    tail = [["accuracy", "", "", num(metrics.get("overall_accuracy")), str(total)],
            ["macro avg", num(metrics.get("mean_precision")), num(metrics.get("mean_recall")),
             num(metrics.get("mean_f1")), str(total)],
            ["weighted avg", num(metrics.get("weighted_precision")), num(metrics.get("weighted_recall")),
             num(metrics.get("weighted_f1")), str(total)]]
    widths = [max(len(row[i]) for row in [header] + body + tail) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(header), "-" * len(line(header))] + [line(r) for r in body] + [""]
                     + [line(r) for r in tail])
