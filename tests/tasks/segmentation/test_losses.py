"""Segmentation losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.segmentation.losses import boundary_band, build_loss, class_weights_from_counts
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


# The 2x2 binary example used by several tests: probabilities and target.
P = [[0.8, 0.2], [0.6, 0.4]]
Y = [[1, 0], [1, 1]]


def binary():
    return logit(P).reshape(1, 1, 2, 2), torch.tensor(Y).reshape(1, 2, 2)


def test_dice_on_a_2x2_mask():
    x, y = binary()
    # intersection 0.8 + 0.6 + 0.4 = 1.8; sum p = 2.0; sum y = 3 -> dice = 3.6 / 5 = 0.72
    loss = build_loss([{"name": "dice", "smooth": 0.0}], num_classes=1)
    assert loss(x, y).item() == pytest.approx(0.28, abs=1e-6)
    # smooth = 1: (3.6 + 1) / (5 + 1)
    loss = build_loss([{"name": "dice"}], num_classes=1)
    assert loss(x, y).item() == pytest.approx(1 - 4.6 / 6, abs=1e-6)


def test_terms_work_standalone():
    from tasks.segmentation.losses import DiceTerm, FocalTerm

    x, y = binary()
    assert DiceTerm(1, smooth=0.0)(x, y).item() == pytest.approx(0.28, abs=1e-6)
    valid = torch.tensor([[[True, True], [True, False]]])
    combined = build_loss([{"name": "focal", "gamma": 1.0}], 1)(x, y, valid)
    assert FocalTerm(1, gamma=1.0)(x, y, valid).item() == pytest.approx(combined.item(), abs=1e-7)


def test_multiclass_dice_matches_smp():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    y = torch.arange(50).reshape(2, 5, 5) % 3  # every class present
    ours = build_loss([{"name": "dice", "smooth": 0.0}], num_classes=3)(x, y)
    ref = smp.losses.DiceLoss("multiclass", from_logits=True, smooth=0.0)(x, y)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    sub = build_loss([{"name": "dice", "smooth": 0.0, "classes": [1, 2]}], num_classes=3)(x, y)
    p = torch.softmax(x, 1)
    oh = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    d = 2 * (p * oh).sum((0, 2, 3)) / (p.sum((0, 2, 3)) + oh.sum((0, 2, 3)))
    assert sub.item() == pytest.approx((1 - d[1:]).mean().item(), abs=1e-6)


def test_bce_with_pos_weight_matches_torch():
    torch.manual_seed(1)
    x = torch.randn(2, 1, 4, 4)
    y = (torch.rand(2, 4, 4) > 0.6).long()
    ours = build_loss([{"name": "bce", "pos_weight": 3.0}], num_classes=1)(x, y)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(x[:, 0], y.float())
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    # neg_weight scales the background term (a weighted BCE)
    ours = build_loss([{"name": "bce", "pos_weight": 4.0, "neg_weight": 0.5}], num_classes=1)(x, y)
    p = torch.sigmoid(x[:, 0])
    ref = -(4.0 * y * torch.log(p) + 0.5 * (1 - y) * torch.log(1 - p)).mean()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


def test_cross_entropy_with_class_weights_matches_torch():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    w = [0.2, 1.0, 3.0]
    ours = build_loss([{"name": "ce", "class_weights": w}], num_classes=3)(x, y)
    assert ours.item() == pytest.approx(F.cross_entropy(x, y, weight=torch.tensor(w)).item(), abs=1e-6)
    # a binary model: 2-class CE with logits (0, x)
    xb = torch.randn(2, 1, 4, 4)
    yb = torch.randint(0, 2, (2, 4, 4))
    ours = build_loss([{"name": "cross_entropy", "class_weights": [0.5, 2.0]}], num_classes=1)(xb, yb)
    ref = F.cross_entropy(torch.cat([torch.zeros_like(xb), xb], 1), yb, weight=torch.tensor([0.5, 2.0]))
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


def test_class_weights_from_counts_and_auto():
    # w_i = total / n_i
    assert class_weights_from_counts([600, 300, 100]) == pytest.approx([1000 / 600, 1000 / 300, 10.0])
    assert class_weights_from_counts([50, 0, 50]) == [2.0, 0.0, 2.0]
    norm = class_weights_from_counts([600, 300, 100], normalize=True)
    assert sum(norm) / 3 == pytest.approx(1.0)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 4, 4)
    y = torch.randint(0, 3, (1, 4, 4))
    auto = build_loss([{"name": "ce", "class_weights": "auto"}], num_classes=3, class_counts=[600, 300, 100])
    explicit = build_loss([{"name": "ce", "class_weights": [1000 / 600, 1000 / 300, 10.0]}], num_classes=3)
    assert auto(x, y).item() == pytest.approx(explicit(x, y).item(), abs=1e-6)
    # binary pos_weight: auto = n_background / n_foreground
    xb, yb = binary()
    auto = build_loss([{"name": "bce", "pos_weight": "auto"}], num_classes=1, class_counts=[900, 100])
    explicit = build_loss([{"name": "bce", "pos_weight": 9.0}], num_classes=1)
    assert auto(xb, yb).item() == pytest.approx(explicit(xb, yb).item(), abs=1e-6)
    with pytest.raises(WorkbenchError, match="class_counts"):
        build_loss([{"name": "ce", "class_weights": "auto"}], num_classes=3)
    with pytest.raises(WorkbenchError, match="class counts"):
        class_weights_from_counts([0, 0])


def test_class_aware_jaccard_by_hand():
    x, y = binary()
    # foreground: I = 1.8, sum p = 2.0, sum y = 3 -> U = 3.2, IoU = 0.5625
    # background: q = (0.2, 0.8, 0.4, 0.6), z = (0, 1, 0, 0): I = 0.8, U = 2.0 + 1 - 0.8 = 2.2
    iou_fg, iou_bg = 1.8 / 3.2, 0.8 / 2.2
    loss = build_loss([{"name": "jaccard", "pos_weight": 1.0, "neg_weight": 0.5, "smooth": 0.0}], num_classes=1)
    assert loss(x, y).item() == pytest.approx(1.0 * (1 - iou_fg) + 0.5 * (1 - iou_bg), abs=1e-6)
    fg_only = build_loss([{"name": "iou", "smooth": 0.0}], num_classes=1)
    assert fg_only(x, y).item() == pytest.approx(1 - iou_fg, abs=1e-6)
    import segmentation_models_pytorch as smp

    ref = smp.losses.JaccardLoss("binary", from_logits=True, smooth=0.0)(x, y.unsqueeze(1))
    assert fg_only(x, y).item() == pytest.approx(ref.item(), abs=1e-6)


def test_multiclass_jaccard_pos_neg():
    torch.manual_seed(4)
    x = torch.randn(1, 3, 4, 4)
    y = torch.randint(0, 3, (1, 4, 4))
    p = torch.softmax(x, 1)
    oh = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    inter = (p * oh).sum((0, 2, 3))
    iou = inter / (p.sum((0, 2, 3)) + oh.sum((0, 2, 3)) - inter)
    expected = 0.7 * (1 - iou[1:]).mean() + 0.3 * (1 - iou[0])
    loss = build_loss([{"name": "jaccard", "pos_weight": 0.7, "neg_weight": 0.3, "smooth": 0}], num_classes=3)
    assert loss(x, y).item() == pytest.approx(expected.item(), abs=1e-6)


def test_focal_against_the_formula():
    x, y = binary()
    p = torch.tensor(P, dtype=torch.float64).flatten()
    t = torch.tensor(Y, dtype=torch.float64).flatten()
    pt = torch.where(t == 1, p, 1 - p)
    at = torch.where(t == 1, 0.25, 0.75)
    expected = (-at * (1 - pt) ** 2 * torch.log(pt)).mean()
    loss = build_loss([{"name": "focal", "alpha": 0.25, "gamma": 2.0}], num_classes=1)
    assert loss(x, y).item() == pytest.approx(expected.item(), abs=1e-6)
    # gamma = 0 and no alpha: plain BCE
    plain = build_loss([{"name": "focal", "alpha": None, "gamma": 0}], num_classes=1)
    assert plain(x, y).item() == pytest.approx(F.binary_cross_entropy(torch.tensor(P), torch.tensor(Y).float()).item(),
                                               abs=1e-6)
    # multi-class with per-class alpha
    torch.manual_seed(5)
    xm = torch.randn(1, 3, 3, 3)
    ym = torch.randint(0, 3, (1, 3, 3))
    pm = torch.softmax(xm, 1).gather(1, ym.unsqueeze(1)).squeeze(1)
    alpha = torch.tensor([0.2, 0.5, 1.0])[ym]
    expected = (-alpha * (1 - pm) ** 1.5 * torch.log(pm)).mean()
    loss = build_loss([{"name": "focal", "alpha": [0.2, 0.5, 1.0], "gamma": 1.5}], num_classes=3)
    assert loss(xm, ym).item() == pytest.approx(expected.item(), abs=1e-6)


def test_boundary_band_on_a_square_width_1():
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 2:5, 2:5] = 1  # a 3x3 square
    band = boundary_band(mask, width=1)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:6, 1:6] = True  # the square dilated by one pixel ...
    expected[3, 3] = False  # ... minus the square eroded by one pixel (its centre)
    assert torch.equal(band, expected)
    assert int(band.sum()) == 24
    # width 2: every 5x5 window of this tile holds both labels (even the corner's reaches (2, 2))
    assert boundary_band(mask, width=2)[0].all()
    # no boundary in a uniform tile; nodata is not a boundary
    assert not boundary_band(torch.ones(1, 6, 6, dtype=torch.long), 1).any()
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    valid[0, :, :2] = False  # the two left columns are nodata
    zeros = torch.zeros(1, 6, 6, dtype=torch.long)
    assert not boundary_band(zeros, 1, valid).any()


def test_boundary_band_multiclass():
    t = torch.tensor([[[0, 0, 1, 1, 2, 2]]]).expand(1, 3, 6).contiguous()
    band = boundary_band(t, width=1)[0]
    # columns 1-4 touch another label within one pixel; columns 0 and 5 do not
    assert not band[:, 0].any() and not band[:, 5].any() and band[:, 1:5].all()


def test_edge_term_weights_the_band():
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 2:5, 2:5] = 1
    torch.manual_seed(6)
    x = torch.randn(1, 1, 6, 6)
    bce = F.binary_cross_entropy_with_logits(x[:, 0], mask.float(), reduction="none")
    band = boundary_band(mask, 1).float()
    expected = (bce * (1 + 0.2 * band)).mean()
    loss = build_loss([{"name": "edge", "lambda": 0.2, "width": 1}], num_classes=1)
    assert loss(x, mask).item() == pytest.approx(expected.item(), abs=1e-6)
    # lambda = 0 is plain BCE
    plain = build_loss([{"name": "edge", "lambda": 0.0}], 1)
    assert plain(x, mask).item() == pytest.approx(bce.mean().item(), abs=1e-6)
    # multi-class: CE
    xm = torch.randn(1, 3, 6, 6)
    tm = torch.tensor([[0, 0, 1, 1, 2, 2]]).expand(6, 6).unsqueeze(0).contiguous()
    ce = F.cross_entropy(xm, tm, reduction="none")
    expected = (ce * (1 + 0.5 * boundary_band(tm, 1).float())).mean()
    multi = build_loss([{"name": "edge_aware", "lam": 0.5}], 3)
    assert multi(xm, tm).item() == pytest.approx(expected.item(), abs=1e-6)


def test_valid_mask_excludes_pixels():
    torch.manual_seed(7)
    x = torch.randn(1, 1, 4, 4)
    y = (torch.rand(1, 4, 4) > 0.5).long()
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 0] = False  # first row is nodata
    keep = valid[0]
    # BCE over the 12 valid pixels only
    ours = build_loss([{"name": "bce", "pos_weight": 2.0}], 1)(x, y, valid)
    ref = F.binary_cross_entropy_with_logits(x[0, 0][keep], y[0][keep].float(), pos_weight=torch.tensor(2.0))
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    # garbage in nodata pixels changes nothing
    x2, y2 = x.clone(), y.clone()
    x2[0, 0, 0] = 1e4
    y2[0, 0] = 1
    for term in ({"name": "dice"}, {"name": "jaccard", "neg_weight": 1.0}, {"name": "focal"}, {"name": "edge"},
                 {"name": "ce", "class_weights": [1.0, 2.0]}):
        loss = build_loss([term], 1)
        assert loss(x, y, valid).item() == pytest.approx(loss(x2, y2, valid).item(), abs=1e-6), term
        assert loss(x, y, valid).item() != pytest.approx(loss(x, y).item(), abs=1e-9), term
    # dice on the valid pixels equals dice on the cropped tile
    dice = build_loss([{"name": "dice"}], 1)
    assert dice(x, y, valid).item() == pytest.approx(dice(x[:, :, 1:], y[:, 1:]).item(), abs=1e-6)
    # ignore_index is nodata too
    y3 = y.clone()
    y3[0, 0] = 255
    ign = build_loss([{"name": "bce", "pos_weight": 2.0}], 1, ignore_index=255)
    assert ign(x, y3).item() == pytest.approx(ref.item(), abs=1e-6)
    # nothing valid: zero, with a graph
    x.requires_grad_(True)
    zero = build_loss(["dice", "bce"], 1)(x, y, torch.zeros_like(valid))
    zero.backward()
    assert zero.item() == 0.0 or zero.item() == pytest.approx(0.0, abs=1e-6)


def test_weighted_sum_is_the_sum_of_weighted_terms():
    torch.manual_seed(8)
    x = torch.randn(2, 1, 8, 8)
    y = (torch.rand(2, 8, 8) > 0.7).long()
    spec = [{"name": "bce", "weight": 1.0, "pos_weight": 3.0},
            {"name": "focal", "weight": 0.5, "alpha": 0.25, "gamma": 2.0},
            {"name": "jaccard", "weight": 1.0, "pos_weight": 1.0, "neg_weight": 0.5},
            {"name": "dice", "weight": 0.3},
            {"name": "edge", "weight": 0.2, "lambda": 0.1, "width": 2}]
    total = build_loss(spec, num_classes=1)
    parts = [build_loss([{k: v for k, v in s.items() if k != "weight"}], 1)(x, y) for s in spec]
    expected = sum(s["weight"] * p for s, p in zip(spec, parts))
    assert total(x, y).item() == pytest.approx(expected.item(), abs=1e-6)
    assert set(total.last_components) == {"bce", "focal", "jaccard", "dice", "edge"}
    assert total.last_components["focal"].item() == pytest.approx(parts[1].item(), abs=1e-6)


def test_deep_supervision_and_cgm():
    torch.manual_seed(9)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[0, 2:5, 2:5] = 1  # tile 0 has foreground, tile 1 is empty
    out = {"out": torch.randn(2, 1, 8, 8), "aux": [torch.randn(2, 1, 8, 8) for _ in range(4)],
           "cls": torch.tensor([[0.3], [-1.2]])}
    spec = [{"name": "bce"}, {"name": "dice", "weight": 0.5}]
    single = build_loss(spec, 1)
    seg = [single(o, y) for o in [out["out"], *out["aux"]]]
    cgm = F.binary_cross_entropy_with_logits(out["cls"][:, 0], torch.tensor([1.0, 0.0]))
    # default weights: 1 for the main output, 0.25 per auxiliary; CGM weight 1
    loss = build_loss(spec, 1)
    expected = seg[0] + 0.25 * sum(seg[1:]) + cgm
    assert loss(out, y).item() == pytest.approx(expected.item(), abs=1e-5)
    assert set(loss.last_components) == {"bce", "dice", "aux", "cgm"}
    ds = [0.5, 0.125, 0.125, 0.125, 0.125]
    loss = build_loss(spec, 1, deep_supervision_weights=ds, cgm_weight=0.4)
    expected = sum(w * s for w, s in zip(ds, seg)) + 0.4 * cgm
    assert loss(out, y).item() == pytest.approx(expected.item(), abs=1e-5)
    with pytest.raises(WorkbenchError, match="deep_supervision_weights"):
        build_loss(spec, 1, deep_supervision_weights=[1.0, 0.5])(out, y)
    # a tensor output (eval mode) is just the segmentation loss
    assert loss(out["out"], y).item() == pytest.approx(seg[0].item(), abs=1e-6)


def test_loss_through_unet3plus_backward():
    from tasks.segmentation.models import build_model

    model = build_model("unet3plus", None, in_channels=4, classes=3, filters=(8, 16, 32, 64), cat_channels=4)
    x = torch.randn(2, 4, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    valid = torch.rand(2, 32, 32) > 0.1
    loss = build_loss([{"name": "ce", "class_weights": [0.5, 1, 2]}, {"name": "dice"}, {"name": "focal"},
                       {"name": "jaccard", "neg_weight": 0.5}, {"name": "edge", "lambda": 0.2}], num_classes=3)
    value = loss(model.train()(x), y, valid)
    value.backward()
    assert math.isfinite(value.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_configuration_names_the_problem():
    with pytest.raises(WorkbenchError, match="unknown loss term 'tversky'"):
        build_loss([{"name": "tversky"}], 1)
    with pytest.raises(WorkbenchError, match="'focal'.*unknown parameter 'gama'"):
        build_loss([{"name": "focal", "gama": 2}], 1)
    with pytest.raises(WorkbenchError, match="'focal'.*gamma"):
        build_loss([{"name": "focal", "gamma": -1}], 1)
    with pytest.raises(WorkbenchError, match="'bce'.*binary"):
        build_loss([{"name": "bce"}], 3)
    with pytest.raises(WorkbenchError, match="'bce'.*pos_weight"):
        build_loss([{"name": "bce", "pos_weight": "lots"}], 1)
    with pytest.raises(WorkbenchError, match="'ce'.*class_weights must list 3"):
        build_loss([{"name": "ce", "class_weights": [1, 2]}], 3)
    with pytest.raises(WorkbenchError, match="'edge'.*width"):
        build_loss([{"name": "edge", "width": 0}], 1)
    with pytest.raises(WorkbenchError, match="'dice'.*weight"):
        build_loss([{"name": "dice", "weight": -1}], 1)
    with pytest.raises(WorkbenchError, match="name"):
        build_loss([{"weight": 1}], 1)
    with pytest.raises(WorkbenchError, match="value 255 on a valid pixel"):
        build_loss(["bce"], 1)(torch.randn(1, 1, 2, 2), torch.tensor([[[0, 255], [0, 0]]]))
    with pytest.raises(WorkbenchError, match="3 output channels"):
        build_loss(["dice"], 3)(torch.randn(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_library_terms_are_the_library_losses():
    """bce and binary focal run smp.losses, with nodata as their ignore_index: on a batch with
    nodata they equal smp's own loss over the valid pixels."""
    import segmentation_models_pytorch as smp

    from tasks.segmentation.losses import IGNORE_INDEX

    bce = build_loss([{"name": "bce", "pos_weight": 3.0}], 1)
    focal = build_loss([{"name": "focal", "alpha": 0.8, "gamma": 1.5}], 1)
    assert isinstance(bce.terms[0].bce, smp.losses.SoftBCEWithLogitsLoss)
    assert isinstance(focal.terms[0].focal, smp.losses.FocalLoss)
    torch.manual_seed(14)
    x = torch.randn(2, 1, 6, 6)
    y = (torch.rand(2, 6, 6) > 0.5).long()
    valid = torch.rand(2, 6, 6) > 0.3
    ignored = y.masked_fill(~valid, IGNORE_INDEX)
    ref = smp.losses.FocalLoss("binary", alpha=0.8, gamma=1.5, ignore_index=IGNORE_INDEX)(x, ignored)
    torch.testing.assert_close(focal(x, y, valid), ref)
    # smp's BCE "mean" divides by every pixel, nodata included: ours by the valid ones
    ref = smp.losses.SoftBCEWithLogitsLoss(pos_weight=torch.tensor(3.0), ignore_index=IGNORE_INDEX)(
        x, ignored.unsqueeze(1).float())
    torch.testing.assert_close(bce(x, y, valid), ref * valid.numel() / valid.sum())


