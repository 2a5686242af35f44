"""Run directories: ``runs/<task>-<name>-<YYYYmmdd-HHMMSS>/``.

Every run writes the same layout, so ``workbench runs list/compare`` and the tasks'
predict commands can find things without asking the task:

    config.yaml                  resolved full config
    metrics.jsonl                one JSON object per log / eval event
    summary.json                 status, steps, best and final metrics, wall time
    checkpoints/best.safetensors, checkpoints/last.safetensors
    plots/*.png                  loss curves and whatever the task draws
    predictions/                 task outputs

A run keeps the name the user gave (``--name water-lr3e-4`` makes
``segmentation-water-lr3e-4-<time>``), so the name a user types later finds it; a name
that cannot be a folder on Linux, macOS and Windows is refused (``check_run_name``).
``find_run`` is the one way to name a run: a folder, a run name, a unique prefix, or
``latest``; a miss suggests the nearest names.

No torch here: the CLI lists runs at ``--help`` speed.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from workbench import paths
from workbench.errors import WorkbenchError
from workbench.files import write_json_atomic  # noqa: F401 (used here and re-exported)

STATUSES = ("running", "finished", "stopped_early", "failed")


MAX_NAME_BYTES = 100
# Characters Windows forbids in a file name; "/" and "\\" separate folders everywhere.
_FORBIDDEN = '/\\<>:"|?*'
_STAMPED = re.compile(r"^(?P<head>.+)-(?P<stamp>\d{8}-\d{6})(?:-\d+)?$")


def check_run_name(name: str, what: str = "name", max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` itself when it can be part of a folder name on Linux, macOS and Windows; else a
    one-line ``WorkbenchError`` naming the value and what is wrong (``what`` names the option).

    The name is kept exactly as given, so later commands find the run by what the user typed;
    only what would break the folder (or a shell reading it) is refused. ``max_bytes`` (UTF-8)
    keeps the folder name under the 255 bytes file systems allow, with room for what a task
    appends (generation's ``<name>-vae`` run)."""
    text = str(name)
    shown = f"{what} {text if len(text) <= 60 else text[:40] + '...'!r}"

    def refuse(why: str) -> WorkbenchError:
        return WorkbenchError(f"{shown}: {why}")

    if not text:
        raise refuse("a run name cannot be empty")
    bad = sorted({ch for ch in text if ch in _FORBIDDEN}, key=text.index)
    if bad:
        raise refuse(f"a run name cannot contain {' '.join(repr(c) for c in bad)} (it names a folder)")
    if any(ord(ch) < 32 or ord(ch) == 127 or (ch.isspace() and ch != " ") or 0x80 <= ord(ch) < 0xA0
           for ch in text):
        raise refuse("a run name cannot contain control characters, tabs or line breaks")
    if ".." in text:
        raise refuse("a run name cannot contain '..'")
    if text[0] in "-.":
        raise refuse(f"a run name cannot start with {text[0]!r}")
    if text != text.strip():
        raise refuse("a run name cannot start or end with a space")
    if text.endswith("."):
        raise refuse("a run name cannot end with '.' (Windows drops it)")
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise refuse(f"too long ({size} bytes; a run name has at most {max_bytes})")
    return text


