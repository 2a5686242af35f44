"""The run steps every task shares (``workbench.train.run_steps``), on real run folders and files:
the "drop --split" refusal, a resumed config, band statistics reused on resume, tiles.json, the
best weights reloaded after fit, and the end of a run (summary, latest marker, table)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.linear import Pairs, mse
from tests.support.rasters import write_pair
from workbench.config import build, dump_yaml
from workbench.data.stats import BandStats, compute_band_stats
from workbench.errors import WorkbenchError
from workbench.train import checkpoint as ckpt
from workbench.train import run_steps
from workbench.train.config import TrainConfig
from workbench.train.run_dir import RunDir
from workbench.train.task import FunctionTask


@dataclass
class SmallConfig:
    name: str = "small"
    size: int = 16
    train: TrainConfig = field(default_factory=TrainConfig)


def small_config(tree: dict) -> SmallConfig:
    return build(SmallConfig, tree)


def started_run(name: str) -> RunDir:
    """A run folder as the trainer leaves it once started (config and summary written)."""
    run = RunDir.create("small", name)
    dump_yaml({"name": name}, run.config_path)
    run.update_summary(status="running")
    return run


# ---------------------------------------------------------------------- the --split refusal
def test_refuse_split_filter_names_the_settings_in_one_line():
    for ok in (None, {}, {"split": None}, {"source": "folder", "where": "label = 'sea'"}):
        run_steps.refuse_split_filter(ok, "classify train")
    with pytest.raises(WorkbenchError) as err:
        run_steps.refuse_split_filter({"split": "val", "source": "folder"}, "classify train")
    assert str(err.value) == ("classify train takes its train/val/test tiles from the split column: drop --split "
                              "(or set data.train_split / data.val_split / data.test_split)")
    with pytest.raises(WorkbenchError) as err:
        run_steps.refuse_split_filter({"split": ["train", "val"]}, "generate train", splits=("train", "val"))
    assert str(err.value) == ("generate train takes its train/val tiles from the split column: drop --split "
                              "(or set data.train_split / data.val_split)")


# ---------------------------------------------------------------------- resume: config and band statistics
def test_resume_config_is_the_runs_config_with_overrides_on_top(home):
    run = started_run("r")
    dump_yaml({"name": "r", "size": 24, "train": {"lr": 0.01, "epochs": 7}}, run.config_path)
    cfg = run_steps.resume_config(run.name, ["train.lr=0.5"], small_config)
    assert isinstance(cfg, SmallConfig)
    assert cfg.size == 24 and cfg.train.epochs == 7 and cfg.train.lr == 0.5 and cfg.name == "r"
    assert run_steps.resume_config(str(run.path), None, small_config).train.lr == 0.01
    with pytest.raises(WorkbenchError, match="did you mean 'train.lr'"):
        run_steps.resume_config(run.name, ["train.lrr=1"], small_config)
    with pytest.raises(WorkbenchError, match="no such run"):
        run_steps.resume_config("missing-run", [], small_config)


def test_band_stats_are_computed_on_train_tiles_and_reused_on_resume(home):
    tiles = [write_pair(home, f"t{i}", size=32, bands=3, seed=i)[0] for i in range(3)]
    fresh = run_steps.band_stats_for(tiles, bands=[0, 2], max_tiles=8, seed=1)
    direct = compute_band_stats(tiles, bands=[0, 2], max_tiles=8, seed=1, split=None)
    assert fresh.to_dict() == direct.to_dict() and len(fresh.mean) == 2

    run = started_run("resumed")
    saved = BandStats(mean=[1.0, 2.0], std=[3.0, 4.0], band_names=["red", "blue"], pixels=10)
    saved.save(run.path / "band_stats.json")
    reused = run_steps.band_stats_for(tiles, bands=[0, 2], max_tiles=8, seed=1, resume=run.name)
    assert reused.to_dict() == saved.to_dict()   # what the run started with, not recomputed

    bare = started_run("no-stats")   # a run killed before it wrote its statistics
    again = run_steps.band_stats_for(tiles, bands=[0, 2], max_tiles=8, seed=1, resume=bare.name,
                                     runs_root=home / "runs")
    assert again.to_dict() == direct.to_dict()



def test_resume_latest_with_a_task_is_that_tasks_last_run(home):
    """``--resume latest`` of one task must not continue another task's newer run."""
    from workbench.train.run_dir import write_latest

    mine = started_run("mine")
    dump_yaml({"name": "mine", "size": 20}, mine.config_path)
    BandStats(mean=[1.0], std=[1.0], band_names=["b1"]).save(mine.path / "band_stats.json")
    mine.update_summary(started="2030-01-01T00:00:00")
    write_latest(mine.path, "small")
    other = RunDir.create("other", "theirs")
    dump_yaml({"name": "theirs", "size": 40}, other.config_path)
    BandStats(mean=[9.0], std=[1.0], band_names=["b1"]).save(other.path / "band_stats.json")
    other.update_summary(status="running", started="2030-01-02T00:00:00")   # newer, of another task

    assert run_steps.resume_config("latest", [], small_config).size == 40          # no task: newest of all
    assert run_steps.resume_config("latest", [], small_config, task="small").size == 20
    assert run_steps.resume_config("mine", ["size=8"], small_config, task="small").size == 8
    with pytest.raises(WorkbenchError, match="looked at the small runs"):
        run_steps.resume_config("theirs", [], small_config, task="small")
    tiles = [home / "gone.tif"]
    assert np.allclose(run_steps.band_stats_for(tiles, bands=None, max_tiles=None, seed=0, resume="latest").mean,
                       [9.0])
    assert np.allclose(run_steps.band_stats_for(tiles, bands=None, max_tiles=None, seed=0, resume="latest",
                                                task="small").mean, [1.0])


