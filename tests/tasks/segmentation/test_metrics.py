"""Segmentation's own metrics: threshold scans of a binary water model (the confusion-matrix
metrics they build on are tested in tests/workbench/test_metrics.py)."""

from __future__ import annotations

import pytest
import torch

from tasks.segmentation.metrics import ThresholdScan, threshold_scan
from workbench.errors import WorkbenchError


def test_threshold_scan_picks_the_best_threshold():
    # water pixels: 0.9 0.8 0.6 0.3; land pixels: 0.7 0.4 0.3 0.2 0.1 0.1
    probs = torch.tensor([[0.9, 0.8, 0.6, 0.3, 0.7], [0.4, 0.3, 0.2, 0.1, 0.1]]).unsqueeze(0)
    target = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0]]).unsqueeze(0)
    scan = threshold_scan(probs, target)
    rows = {r["threshold"]: r for r in scan["results"]}
    # 0.25: TP 4, FN 0, FP 3 -> 4/7;  0.5: TP 3, FN 1, FP 1 -> 3/5;  0.75: TP 2, FN 2, FP 0 -> 2/4
    assert [rows[t]["iou"] for t in (0.25, 0.5, 0.75)] == pytest.approx([4 / 7, 3 / 5, 2 / 4])
    assert (rows[0.5]["tp"], rows[0.5]["fp"], rows[0.5]["fn"], rows[0.5]["tn"]) == (3, 1, 1, 5)
    assert rows[0.5]["f1"] == pytest.approx(6 / 8)
    assert scan["best_threshold"] == 0.5 and scan["best_score"] == pytest.approx(0.6)


def test_threshold_scan_selection_criterion_matters():
    # water: 0.9 0.6 0.4 0.3; land: 0.7 0.2 0.1 0.05 0.55 0.45 and four at 0.3
    water = [0.9, 0.6, 0.4, 0.3]
    land = [0.7, 0.2, 0.1, 0.05, 0.55, 0.45, 0.3, 0.3, 0.3, 0.3]
    probs = torch.tensor(water + land).reshape(1, 2, 7)
    target = torch.tensor([1] * 4 + [0] * 10).reshape(1, 2, 7)
    by_iou = threshold_scan(probs, target, select="iou")
    # water IoU: 0.25 -> 4/11, 0.5 -> 2/6, 0.75 -> 1/4
    assert by_iou["best_threshold"] == 0.25 and by_iou["best_score"] == pytest.approx(4 / 11)
    by_miou = threshold_scan(probs, target, select="mean_iou")
    # land IoU: 0.25 -> 3/10, 0.5 -> 8/12, 0.75 -> 10/13; mean with water's
    means = [(4 / 11 + 3 / 10) / 2, (2 / 6 + 8 / 12) / 2, (1 / 4 + 10 / 13) / 2]
    assert [r["mean_iou"] for r in by_miou["results"]] == pytest.approx(means)
    assert by_miou["best_threshold"] == 0.75
    # nodata never counts: hide every land pixel above 0.25 and 0.25 wins the mean IoU too
    valid = ~((target == 0) & (probs > 0.25))
    assert threshold_scan(probs, target, valid, select="mean_iou")["best_threshold"] == 0.25
    with pytest.raises(WorkbenchError, match="select"):
        threshold_scan(probs, target, select="dice")


def test_threshold_scan_accumulates_batches():
    torch.manual_seed(1)
    probs = torch.rand(4, 8, 8)
    target = (torch.rand(4, 8, 8) > 0.5).long()
    scan = ThresholdScan(thresholds=(0.3, 0.6))
    scan.update(probs[:2].unsqueeze(1), target[:2])
    scan.update(probs[2:], target[2:])
    assert scan.result() == threshold_scan(probs, target, thresholds=(0.3, 0.6))
