"""Ranks from the launcher's environment, a share of a list that depends on nothing but the list
and the ranks, and barrier / gather over a real two-process gloo group (torchrun)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support.runner import ROOT
from workbench import distributed
from workbench.errors import WorkbenchError


def test_without_a_launcher_a_process_is_world_one_and_joins_no_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    r = distributed.start()
    assert r == distributed.Ranks(0, 1, 0) and r.is_main
    import torch.distributed as dist

    assert not dist.is_initialized()
    distributed.barrier()                                     # nothing to wait for
    assert distributed.gather({"a": 1}) == [{"a": 1}]


def test_ranks_come_from_the_launchers_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    r = distributed.ranks()
    assert (r.rank, r.world, r.local_rank, r.is_main) == (2, 3, 0, False)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(WorkbenchError, match="RANK=3, .WORLD_SIZE=3"):
        distributed.ranks()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(WorkbenchError, match=r"\$RANK='one': expected a whole number"):
        distributed.ranks()


def test_shares_cover_the_list_once_whatever_the_world_size():
    items = [f"scene{i:02d}" for i in range(11)]
    for world in (1, 2, 3, 4, 16):
        shares = [distributed.share(items, distributed.Ranks(r, world, r)) for r in range(world)]
        flat = [x for s in shares for x in s]
        assert sorted(flat) == items and len(flat) == len(set(flat)), world
        assert max(map(len, shares)) - min(map(len, shares)) <= 1          # round robin: even shares
    assert distributed.share(items, distributed.Ranks(1, 4, 1)) == ["scene01", "scene05", "scene09"]


SCRIPT = """
import sys
from pathlib import Path
from workbench import distributed
r = distributed.start()
got = distributed.gather(r.rank * 10)
distributed.barrier()
Path(sys.argv[1], f"rank{r.rank}.txt").write_text(f"rank {r.rank} of {r.world} local {r.local_rank}: {got}")
distributed.stop()
"""


@pytest.mark.slow
def test_two_processes_under_torchrun_gather_and_meet_at_a_barrier(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                        "127.0.0.1", "--master-port", str(port), str(script), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]      # a file each: stdout interleaves
    assert lines == ["rank 0 of 2 local 0: [0, 10]", "rank 1 of 2 local 1: [0, 10]"]


def test_a_rank_takes_its_local_gpu_and_other_devices_stay_as_they_are():
    import torch

    two = distributed.Ranks(3, 4, 1)
    assert distributed.rank_device("cpu", two) == torch.device("cpu")
    assert distributed.rank_device("cuda:0", two) == torch.device("cuda:0")          # the user's choice kept
    assert distributed.rank_device("cuda", distributed.Ranks()) == torch.device("cuda")
    got = distributed.rank_device("cuda", two)
    assert got.type == "cuda" and got.index == 1 % max(torch.cuda.device_count(), 1)