# ---------------------------------------------------------------------- tiles.json
def test_write_tiles_json_records_the_query_splits_and_ids(home):
    run = RunDir.create("small", "tiles")
    tiles = {"train": [SimpleNamespace(id=3), SimpleNamespace(id=1)], "val": [SimpleNamespace(id=7)], "test": []}
    path = run_steps.write_tiles_json(run, catalog=home / "catalog.sqlite", query={"source": "folder"},
                                      splits={"train": "train", "val": "val", "test": "test"}, tiles=tiles,
                                      class_counts=[5, 6])
    assert path == run.path / "tiles.json"
    info = json.loads(path.read_text())
    assert list(info) == ["catalog", "query", "splits", "train", "val", "test", "class_counts"]
    assert info["catalog"] == str(home / "catalog.sqlite") and info["query"] == {"source": "folder"}
    assert info["train"] == [3, 1] and info["val"] == [7] and info["test"] == [] and info["class_counts"] == [5, 6]
    run_steps.write_tiles_json(run, catalog="c.sqlite", query={}, tiles={"train": tiles["train"]})
    assert list(json.loads(path.read_text())) == ["catalog", "query", "train"]   # no splits given: none written


# ---------------------------------------------------------------------- after fit: best weights, the end
@pytest.fixture
def fitted(home):
    """A finished 3-epoch run whose best evaluation is the first one, with EMA weights."""
    from workbench.train import Trainer

    scripted = iter([0.1, 0.5, 0.9])
    cfg = build(TrainConfig, {"epochs": 3, "batch_size": 8, "lr": 0.1, "cpu": True, "trackers": ["none"],
                              "ema_decay": 0.5})
    task = FunctionTask(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 1)), mse,
                        evaluate_fn=lambda model, loader, acc: {"val/loss": next(scripted)}, name="small")
    trainer = Trainer(task, cfg, Pairs(16), Pairs(8), name="fit")
    summary = trainer.fit()
    yield trainer, summary
    trainer.close()


