"""passthrough_collate: the one collate_fn of the trainer and of every WindowDataset loader."""

from __future__ import annotations

import torch

from workbench.data import dataset
from workbench.data.collate import passthrough_collate
from workbench.train import data as train_data


def test_a_built_batch_passes_through_untouched():
    batch = {"image": torch.zeros(2, 3, 4, 4), "tile": torch.tensor([0, 1])}
    assert passthrough_collate(batch) is batch


def test_samples_are_collated_as_torch_does():
    pairs = [(torch.tensor([1.0, 2.0]), torch.tensor(0)), (torch.tensor([3.0, 4.0]), torch.tensor(1))]
    x, y = passthrough_collate(pairs)
    assert torch.equal(x, torch.tensor([[1.0, 2.0], [3.0, 4.0]])) and torch.equal(y, torch.tensor([0, 1]))
    dicts = [{"image": torch.ones(2, 2), "tile": 3}, {"image": torch.zeros(2, 2), "tile": 4}]
    out = passthrough_collate(dicts)
    assert out["image"].shape == (2, 2, 2) and torch.equal(out["tile"], torch.tensor([3, 4]))


def test_one_function_everywhere():
    assert dataset.passthrough_collate is passthrough_collate
    assert train_data.passthrough_collate is passthrough_collate
    loader, _ = train_data.make_loader([torch.zeros(1)] * 4, 2, shuffle=False, seed=0)
    assert loader.collate_fn is passthrough_collate
