"""A tiny water / coast / land classifier trained on a Sentinel-2-like scene, for the tests that
apply one (classify predict over scenes, in one process or many)."""

from __future__ import annotations

from pathlib import Path

SIZE = 32
TINY = ["--set", f"data.size={SIZE}", "--set", "train.max_steps=3", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "train.eval_batch_size=16", "--set", "train.log_every_steps=1",
        "--set", "train.schedule.warmup_steps=0"]


def trained_classifier(home: Path):
    """A run (the default preset, a few steps) on a 256 px DN scene + mask cut into 32 px chips
    under ``home``; returns (run folder, cli) where ``cli(*args)`` runs the entry point there in
    this process and gives (exit code, stdout, stderr)."""
    from tests.support import sentinel2 as s2
    from tests.support.runner import run_in_process

    def cli(*args):
        p = run_in_process(*map(str, args), home=home)
        return p.returncode, p.stdout, p.stderr

    g = s2.ground(256, seed=0)
    scene = s2.write_dn_geotiff(home / "scene.tif", g)
    mask = s2.write_mask(home / "scene_mask.tif", g)
    code, _, err = cli("data", "import", scene, "--mask", mask, "--chip-size", SIZE, "--block-size", "0.003",
                       "--no-progress")
    assert code == 0, err
    code, out, err = cli("classify", "train", "--source", "folder", *TINY)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1]), cli