def test_reload_best_gives_the_best_ema_weights_in_eval_mode(fitted):
    trainer, summary = fitted
    assert summary["best"]["epoch"] == 0 and summary["steps"] == 6
    best_tensors, _ = ckpt.load_checkpoint(trainer.run.best_checkpoint)
    last_tensors, _ = ckpt.load_checkpoint(trainer.run.last_checkpoint)
    model = run_steps.reload_best(trainer)
    assert model is trainer.unwrapped and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, best_tensors[f"ema.{key}"]), key
    assert not torch.equal(model.state_dict()["0.weight"], last_tensors["model.0.weight"])
    assert not torch.equal(best_tensors["ema.0.weight"], best_tensors["model.0.weight"])   # EMA, not raw


def test_reload_best_without_a_best_checkpoint_keeps_the_trained_weights(fitted):
    trainer, _ = fitted
    trainer.run.best_checkpoint.unlink()
    trained = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    model = run_steps.reload_best(trainer)
    assert not model.training and all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_finish_run_updates_the_summary_marks_latest_and_prints_the_table(fitted, capsys):
    trainer, summary = fitted
    capsys.readouterr()
    out = run_steps.finish_run(trainer, summary, lambda s: f"TABLE {s['status']} {s['total_time_s']:.0f}",
                               started=time.perf_counter() - 2.0, test={"macro_f1": 0.5})
    assert out is summary and summary["total_time_s"] >= 2.0
    saved = trainer.run.read_summary()
    assert saved["total_time_s"] == summary["total_time_s"] and saved["test"] == {"macro_f1": 0.5}
    assert saved["status"] == "finished"
    latest = Path(trainer.run.path.parent / "latest-small")
    assert latest.read_text().strip() == str(trainer.run.path.resolve())
    assert capsys.readouterr().out.strip() == f"TABLE finished {summary['total_time_s']:.0f}"

    run_steps.finish_run(trainer, summary, None, vae_run="small-vae-1")   # no table, no clock: nothing printed
    assert capsys.readouterr().out == "" and trainer.run.read_summary()["vae_run"] == "small-vae-1"
    assert trainer.run.read_summary()["total_time_s"] == summary["total_time_s"]


def test_band_stats_on_resume_do_not_need_the_tiles(home):
    """A resumed run whose tiles moved still gets the statistics it trained with."""
    run = started_run("moved")
    BandStats(mean=[5.0], std=[2.0], band_names=["b1"]).save(run.path / "band_stats.json")
    stats = run_steps.band_stats_for([home / "gone.tif"], bands=None, max_tiles=None, seed=0, resume=run.name)
    assert np.allclose(stats.mean, [5.0])
    with pytest.raises(WorkbenchError):
        run_steps.band_stats_for([home / "gone.tif"], bands=None, max_tiles=None, seed=0)


def test_a_registered_layout_brings_its_own_normalisation_for_the_bands_it_knows():
    """B02 B03 B04 take the SSL4EO-S12 file's mean / std (what its filters were trained on), an index
    channel keeps the run's own; raw-unit runs and resumed runs are left as they are."""
    from workbench.data.contract import InputBand, InputContract
    from workbench.data.stats import BandStats
    from workbench.train.run_steps import pretrained_stats
    from workbench.weights import layout

    names = ["B02", "B03", "B04", "B08"]
    contract = InputContract([InputBand(n, None, "uint16", 1e-4, 0.0, 0) for n in names], "reflectance", 10.0)
    own = BandStats([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], names, index_names=["ndwi"], index_mean=[0.1],
                    index_std=[0.3])
    lay = layout("ssl4eo-s12-resnet18")
    got = pretrained_stats(own, contract, lay.name)
    want = [lay.bands.index(n) for n in names]
    assert got.mean == [lay.mean[i] for i in want] and got.std == [lay.std[i] for i in want]
    assert got.index_mean == [0.1] and got.index_std == [0.3] and got.band_names == names
    assert pretrained_stats(own, contract, None) is own
    assert pretrained_stats(own, contract, lay.name, resume="runs/x") is own
    raw = InputContract(contract.bands, "raw", None)
    assert pretrained_stats(own, raw, lay.name) is own
