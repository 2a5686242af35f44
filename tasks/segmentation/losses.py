"""Segmentation losses, configured as a weighted sum of terms (the YAML ``loss:`` list).

    loss_fn = build_loss([
        {"name": "bce", "weight": 1.0, "pos_weight": 3.0},
        {"name": "focal", "weight": 0.5, "alpha": 0.25, "gamma": 2.0},
        {"name": "jaccard", "weight": 1.0, "pos_weight": 1.0, "neg_weight": 0.5},
    ], num_classes=1)
    loss = loss_fn(model_output, target, valid)

Where a library loss computes the same thing, the term is that library loss: ``bce`` is
``smp.losses.SoftBCEWithLogitsLoss``, binary ``focal`` is ``smp.losses.FocalLoss``, ``ce`` is
torch's cross-entropy, each with nodata mapped to its ``ignore_index``. Written here is what
the libraries lack or define differently (each class says how): the class-aware Jaccard with
positive / negative weights, Dice that still scores a class absent from the batch, the softmax
focal loss, the edge-aware term, and the weighted sum with deep supervision and the CGM term.
``tests/tasks/segmentation/test_loss_values.py`` holds every term to the formulas below.

Conventions shared by every term:

* ``logits`` (N, C, H, W) raw scores; ``C == 1`` is a binary model (sigmoid, target 0/1),
  ``C >= 2`` a multi-class one (softmax, target in 0..C-1).
* ``target`` (N, H, W) integer class indices.
* ``valid`` (N, H, W) bool, optional: False pixels (nodata, padding, ``ignore_index``) never
  contribute, to the numerator nor to any normaliser. A batch with no valid pixel gives 0.
* Per-pixel terms (bce, ce, focal, edge) are averaged over valid pixels; region terms (dice,
  jaccard) aggregate their sums over the whole batch (all valid pixels of all tiles) and
  then per class.

Terms (``name`` and parameters; every term also takes ``weight``, default 1.0):

``bce`` (binary only)
    ``-[pos_weight * y * log s(x) + neg_weight * (1 - y) * log(1 - s(x))]`` averaged over valid
    pixels; equals ``torch.nn.BCEWithLogitsLoss(pos_weight=...)`` when ``neg_weight == 1``.
    ``pos_weight`` (default 1.0, or ``"auto"`` = n_background / n_foreground from
    ``class_counts``), ``neg_weight`` (default 1.0).
``ce`` / ``cross_entropy``
    Cross-entropy with class weights, normalised like torch: ``sum(w[y] * l) / sum(w[y])`` over
    valid pixels. ``class_weights``: a list of C numbers (2 for a binary model), ``"auto"``
    (``class_weights_from_counts(class_counts)``: w_i = total / n_i), or none. For a binary
    model it is the 2-class softmax CE with logits (0, x), i.e. BCE with weights (w0, w1).
``dice``
    Soft Dice, ``1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` per class, averaged
    over classes. Binary: the foreground only. Multi-class: every class, or ``classes=[...]``.
    ``smooth`` (default 1.0).
``jaccard`` / ``iou`` (class-aware Jaccard)
    Soft IoU ``I / (sum(p) + sum(y) - I)`` with ``I = sum(p * y)`` (``smooth`` added to both
    sides), of the foreground and of the background, combined with separate weights:
    ``pos_weight * (1 - IoU_fg) + neg_weight * (1 - IoU_bg)``. Binary: foreground uses
    ``p = s(x)``, ``y``; background uses ``1 - p``, ``1 - y``. Multi-class: ``IoU_bg`` is the IoU
    of ``background_index``, ``1 - IoU_fg`` the mean of ``1 - IoU_c`` over the other classes.
    ``pos_weight`` (default 1.0), ``neg_weight`` (default 0.0: the plain foreground Jaccard
    loss), ``smooth`` (default 1.0).
``focal``
    Focal loss (Lin et al. 2017) ``-alpha_t * (1 - p_t)**gamma * log p_t`` averaged over valid
    pixels. Binary: ``alpha_t = alpha`` for foreground pixels and ``1 - alpha`` for background;
    ``alpha=None`` disables it. Multi-class: ``alpha`` is a number (scales every pixel) or a list
    of C per-class factors. ``gamma`` (default 2.0), ``alpha`` (default 0.25 binary, None
    multi-class).
``edge`` / ``edge_aware``
    Per-pixel BCE (binary, with ``pos_weight``) or CE (multi-class, with ``class_weights``)
    weighted by ``1 + lambda`` on the boundary band of the TRUE mask and by 1 elsewhere,
    averaged over valid pixels: ``sum(v * (1 + lambda * band) * l) / sum(v)``.
    The band (``boundary_band``): pixel p is in it iff some valid pixel q with
    ``max(|dy|, |dx|) <= width`` (a (2*width+1)^2 square window around p, clipped at the tile
    border) has a different label than p. Computed as window-max != window-min of the label
    map with ``max_pool2d`` (GPU friendly), nodata excluded from both. The band is
    ``2 * width`` pixels wide: ``width`` on each side of a class boundary (``width=1``: a 2-pixel
    edge). Tile borders are not boundaries. ``lambda`` (alias ``lam``, default 0.1; 0.1-0.2
    scored best when the term was tuned), ``width`` (default 1).

Deep supervision: when the model output is a dict (``UNet3Plus`` in train mode:
``{"out", "aux", "cls"}``), the loss is
``sum_k ds_w[k] * L(outputs[k]) + cgm_weight * BCE(cls, tile has any foreground)`` with
``outputs = [out, *aux]`` and ``ds_w = deep_supervision_weights`` (default
``[1.0, 0.25, 0.25, ...]``; the ``unet3plus`` preset gives the main output 50 % of the loss and
each of its 4 auxiliaries 12.5 %). "Any foreground" = some valid pixel whose target is
not ``background_index`` (binary: target 1); tiles without valid pixels do not count.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError

# ----------------------------------------------------------------------------- helpers


def class_weights_from_counts(counts: Sequence[float] | torch.Tensor, normalize: bool = False) -> list[float]:
    """Inverse-frequency class weights ``w_i = total / n_i`` from pixel counts of the train split.

    A class with no pixel gets weight 0.0 (it cannot appear in the training targets).
    ``normalize=True`` rescales the weights of the present classes to mean 1.
    """
    values = [float(c) for c in (counts.tolist() if torch.is_tensor(counts) else counts)]
    if not values or any(c < 0 or not math.isfinite(c) for c in values):
        raise WorkbenchError(f"class counts must be non-negative numbers, got {values}")
    total = sum(values)
    if total <= 0:
        raise WorkbenchError("class counts are all zero: no labelled pixels to weight classes by")
    weights = [total / c if c > 0 else 0.0 for c in values]
    if normalize:
        present = [w for w in weights if w > 0]
        mean = sum(present) / len(present)
        weights = [w / mean for w in weights]
    return weights


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    v = valid.to(values.dtype)
    return (values * v).sum() / v.sum().clamp_min(1.0)


def boundary_band(target: torch.Tensor, width: int = 1, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (N, H, W): pixels within ``width`` px (Chebyshev) of a pixel of another class.

    See the module docstring (``edge`` term). ``width=0`` gives an empty band.
    """
    if target.ndim != 3:
        raise WorkbenchError(f"boundary_band expects a (N, H, W) target, got shape {tuple(target.shape)}")
    width = int(width)
    if width <= 0:
        return torch.zeros_like(target, dtype=torch.bool)
    labels = target.unsqueeze(1).float()
    hi, lo = labels, labels
    if valid is not None:
        inv = ~valid.unsqueeze(1).bool()
        hi = labels.masked_fill(inv, float("-inf"))
        lo = labels.masked_fill(inv, float("inf"))
    k = 2 * width + 1
    wmax = F.max_pool2d(hi, k, stride=1, padding=width)
    wmin = -F.max_pool2d(-lo, k, stride=1, padding=width)
    band = (wmax != wmin).squeeze(1)
    if valid is not None:
        band = band & valid.bool()
    return band


