"""The configured losses give the values (and gradients) of their closed-form definitions on fixed
batches: binary and multi-class, with nodata pixels, with class weights, with a class absent.

The references below are written from the formulas in ``tasks/segmentation/losses.py``'s module
docstring, in float64, summing over valid pixels only; they do not call the loss module. They pin
the values the hand-written terms gave before some of them moved onto ``smp.losses`` / torch, so a
library term that drifts (a different smoothing, eps, reduction or ignore handling) fails here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.segmentation.losses import build_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- fixed batches

def _binary_batch(seed: int = 11, absent: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(3, 1, 8, 8, generator=g)
    y = (torch.rand(3, 8, 8, generator=g) < 0.4).long()
    valid = torch.rand(3, 8, 8, generator=g) > 0.2
    valid[2, :3] = False                         # a nodata strip
    if absent:                                   # no valid water pixel in the whole batch
        y = torch.where(valid, torch.zeros_like(y), y)
    return x, y, valid


def _multi_batch(seed: int = 12, absent: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(2, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (2, 8, 8), generator=g)
    valid = torch.rand(2, 8, 8, generator=g) > 0.25
    if absent:                                   # class 2 only under nodata
        y = torch.where(valid & (y == 2), torch.ones_like(y), y)
    return x, y, valid


# ----------------------------------------------------------------------------- closed forms (float64)

def _masked_mean(values, v):
    return (values * v).sum() / v.sum().clamp_min(1.0)


def _sig(x):
    return torch.sigmoid(x[:, 0])


def ref_bce(x, y, v, pos_weight=1.0, neg_weight=1.0):
    s, t, v = _sig(x), y.double(), v.double()
    per = -(pos_weight * t * torch.log(s) + neg_weight * (1 - t) * torch.log(1 - s))
    return _masked_mean(per, v)


def ref_ce(x, y, v, class_weights=None):
    if x.shape[1] == 1:
        x = torch.cat([torch.zeros_like(x), x], dim=1)
    logp = torch.log_softmax(x, dim=1)
    yy = y.clamp(0, x.shape[1] - 1)
    per = -logp.gather(1, yy.unsqueeze(1)).squeeze(1)
    v = v.double()
    if class_weights is None:
        return _masked_mean(per, v)
    w = torch.tensor(class_weights, dtype=torch.float64)[yy] * v
    return (per * w).sum() / w.sum().clamp_min(1e-12)


def _probs_onehot(x, y, v):
    """Per-class probabilities and one-hot targets, zeroed on nodata: (N, K, H, W)."""
    v = v.double().unsqueeze(1)
    if x.shape[1] == 1:
        return torch.sigmoid(x) * v, y.double().unsqueeze(1) * v, v
    k = x.shape[1]
    oh = F.one_hot(y.clamp(0, k - 1), k).permute(0, 3, 1, 2).double()
    return torch.softmax(x, dim=1) * v, oh * v, v


def ref_dice(x, y, v, smooth=1.0, classes=None):
    p, t, _ = _probs_onehot(x, y, v)
    inter = (p * t).sum((0, 2, 3))
    card = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    loss = 1 - (2 * inter + smooth) / (card + smooth).clamp_min(1e-7)
    return (loss if classes is None else loss[classes]).mean()


def _iou(p, t, smooth):
    inter = (p * t).sum((0, 2, 3))
    union = p.sum((0, 2, 3)) + t.sum((0, 2, 3)) - inter
    return (inter + smooth) / (union + smooth).clamp_min(1e-7)


def ref_jaccard(x, y, v, pos_weight=1.0, neg_weight=0.0, smooth=1.0):
    p, t, vv = _probs_onehot(x, y, v)
    if x.shape[1] == 1:
        fg = _iou(p, t, smooth)[0]
        bg = _iou((1 - torch.sigmoid(x)) * vv, (1 - y.double().unsqueeze(1)) * vv, smooth)[0]
        return pos_weight * (1 - fg) + neg_weight * (1 - bg)
    iou = _iou(p, t, smooth)
    return pos_weight * (1 - iou[1:]).mean() + neg_weight * (1 - iou[0])


def ref_focal(x, y, v, alpha="default", gamma=2.0):
    if x.shape[1] == 1:
        s, t = _sig(x), y.double()
        pt = torch.where(t == 1, s, 1 - s)
        a = 0.25 if alpha == "default" else alpha
        at = 1.0 if a is None else torch.where(t == 1, a, 1 - a)
    else:
        yy = y.clamp(0, x.shape[1] - 1)
        pt = torch.softmax(x, dim=1).gather(1, yy.unsqueeze(1)).squeeze(1)
        a = None if alpha == "default" else alpha
        at = 1.0 if a is None else (torch.tensor(a, dtype=torch.float64)[yy] if isinstance(a, list) else a)
    return _masked_mean(-at * (1 - pt) ** gamma * torch.log(pt), v.double())


def ref_band(y, v, width):
    """The boundary band by its definition: some valid pixel within ``width`` (Chebyshev) holds
    another label; only valid pixels are in it. A plain loop, independent of ``boundary_band``."""
    n, h, w = y.shape
    band = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                if not v[i, r, c]:
                    continue
                win_y = y[i, max(0, r - width):r + width + 1, max(0, c - width):c + width + 1]
                win_v = v[i, max(0, r - width):r + width + 1, max(0, c - width):c + width + 1]
                band[i, r, c] = bool((win_y[win_v] != y[i, r, c]).any())
    return band


def ref_edge(x, y, v, lam=0.1, width=1, pos_weight=1.0, class_weights=None):
    if x.shape[1] == 1:
        s, t = _sig(x), y.double()
        per = -(pos_weight * t * torch.log(s) + (1 - t) * torch.log(1 - s))
    else:
        yy = y.clamp(0, x.shape[1] - 1)
        per = -torch.log_softmax(x, dim=1).gather(1, yy.unsqueeze(1)).squeeze(1)
        if class_weights is not None:
            per = per * torch.tensor(class_weights, dtype=torch.float64)[yy]
    band = ref_band(y, v, width).double()
    return _masked_mean(per * (1 + lam * band), v.double())


# ----------------------------------------------------------------------------- the cases

BINARY_CASES = [
    ({"name": "bce"}, lambda x, y, v: ref_bce(x, y, v)),
    ({"name": "bce", "pos_weight": 3.0}, lambda x, y, v: ref_bce(x, y, v, 3.0)),
    ({"name": "bce", "pos_weight": 2.0, "neg_weight": 0.5}, lambda x, y, v: ref_bce(x, y, v, 2.0, 0.5)),
    ({"name": "bce", "pos_weight": 2.0, "neg_weight": 0.0}, lambda x, y, v: ref_bce(x, y, v, 2.0, 0.0)),
    ({"name": "ce"}, lambda x, y, v: ref_ce(x, y, v)),
    ({"name": "ce", "class_weights": [0.5, 2.0]}, lambda x, y, v: ref_ce(x, y, v, [0.5, 2.0])),
    ({"name": "dice"}, lambda x, y, v: ref_dice(x, y, v)),
    ({"name": "dice", "smooth": 0.0}, lambda x, y, v: ref_dice(x, y, v, 0.0)),
    ({"name": "jaccard"}, lambda x, y, v: ref_jaccard(x, y, v)),
    ({"name": "jaccard", "pos_weight": 0.7, "neg_weight": 0.3, "smooth": 0.0},
     lambda x, y, v: ref_jaccard(x, y, v, 0.7, 0.3, 0.0)),
    ({"name": "focal"}, lambda x, y, v: ref_focal(x, y, v)),
    ({"name": "focal", "alpha": 0.8, "gamma": 1.5}, lambda x, y, v: ref_focal(x, y, v, 0.8, 1.5)),
    ({"name": "focal", "alpha": None, "gamma": 0.0}, lambda x, y, v: ref_focal(x, y, v, None, 0.0)),
    ({"name": "edge"}, lambda x, y, v: ref_edge(x, y, v)),
    ({"name": "edge", "lambda": 0.5, "width": 2, "pos_weight": 3.0},
     lambda x, y, v: ref_edge(x, y, v, 0.5, 2, 3.0)),
]

MULTI_CASES = [
    ({"name": "ce"}, lambda x, y, v: ref_ce(x, y, v)),
    ({"name": "ce", "class_weights": [0.2, 1.0, 3.0]}, lambda x, y, v: ref_ce(x, y, v, [0.2, 1.0, 3.0])),
    ({"name": "dice"}, lambda x, y, v: ref_dice(x, y, v)),
    ({"name": "dice", "smooth": 0.0, "classes": [1, 2]}, lambda x, y, v: ref_dice(x, y, v, 0.0, [1, 2])),
    ({"name": "jaccard", "pos_weight": 0.7, "neg_weight": 0.3}, lambda x, y, v: ref_jaccard(x, y, v, 0.7, 0.3)),
    ({"name": "focal"}, lambda x, y, v: ref_focal(x, y, v)),
    ({"name": "focal", "alpha": 0.5, "gamma": 1.0}, lambda x, y, v: ref_focal(x, y, v, 0.5, 1.0)),
    ({"name": "focal", "alpha": [0.2, 0.5, 1.0], "gamma": 1.5},
     lambda x, y, v: ref_focal(x, y, v, [0.2, 0.5, 1.0], 1.5)),
    ({"name": "edge", "lambda": 0.5}, lambda x, y, v: ref_edge(x, y, v, 0.5)),
    ({"name": "edge", "lambda": 0.2, "class_weights": [0.5, 1.0, 2.0]},
     lambda x, y, v: ref_edge(x, y, v, 0.2, 1, class_weights=[0.5, 1.0, 2.0])),
]


def _check(spec, ref, batch, classes):
    x, y, valid = batch
    ours_x = x.clone().requires_grad_(True)
    ref_x = x.double().requires_grad_(True)
    loss = build_loss([spec], num_classes=classes)
    ours = loss(ours_x, y, valid)
    expected = ref(ref_x, y, valid)
    torch.testing.assert_close(ours.double(), expected.detach(), rtol=1e-5, atol=1e-6,
                               msg=lambda m, spec=spec: f"{spec}: {m}")
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours_x.grad.double(), ref_x.grad, rtol=1e-4, atol=1e-6,
                               msg=lambda m: f"{spec} gradient: {m}")
    assert not ours_x.grad[~valid.unsqueeze(1).expand_as(x)].any(), f"{spec}: gradient on nodata pixels"


@pytest.mark.parametrize("absent", [False, True], ids=["both-classes", "no-water"])
@pytest.mark.parametrize("spec, ref", BINARY_CASES, ids=[str(c[0]) for c in BINARY_CASES])
def test_binary_terms_equal_their_closed_form(spec, ref, absent):
    _check(spec, ref, _binary_batch(absent=absent), 1)


@pytest.mark.parametrize("absent", [False, True], ids=["all-classes", "class-2-absent"])
@pytest.mark.parametrize("spec, ref", MULTI_CASES, ids=[str(c[0]) for c in MULTI_CASES])
def test_multiclass_terms_equal_their_closed_form(spec, ref, absent):
    _check(spec, ref, _multi_batch(absent=absent), 3)


def test_garbage_under_nodata_and_an_all_nodata_batch():
    """Logits and targets under nodata never matter (not even 1e4 logits or a 255 target), and a
    batch without a valid pixel gives 0 for every term, with a gradient."""
    for classes, cases, batch in ((1, BINARY_CASES, _binary_batch()), (3, MULTI_CASES, _multi_batch())):
        x, y, valid = batch
        x2 = x.clone()
        x2[~valid.unsqueeze(1).expand_as(x)] = 1e4
        y2 = y.masked_fill(~valid, 1)
        for spec, _ in cases:
            loss = build_loss([spec], num_classes=classes, ignore_index=255)
            torch.testing.assert_close(loss(x2, y2, valid), loss(x, y, valid), rtol=1e-5, atol=1e-6,
                                       msg=lambda m, spec=spec: f"{spec}: {m}")
            torch.testing.assert_close(loss(x, y.masked_fill(~valid, 255)), loss(x, y, valid), rtol=1e-5, atol=1e-6,
                                       msg=lambda m, spec=spec: f"{spec} ignore_index: {m}")
            xg = x.clone().requires_grad_(True)
            zero = loss(xg, y, torch.zeros_like(valid))
            zero.backward()
            if spec["name"] not in ("dice", "jaccard"):   # region terms keep their smoothing term
                assert zero.item() == 0.0, spec
            assert torch.isfinite(xg.grad).all(), spec


def test_weighted_sum_deep_supervision_and_cgm_on_the_fixed_batch():
    x, y, valid = _multi_batch()
    g = torch.Generator().manual_seed(13)
    aux = [torch.randn(2, 3, 8, 8, generator=g) for _ in range(2)]
    cls = torch.tensor([[0.4], [-0.7]])
    spec = [{"name": "ce", "class_weights": [0.2, 1.0, 3.0]}, {"name": "dice", "weight": 0.5},
            {"name": "focal", "weight": 0.25}]

    def seg(o):
        o = o.double()
        return ref_ce(o, y, valid, [0.2, 1.0, 3.0]) + 0.5 * ref_dice(o, y, valid) + 0.25 * ref_focal(o, y, valid)

    has_fg = torch.tensor([bool(((y[i] != 0) & valid[i]).any()) for i in range(2)], dtype=torch.float64)
    cgm = F.binary_cross_entropy_with_logits(cls[:, 0].double(), has_fg)
    loss = build_loss(spec, 3, deep_supervision_weights=[0.5, 0.25, 0.25], cgm_weight=0.4)
    expected = 0.5 * seg(x) + 0.25 * seg(aux[0]) + 0.25 * seg(aux[1]) + 0.4 * cgm
    ours = loss({"out": x, "aux": aux, "cls": cls}, y, valid)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)
