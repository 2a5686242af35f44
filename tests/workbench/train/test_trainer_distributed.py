"""Acceptance: two data-parallel CPU processes (torchrun + gloo) through the real trainer.

Each rank records the sample indices it consumed per epoch and a digest of its final
weights: the ranks must see disjoint shards that together cover the dataset every
epoch, and must end with identical weights. A second run is cut by ``max_steps``
and resumed under torchrun, and must end where an uninterrupted 2-process run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.train import checkpoint as ckpt

TINY = Path(__file__).resolve().parents[2] / "support" / "tiny_train.py"
SIZE = 32  # 8 batches of 4 per epoch: 4 per rank, 2 optimizer steps per rank with grad_accum 2


def torchrun(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(TINY), "--set", f"size={SIZE}", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def only_run(home: Path) -> Path:
    (run,) = (home / "runs").iterdir()
    return run


@pytest.mark.slow
def test_two_processes_shard_data_and_agree_on_weights(tmp_path):
    torchrun(tmp_path, "--record-indices", "--dump-weights")
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2
    assert summary["steps"] == 3 * 2  # 3 epochs x (4 batches per rank / grad_accum 2)
    seen = [json.loads((run / f"indices_rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(seen[0]) == sorted(seen[1]) == ["0", "1", "2"]
    for epoch in ("0", "1", "2"):
        a, b = set(seen[0][epoch]), set(seen[1][epoch])
        assert len(seen[0][epoch]) == len(a) == SIZE // 2 and len(b) == SIZE // 2
        assert not a & b, f"epoch {epoch}: ranks shared samples"
        assert a | b == set(range(SIZE)), f"epoch {epoch}: samples missed"
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled each epoch
    weights = [json.loads((run / f"weights_rank{r}.json").read_text()) for r in (0, 1)]
    assert weights[0] == weights[1]
    # the checkpoint the main process wrote holds those same weights
    tensors, _ = ckpt.load_checkpoint(run / "checkpoints" / "last.safetensors", prefixes=("model.",))
    import hashlib
    digest = {k[len("model."):]: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
              for k, v in tensors.items()}
    assert digest == weights[0]


@pytest.mark.slow
def test_two_process_resume_matches_uninterrupted(tmp_path):
    horizon = ("--set", "train.schedule.total_steps=6", "--no-freeze")
    torchrun(tmp_path / "ref", *horizon)
    torchrun(tmp_path / "cut", *horizon, "--set", "train.max_steps=3")
    cut = only_run(tmp_path / "cut")
    torchrun(tmp_path / "cut", *horizon, "--resume", cut.name)
    ref_tensors, ref_state = ckpt.load_checkpoint(only_run(tmp_path / "ref") / "checkpoints" / "last.safetensors")
    tensors, state = ckpt.load_checkpoint(cut / "checkpoints" / "last.safetensors")
    assert state["trainer"]["step"] == ref_state["trainer"]["step"] == 6
    for key in ref_tensors:
        assert torch.equal(ref_tensors[key], tensors[key]), key
