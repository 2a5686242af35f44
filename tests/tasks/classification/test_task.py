"""The classification task module and its loss, without a training run: setup builds the
classifier on the given device after the caller's seed, the loss is (mixup) cross-entropy on
the tiles' labels, validation metrics, optimizer groups, the staged-unfreezing callback only
when asked for, and ``classify eval`` naming its run by ``--run`` (or the older positional)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.classification.config import load_config
from tasks.classification.finetune import StagedUnfreezing
from tasks.classification.losses import MixupCrossEntropy, balanced_class_weights
from tasks.classification.models import build_classifier
from tasks.classification.task import ClassificationTask

CLASSES = ["water", "coast", "land"]


class SumAccelerator:
    """The two things evaluate() asks of an accelerator, for one process."""

    device = torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        return tensor


def small_cfg(*overrides: str):
    return load_config("water-coast-land", ["data.size=32", *overrides])


def make_task(cfg, weights=None) -> ClassificationTask:
    return ClassificationTask(cfg, CLASSES, 3, torch.tensor([0, 1, 2, 1]), torch.tensor([2, -1, 0]), weights)


def test_setup_builds_the_classifier_after_the_callers_seed(one_torch_thread):
    cfg = small_cfg("finetune.freeze_norm=false")
    task = make_task(cfg)
    torch.manual_seed(4)
    model = task.setup(SumAccelerator())
    torch.manual_seed(4)
    fresh = build_classifier(cfg.model, 3, 3, 32)
    assert model is task.model and model.freeze_norm is False
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert next(model.parameters()).device == SumAccelerator.device
    names = [g["name"] for g in task.param_groups(model)]
    assert names == ["head", "head_no_decay", "backbone", "backbone_no_decay"]
    assert task.callbacks() == []   # no finetune stages asked for
    staged = make_task(small_cfg("finetune.linear_probe_epochs=1"))
    staged.setup(SumAccelerator())
    (callback,) = staged.callbacks()
    assert isinstance(callback, StagedUnfreezing) and callback.model is staged.model


def test_loss_looks_up_tile_labels_and_evaluate_counts_only_labelled_tiles(one_torch_thread):
    torch.manual_seed(0)
    task = make_task(small_cfg("loss.label_smoothing=0.1"))
    model = task.setup(SumAccelerator()).eval()
    x = torch.randn(3, 3, 32, 32)
    batch = {"image": x, "tile": torch.tensor([3, 0, 2])}
    loss, logs = task.loss(model, batch)
    assert logs == {}
    assert torch.allclose(loss, F.cross_entropy(model(x), torch.tensor([1, 0, 2]), label_smoothing=0.1))

    with torch.no_grad():
        val = task.evaluate(model, [{"image": x, "tile": torch.tensor([0, 1, 2])}], SumAccelerator())
        logits = model(x)
    keep = torch.tensor([True, False, True])
    y = torch.tensor([2, 0])
    assert val["val/loss"] == pytest.approx(float(F.cross_entropy(logits[keep], y)), rel=1e-6)
    assert val["val/accuracy"] == pytest.approx(float((logits[keep].argmax(1) == y).float().mean()))
    assert set(val) == {"val/loss", "val/accuracy", "val/macro_f1"}


def test_mixup_cross_entropy_draws_and_blends_like_the_formula():
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    w = balanced_class_weights([1, 2, 3], 3)
    assert torch.allclose(w, torch.tensor([6 / 3, 6 / 6, 6 / 9]))
    assert torch.allclose(balanced_class_weights([0, 4], 2), torch.tensor([5 / 2, 5 / 8]))   # unseen = 1

    plain = MixupCrossEntropy(label_smoothing=0.05, weight=w)
    assert torch.allclose(plain(model, x, y), F.cross_entropy(model(x), y, weight=w, label_smoothing=0.05))

    mixed = MixupCrossEntropy(mixup_alpha=0.4, weight=w)
    torch.manual_seed(1)
    got = mixed(model, x, y)
    torch.manual_seed(1)
    assert float(torch.rand(())) < 1.0
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(6)
    logits = model(lam * x + (1 - lam) * x[perm])
    want = lam * F.cross_entropy(logits, y, weight=w) + (1 - lam) * F.cross_entropy(logits, y[perm], weight=w)
    assert torch.allclose(got, want)
    never = MixupCrossEntropy(mixup_alpha=0.4, mixup_prob=0.0)
    assert torch.allclose(never(model, x, y), F.cross_entropy(model(x), y))


def test_eval_names_its_run_by_flag_or_position(home, cli):
    for args in (("classify", "eval"), ("classify", "eval", "--run", "nope"), ("classify", "eval", "nope"),
                 ("classify", "eval", "one", "--run", "two")):
        code, out, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, args
    assert "give --run RUN" in cli("classify", "eval")[2]
    assert "nope" in cli("classify", "eval", "--run", "nope")[2] and "nope" in cli("classify", "eval", "nope")[2]
    assert "two runs given" in cli("classify", "eval", "one", "--run", "two")[2]
    code, out, err = cli("classify", "eval", "--help")
    assert code == 0 and "--run RUN" in out and "eval --run latest" in out