# The target value the library terms skip. ``prepare_inputs`` leaves nodata pixels at 0 (the
# hand-written terms mask them with ``valid``); the library terms get a copy of the target with
# every nodata pixel set to this value, their ``ignore_index``.
IGNORE_INDEX = -100


def _ignoring(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return target.masked_fill(~valid, IGNORE_INDEX)


def _valid_count(valid: torch.Tensor) -> torch.Tensor:
    """The per-pixel terms' normaliser: the valid pixels, at least 1 (an all-nodata batch gives 0,
    where a library ``reduction="mean"`` over nothing would give NaN)."""
    return valid.sum().clamp_min(1).float()


# ----------------------------------------------------------------------------- terms


class LossTerm(nn.Module):
    """One loss term. ``forward(logits, target, valid=None)`` -> scalar tensor (checks and
    prepares the inputs like ``SegmentationLoss``); ``compute`` does the maths on prepared
    inputs (target long with nodata pixels set to 0, valid a bool mask)."""

    name = "term"
    binary_only = False

    def __init__(self, num_classes: int, background_index: int = 0):
        super().__init__()
        self.num_classes = int(num_classes)
        self.background_index = int(background_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        target, valid = prepare_inputs(logits, target, valid, self.num_classes)
        return self.compute(logits, target, valid)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def binary(self) -> bool:
        return self.num_classes == 1

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) probabilities: sigmoid for binary (K=1), softmax otherwise."""
        x = logits.float()
        return torch.sigmoid(x) if self.binary else torch.softmax(x, dim=1)

    def _onehot(self, target: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return target.unsqueeze(1).float()
        return F.one_hot(target, self.num_classes).permute(0, 3, 1, 2).float()


def _on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with its buffers on ``device``: a library loss keeps its weights as buffers,
    and the loss may be built before the trainer picks the device."""
    buf = next(module.buffers(), None)
    if buf is not None and buf.device != device:
        module.to(device)
    return module


def _check_weight_list(term: str, key: str, values, n: int) -> list[float]:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise WorkbenchError(f"loss term {term!r}: {key} must list {n} numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
            raise WorkbenchError(f"loss term {term!r}: {key} must be non-negative numbers, got {values!r}")
        out.append(float(v))
    return out


def _positive(term: str, key: str, value, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise WorkbenchError(f"loss term {term!r}: {key} must be a {need} number, got {value!r}")
    return float(value)


class BCETerm(LossTerm):
    """``bce``: ``smp.losses.SoftBCEWithLogitsLoss`` with nodata as its ``ignore_index``.

    smp's ``reduction="mean"`` divides by every pixel, nodata included; ours divides by the valid
    pixels, so the library sums (``reduction="sum"``) and this term divides by the valid count.
    ``neg_weight`` is smp's ``weight`` with ``pos_weight = pos_weight / neg_weight``:
    ``neg * (pos / neg * y * l1 + (1 - y) * l0)``. With ``neg_weight = 0`` only foreground pixels
    count (background pixels are ignored too), each ``pos_weight * l1``, still over the valid count.
    """

    name = "bce"
    binary_only = True

    def __init__(self, num_classes: int, pos_weight: float = 1.0, neg_weight: float = 1.0, **kw):
        super().__init__(num_classes, **kw)
        from segmentation_models_pytorch import losses as smp_losses

        self.pos_weight = _positive(self.name, "pos_weight", pos_weight)
        self.neg_weight = _positive(self.name, "neg_weight", neg_weight, allow_zero=True)
        if self.neg_weight > 0:
            weight, pos = torch.tensor(self.neg_weight), torch.tensor(self.pos_weight / self.neg_weight)
        else:
            weight, pos = torch.tensor(self.pos_weight), None
        self.bce = smp_losses.SoftBCEWithLogitsLoss(weight=weight, pos_weight=pos, ignore_index=IGNORE_INDEX,
                                                    reduction="sum")

    def compute(self, logits, target, valid):
        scored = valid if self.neg_weight > 0 else valid & (target == 1)
        y = _ignoring(target, scored).unsqueeze(1).float()
        return _on_device(self.bce, logits.device)(logits.float(), y) / _valid_count(valid)


class CrossEntropyTerm(LossTerm):
    """``ce``: torch's cross-entropy with nodata as its ``ignore_index``.

    smp's ``SoftCrossEntropyLoss`` has no class weights (and its mean counts nodata pixels), so
    this is ``torch.nn.functional.cross_entropy``, summed and divided by ``sum(w[y])`` over the
    valid pixels -- torch's own weighted mean, except that an all-nodata batch gives 0, not NaN.
    """

    name = "ce"

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None, **kw):
        super().__init__(num_classes, **kw)
        n = max(2, self.num_classes)
        w = None if class_weights is None else _check_weight_list(self.name, "class_weights", class_weights, n)
        self.register_buffer("class_weights", None if w is None else torch.tensor(w), persistent=False)

    def compute(self, logits, target, valid):
        x = logits.float()
        if self.binary:  # 2-class softmax CE with logits (0, x) == BCE on x
            x = torch.cat([torch.zeros_like(x), x], dim=1)
        w = None if self.class_weights is None else self.class_weights.to(x.device)
        total = F.cross_entropy(x, _ignoring(target, valid), weight=w, ignore_index=IGNORE_INDEX, reduction="sum")
        if w is None:
            return total / _valid_count(valid)
        return total / (w[target] * valid.float()).sum().clamp_min(1e-12)


class DiceTerm(LossTerm):
    """``dice``, written here: ``smp.losses.DiceLoss`` scores a class with no true pixel in the
    batch as 0, where this term keeps ``1 - smooth / (sum(p) + smooth)`` -- it still penalises
    predicting water on a batch without water. Wherever every scored class is present the two
    agree (``DiceLoss(smooth=smooth / 2)``: smp puts the smoothing on the half-sums; tested)."""

    name = "dice"

    def __init__(self, num_classes: int, smooth: float = 1.0, classes: Sequence[int] | None = None, **kw):
        super().__init__(num_classes, **kw)
        self.smooth = _positive(self.name, "smooth", smooth, allow_zero=True)
        if classes is not None:
            if self.binary:
                raise WorkbenchError("loss term 'dice': classes=[...] is for multi-class models")
            if not isinstance(classes, (list, tuple)) or not classes or any(
                    not isinstance(c, int) or not 0 <= c < self.num_classes for c in classes):
                raise WorkbenchError(f"loss term 'dice': classes must list class indices "
                                     f"0..{self.num_classes - 1}, got {classes!r}")
        self.classes = None if classes is None else [int(c) for c in classes]

    def compute(self, logits, target, valid):
        p = self._probs(logits)
        y = self._onehot(target)
        v = valid.unsqueeze(1).float()
        p, y = p * v, y * v
        inter = (p * y).sum(dim=(0, 2, 3))
        card = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
        dice = (2.0 * inter + self.smooth) / (card + self.smooth).clamp_min(1e-7)
        loss = 1.0 - dice
        if self.classes is not None:
            loss = loss[self.classes]
        return loss.mean()


class ClassAwareJaccardTerm(LossTerm):
    """``jaccard``, written here: smp's ``JaccardLoss`` has no background term with its own
    weight (and, like its Dice, scores an absent class as 0). With ``neg_weight = 0`` and every
    class present it equals ``smp.losses.JaccardLoss(smooth=smooth)`` (tested)."""

    name = "jaccard"

    def __init__(self, num_classes: int, pos_weight: float = 1.0, neg_weight: float = 0.0,
                 smooth: float = 1.0, **kw):
        super().__init__(num_classes, **kw)
        self.pos_weight = _positive(self.name, "pos_weight", pos_weight, allow_zero=True)
        self.neg_weight = _positive(self.name, "neg_weight", neg_weight, allow_zero=True)
        if self.pos_weight == 0 and self.neg_weight == 0:
            raise WorkbenchError("loss term 'jaccard': pos_weight and neg_weight cannot both be 0")
        self.smooth = _positive(self.name, "smooth", smooth, allow_zero=True)

    def _iou(self, p, y, v):
        p, y = p * v, y * v
        inter = (p * y).sum(dim=(0, 2, 3))
        union = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3)) - inter
        return (inter + self.smooth) / (union + self.smooth).clamp_min(1e-7)

    def compute(self, logits, target, valid):
        p = self._probs(logits)
        y = self._onehot(target)
        v = valid.unsqueeze(1).float()
        if self.binary:
            iou_fg = self._iou(p, y, v)[0]
            iou_bg = self._iou(1.0 - p, 1.0 - y, v)[0]
            pos, neg = 1.0 - iou_fg, 1.0 - iou_bg
        else:
            iou = self._iou(p, y, v)
            fg = [c for c in range(self.num_classes) if c != self.background_index]
            pos = (1.0 - iou[fg]).mean()
            neg = 1.0 - iou[self.background_index]
        return self.pos_weight * pos + self.neg_weight * neg


