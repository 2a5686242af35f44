"""The shared trainer: schedules, early stopping, EMA, checkpoints, run folders, exact resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.support.linear import Pairs, mse
from workbench.config import build
from workbench.errors import WorkbenchError
from workbench.train import checkpoint as ckpt
from workbench.train.config import ScheduleConfig, TrainConfig
from workbench.train.ema import EMA
from workbench.train.monitor import EarlyStopping
from workbench.train.run_dir import RunDir
from workbench.train.schedule import LRSchedule
from workbench.train.seeding import capture_rng, restore_rng
from workbench.train.task import FunctionTask, TaskModule

TINY = Path(__file__).resolve().parents[2] / "support" / "tiny_train.py"


# ---------------------------------------------------------------------- config
def test_train_config_defaults_build_and_validate():
    cfg = build(TrainConfig, {"lr": "3e-4", "schedule": {"name": "cosine_restarts", "restart_period": 50}})
    assert cfg.lr == pytest.approx(3e-4) and cfg.schedule.restart_period == 50
    assert cfg.trackers == ["auto"] and cfg.mixed_precision == "auto" and cfg.max_steps is None
    with pytest.raises(WorkbenchError, match="did you mean 'schedule.warmup_steps'"):
        build(TrainConfig, {"schedule": {"warmup_step": 3}})
    with pytest.raises(WorkbenchError, match="not one of"):
        build(TrainConfig, {"optimizer": "lion"})
    with pytest.raises(WorkbenchError, match="train.grad_accum") as err:
        build(TrainConfig, {"grad_accum": 0})
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match="unknown tracker"):
        build(TrainConfig, {"trackers": ["tensorbord"]})


# ---------------------------------------------------------------------- schedules
def sched(total: int = 14, **kw) -> LRSchedule:
    return LRSchedule(ScheduleConfig(**kw), total_steps=total)



def test_auto_mixed_precision_follows_native_bf16(monkeypatch):
    """auto must never pick emulated bf16 (slower than fp32 on a CPU without bf16 units)."""
    from workbench.train import environment as env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "cpu_has_native_bf16", lambda: True)
    assert env.resolve_mixed_precision(TrainConfig()) == "bf16"
    assert env.resolve_mixed_precision(TrainConfig(mixed_precision="no")) == "no"
    monkeypatch.setattr(env, "cpu_has_native_bf16", lambda: False)
    assert env.resolve_mixed_precision(TrainConfig()) == "no"
    assert env.resolve_mixed_precision(TrainConfig(mixed_precision="bf16")) == "bf16"


def test_cpu_bf16_probe_reads_torch_checks(monkeypatch):
    from workbench.train.environment import cpu_has_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not cpu_has_native_bf16()

    def broken():
        raise RuntimeError("no cpuinfo")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert not cpu_has_native_bf16()


def test_warmup_then_cosine_values():
    s = sched(14, name="cosine", warmup_steps=4, min_lr_ratio=0.0)
    assert [s.factor(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s.factor(4) == pytest.approx(1.0)          # cosine starts at the top
    assert s.factor(9) == pytest.approx(0.5)          # half way through the 10 decay steps
    assert s.factor(14) == pytest.approx(0.0)
    assert s.factor(30) == pytest.approx(0.0)         # clamped after the horizon
    floor = sched(14, name="cosine", warmup_steps=4, min_lr_ratio=0.1)
    assert floor.factor(9) == pytest.approx(0.55) and floor.factor(14) == pytest.approx(0.1)


def test_cosine_restarts_restart():
    s = sched(name="cosine_restarts", restart_period=4)
    assert [s.factor(i) for i in (0, 2, 4, 6, 8)] == pytest.approx([1.0, 0.5, 1.0, 0.5, 1.0])
    assert s.factor(3) < s.factor(2) < s.factor(1)
    grow = sched(name="cosine_restarts", restart_period=4, restart_mult=2.0, warmup_steps=2)
    # warm-up 2 steps, then periods of 4 and 8 steps
    assert grow.factor(2) == pytest.approx(1.0) and grow.factor(4) == pytest.approx(0.5)
    assert grow.factor(6) == pytest.approx(1.0) and grow.factor(10) == pytest.approx(0.5)
    assert grow.factor(14) == pytest.approx(1.0)


def test_step_schedule():
    s = sched(name="step", step_size=3, gamma=0.5, warmup_steps=2)
    assert [s.factor(i) for i in range(2, 11)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])


def test_plateau_reduces_after_patience_and_round_trips():
    s = sched(name="plateau", plateau_patience=2, plateau_factor=0.5)
    s.mode = "min"
    assert [s.observe(v) for v in (1.0, 1.1, 1.2)] == [False, False, False]
    assert s.factor() == 1.0
    assert s.observe(1.3) is True and s.factor() == pytest.approx(0.5)
    assert s.observe(0.9) is False and s.plateau_bad == 0  # improvement resets the count
    for _ in range(3):
        s.observe(2.0)
    assert s.factor() == pytest.approx(0.25)
    for _ in range(5):
        s.step()
    copy = sched(name="plateau", plateau_patience=2, plateau_factor=0.5)
    copy.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert copy.state_dict() == s.state_dict() and copy.factor() == s.factor()


def test_schedule_state_round_trip_and_apply_per_group():
    s = sched(20, name="cosine", warmup_steps=3, min_lr_ratio=0.05)
    for _ in range(7):
        s.step()
    other = sched(20, name="cosine", warmup_steps=3, min_lr_ratio=0.05)
    other.load_state_dict(s.state_dict())
    assert other.factor() == s.factor() and other.step_count == 7
    w = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1, "base_lr": 0.1},
                           {"params": [b], "lr": 0.01, "base_lr": 0.01}], lr=0.1)
    s.apply(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * s.factor())
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * s.factor())


# ---------------------------------------------------------------------- early stopping, EMA
def first_stop(values, **kw) -> int | None:
    es = EarlyStopping(**kw)
    for i, v in enumerate(values):
        es.update(v)
        if es.should_stop:
            return i
    return None


def test_early_stopping_on_scripted_sequence():
    seq = [1.0, 0.9, 0.95, 0.89, 0.9, 0.91, 0.5]
    # 0.89 is not better than 0.9 by min_delta=0.02: evaluations 2, 3, 4 are bad -> stop at index 4
    assert first_stop(seq, patience=3, min_delta=0.02, mode="min") == 4
    # without min_delta 0.89 counts: bad at 2, improve at 3, bad at 4, 5 -> stop at 5
    assert first_stop(seq, patience=2, min_delta=0.0, mode="min") == 5
    assert first_stop([0.1, 0.2, 0.3, 0.3, 0.29], patience=2, mode="max") == 4
    assert first_stop(seq, patience=None) is None


def test_ema_math_and_swap():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    for w in (1.0, 2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
    # s1 = 0.5, s2 = 0.5*0.5 + 0.5*2 = 1.25, s3 = 0.5*1.25 + 0.5*4 = 2.625
    assert ema.shadow["weight"].item() == pytest.approx(2.625)
    assert ema.num_updates == 3
    with ema.applied(model):
        assert model.weight.item() == pytest.approx(2.625)
    assert model.weight.item() == 4.0


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_with_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    optim_tensors, optim_meta = ckpt.flatten_optimizer(opt.state_dict())
    rng_tensors, rng_meta = capture_rng()
    state = {"step": 3, "optimizer": optim_meta, "rng": rng_meta, "nested": {"best": None}}
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors",
                                {**ckpt.with_prefix("model", model.state_dict()), **optim_tensors, **rng_tensors},
                                state)
    expected = torch.rand(3)
    tensors, loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["nested"] == {"best": None}
    assert tensors["rng.torch"].dtype == torch.uint8
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    fresh.load_state_dict(ckpt.strip_prefix("model", tensors))
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.01, betas=(0.8, 0.95))
    opt2.load_state_dict(ckpt.unflatten_optimizer(tensors, loaded["optimizer"], opt2.state_dict()))
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    for pid, pstate in opt.state_dict()["state"].items():
        for key, value in pstate.items():
            assert torch.equal(value, opt2.state_dict()["state"][pid][key])
    restore_rng({k: v for k, v in tensors.items() if k.startswith("rng.")}, loaded["rng"])
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    ckpt.save_checkpoint(path, {"model.w": torch.ones(4)}, {"step": 1})
    real_fsync = ckpt.os.fsync

    def crash_midway(fd):
        os.ftruncate(fd, 20)  # a torn, half-written file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", crash_midway)
    with pytest.raises(WorkbenchError, match="No space left"):
        ckpt.save_checkpoint(path, {"model.w": torch.zeros(4)}, {"step": 2})
    monkeypatch.setattr(ckpt.os, "fsync", real_fsync)
    tensors, state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(tensors["model.w"], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temp left behind


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.safetensors"
    ckpt.save_checkpoint(path, {"model.w": torch.arange(64, dtype=torch.float32)}, {"step": 3})
    assert ckpt.verify_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(WorkbenchError, match="damaged") as e:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_weights_only_files_and_broken_metadata_are_one_line(tmp_path):
    import safetensors.torch

    plain = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, str(plain))
    with pytest.raises(WorkbenchError, match="weights-only"):
        ckpt.load_checkpoint(plain)
    broken = tmp_path / "broken.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, str(broken), metadata={"workbench": "{not json"})
    with pytest.raises(WorkbenchError, match="not a JSON object"):
        ckpt.read_state(broken)


def test_load_weights_prefers_ema(tmp_path):
    model = nn.Linear(2, 1)
    tensors = {**ckpt.with_prefix("model", {k: torch.zeros_like(v) for k, v in model.state_dict().items()}),
               **ckpt.with_prefix("ema", {k: torch.ones_like(v) for k, v in model.state_dict().items()})}
    run = RunDir(tmp_path / "r")
    ckpt.save_checkpoint(run.best_checkpoint, tensors, {"step": 5})
    info = ckpt.load_weights(run.path, model)  # a run folder: its best checkpoint
    assert info["weights"] == "ema" and info["step"] == 5 and model.weight.sum().item() == 2.0
    ckpt.load_weights(run.best_checkpoint, model, prefer_ema=False)
    assert model.weight.sum().item() == 0.0
    with pytest.raises(WorkbenchError, match="do not fit"):
        ckpt.load_weights(run.best_checkpoint, nn.Linear(3, 1))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(WorkbenchError, match="not a readable"):
        ckpt.load_weights(tmp_path / "junk.safetensors", model)


# ---------------------------------------------------------------------- the trainer, in process
class LinearTask(TaskModule):
    """A linear regression as a task module: the model is built in ``setup``."""

    name = "lin"

    def __init__(self, evaluate_fn=None):
        self.evaluate_fn = evaluate_fn
        self.devices: list = []

    def setup(self, accelerator) -> nn.Module:
        self.devices.append(accelerator.device)
        return nn.Linear(4, 1)

    def loss(self, model, batch):
        return mse(model, batch)

    def evaluate(self, model, loader, accelerator):
        if self.evaluate_fn is None:
            return super().evaluate(model, loader, accelerator)
        return self.evaluate_fn(model, loader, accelerator)


def test_trainer_early_stops_on_scripted_metric(home):
    from workbench.train import Trainer

    scripted = iter([1.0, 0.8, 0.85, 0.81, 0.9, 0.1, 0.1])
    cfg = build(TrainConfig, {"epochs": 10, "batch_size": 8, "lr": 0.01, "cpu": True, "trackers": ["none"],
                              "early_stopping": {"patience": 3, "min_delta": 0.0}})
    task = LinearTask(evaluate_fn=lambda model, loader, acc: {"val/loss": next(scripted)})
    trainer = Trainer(task, cfg, Pairs(), Pairs(8), name="es")
    summary = trainer.fit()
    assert summary["status"] == "stopped_early"
    assert summary["epochs"] == 5 and summary["steps"] == 15  # 3 steps per epoch, stopped after epoch 5
    assert summary["best"]["value"] == 0.8 and summary["best"]["epoch"] == 1
    run = RunDir(summary["run_dir"])
    assert json.loads(run.summary_path.read_text())["status"] == "stopped_early"
    assert [r["val/loss"] for r in run.read_metrics() if r["event"] == "eval"] == [1.0, 0.8, 0.85, 0.81, 0.9]
    assert run.best_checkpoint.is_file() and run.last_checkpoint.is_file()
    assert ckpt.read_state(run.best_checkpoint)["metrics"] == {"val/loss": 0.8}
    assert (run.path / "plots" / "loss_curve.png").is_file() and run.config_path.is_file()


def test_trainer_without_val_set_monitors_train_loss_and_logs_to_tensorboard(home):
    pytest.importorskip("tensorboard")
    from workbench.train import Trainer

    cfg = build(TrainConfig, {"epochs": 3, "batch_size": 6, "lr": 0.05, "cpu": True, "trackers": ["auto"],
                              "monitor": "train/loss", "optimizer": "sgd", "log_every_steps": 2,
                              "schedule": {"name": "step", "step_size": 4, "gamma": 0.5}})
    summary = Trainer(LinearTask(), cfg, Pairs(), name="noval").fit()
    assert summary["status"] == "finished" and summary["steps"] == 12
    losses = [e["train/loss"] for e in RunDir(summary["run_dir"]).read_metrics() if e["event"] == "eval"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert summary["best"]["value"] == min(losses)
    assert list((Path(summary["run_dir"]) / "logs").rglob("events.out.tfevents*"))


def test_trainers_of_different_precision_run_in_turn_in_one_process(home):
    """A bf16 stage then a fp32 stage (two-stage recipes, notebooks, one pytest session)."""
    from workbench.train import Trainer

    for precision in ("bf16", "no", "bf16"):
        cfg = build(TrainConfig, {"epochs": 1, "batch_size": 8, "cpu": True, "trackers": ["none"],
                                  "mixed_precision": precision})
        trainer = Trainer(LinearTask(), cfg, Pairs(), name=f"mp-{precision}")
        assert trainer.accelerator.mixed_precision == precision
        assert trainer.fit()["status"] == "finished"
        trainer.close()


def test_inference_model_scores_without_the_autocast_wrapper(home):
    """Post-fit test metrics must be what ``eval`` computes from the saved fp32 weights."""
    from workbench.train import Trainer

    cfg = build(TrainConfig, {"epochs": 1, "batch_size": 8, "cpu": True, "trackers": ["none"],
                              "mixed_precision": "bf16"})
    trainer = Trainer(LinearTask(), cfg, Pairs(), name="infer")
    trainer.fit()
    x = torch.randn(5, 4, dtype=torch.float64).float()
    assert trainer.unwrapped(x).dtype == torch.float32  # outputs converted back, but computed in bf16
    wrapped = trainer.unwrapped(x)
    model = trainer.inference_model()
    plain = torch.nn.functional.linear(x, model.weight, model.bias)
    assert torch.equal(model(x), plain)
    assert not torch.equal(wrapped, plain)  # bf16 rounding shows: the wrapper really was there
    trainer.close()


def test_resume_unknown_run_is_a_user_error(home):
    from workbench.train import Trainer

    cfg = build(TrainConfig, {"cpu": True, "trackers": ["none"]})
    with pytest.raises(WorkbenchError, match="no such run"):
        Trainer(FunctionTask(nn.Linear(4, 1), mse), cfg, Pairs(), resume="missing-run")


def final_weights(summary: dict) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_checkpoint(Path(summary["run_dir"]) / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


def test_setup_builds_after_the_accelerator_and_seed_and_is_reseeded_after(home):
    """setup() gets the trainer's accelerator after seed_everything(seed); whatever it draws, the
    loaders and optimizer start from the seed again, so a run equals one whose model was built first."""
    from workbench.train import Trainer, seed_everything

    cfg = build(TrainConfig, {"epochs": 2, "batch_size": 8, "lr": 0.05, "cpu": True, "trackers": ["none"],
                              "seed": 5, "monitor": "train/loss"})

    class Greedy(LinearTask):
        def setup(self, accelerator):
            model = super().setup(accelerator)
            torch.rand(1000)  # random draws of its own (a noise table, a frozen module's init)
            return model

    task = Greedy()
    trainer = Trainer(task, cfg, Pairs(), name="greedy")
    assert task.devices == [trainer.accelerator.device]
    seed_everything(5)
    expected = nn.Linear(4, 1)
    assert torch.equal(trainer.unwrapped.weight, expected.weight)
    greedy = trainer.fit()
    trainer.close()
    seed_everything(5)
    plain = Trainer(FunctionTask(nn.Linear(4, 1), mse, name="lin"), cfg, Pairs(), name="plain").fit()
    a, b = final_weights(greedy), final_weights(plain)
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert Path(greedy["run_dir"]).name.startswith("lin-greedy-")


def test_failed_setup_leaves_no_run_folder(home):
    from workbench.train import Trainer

    class Broken(LinearTask):
        def setup(self, accelerator):
            raise WorkbenchError("model.name: not a model")

    cfg = build(TrainConfig, {"cpu": True, "trackers": ["none"]})
    with pytest.raises(WorkbenchError, match="not a model"):
        Trainer(Broken(), cfg, Pairs(), name="broken")
    assert not list((home / "runs").glob("lin-broken-*"))
    with pytest.raises(TypeError, match="loss_fn"):
        Trainer(LinearTask(), cfg, Pairs(), loss_fn=mse)  # the task form takes no functions


def test_the_trainer_takes_a_task_module(home):
    """A bare model is refused with the way to wrap it; unknown keywords are refused as in any call."""
    from workbench.train import Trainer

    cfg = build(TrainConfig, {"cpu": True, "trackers": ["none"]})
    with pytest.raises(TypeError, match="FunctionTask"):
        Trainer(nn.Linear(4, 1), cfg, Pairs())
    with pytest.raises(TypeError, match="evaluate_every"):
        Trainer(FunctionTask(nn.Linear(4, 1), mse), cfg, Pairs(), evaluate_every=3)
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


def checkpoint_tensors(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    return ckpt.load_checkpoint(Path(run_dir) / "checkpoints" / "last.safetensors")


def assert_same_checkpoints(a: str | Path, b: str | Path) -> None:
    ta, sa = checkpoint_tensors(a)
    tb, sb = checkpoint_tensors(b)
    assert sorted(ta) == sorted(tb)
    assert any(k.startswith("ema.") for k in ta) and any(k.startswith("optim.state.") for k in ta)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs after resume"
    for part in ("schedule", "early_stopping", "rng"):
        assert sa[part] == sb[part], part
    keep = ("step", "epoch", "batch_in_epoch", "best_value", "best_step", "last_eval")
    assert {k: sa["trainer"][k] for k in keep} == {k: sb["trainer"][k] for k in keep}


def test_exact_resume_after_max_steps_stop_in_process(tmp_path, monkeypatch):
    from tests.support import tiny_train

    horizon = ["--set", "train.schedule.total_steps=12", "--batched"]  # schedule independent of max_steps
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "ref"))
    ref = tiny_train.main(horizon)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "cut"))
    cut = tiny_train.main([*horizon, "--set", "train.max_steps=5"])
    assert cut["steps"] == 5 and cut["status"] == "finished"
    state = checkpoint_tensors(cut["run_dir"])[1]["trainer"]
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 2)  # stopped mid-epoch, mid-accumulation cycle
    resumed = tiny_train.main([*horizon, "--resume", Path(cut["run_dir"]).name])
    assert resumed["run_dir"] == cut["run_dir"] and resumed["steps"] == ref["steps"] == 12
    assert_same_checkpoints(ref["run_dir"], resumed["run_dir"])
    steps = [r["step"] for r in RunDir(cut["run_dir"]).read_metrics() if r["event"] == "train"]
    assert steps == list(range(1, 13))  # no duplicated log lines after the resume
    assert resumed["best"]["value"] == ref["best"]["value"]


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line_on_resume(tmp_path, monkeypatch):
    """What --set model.* on resume, or another run's file copied over last, amounts to."""
    from tests.support import tiny_train

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    cut = tiny_train.main(["--set", "train.max_steps=2"])
    last = Path(cut["run_dir"]) / "checkpoints" / "last.safetensors"
    tensors, state = ckpt.load_checkpoint(last)
    tensors = {k: (torch.zeros(3) if k.startswith("model.") else v) for k, v in tensors.items()}
    ckpt.save_checkpoint(last, tensors, state)
    before = last.read_bytes()
    with pytest.raises(WorkbenchError, match="cannot resume from it") as e:
        tiny_train.main(["--resume", Path(cut["run_dir"]).name])
    assert "\n" not in str(e.value) and last.read_bytes() == before