def test_dice_kept_by_hand_scores_an_absent_class():
    """smp's DiceLoss (smooth halved: smp smooths the half-sums) equals ours while every class is
    present; on a batch without water smp gives 0 and ours still penalises predicted water."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(15)
    x = torch.randn(2, 1, 6, 6)
    y = (torch.rand(2, 6, 6) > 0.5).long()
    ours = build_loss([{"name": "dice", "smooth": 1.0}], 1)
    theirs = smp.losses.DiceLoss("binary", smooth=0.5)
    torch.testing.assert_close(ours(x, y), theirs(x, y.unsqueeze(1)))
    empty = torch.zeros_like(y)
    assert theirs(x, empty.unsqueeze(1)).item() == 0.0
    p = torch.sigmoid(x).sum()
    torch.testing.assert_close(ours(x, empty), 1 - 1 / (p + 1))


def test_no_loss_class_shadows_a_library_name():
    import segmentation_models_pytorch as smp

    import tasks.segmentation.losses as ours

    library = set(dir(smp.losses)) | set(dir(torch.nn))
    mine = {name for name, value in vars(ours).items() if isinstance(value, type) and value.__module__ == ours.__name__}
    assert mine and not mine & library, mine & library


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_loss_built_on_cpu_runs_on_the_gpu():
    spec = [{"name": "bce", "pos_weight": 2.0, "neg_weight": 0.5}, {"name": "focal"}, {"name": "dice"},
            {"name": "jaccard", "neg_weight": 0.5}, {"name": "edge", "pos_weight": 2.0},
            {"name": "ce", "class_weights": [1.0, 2.0]}]
    loss = build_loss(spec, 1)
    torch.manual_seed(16)
    x = torch.randn(2, 1, 8, 8)
    y = (torch.rand(2, 8, 8) > 0.5).long()
    valid = torch.rand(2, 8, 8) > 0.2
    on_cpu = loss(x, y, valid)
    on_gpu = loss(x.cuda(), y.cuda(), valid.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-5, atol=1e-6)
