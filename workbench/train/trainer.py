"""The one trainer every task uses, driven by ``accelerate``.

A task brings a ``TaskModule`` (``workbench.train.task``): the trainer creates the
Accelerator, asks the task to build its model on that device (``setup``), then owns the
loop and everything around it: optimizer, schedule, accumulation, clipping, EMA, early
stopping, checkpoints, logging. The same code runs on CPU, one GPU, or many processes
under ``accelerate launch`` / ``torchrun``.

Exact resume: a checkpoint holds weights, EMA, optimizer, schedule, early-stop and
best-metric state, (epoch, batch in epoch) and the RNG states. Data order is a pure
function of (seed, epoch) (``data.EpochSampler``), so a resumed run rebuilds the
epoch's order, skips the batches it already consumed, and continues bit-for-bit
(on CPU with a fixed seed) where the interrupted run left off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from workbench.config import dump_yaml, flatten, to_dict
from workbench.errors import WorkbenchError
from workbench.train import checkpoint as ckpt
from workbench.train.config import TrainConfig
from workbench.train.data import finish_batch, finish_on, make_loader
from workbench.train.ema import EMA
from workbench.train.environment import resolve_mixed_precision, resolve_trackers
from workbench.train.monitor import EarlyStopping, is_better
from workbench.train.optim import build_optimizer
from workbench.train.plots import plot_curves
from workbench.train.run_dir import RunDir
from workbench.train.schedule import LRSchedule
from workbench.train.seeding import capture_rng, restore_rng, seed_everything
from workbench.train.task import Callback, FunctionTask, TaskModule

log = logging.getLogger(__name__)

__all__ = ["Callback", "FunctionTask", "TaskModule", "TrainState", "Trainer"]


@dataclass
class TrainState:
    """The loop's position and bookkeeping; saved as JSON in every checkpoint."""

    step: int = 0                 # optimizer steps taken
    epoch: int = 0                # current epoch (epochs completed when batch_in_epoch == 0)
    batch_in_epoch: int = 0       # micro-batches of `epoch` already consumed (this process)
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)
    last_eval_step: int = -1
    stopped_early: bool = False
    elapsed: float = 0.0          # training seconds over all sessions
    epoch_loss_sum: float = 0.0   # for the train/loss fallback when there is no val set
    epoch_loss_count: int = 0


def _release_accelerator_state(mixed_precision: str) -> None:
    """Let one process build trainers of different precisions one after another (two-stage
    recipes, notebooks, a test session); see :func:`workbench.fastpaths.release_accelerator_state`."""
    from workbench import fastpaths

    fastpaths.release_accelerator_state(mixed_precision)


