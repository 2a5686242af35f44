"""The generation benchmark on a tiny random model and a tiny catalog: every row measured, fidelity a
share, batched and two-call guidance agreeing; and the registry lists it."""

from __future__ import annotations

import pytest

from tasks.generation import bench
from tasks.generation.bench import Sampling, default_sampling, measure
from tasks.generation.run import inspect_folder
from tests.support.generation import make_catalog
from workbench.errors import WorkbenchError


def test_bench_measures_every_row_on_a_tiny_model(home, model_dir, one_torch_thread):
    catalog = make_catalog(home)                   # 25 tiles, 5 of them in the test split
    folder = inspect_folder(model_dir)
    folder.defaults["sampling"] = {"steps": 2, "guidance": 3.0, "scheduler": "ddim"}
    assert default_sampling(folder) == Sampling(2, 3.0, "ddim")     # the model's own defaults are picked

    result = measure(folder, catalog=catalog, n=4, single=2, eval_batch=3, diffusers_call=Sampling(4, 7.5, "ddim"))
    rows = {(r["case"], r["batch"]): r for r in result.rows}
    assert len(rows) == 6 and all(r["images/s"] > 0 for r in result.rows)

    diffusers_row, default_row = rows["(a) diffusers default call", 3], rows["(a) model defaults", 3]
    assert (diffusers_row["steps"], diffusers_row["guidance"], default_row["steps"]) == (4, 7.5, 2)
    for r in (diffusers_row, default_row):
        assert 0.0 <= r["location fidelity"] <= 1.0
    assert default_row["ratio"] == pytest.approx(default_row["images/s"] / diffusers_row["images/s"])

    for batch in (1, 3):                           # one place at a time, then the eval batch
        batched = rows["(b) batched guidance: 1 UNet call of 2N", batch]
        two = rows["(b) two UNet calls of N per step", batch]
        assert batched["max |Δ| uint8"] <= 1 and batched["steps"] == 2
        assert batched["ratio"] == pytest.approx(batched["images/s"] / two["images/s"])
    notes = "\n".join(result.notes)
    assert "goal >= 2x images/s: " in notes and "location fidelity no worse: " in notes
    assert "4 test places" in notes and "matters most on GPUs" in notes


def test_bench_without_a_default_model_says_so(home, monkeypatch):
    from tasks.generation import run

    monkeypatch.setattr(run, "DEFAULT_MODEL_DIR", home / "no_model")
    with pytest.raises(WorkbenchError, match="no usable default model .*workbench generate train"):
        bench.bench_generation(quick=True)


def test_bench_is_registered(capsys):
    from workbench.bench import main

    assert main(["--list"]) == 0
    assert "tasks.generation.bench:bench_generation" in capsys.readouterr().out.split()