class FocalTerm(LossTerm):
    """``focal``. Binary: ``smp.losses.FocalLoss("binary")`` with nodata as its ``ignore_index``,
    summed and divided by the valid count (an all-nodata batch gives 0, not NaN). Multi-class is
    written here: smp's multi-class focal loss is a one-vs-rest sigmoid focal loss averaged over
    classes, not the softmax focal loss ``-alpha_t (1 - p_t)**gamma log p_t`` this term is."""

    name = "focal"
    _DEFAULT = object()

    def __init__(self, num_classes: int, alpha=_DEFAULT, gamma: float = 2.0, **kw):
        super().__init__(num_classes, **kw)
        self.gamma = _positive(self.name, "gamma", gamma, allow_zero=True)
        if alpha is FocalTerm._DEFAULT:
            alpha = 0.25 if self.binary else None
        if self.binary:
            if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                                      or not 0.0 <= alpha <= 1.0):
                raise WorkbenchError(f"loss term 'focal': alpha must be in [0, 1] or null for a binary "
                                     f"model, got {alpha!r}")
            self.alpha = None if alpha is None else float(alpha)
            self.register_buffer("alpha_c", None, persistent=False)
            from segmentation_models_pytorch import losses as smp_losses

            self.focal = smp_losses.FocalLoss("binary", alpha=self.alpha, gamma=self.gamma,
                                              ignore_index=IGNORE_INDEX, reduction="sum")
        else:
            if isinstance(alpha, (list, tuple)):
                self.alpha = None
                self.register_buffer("alpha_c", torch.tensor(
                    _check_weight_list(self.name, "alpha", alpha, self.num_classes)), persistent=False)
            else:
                self.alpha = None if alpha is None else _positive(self.name, "alpha", alpha)
                self.register_buffer("alpha_c", None, persistent=False)

    def compute(self, logits, target, valid):
        if self.binary:
            return self.focal(logits.float(), _ignoring(target, valid)) / _valid_count(valid)
        logp = torch.log_softmax(logits.float(), dim=1)
        logpt = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        pt = logpt.exp()
        per_px = -(1.0 - pt).pow(self.gamma) * logpt
        if self.alpha_c is not None:
            per_px = per_px * self.alpha_c.to(per_px.device)[target]
        elif self.alpha is not None:
            per_px = per_px * self.alpha
        return _masked_mean(per_px, valid)


