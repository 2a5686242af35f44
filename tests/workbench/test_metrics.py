"""``workbench.metrics``: the confusion-matrix metrics every task scores with, against
hand-computed values on small known masks, and (dev only) against torchmetrics on random ones."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.metrics import (
    ConfusionMatrix,
    flatten_metrics,
    format_table,
    logits_to_labels,
    plot_confusion,
)

# A binary 3x4 tile:   TP at (0,0) (1,0) (2,0) (2,1); FN at (0,1) (2,2); FP at (0,3) (1,2); 4 TN.
TARGET = torch.tensor([[1, 1, 0, 0],
                       [1, 0, 0, 0],
                       [1, 1, 1, 0]]).unsqueeze(0)
PRED = torch.tensor([[1, 0, 0, 1],
                     [1, 0, 1, 0],
                     [1, 1, 0, 0]]).unsqueeze(0)


def test_binary_counts_and_ratios_by_hand():
    cm = ConfusionMatrix(2)
    cm.update(PRED, TARGET)
    assert cm.matrix.tolist() == [[4, 2], [2, 4]]  # rows true, columns predicted
    m = cm.compute(["land", "water"])
    water = m["per_class"][1]
    assert water["name"] == "water"
    assert (water["tp"], water["fp"], water["fn"], water["tn"]) == (4, 2, 2, 4)
    assert water["iou"] == pytest.approx(4 / 8)
    assert water["f1"] == pytest.approx(8 / 12)
    assert water["precision"] == pytest.approx(4 / 6)
    assert water["recall"] == pytest.approx(4 / 6)
    assert water["specificity"] == pytest.approx(4 / 6)
    assert water["accuracy"] == pytest.approx(8 / 12)
    assert water["support"] == 6
    land = m["per_class"][0]
    assert (land["tp"], land["fp"], land["fn"], land["tn"]) == (4, 2, 2, 4)
    assert m["mean_iou"] == pytest.approx(0.5)
    assert m["overall_accuracy"] == pytest.approx(8 / 12)
    assert m["pixels"] == 12


def test_multiclass_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]]).unsqueeze(0)
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]]).unsqueeze(0)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    m = cm.compute()
    c0, c1, c2 = m["per_class"]
    assert (c0["tp"], c0["fp"], c0["fn"], c0["tn"]) == (2, 1, 1, 4)
    assert (c1["tp"], c1["fp"], c1["fn"], c1["tn"]) == (2, 1, 0, 5)
    assert (c2["tp"], c2["fp"], c2["fn"], c2["tn"]) == (2, 0, 1, 5)
    assert [c["iou"] for c in m["per_class"]] == pytest.approx([0.5, 2 / 3, 2 / 3])
    assert [c["f1"] for c in m["per_class"]] == pytest.approx([4 / 6, 4 / 5, 4 / 5])
    assert c1["precision"] == pytest.approx(2 / 3) and c1["recall"] == pytest.approx(1.0)
    assert c2["specificity"] == pytest.approx(1.0)
    assert m["mean_iou"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert m["overall_accuracy"] == pytest.approx(6 / 8)
    assert m["per_class"][0]["name"] == "class_0"


def test_absent_class_is_undefined_not_zero():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]]))
    m = cm.compute()
    assert m["per_class"][3]["iou"] is None and m["per_class"][3]["precision"] is None
    assert m["mean_iou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_nodata_never_counts():
    valid = torch.ones_like(TARGET, dtype=torch.bool)
    valid[0, 0, 1] = False  # an FN
    valid[0, 0, 3] = False  # an FP
    cm = ConfusionMatrix(2)
    cm.update(PRED, TARGET, valid)
    water = cm.compute()["per_class"][1]
    assert (water["tp"], water["fp"], water["fn"], water["tn"]) == (4, 1, 1, 4)
    assert water["iou"] == pytest.approx(4 / 6)
    assert cm.compute()["pixels"] == 10
    # labels out of range (an ignore value such as 255) do not corrupt the matrix either
    target = TARGET.clone()
    target[0, 0, 0] = 255
    cm = ConfusionMatrix(2)
    cm.update(PRED, target)
    assert int(cm.matrix.sum()) == 11


def test_all_background_tiles_can_be_excluded():
    empty_target = torch.zeros(1, 3, 4, dtype=torch.long)
    empty_pred = torch.zeros(1, 3, 4, dtype=torch.long)
    empty_pred[0, 0, :3] = 1  # 3 false positives on a tile with no water
    pred, target = torch.cat([PRED, empty_pred]), torch.cat([TARGET, empty_target])

    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.compute()["per_class"][1]["fp"] == 5

    cm = ConfusionMatrix(2, skip_empty_tiles=True)
    cm.update(pred, target)
    m = cm.compute()
    assert m["per_class"][1]["fp"] == 2 and m["pixels"] == 12 and m["tiles_skipped"] == 1
    # water present only under nodata: the tile still counts as empty
    valid = torch.ones_like(target, dtype=torch.bool)
    t2 = target.clone()
    t2[1, 2, 3] = 1
    valid[1, 2, 3] = False
    cm = ConfusionMatrix(2, skip_empty_tiles=True)
    cm.update(pred, t2, valid)
    assert cm.compute()["tiles_skipped"] == 1
    # an explicit per-sample flag drops tiles too
    cm = ConfusionMatrix(2)
    cm.update(pred, target, sample_mask=torch.tensor([False, True]))
    assert cm.compute()["pixels"] == 12 and cm.compute()["per_class"][1]["tp"] == 0


def test_logits_are_thresholded_or_argmaxed():
    logits = torch.tensor([[[[-2.0, 0.1], [0.5, 3.0]]]])  # sigmoid: 0.12, 0.52, 0.62, 0.95
    assert logits_to_labels(logits).tolist() == [[[0, 1], [1, 1]]]
    assert logits_to_labels(logits, threshold=0.6).tolist() == [[[0, 0], [1, 1]]]
    cm = ConfusionMatrix(2, threshold=0.6)
    cm.update(logits, torch.tensor([[[0, 1], [1, 1]]]))
    assert cm.matrix.tolist() == [[1, 0], [1, 2]]
    multi = torch.randn(2, 3, 4, 4)
    cm = ConfusionMatrix(3)
    cm.update(multi, multi.argmax(1))
    assert cm.compute()["overall_accuracy"] == 1.0


def test_merge_is_a_sum_and_matrix_is_exposed():
    torch.manual_seed(0)
    pred = torch.randint(0, 3, (4, 8, 8))
    target = torch.randint(0, 3, (4, 8, 8))
    whole = ConfusionMatrix(3)
    whole.update(pred, target)
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    a.merge(b)
    assert torch.equal(a.matrix, whole.matrix)
    # what a caller does with accelerate: reduce the exposed tensor with a sum, assign it back
    c = ConfusionMatrix(3)
    other_process = torch.zeros(3, 3, dtype=torch.long)
    c.matrix = torch.stack([ConfusionMatrix.from_matrix(whole.matrix).matrix, other_process]).sum(0)
    assert c.compute() == whole.compute()
    assert whole.matrix.dtype == torch.int64 and whole.matrix.shape == (3, 3)
    whole.reset()
    assert int(whole.matrix.sum()) == 0


def test_all_reduce_with_torch_distributed(tmp_path):
    import torch.distributed as dist

    cm = ConfusionMatrix(2)
    cm.update(PRED, TARGET)
    before = cm.matrix.clone()
    cm.all_reduce()  # not initialised: no-op
    assert torch.equal(cm.matrix, before)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        cm.all_reduce()
        assert torch.equal(cm.matrix, before)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_gpu():
    cm = ConfusionMatrix(2)
    cm.update(PRED.cuda(), TARGET.cuda())
    assert cm.matrix.device.type == "cuda" and cm.matrix.tolist() == [[4, 2], [2, 4]]


def test_format_table_is_aligned():
    cm = ConfusionMatrix(2)
    cm.update(PRED, TARGET)
    text = format_table(cm.compute(), ["land", "water"])
    lines = text.splitlines()
    header = lines[0]
    for col in ("Class", "IoU", "F1", "Precision", "Recall", "Specificity", "Accuracy", "TP", "FP", "FN", "TN"):
        assert col in header
    rows = [line for line in lines if line.startswith(("land", "water"))]
    assert len(rows) == 2 and all(len(r) == len(header) for r in rows)
    assert "0.5000" in rows[1] and "0.6667" in rows[1]
    # every value ends where its header ends (right-aligned columns)
    end = header.index("IoU") + len("IoU")
    assert all(r[end - 6:end] == "0.5000" for r in rows)
    assert any(line.startswith("mean") for line in lines)
    assert "overall accuracy 0.6667" in text
    # class names given to the table win over the stored ones
    assert "lake" in format_table(cm, ["sea", "lake"])
    with pytest.raises(WorkbenchError, match="class names"):
        format_table(cm.compute(), ["only one"])


def test_flatten_metrics():
    cm = ConfusionMatrix(2)
    cm.update(PRED, TARGET)
    flat = flatten_metrics(cm.compute(["land", "water"]), prefix="val/")
    assert flat["val/mean_iou"] == pytest.approx(0.5) and flat["val/iou/water"] == pytest.approx(0.5)
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    flat = flatten_metrics(cm.compute(), undefined=float("nan"))
    assert math.isnan(flat["iou/foreground"]) and flat["iou/background"] == 1.0


def test_plot_confusion_writes_png(tmp_path):
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[[0, 1, 2, 2]]]), torch.tensor([[[0, 1, 1, 2]]]))
    path = plot_confusion(cm, ["land", "water", "cloud"], tmp_path / "plots" / "confusion.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    path2 = plot_confusion([[5, 1], [0, 0]], None, tmp_path / "raw.png", normalize=False, title="raw")
    assert path2.exists()
    with pytest.raises(WorkbenchError, match="square"):
        plot_confusion([[1, 2, 3]], None, tmp_path / "bad.png")


@pytest.mark.parametrize("classes, seed", [(2, 0), (3, 1), (5, 2), (4, 3)])
def test_against_torchmetrics(classes, seed):
    """Dev-only cross-check: per-class IoU, F1, precision, recall, specificity, their macro and
    support-weighted means, overall accuracy and the matrix itself equal torchmetrics' on random
    labels with nodata pixels (torchmetrics' ignore_index). With seed 3 class 3 never occurs:
    ours is undefined (None) exactly where torchmetrics has an empty row and column."""
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional import classification as tm

    g = torch.Generator().manual_seed(seed)
    present = classes - 1 if seed == 3 else classes
    target = torch.randint(0, present, (4, 16, 16), generator=g)
    pred = torch.where(torch.rand(4, 16, 16, generator=g) < 0.6, target,
                       torch.randint(0, present, (4, 16, 16), generator=g))
    valid = torch.rand(4, 16, 16, generator=g) > 0.2
    cm = ConfusionMatrix(classes)
    cm.update(pred, target, valid)
    ours = cm.compute()
    ignored = target.masked_fill(~valid, 255)
    kw = {"num_classes": classes, "ignore_index": 255}

    matrix = tm.multiclass_confusion_matrix(pred, ignored, **kw)
    assert ours["matrix"] == matrix.tolist()
    per_class = {"iou": tm.multiclass_jaccard_index(pred, ignored, average=None, **kw),
                 "f1": tm.multiclass_f1_score(pred, ignored, average=None, **kw),
                 "precision": tm.multiclass_precision(pred, ignored, average=None, **kw),
                 "recall": tm.multiclass_recall(pred, ignored, average=None, **kw),
                 "specificity": tm.multiclass_specificity(pred, ignored, average=None, **kw)}
    for key, theirs in per_class.items():
        for row, value in zip(ours["per_class"], theirs.tolist()):
            if row[key] is None:
                c = row["index"]
                assert present < classes and matrix[c].sum() == 0 and matrix[:, c].sum() == 0, (key, c)
            else:
                assert row[key] == pytest.approx(value, abs=1e-6), (key, row["index"])
    assert ours["overall_accuracy"] == pytest.approx(tm.multiclass_accuracy(pred, ignored, average="micro",
                                                                            **kw).item(), abs=1e-6)
    if present == classes:   # every class defined: the means are torchmetrics' averages
        for key, fn in (("mean_iou", tm.multiclass_jaccard_index), ("mean_f1", tm.multiclass_f1_score),
                        ("mean_precision", tm.multiclass_precision), ("mean_recall", tm.multiclass_recall)):
            assert ours[key] == pytest.approx(fn(pred, ignored, average="macro", **kw).item(), abs=1e-6), key
        for key, fn in (("weighted_f1", tm.multiclass_f1_score), ("weighted_precision", tm.multiclass_precision),
                        ("weighted_recall", tm.multiclass_recall)):
            assert ours[key] == pytest.approx(fn(pred, ignored, average="weighted", **kw).item(), abs=1e-6), key
    else:                    # the means skip the undefined class
        defined = [r["iou"] for r in ours["per_class"] if r["iou"] is not None]
        assert ours["mean_iou"] == pytest.approx(sum(defined) / len(defined))


def test_binary_logits_against_torchmetrics():
    """A one-logit model: ``sigmoid > threshold`` labels scored as two classes equal torchmetrics'
    binary metrics of the foreground (threshold on probabilities, nodata ignored)."""
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional import classification as tm

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 1, 12, 12, generator=g)
    target = (torch.rand(3, 12, 12, generator=g) < 0.4).long()
    valid = torch.rand(3, 12, 12, generator=g) > 0.15
    cm = ConfusionMatrix(2, threshold=0.6)
    cm.update(logits, target, valid)
    water = cm.compute()["per_class"][1]
    probs, ignored = torch.sigmoid(logits[:, 0]), target.masked_fill(~valid, -1)
    kw = {"threshold": 0.6, "ignore_index": -1}
    assert water["iou"] == pytest.approx(tm.binary_jaccard_index(probs, ignored, **kw).item(), abs=1e-6)
    assert water["f1"] == pytest.approx(tm.binary_f1_score(probs, ignored, **kw).item(), abs=1e-6)
    assert water["precision"] == pytest.approx(tm.binary_precision(probs, ignored, **kw).item(), abs=1e-6)
    assert water["recall"] == pytest.approx(tm.binary_recall(probs, ignored, **kw).item(), abs=1e-6)
    assert water["accuracy"] == pytest.approx(tm.binary_accuracy(probs, ignored, **kw).item(), abs=1e-6)