class RunDir:
    """One run's folder and the files in it; tasks use it to place predictions and plots."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creating and finding ---------------------------------------------------------
    @classmethod
    def create(cls, task: str, name: str = "run", root: str | Path | None = None,
               when: float | None = None) -> RunDir:
        """Make a new, unique run folder (``-2``, ``-3``... when two runs start in the same second).

        ``task`` and ``name`` are kept as given (``check_run_name`` refuses what cannot name a
        folder). Call it on one process only (the trainer does it on the main process and
        broadcasts the path): ``mkdir(exist_ok=False)`` makes the claim atomic.
        """
        root = Path(root) if root is not None else paths.runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
        room = 255 - len(f"{task}--{stamp}-9999".encode())  # the longest folder name this can make
        base = f"{check_run_name(task, 'task', room)}-{check_run_name(name, max_bytes=room)}-{stamp}"
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
    def open(cls, ref: str | Path, root: str | Path | None = None, task: str | None = None) -> RunDir:
        """The run ``ref`` names (see ``find_run``; with ``task``, ``latest`` is that task's last run)."""
        return cls(find_run(ref, root, task=task))

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
        """The summary, or ``{}`` when it is missing or unreadable: listing and sorting runs must
        not stop at one broken folder (:meth:`summary_problem` says what is wrong with it)."""
        try:
            summary = json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return {}
        return summary if isinstance(summary, dict) else {}

    def summary_problem(self) -> str | None:
        """Why ``summary.json`` cannot be read (None when it reads, or does not exist yet)."""
        try:
            summary = json.loads(self.summary_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return f"{self.summary_path}: not readable JSON ({str(exc)[:80]})"
        if not isinstance(summary, dict):
            return f"{self.summary_path}: holds a {type(summary).__name__}, not a run summary (a JSON object)"
        return None

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

    def read_config(self, missing_ok: bool = False) -> dict:
        """The run's resolved config. Missing or malformed is one line naming the file, never ``{}``
        read as "the defaults": a resume on the default config would train another experiment."""
        from workbench.config import read_yaml

        if missing_ok and not self.config_path.exists():
            return {}
        if not self.config_path.exists():
            raise WorkbenchError(f"{self.config_path}: missing; the run's config is needed to resume or load it")
        return read_yaml(self.config_path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "config.yaml").is_file())


def run_task(path: str | Path, summary: dict | None = None) -> str:
    """The task a run belongs to: ``summary.json``'s ``task``, else the folder name up to its first ``-``."""
    path = Path(path)
    summary = RunDir(path).read_summary() if summary is None else summary
    return str(summary.get("task") or path.name.split("-", 1)[0])


def run_name(path: str | Path, summary: dict | None = None) -> str:
    """The name the run was given (``water-lr3e-4`` of ``segmentation-water-lr3e-4-20261121-101500``):
    ``summary.json``'s ``name``, else read from the folder name."""
    path = Path(path)
    summary = RunDir(path).read_summary() if summary is None else summary
    if summary.get("name"):
        return str(summary["name"])
    stamped = _STAMPED.match(path.name)
    head = stamped.group("head") if stamped else path.name
    task = run_task(path, summary)
    return head[len(task) + 1:] if head.startswith(f"{task}-") else head


def run_started(path: str | Path, summary: dict | None = None) -> float:
    """When the run started, as a Unix time: ``summary.json``'s ``started`` (what the trainer
    records), else when its ``config.yaml`` (or the folder) was written. The folder name's stamp
    is not used: it is the start in local time, to the second, and ``-2`` folders share it."""
    path = Path(path)
    summary = RunDir(path).read_summary() if summary is None else summary
    started = summary.get("started")
    if started:
        try:
            return datetime.datetime.fromisoformat(str(started)).timestamp()
        except ValueError:
            pass
    for candidate in (path / "config.yaml", path / "summary.json", path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def list_runs(root: str | Path | None = None, task: str | None = None) -> list[Path]:
    """Run folders under ``runs/`` (only ``task``'s when given), oldest start first (``run_started``;
    the folder name breaks ties)."""
    root = Path(root) if root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    runs = []
    for path in root.iterdir():
        if not _is_run(path):
            continue
        summary = RunDir(path).read_summary()
        if task is not None and run_task(path, summary) != task:
            continue
        runs.append((run_started(path, summary), path.name, path))
    return [path for _, _, path in sorted(runs)]


def find_run(ref: str | Path, root: str | Path | None = None, task: str | None = None) -> Path:
    """The one way to name a run: a run folder (path), a folder name under ``runs/``, the name the
    run was given (``--name``), a unique prefix of a folder name, or ``latest``.

    With ``task``, names, prefixes and ``latest`` look at that task's runs only, and a prefix may
    leave out the task (``water`` for ``segmentation-water-...``). Several runs matching is an
    error listing them; no run matching is an error suggesting the nearest names."""
    root = Path(root) if root is not None else paths.runs_dir()
    text = str(ref)
    if text == "latest":
        if task is not None:
            return latest_run(task, root)
        runs = list_runs(root)
        if not runs:
            raise WorkbenchError("latest: no run under runs/ yet")
        return runs[-1]
    path = Path(ref)
    for candidate in (path, root / path):
        if _is_run(candidate):
            return candidate
    runs = list_runs(root, task)
    named = [p for p in runs if run_name(p) == text]
    if len(named) == 1:
        return named[0]
    if named:
        raise WorkbenchError(f"{text}: ambiguous run name, {len(named)} runs have it: {_names(named)} "
                             "(give the folder name)")
    prefixes = [text] + ([f"{task}-{text}"] if task is not None and not text.startswith(f"{task}-") else [])
    matches = [p for p in runs if any(p.name.startswith(prefix) for prefix in prefixes)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise WorkbenchError(f"{text}: ambiguous run prefix, matches {_names(matches)}")
    if path.is_dir() and path.name:
        raise WorkbenchError(f"{text}: a folder but not a run (it has no summary.json or config.yaml)")
    among = f" (looked at the {task} runs)" if task is not None else ""
    close = nearest_runs(text, runs)
    hint = f"; did you mean: {', '.join(p.name for p in close)}?" if close else ""
    raise WorkbenchError(f"{text}: no such run under runs/{among}{hint}")


def nearest_runs(ref: str, runs: list[Path], n: int = 3) -> list[Path]:
    """The runs whose folder name or run name is closest to ``ref`` (``difflib``), newest first
    among runs that share a name."""
    key = Path(ref).name or str(ref)
    by_key: dict[str, list[Path]] = {}
    for path in reversed(runs):            # newest first
        for label in (path.name, run_name(path)):
            by_key.setdefault(label, [])
            if path not in by_key[label]:
                by_key[label].append(path)
    found: list[Path] = []
    for label in difflib.get_close_matches(key, list(by_key), n=2 * n, cutoff=0.6):
        for path in by_key[label]:
            if path not in found:
                found.append(path)
    return found[:n]


def _names(runs: list[Path], most: int = 5) -> str:
    return ", ".join(p.name for p in runs[:most]) + (", ..." if len(runs) > most else "")


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
    runs = [p for p in list_runs(root, task)
            if any((p / "checkpoints" / n).is_file() for n in ("best.safetensors", "last.safetensors"))]
    if not runs:
        raise WorkbenchError(f"latest: no {task} run with a checkpoint under {root}")
    return max(runs, key=lambda p: ((p / "checkpoints").stat().st_mtime, p.name))


def resolve_run(ref: str | Path, task: str, root: str | Path | None = None) -> Path:
    """``find_run`` for a command of ``task``: ``latest`` is its last finished run, and names and
    prefixes are looked up among its runs."""
    return find_run(ref, root, task=task)


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