class EdgeAwareTerm(LossTerm):
    """``edge``, written here (no library has it): torch's per-pixel BCE / CE, weighted by
    ``1 + lambda`` on the true mask's boundary band (``boundary_band``)."""

    name = "edge"

    def __init__(self, num_classes: int, lam: float = 0.1, width: int = 1, pos_weight: float = 1.0,
                 class_weights: Sequence[float] | None = None, **kw):
        super().__init__(num_classes, **kw)
        self.lam = _positive(self.name, "lambda", lam, allow_zero=True)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise WorkbenchError(f"loss term 'edge': width must be a positive integer (pixels), got {width!r}")
        self.width = width
        self.pos_weight = _positive(self.name, "pos_weight", pos_weight)
        if class_weights is not None and self.binary:
            raise WorkbenchError("loss term 'edge': use pos_weight for a binary model, class_weights is multi-class")
        w = None if class_weights is None else _check_weight_list(self.name, "class_weights", class_weights,
                                                                  self.num_classes)
        self.register_buffer("class_weights", None if w is None else torch.tensor(w), persistent=False)

    def compute(self, logits, target, valid):
        if self.binary:
            x = logits[:, 0].float()
            per_px = F.binary_cross_entropy_with_logits(x, target.float(), pos_weight=x.new_tensor(self.pos_weight),
                                                        reduction="none")
        else:
            w = None if self.class_weights is None else self.class_weights.to(logits.device)
            per_px = F.cross_entropy(logits.float(), target, weight=w, reduction="none")
        band = boundary_band(target, self.width, valid)
        return _masked_mean(per_px * (1.0 + self.lam * band.float()), valid)


