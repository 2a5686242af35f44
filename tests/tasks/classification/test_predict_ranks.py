"""``classify predict`` over a catalog query on two torchrun processes: each classifies its share,
the main one gathers the shards and alone writes the catalog and the CSV, and the predictions are
those of one process."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import sentinel2 as s2
from tests.support.runner import ROOT, run_in_process

pytestmark = pytest.mark.slow  # a real (tiny) training run and two launches

SIZE = 32
TINY = ["--set", f"data.size={SIZE}", "--set", "train.max_steps=2", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "train.eval_batch_size=16", "--set", "train.log_every_steps=1",
        "--set", "train.schedule.warmup_steps=0"]


def predictions(home: Path) -> dict[int, tuple]:
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, pred_label, pred_score, model_id FROM tiles")}


def test_two_processes_classify_their_shares_and_one_writes_the_catalog(tmp_path, one_torch_thread):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def here(*args) -> str:                     # in this process (one torch thread, as the ranks)
        p = run_in_process(*map(str, args), home=home)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def run(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, *map(str, args)], env=env, cwd=home, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return p

    g = s2.ground(256, seed=0)
    scene = s2.write_dn_geotiff(home / "scene.tif", g)
    mask = s2.write_mask(home / "scene_mask.tif", g)
    here("data", "import", scene, "--mask", mask, "--chip-size", SIZE, "--block-size", "0.003", "--no-progress")
    trained = Path(here("classify", "train", "--source", "folder", *TINY).strip().splitlines()[-1])
    here("classify", "predict", trained, "--no-progress")
    one = predictions(home)
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        conn.execute("UPDATE tiles SET pred_label = NULL, pred_score = NULL, model_id = NULL")
    csvs = set((trained / "predictions").glob("*.csv"))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = run("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
            port, "-m", "workbench", "classify", "predict", trained, "--no-progress")
    two = predictions(home)
    assert len(two) == 64 and set(two) == set(one)
    for i in one:
        assert two[i][0] == one[i][0] and two[i][2] == trained.name, i
        assert abs(two[i][1] - one[i][1]) < 1e-4, i
    assert p.stdout.count("written to the catalog: 64 tiles") == 1           # the main rank reports, once
    new = set((trained / "predictions").glob("*.csv")) - csvs
    assert len(new) == 1 and not list((trained / "predictions").glob(".shards-*"))   # one CSV, shards gone
    assert len(next(iter(new)).read_text().splitlines()) == 65                         # a header + 64 tiles
