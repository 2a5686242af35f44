"""Acceptance of exact resume through the real CLI: ``segment train --where ...`` killed twice with
SIGKILL (each time after a checkpoint, before the end) and resumed with nothing but ``--resume`` ends
with the uninterrupted run's tensors, bit for bit, in ``last`` and ``best``, and the same test metrics
and chosen threshold. The command-line filter must come back from the run folder, not the preset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.runner import ROOT, run_in_process
from tests.support.segmentation import SIZE, make_catalog, run_dir_of

pytestmark = pytest.mark.slow  # four real training processes

WHERE = "id % 5 != 1"  # drops train tiles 1 and 6: 4 train tiles, 2 steps per epoch
TRAIN = ["segment", "train", "--source", "folder", "--where", WHERE, "--set", f"data.window={SIZE}",
         "--set", "train.epochs=3", "--set", "train.batch_size=2", "--set", "train.eval_batch_size=8",
         "--set", "train.log_every_steps=1", "--set", "train.checkpoint_every_steps=1"]
STEPS = 6


def workbench(home: Path, *args: str) -> subprocess.Popen:
    """The CLI as a user runs it, in its own process group (so SIGKILL reaches every child)."""
    env = {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=home, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def saved_step(home: Path) -> int:
    """The step of the last checkpoint written (summary.json is updated right after it, atomically)."""
    steps = [0]
    for path in (home / "runs").glob("segmentation-*/summary.json"):
        try:
            steps.append(int(json.loads(path.read_text()).get("steps") or 0))
        except (OSError, ValueError):
            pass
    return max(steps)


def kill_after_checkpoint(home: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 120
    while saved_step(home) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert step <= saved_step(home) < STEPS


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def test_sigkill_twice_then_resume_matches_the_uninterrupted_run(tmp_path):
    homes = {}
    for name in ("ref", "cut"):
        home = homes[name] = tmp_path / name
        home.mkdir()
        make_catalog(home, lambda *a, h=home: (lambda p: (p.returncode, p.stdout, p.stderr))(
            run_in_process(*a, home=h)))

    ref = workbench(homes["ref"], *TRAIN)  # alongside: one thread each
    victim = workbench(homes["cut"], *TRAIN)
    kill_after_checkpoint(homes["cut"], victim, 2)
    (run,) = (homes["cut"] / "runs").glob("segmentation-*")
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    kill_after_checkpoint(homes["cut"], workbench(homes["cut"], "segment", "train", "--resume", run.name), 4)
    resumed = workbench(homes["cut"], "segment", "train", "--resume", run.name)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert run_dir_of(out) == run

    ref_out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    ref_run = run_dir_of(ref_out)

    assert json.loads((run / "tiles.json").read_text())["query"]["where"] == WHERE
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS
    for name in ("last", "best"):
        mine, theirs = (tensors(r / "checkpoints" / f"{name}.safetensors") for r in (run, ref_run))
        assert mine.keys() == theirs.keys() and mine
        different = [k for k in mine if not (mine[k].dtype == theirs[k].dtype and mine[k].shape == theirs[k].shape
                                             and mine[k].equal(theirs[k]))]
        assert not different, f"{name}: {len(different)} of {len(mine)} tensors differ, e.g. {different[:3]}"
    for name in ("metrics.json", "threshold.json"):
        assert json.loads((run / name).read_text()) == json.loads((ref_run / name).read_text()), name
    for name, where in (("band_stats.json", "tiles"), ("tiles.json", "catalog")):  # paths differ: two homes
        mine, theirs = ({k: v for k, v in json.loads((r / name).read_text()).items() if k != where}
                        for r in (run, ref_run))
        assert mine == theirs, name
    assert len(json.loads((run / "tiles.json").read_text())["train"]) == 4
    train_steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if r.get("event") == "train"]
    assert train_steps == list(range(1, STEPS + 1))