# ---------------------------------------------------------------------- exact resume after kill -9
def child_env(home: Path) -> dict:
    return {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def last_step(home: Path) -> int:
    steps = [0]
    for path in (home / "runs").glob("*/metrics.jsonl"):
        for line in path.read_text().splitlines():
            try:
                steps.append(json.loads(line).get("step", 0))
            except ValueError:
                pass
    return max(steps)


@pytest.mark.slow
def test_exact_resume_after_sigkill(tmp_path):
    """Acceptance: kill -9 mid-run, resume, and end with bit-identical weights."""
    ref_home, cut_home = tmp_path / "ref", tmp_path / "cut"
    cmd = [sys.executable, str(TINY)]
    ref = subprocess.Popen(cmd, env=child_env(ref_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([*cmd, "--step-delay", "0.1"], env=child_env(cut_home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while last_step(cut_home) < 6 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = last_step(cut_home)
    assert 6 <= killed_at < 12
    (run,) = (cut_home / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"

    resumed = subprocess.run([*cmd, "--resume", run.name], env=child_env(cut_home), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err[-3000:]
    ref_summary = json.loads(out.strip().splitlines()[-1])
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["steps"] == 12
    assert_same_checkpoints(ref_summary["run_dir"], run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == list(range(1, 13))
    assert math.isclose(summary["best"]["value"], ref_summary["best"]["value"], rel_tol=0, abs_tol=0)


def test_a_loss_that_is_no_longer_a_number_stops_the_run_as_failed(home):
    from workbench.train import Trainer

    cfg = build(TrainConfig, {"epochs": 3, "batch_size": 8, "lr": 1e30, "optimizer": "sgd", "cpu": True,
                              "trackers": ["none"], "monitor": "train/loss", "log_every_steps": 1})
    trainer = Trainer(FunctionTask(nn.Linear(4, 1), mse, name="lin"), cfg, Pairs(), name="blowup")
    with pytest.raises(WorkbenchError, match=r"training loss is (nan|inf)") as e:
        trainer.fit()
    assert "\n" not in str(e.value)
    summary = json.loads((trainer.run.path / "summary.json").read_text())
    assert summary["status"] == "failed"
    trainer.close()
    with pytest.raises(WorkbenchError, match="finite number"):
        build(TrainConfig, {"lr": float("inf")})
