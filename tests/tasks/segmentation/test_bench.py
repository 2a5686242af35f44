"""The scene bench's own model stand-in: a random run must be a run ``predict_probabilities``
can use (it broke when runs gained an input contract), and its case (a), batched against one
window at a time, must agree in the precision the bench runs it in, whatever the CPU."""

from __future__ import annotations

import numpy as np

from tasks.segmentation.bench import _random_run
from tasks.segmentation.predict import predict_probabilities
from tests.support.rasters import write_pair
from workbench.data.stats import BandStats


def test_the_random_run_predicts_and_batching_changes_nothing(tmp_path):
    image, _ = write_pair(tmp_path, "scene", size=96, dtype="uint8")
    run = _random_run(BandStats([128.0] * 3, [64.0] * 3, ["red", "green", "blue"]))
    fast = predict_probabilities(run, image, 64, 48, 8, "mean", progress=False)
    slow = predict_probabilities(run, image, 64, 48, 1, "mean", progress=False, naive=True)
    assert fast.plan == slow.plan and fast.probs.shape[-2:] == (96, 96)
    assert float(np.abs(fast.probs - slow.probs).max()) <= 1e-5