class Trainer:
    """Train ``task``'s model on ``train_data`` under ``cfg``; ``fit()`` returns the run summary.

    Args:
        task: the ``TaskModule`` (``workbench.train.task``): builds the model on the
            trainer's device (``setup``), gives the loss, the validation metrics, the
            optimizer groups and its callbacks. Its ``name`` is the run folder prefix.
        cfg: the ``train:`` section.
        train_data / val_data: map-style datasets; items are collated by default, or a
            dataset's ``__getitems__`` may return a ready batch (a mapping).
            ``set_epoch(epoch)`` is called on a dataset that has it.
        name: the run folder is ``runs/<task.name>-<name>-<time>``.
        config: the task's full config (dataclass or dict) written to ``config.yaml``.
        collate_fn: how items become a batch (default: torch's collate).
        resume: a run folder or run name to continue exactly from its last checkpoint.
        runs_root: where run folders go (default: ``$WORKBENCH_HOME/runs``).
        callbacks: more hooks (see ``Callback``), fired after the task's own.

    A bare model with a loss function is ``FunctionTask(model, loss_fn, name=...)``.
    """

    def __init__(self, task: TaskModule, /, cfg: TrainConfig, train_data: Dataset, val_data: Dataset | None = None,
                 *, name: str = "run", config: Any = None, collate_fn: Callable | None = None,
                 resume: str | Path | None = None, runs_root: str | Path | None = None,
                 callbacks: Sequence[Callback] = ()):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import ProjectConfiguration

        if not isinstance(task, TaskModule):
            raise TypeError(f"Trainer(task, ...) takes a TaskModule, not {type(task).__name__} "
                            "(wrap a bare model and its loss function in FunctionTask)")
        self.task = task
        self.cfg, self.task_name, self.name = cfg, task.name, name
        self.train_data, self.val_data = train_data, val_data
        self.state = TrainState()

        PartialState(cpu=cfg.cpu)  # the process group exists before we pick the run folder
        self.run = self._open_run(resume, runs_root)
        precision = resolve_mixed_precision(cfg)
        _release_accelerator_state(precision)
        self.accelerator = Accelerator(
            cpu=cfg.cpu, mixed_precision=precision,
            gradient_accumulation_steps=cfg.grad_accum, log_with=resolve_trackers(cfg.trackers) or None,
            project_config=ProjectConfiguration(project_dir=str(self.run.path),
                                                logging_dir=str(self.run.path / "logs")))
        self.is_main = self.accelerator.is_main_process
        seed_everything(cfg.seed)
        try:
            model = task.setup(self.accelerator)
        except BaseException:
            if resume is None:
                self._discard_empty_run()
            raise
        # Seeded again: loaders and optimizer start from the state they had when a task seeded,
        # built its model itself and then built the trainer, whatever setup() drew.
        seed_everything(cfg.seed)

        # Data: one permutation per (seed, epoch), sharded by accelerate; see data.py.
        self._loader_rng = torch.Generator()
        finish_on(train_data, self.accelerator.device)  # raw batches finished in the step (on a GPU)
        train_loader, self.train_sampler = make_loader(
            train_data, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
            collate_fn=collate_fn, generator=self._loader_rng)
        val_loader = None
        if val_data is not None:
            val_loader, _ = make_loader(val_data, cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                                        seed=cfg.seed, num_workers=cfg.num_workers, collate_fn=collate_fn,
                                        generator=torch.Generator().manual_seed(cfg.seed))
        optimizer = build_optimizer(cfg, model, task.param_groups(model))
        self.callbacks: list[Callback] = [*task.callbacks(), *callbacks]
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, optimizer, train_loader)
        self.val_loader = self.accelerator.prepare(val_loader) if val_loader is not None else None
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self._trainable = self._trainable_signature()

        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.grad_accum)
        planned = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(planned, cfg.max_steps) if cfg.max_steps else planned
        self.schedule = LRSchedule(cfg.schedule, cfg.schedule.total_steps or self.total_steps, cfg.mode)
        self.early_stopping = EarlyStopping(cfg.early_stopping.patience, cfg.early_stopping.min_delta, cfg.mode)
        self.ema = EMA(self.unwrapped, cfg.ema_decay) if cfg.ema_decay else None

        self._pending_rng: tuple[dict, dict] | None = None
        self._epoch_loss: float | torch.Tensor = 0.0
        self._saved_at: tuple | None = None
        if resume is not None:
            self._load_last()
        self.schedule.apply(self.optimizer)
        self._write_start_files(config)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``epochs``, ``max_steps`` or early stopping; returns the summary."""
        self._fire("on_fit_start")
        self._t0, self._elapsed0 = time.perf_counter(), self.state.elapsed
        self._window_loss, self._window_count, self._window_logs = 0.0, 0, {}
        self._bar = self._progress_bar()
        try:
            while not self._done():
                if self._train_epoch():
                    self._end_epoch()
            if self.state.last_eval_step != self.state.step:
                self._evaluate_and_track(feed=False)  # final metrics of a run cut by max_steps
            self._save_last()
        except BaseException:
            self._bar.close()
            if self.is_main:
                self.run.update_summary(status="failed", **self._progress_fields())
            raise
        self._bar.close()
        return self._finish()

    def _train_epoch(self) -> bool:
        """Consume the rest of the current epoch; False when max_steps stopped it midway."""
        loader = self._begin_epoch(self.state.epoch)
        self.model.train()
        for batch in loader:
            batch = finish_batch(batch)  # on the device already: a raw batch becomes the dataset's contract
            with self.accelerator.accumulate(self.model):
                loss, logs = self.task.loss(self.model, batch)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients and self.cfg.clip_grad_norm:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.state.batch_in_epoch += 1
            self._accumulate_logs(loss, logs)
            if self.accelerator.sync_gradients:
                self._after_optimizer_step()
                if self.cfg.max_steps and self.state.step >= self.cfg.max_steps \
                        and self.state.batch_in_epoch < self._batches_in_epoch:
                    self._close(loader)
                    return False
        return True

    def _after_optimizer_step(self) -> None:
        lr = self.optimizer.param_groups[0]["lr"]  # the LR this update used; logged with it
        self.state.step += 1
        self.schedule.step()
        self.schedule.apply(self.optimizer)
        if self.ema is not None:
            self.ema.update(self.unwrapped)
        self._bar.update(1)
        if self.state.step % self.cfg.log_every_steps == 0:
            self._log_train(lr)
        self._fire("on_step_end")
        every = self.cfg.checkpoint_every_steps
        if every and self.state.step % every == 0 and self.state.batch_in_epoch < self._batches_in_epoch:
            self._save_last()  # the epoch's last step is saved after its evaluation instead

    def _refuse_non_finite(self, loss: float) -> None:
        """Stop a run whose training loss is no longer a number (checked where the loss is read
        anyway: every ``log_every_steps`` and at each epoch's end, no extra device sync); the run
        is marked failed, never finished, and its last checkpoint is not overwritten."""
        if not math.isfinite(loss):
            raise WorkbenchError(f"step {self.state.step}: the training loss is {loss}; the run stops (marked "
                                 "failed). Lower train.lr, or set train.clip_grad_norm")

    def _end_epoch(self) -> None:
        if self.state.epoch_loss_count:
            self._refuse_non_finite(float(self._epoch_loss) / self.state.epoch_loss_count)
        epoch = self.state.epoch
        last = epoch + 1 >= self.cfg.epochs or (self.cfg.max_steps and self.state.step >= self.cfg.max_steps)
        if (epoch + 1) % self.cfg.eval_every_epochs == 0 or last:
            self._evaluate_and_track(feed=True)
        self._fire("on_epoch_end", epoch)
        self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
        self._epoch_loss, self.state.epoch_loss_count = 0.0, 0
        self._save_last()

    def _done(self) -> bool:
        s = self.state
        capped = bool(self.cfg.max_steps and s.step >= self.cfg.max_steps)
        return s.stopped_early or s.epoch >= self.cfg.epochs or capped

    def param_group(self, name: str) -> dict:
        """The optimizer group called ``name`` (set ``base_lr`` on it in a hook; the schedule scales it)."""
        for group in self.optimizer.param_groups:
            if group.get("name") == name:
                return group
        known = ", ".join(str(g.get("name")) for g in self.optimizer.param_groups)
        raise WorkbenchError(f"no optimizer param group named {name!r} (groups: {known})")

    def inference_model(self) -> nn.Module:
        """The trained module as a checkpoint loader gets it: no autocast wrapper on forward.

        Under bf16/fp16 accelerate wraps ``forward`` in autocast; scoring through that wrapper
        after ``fit`` would give test metrics that ``eval`` on the saved weights cannot
        reproduce. Call it once training is over: it strips the wrapper in place.
        """
        return self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)

    def close(self) -> None:
        """Leave the process group cleanly once the run's files are written.

        A gloo/NCCL group still alive at interpreter exit can abort the process
        ("terminate called without an active exception"), failing a finished run.
        """
        self.accelerator.wait_for_everyone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    # ------------------------------------------------------------------ epochs and data
    def _begin_epoch(self, epoch: int) -> Any:
        """Set the epoch everywhere it matters, run hooks, and return this epoch's loader."""
        resuming_midway = self.state.batch_in_epoch > 0
        if self._pending_rng is not None and not resuming_midway:
            self._restore_pending_rng()
        self.train_sampler.set_epoch(epoch)
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(epoch)
        self._loader_rng.manual_seed(self.cfg.seed + epoch)  # worker seeds: a function of (seed, epoch)
        self._fire("on_epoch_start", epoch)
        self._rewrap_if_trainable_changed()
        self.schedule.apply(self.optimizer)  # a hook may have changed a group's base_lr
        self._batches_in_epoch = len(self.train_loader)
        loader = self.train_loader
        if resuming_midway:
            loader = self.accelerator.skip_first_batches(loader, self.state.batch_in_epoch)
        loader.set_epoch(epoch)
        self.accelerator.step = self.state.batch_in_epoch  # accelerate's accumulation counter
        if self._pending_rng is not None:
            self._restore_pending_rng()
        return loader

    def _close(self, loader: Any) -> None:
        """Leaving an epoch early: tell accelerate its dataloader is done."""
        with contextlib.suppress(Exception):
            loader.end()

    def _trainable_signature(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self.unwrapped.parameters())

    def _rewrap_if_trainable_changed(self) -> None:
        """DDP fixes its set of trainable parameters when it wraps the model; rewrap after (un)freezing."""
        signature = self._trainable_signature()
        if signature == self._trainable:
            return
        self._trainable = signature
        if self.accelerator.num_processes > 1 and self.model is not self.unwrapped:
            old = self.model
            with contextlib.suppress(ValueError):
                self.accelerator._models.remove(old)
            self.model = self.accelerator.prepare_model(self.unwrapped)
            del old

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Run the task's ``evaluate`` (with EMA weights when enabled); identical result on every process."""
        from accelerate.utils import broadcast_object_list

        self.model.eval()
        swap = self.ema.applied(self.unwrapped) if self.ema is not None else contextlib.nullcontext()
        with swap, torch.no_grad():
            if self.val_loader is not None:
                # accelerate would pass its pass-count to val_data.set_epoch: pin it so every
                # evaluation (also after a resume) sees the same validation windows.
                self.val_loader.set_epoch(0)
                metrics = self.task.evaluate(self.model, self.val_loader, self.accelerator)
            else:  # no val set: monitor the epoch's mean training loss
                total = torch.tensor([float(self._epoch_loss), self.state.epoch_loss_count],
                                     dtype=torch.float64, device=self.accelerator.device)
                total = self.accelerator.reduce(total, "sum")
                metrics = {"train/loss": (total[0] / total[1].clamp(min=1)).item()}
        self.model.train()
        metrics = {k: float(v) for k, v in metrics.items()}
        return broadcast_object_list([metrics])[0]  # every process takes the same decisions

    def _evaluate_and_track(self, feed: bool) -> dict[str, float]:
        metrics = self.evaluate()
        s = self.state
        s.last_eval, s.last_eval_step = metrics, s.step
        self._record("eval", metrics)
        self._fire("on_evaluate", metrics)
        value = metrics.get(self.cfg.monitor)
        if value is None:
            if self.is_main:
                log.warning("monitored metric %r not among %s", self.cfg.monitor, sorted(metrics))
            return metrics
        if feed:
            self.schedule.observe(value)
            self.schedule.apply(self.optimizer)
            self.early_stopping.update(value)
            s.stopped_early = self.early_stopping.should_stop
        if is_better(value, s.best_value, self.cfg.mode):
            s.best_value, s.best_step, s.best_epoch, s.best_metrics = value, s.step, s.epoch, metrics
            self._save_best()
        return metrics

    # ------------------------------------------------------------------ logging
    def _accumulate_logs(self, loss: torch.Tensor, logs: dict[str, float]) -> None:
        value = loss.detach().float()
        self._window_loss = self._window_loss + value
        self._window_count += 1
        for key, v in (logs or {}).items():
            self._window_logs[key] = self._window_logs.get(key, 0.0) + float(v)
        self._epoch_loss = self._epoch_loss + value
        self.state.epoch_loss_count += 1

    def _log_train(self, lr: float) -> None:
        n = max(1, self._window_count)
        mean = self.accelerator.reduce(torch.as_tensor(self._window_loss, device=self.accelerator.device,
                                                       dtype=torch.float32) / n, "mean").item()
        values = {"train/loss": mean, **{(k if "/" in k else f"train/{k}"): v / n
                                         for k, v in self._window_logs.items()}}
        self._window_loss, self._window_count, self._window_logs = 0.0, 0, {}
        self._refuse_non_finite(mean)
        self._bar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.3g}", refresh=False)
        self._record("train", values, lr)

    def _record(self, event: str, values: dict[str, float], lr: float | None = None) -> None:
        s = self.state
        lr = self.optimizer.param_groups[0]["lr"] if lr is None else lr
        self.accelerator.log({**values, "lr": lr}, step=s.step)
        if self.is_main:
            self.run.append_metrics({"event": event, "step": s.step, "epoch": s.epoch, "lr": lr,
                                     "time": round(self._elapsed(), 3), **values})

    def _progress_bar(self) -> Any:
        from workbench.progress import progress

        return progress(total=self.total_steps, initial=min(self.state.step, self.total_steps), unit="step",
                        desc=f"{self.task_name}/{self.name}", enabled=self.is_main, leave=True)

    def _elapsed(self) -> float:
        return self._elapsed0 + time.perf_counter() - self._t0

    def _fire(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    # ------------------------------------------------------------------ checkpoints
    def _weights(self) -> dict[str, torch.Tensor]:
        tensors = ckpt.with_prefix("model", self.unwrapped.state_dict())
        if self.ema is not None:
            tensors.update(ckpt.with_prefix("ema", self.ema.state_dict()))
        return tensors

    def _trainer_state(self) -> dict:
        s = self.state
        s.epoch_loss_sum = float(self._epoch_loss)
        if hasattr(self, "_t0"):
            s.elapsed = self._elapsed()
        return {"trainer": dataclasses.asdict(s), "task": self.task_name, "name": self.name,
                "monitor": self.cfg.monitor, "mode": self.cfg.mode,
                "ema_updates": self.ema.num_updates if self.ema is not None else 0,
                "world_size": self.accelerator.num_processes, "batch_size": self.cfg.batch_size}

    def _save_last(self) -> None:
        """Everything needed to continue: weights, EMA, optimizer, schedule, RNG (main process writes)."""
        s = self.state
        position = (s.step, s.epoch, s.batch_in_epoch, s.last_eval_step)
        if not self.is_main or position == self._saved_at:
            return
        self._saved_at = position
        rng_tensors, rng_meta = capture_rng()
        optim_tensors, optim_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        state = {**self._trainer_state(), "schedule": self.schedule.state_dict(),
                 "early_stopping": self.early_stopping.state_dict(), "optimizer": optim_meta, "rng": rng_meta}
        ckpt.save_checkpoint(self.run.last_checkpoint, {**self._weights(), **optim_tensors, **rng_tensors}, state)
        self.run.update_summary(**self._progress_fields())

    def _save_best(self) -> None:
        if self.is_main:
            ckpt.save_checkpoint(self.run.best_checkpoint, self._weights(),
                                 {**self._trainer_state(), "metrics": self.state.best_metrics})

    def _load_last(self) -> None:
        path = self.run.last_checkpoint
        if not path.is_file():
            raise WorkbenchError(f"{self.run.path}: no checkpoint to resume from (checkpoints/last.safetensors)")
        tensors, state = ckpt.load_checkpoint(path)
        try:
            self._restore(tensors, state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            detail = next((ln.strip() for ln in str(exc).splitlines() if "mismatch" in ln or "Missing" in ln),
                          str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            raise WorkbenchError(f"{path}: cannot resume from it with this config ({type(exc).__name__}: "
                                 f"{detail[:200]}); was the model or optimizer changed with --set?") from None
        if self.is_main:
            self.run.truncate_metrics(self.state.step)

    def _restore(self, tensors: dict, state: dict) -> None:
        self.unwrapped.load_state_dict(ckpt.strip_prefix("model", tensors))
        if self.ema is not None:
            shadow = ckpt.strip_prefix("ema", tensors)
            if shadow:
                self.ema.load_state_dict(shadow, state.get("ema_updates", 0))
            else:  # EMA switched on at resume: start the shadow from the current weights
                self.ema = EMA(self.unwrapped, self.cfg.ema_decay)
        self.optimizer.load_state_dict(
            ckpt.unflatten_optimizer(tensors, state["optimizer"], self.optimizer.state_dict()))
        self.schedule.load_state_dict(state["schedule"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        known = {f.name for f in dataclasses.fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in state["trainer"].items() if k in known})
        self._adapt_epoch_position(state.get("world_size", 1), state.get("batch_size", self.cfg.batch_size))
        self._epoch_loss = self.state.epoch_loss_sum
        self._pending_rng = ({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])

    def _adapt_epoch_position(self, world_size: int, batch_size: int) -> None:
        """Resuming with another process count or batch size: keep the number of samples consumed.

        Exact resume needs the same ones; this only avoids repeating or skipping much data."""
        now = (self.accelerator.num_processes, self.cfg.batch_size)
        if (world_size, batch_size) == now or not self.state.batch_in_epoch:
            return
        samples = self.state.batch_in_epoch * world_size * batch_size
        batches = samples // (now[0] * now[1])
        self.state.batch_in_epoch = min(batches - batches % self.cfg.grad_accum, len(self.train_loader))
        if self.is_main:
            log.warning("resuming with %d process(es) x batch %d (was %d x %d): the position in the epoch is "
                        "approximated, the result will not match an uninterrupted run exactly",
                        now[0], now[1], world_size, batch_size)

    def _restore_pending_rng(self) -> None:
        tensors, meta = self._pending_rng
        restore_rng(tensors, meta)
        self._pending_rng = None

    # ------------------------------------------------------------------ run folder
    def _open_run(self, resume: str | Path | None, runs_root: str | Path | None) -> RunDir:
        """Main process creates (or finds) the folder; the others receive its path."""
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        state = PartialState()
        found: list[Any] = [None]
        if state.is_main_process:
            try:
                run = RunDir.open(resume, runs_root, task=self.task_name) if resume is not None else \
                    RunDir.create(self.task_name, self.name, runs_root)
                found = [str(run.path)]
            except WorkbenchError as exc:
                found = [exc]
        if state.num_processes > 1:
            found = broadcast_object_list(found)
        if isinstance(found[0], WorkbenchError):
            raise found[0]
        return RunDir(found[0])

    def _discard_empty_run(self) -> None:
        """A task whose ``setup`` failed (a bad model name, a missing weights file) leaves no
        run behind: remove the folder just created for it while it holds no file yet."""
        if self.is_main and not any(p.is_file() for p in self.run.path.rglob("*")):
            shutil.rmtree(self.run.path, ignore_errors=True)

    def _write_start_files(self, config: Any) -> None:
        if not self.is_main:
            return
        tree = config if config is not None else {"train": self.cfg}
        tree = to_dict(tree) if dataclasses.is_dataclass(tree) else {
            k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in dict(tree).items()}
        dump_yaml(tree, self.run.config_path)
        started = self.run.read_summary().get("started") or _now()
        self.run.update_summary(run=self.run.name, task=self.task_name, name=self.name, status="running",
                                started=started, monitor=self.cfg.monitor, mode=self.cfg.mode,
                                world_size=self.accelerator.num_processes, **self._progress_fields())
        if self.accelerator.log_with:
            hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                       for k, v in flatten(tree).items()}
            self.accelerator.init_trackers(self.task_name, config=hparams)
        self._tree = tree

    def _progress_fields(self) -> dict:
        s = self.state
        best = None if s.best_value is None else {"value": s.best_value, "step": s.best_step,
                                                  "epoch": s.best_epoch, "metrics": s.best_metrics}
        elapsed = self._elapsed() if hasattr(self, "_t0") else s.elapsed
        return {"steps": s.step, "epochs": s.epoch, "best": best, "final": s.last_eval,
                "wall_time_s": round(elapsed, 3)}

    def _sync_buffers(self) -> None:
        """DDP keeps parameters equal but leaves each rank's last BatchNorm statistics local:
        end with every rank holding the main process's model and EMA (what the checkpoint holds)."""
        if self.accelerator.num_processes == 1 or not torch.distributed.is_initialized():
            return
        tensors = [b for b in self.unwrapped.buffers()]
        if self.ema is not None:
            tensors += list(self.ema.shadow.values())
        for t in tensors:
            torch.distributed.broadcast(t, src=0)

    def _finish(self) -> dict:
        self._sync_buffers()
        status = "stopped_early" if self.state.stopped_early else "finished"
        summary = {**self._progress_fields(), "status": status}
        if self.is_main:
            summary = self.run.update_summary(**summary, ended=_now())
            try:
                plot_curves(self.run.read_metrics(), self.run.plot_path("loss_curve.png"), title=self.run.name)
            except Exception as exc:  # a plot must never fail a finished run
                log.warning("could not draw the loss curve: %s", exc)
        self.accelerator.wait_for_everyone()
        for tracker in self.accelerator.trackers:  # not end_training(): it would tear down the process group
            tracker.finish()
        summary = {**summary, "run_dir": str(self.run.path)}
        self._fire("on_fit_end", summary)
        return summary


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