TERMS: dict[str, type[LossTerm]] = {
    "bce": BCETerm,
    "ce": CrossEntropyTerm,
    "crossentropy": CrossEntropyTerm,
    "cross_entropy": CrossEntropyTerm,
    "dice": DiceTerm,
    "jaccard": ClassAwareJaccardTerm,
    "iou": ClassAwareJaccardTerm,
    "focal": FocalTerm,
    "edge": EdgeAwareTerm,
    "edge_aware": EdgeAwareTerm,
    "edgeaware": EdgeAwareTerm,
}
_PARAM_ALIASES = {"lambda": "lam"}


# ----------------------------------------------------------------------------- the weighted sum


def prepare_inputs(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, num_classes: int,
                   ignore_index: int | None = None, check_targets: bool = True):
    """Check shapes; return ``(target, valid)``: target long (N, H, W) with nodata pixels set to
    0, valid bool (N, H, W) including ``ignore_index``. Raises ``WorkbenchError`` on a mismatch or,
    with ``check_targets``, on a valid pixel whose target is not a class (one device sync)."""
    if logits.ndim != 4:
        raise WorkbenchError(f"loss expects logits (N, C, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[1] != num_classes:
        raise WorkbenchError(f"loss was configured for {num_classes} output channels, "
                             f"the model gave {logits.shape[1]}")
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise WorkbenchError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    if target.is_floating_point():
        target = target.round()
    target = target.long()
    if valid is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        if valid.ndim == 4 and valid.shape[1] == 1:
            valid = valid[:, 0]
        if valid.shape != target.shape:
            raise WorkbenchError(f"valid mask shape {tuple(valid.shape)} does not match target {tuple(target.shape)}")
        valid = valid.bool()
    if ignore_index is not None:
        valid = valid & (target != ignore_index)
    if check_targets:  # catches 0/255 masks and stray nodata codes
        n = max(2, num_classes)
        bad = valid & ((target < 0) | (target >= n))
        if bool(bad.any()):
            value = int(target[bad][0])
            raise WorkbenchError(f"target has value {value} on a valid pixel; classes are 0..{n - 1}: mark "
                                 "nodata with the valid mask or ignore_index (a 0/255 mask needs remapping)")
    target = target.masked_fill(~valid, 0)  # any in-range value; these pixels are masked out
    return target, valid




class SegmentationLoss(nn.Module):
    """Weighted sum of terms, with deep supervision and the CGM term for dict outputs.

    ``forward(output, target, valid=None)`` -> scalar tensor. After each call
    ``last_components`` maps every term name (and ``"aux"``/``"cgm"`` for dict outputs) to its
    detached, unweighted value on the main output, for logging without a device sync.
    """

    def __init__(self, terms: Sequence[tuple[float, LossTerm]], num_classes: int,
                 deep_supervision_weights: Sequence[float] | None = None, cgm_weight: float = 1.0,
                 background_index: int = 0, ignore_index: int | None = None, check_targets: bool = True):
        super().__init__()
        self.check_targets = bool(check_targets)
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList(t for _, t in terms)
        self.num_classes = int(num_classes)
        if deep_supervision_weights is not None:
            ds = list(deep_supervision_weights)
            if not ds or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
                             or w < 0 for w in ds):
                raise WorkbenchError(f"deep_supervision_weights must be non-negative numbers, got {ds!r}")
            deep_supervision_weights = [float(w) for w in ds]
        self.deep_supervision_weights = deep_supervision_weights
        if isinstance(cgm_weight, bool) or not isinstance(cgm_weight, (int, float)) or cgm_weight < 0:
            raise WorkbenchError(f"cgm_weight must be a non-negative number, got {cgm_weight!r}")
        self.cgm_weight = float(cgm_weight)
        self.background_index = int(background_index)
        self.ignore_index = ignore_index
        self.last_components: dict[str, torch.Tensor] = {}

    def seg_loss(self, logits, target, valid, record: bool = False) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for w, term in zip(self.weights, self.terms):
            value = term.compute(logits, target, valid)
            if record:
                self.last_components[term.name] = value.detach()
            total = total + w * value
        return total

    def forward(self, output, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        self.last_components = {}
        if isinstance(output, Mapping):
            out = output["out"]
            aux = list(output.get("aux") or [])
            cls = output.get("cls")
        else:
            out, aux, cls = output, [], None
        target, valid = prepare_inputs(out, target, valid, self.num_classes, self.ignore_index,
                                       self.check_targets)
        total = self.seg_loss(out, target, valid, record=True)
        if aux or isinstance(output, Mapping):
            ds = self.deep_supervision_weights or [1.0] + [0.25] * len(aux)
            if len(ds) != 1 + len(aux):
                raise WorkbenchError(f"deep_supervision_weights lists {len(ds)} weights; the model gives "
                                     f"1 main + {len(aux)} auxiliary outputs (order: main, then aux)")
            total = ds[0] * total
            aux_total = out.new_zeros((), dtype=torch.float32)
            for w, a in zip(ds[1:], aux):
                aux_total = aux_total + w * self.seg_loss(a, target, valid)
            if aux:
                self.last_components["aux"] = aux_total.detach()
            total = total + aux_total
        if cls is not None and self.cgm_weight > 0:
            cgm = self.cgm_loss(cls, target, valid)
            self.last_components["cgm"] = cgm.detach()
            total = total + self.cgm_weight * cgm
        return total

    def cgm_loss(self, cls: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """BCE of the CGM logit against "the tile has a valid non-background pixel"."""
        fg = (target == 1) if self.num_classes == 1 else (target != self.background_index)
        has_fg = (fg & valid).flatten(1).any(dim=1).float()
        counted = valid.flatten(1).any(dim=1)
        per_px = F.binary_cross_entropy_with_logits(cls.reshape(-1).float(), has_fg, reduction="none")
        return _masked_mean(per_px, counted)


def build_loss(terms: Sequence[Mapping] | Mapping | str, num_classes: int = 1,
               deep_supervision_weights: Sequence[float] | None = None, cgm_weight: float = 1.0,
               class_counts: Sequence[float] | None = None, background_index: int = 0,
               ignore_index: int | None = None, check_targets: bool = True) -> SegmentationLoss:
    """A ``SegmentationLoss`` from a YAML-like list of ``{"name", "weight", <params>}`` dicts.

    ``num_classes``: the model's output channels (1 = binary). ``class_counts``: pixel counts per
    class on the train split (length 2 for a binary model), needed by ``"auto"`` class weights /
    pos_weight. ``deep_supervision_weights``: ``[main, aux_1, ..., aux_K]`` for dict outputs.
    ``ignore_index``: target value treated as nodata in addition to ``valid``.
    ``check_targets``: raise ``WorkbenchError`` when a valid pixel's target is not a class
    (costs one device sync per call; turn off once the data is known good).
    Unknown terms, unknown parameters and bad values raise ``WorkbenchError`` naming them.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise WorkbenchError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(terms, str):
        terms = [{"name": terms}]
    elif isinstance(terms, Mapping):
        terms = [terms]
    if not terms:
        raise WorkbenchError("the loss needs at least one term")
    n_counts = max(2, num_classes)
    if class_counts is not None:
        class_counts = [float(c) for c in (class_counts.tolist() if torch.is_tensor(class_counts) else class_counts)]
        if len(class_counts) != n_counts:
            raise WorkbenchError(f"class_counts must list {n_counts} pixel counts, got {len(class_counts)}")
    if num_classes > 1 and not 0 <= int(background_index) < num_classes:
        raise WorkbenchError(f"background_index {background_index} is not a class of {num_classes}")

    built: list[tuple[float, LossTerm]] = []
    for i, spec in enumerate(terms):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise WorkbenchError(f"loss term #{i + 1} must be a mapping with a 'name', got {spec!r}")
        name = str(spec["name"]).strip().lower()
        key = name.replace("-", "_")
        if key not in TERMS:
            raise WorkbenchError(f"unknown loss term {spec['name']!r}; known: bce, ce, dice, jaccard, focal, edge")
        cls = TERMS[key]
        weight = spec.get("weight", 1.0)
        weight = _positive(name, "weight", weight, allow_zero=True)
        params = {_PARAM_ALIASES.get(k, k): v for k, v in spec.items() if k not in ("name", "weight")}
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "num_classes", "kw")]
        for p in params:
            if p not in accepted:
                shown = ["lambda" if a == "lam" else a for a in accepted if a != "background_index"]
                raise WorkbenchError(f"loss term {name!r}: unknown parameter {p!r} (accepted: {', '.join(shown)})")
        if cls.binary_only and num_classes != 1:
            raise WorkbenchError(f"loss term {name!r} is for binary models (num_classes=1); use 'ce' for "
                                 f"{num_classes} classes")
        for p in ("class_weights", "pos_weight"):
            if params.get(p) == "auto":
                if p == "pos_weight" and cls not in (BCETerm, EdgeAwareTerm):
                    raise WorkbenchError(f"loss term {name!r}: pos_weight: auto is for bce and edge only")
                if class_counts is None:
                    raise WorkbenchError(f"loss term {name!r}: {p}: auto needs class_counts "
                                         "(train-split pixel counts per class)")
                if p == "class_weights":
                    params[p] = class_weights_from_counts(class_counts)
                else:
                    if class_counts[1] <= 0:
                        raise WorkbenchError(f"loss term {name!r}: pos_weight: auto, but the train split has "
                                             "no foreground pixel")
                    params[p] = class_counts[0] / class_counts[1]
        params.setdefault("background_index", int(background_index))
        built.append((weight, cls(num_classes, **params)))
    return SegmentationLoss(built, num_classes, deep_supervision_weights, cgm_weight, background_index,
                            ignore_index, check_targets)


def loss_from_config(cfg: Any, class_counts: Sequence[float] | None = None) -> SegmentationLoss:
    """``build_loss`` from a run's config (``cfg.loss``: terms, deep-supervision and CGM weights;
    ``cfg.model.classes``) with the train split's pixel counts per class for ``"auto"`` weights.
    Nodata reaches the loss as the valid mask; the datasets' ignore value -100 is nodata too."""
    return build_loss(cfg.loss.terms, num_classes=cfg.model.classes,
                      deep_supervision_weights=cfg.loss.deep_supervision_weights, cgm_weight=cfg.loss.cgm_weight,
                      class_counts=None if class_counts is None else [float(c) for c in class_counts],
                      ignore_index=-100)
