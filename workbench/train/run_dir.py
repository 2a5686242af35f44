"""Run directories: ``runs/<task>-<name>-<YYYYmmdd-HHMMSS>/``.

Every run writes the same layout, so ``workbench runs list/compare`` and the tasks'
predict commands can find things without asking the task:

    config.yaml                  resolved full config
    metrics.jsonl                one JSON object per log / eval event
    summary.json                 status, steps, best and final metrics, wall time
    checkpoints/best.safetensors, checkpoints/last.safetensors
    plots/*.png                  loss curves and whatever the task draws
    predictions/                 task outputs

No torch here: the CLI lists runs at ``--help`` speed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from workbench import paths
from workbench.errors import WorkbenchError

STATUSES = ("running", "finished", "stopped_early", "failed")


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_.")
    return slug or "run"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON under a temp name then rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


class RunDir:
    """One run's folder and the files in it; tasks use it to place predictions and plots."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creating and finding ---------------------------------------------------------
    @classmethod
    def create(cls, task: str, name: str = "run", root: str | Path | None = None,
               when: float | None = None) -> "RunDir":
        """Make a new, unique run folder (``-2``, ``-3``... when two runs start in the same second).

        Call it on one process only (the trainer does it on the main process and
        broadcasts the path): ``mkdir(exist_ok=False)`` makes the claim atomic.
        """
        root = Path(root) if root is not None else paths.runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
        base = f"{_slug(task)}-{_slug(name)}-{stamp}"
        for i in range(1, 10_000):
            path = root / (base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.checkpoints.mkdir()
            return run
        raise WorkbenchError(f"{root}: could not find a free run name for {base}")

    @classmethod
    def open(cls, ref: str | Path, root: str | Path | None = None) -> "RunDir":
        return cls(find_run(ref, root))

    # -- layout -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.safetensors"

    def file(self, *parts: str) -> Path:
        """A path inside the run (parent folders created): ``run.file("predictions", "x.tif")``."""
        path = self.path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def plot_path(self, name: str) -> Path:
        """Where a plot goes: ``plots/<name>`` (``.png`` added when no suffix)."""
        return self.file("plots", name if Path(name).suffix else f"{name}.png")

    @property
    def predictions_dir(self) -> Path:
        path = self.path / "predictions"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- files ------------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        write_json_atomic(path, data)
        return path

    def read_summary(self) -> dict:
        try:
            return json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return {}

    def update_summary(self, **fields: Any) -> dict:
        summary = {**self.read_summary(), **fields}
        write_json_atomic(self.summary_path, summary)
        return summary

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict]:
        """Every complete record (a torn last line from a killed run is skipped)."""
        records = []
        try:
            lines = self.metrics_path.read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_metrics(self, max_step: int) -> None:
        """Keep records up to ``max_step``: a resumed run re-logs the steps after its checkpoint."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= max_step]
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics_path)

    def read_config(self) -> dict:
        import yaml

        try:
            return yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "config.yaml").is_file())


def list_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under ``runs/``, oldest name first."""
    root = Path(root) if root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _is_run(p))


def find_run(ref: str | Path, root: str | Path | None = None) -> Path:
    """A run given as a path, a folder name under ``runs/`` or a unique prefix of one."""
    root = Path(root) if root is not None else paths.runs_dir()
    path = Path(ref)
    if _is_run(path):
        return path
    if _is_run(root / path):
        return root / path
    matches = [p for p in list_runs(root) if p.name.startswith(str(ref))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise WorkbenchError(f"{ref}: ambiguous run prefix, matches {names}")
    raise WorkbenchError(f"{ref}: no such run under runs/")


def write_latest(path: str | Path, task: str) -> Path:
    """Record ``path`` as the last finished run of ``task`` (``runs/latest-<task>``, replaced atomically),
    so ``make`` targets and ``RUN=latest`` find what was just trained."""
    import os

    path = Path(path)
    latest = (path.parent if path.parent.exists() else paths.runs_dir()) / f"latest-{task}"
    tmp = latest.with_name(f".{latest.name}.tmp-{os.getpid()}")
    tmp.write_text(str(path.resolve()) + "\n")
    os.replace(tmp, latest)
    return latest


def latest_run(task: str, root: str | Path | None = None) -> Path:
    """The last finished run of ``task``; else the newest ``<task>-*`` run that has a checkpoint
    (an interrupted run can still be evaluated)."""
    root = Path(root) if root is not None else paths.runs_dir()
    marker = root / f"latest-{task}"
    if marker.is_file():
        recorded = Path(marker.read_text().strip())
        if _is_run(recorded):
            return recorded
    runs = [p for p in list_runs(root) if p.name.startswith(f"{task}-")
            and any((p / "checkpoints" / n).is_file() for n in ("best.safetensors", "last.safetensors"))]
    if not runs:
        raise WorkbenchError(f"latest: no {task} run with a checkpoint under {root}")
    return max(runs, key=lambda p: ((p / "checkpoints").stat().st_mtime, p.name))


def resolve_run(ref: str | Path, task: str, root: str | Path | None = None) -> Path:
    """``find_run``, plus ``latest`` for the last run of ``task``."""
    return latest_run(task, root) if str(ref) == "latest" else find_run(ref, root)


def summary_table(summary: dict, rows: list[tuple[str, str]]) -> str:
    """The short table printed at the end of every run: where, how long, the best validation
    value, then the task's own ``rows`` (label, text)."""
    best = summary.get("best") or {}
    head = [("run", str(summary.get("run_dir", "-"))), ("status", str(summary.get("status", "-"))),
            ("steps / epochs", f"{summary.get('steps', '-')} / {summary.get('epochs', '-')}"),
            ("train time", fmt(summary.get("wall_time_s"), "{:.0f} s")),
            ("total time", fmt(summary.get("total_time_s"), "{:.0f} s")),
            ("best val", f"{fmt(best.get('value'))} at step {best.get('step', '-')}")]
    all_rows = head + rows
    width = max(len(k) for k, _ in all_rows)
    return "\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in all_rows)


def fmt(v: Any, spec: str = "{:.4f}") -> str:
    """A metric for a table: ``-`` when missing."""
    return "-" if v is None else spec.format(v)
