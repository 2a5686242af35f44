"""``workbench generate train``: the two-stage recipe on a tiny synthetic catalog, exact resume, the
saved model folder, and one-line errors (the loss pieces: test_losses.py; one step of each stage's
task module: test_task.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.generation import make_catalog
from workbench.data import geotiff

TINY = ["--init", "tiny", "--set", "data.size=32", "--set", "train.batch_size=4", "--set", "train.trackers=[none]",
        "--set", "vae.enabled=false", "--set", "train.log_every_steps=1", "--no-progress"]


def _run_dir(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_two_stage_recipe_writes_a_model_that_generate_loads(home, cli, one_torch_thread):
    make_catalog(home)
    code, out, err = cli("generate", "train", *TINY, "--set", "train.max_steps=3", "--set", "vae.enabled=true",
                         "--set", "vae.train.max_steps=2", "--set", "vae.train.batch_size=4",
                         "--set", "vae.train.trackers=[none]", "--set", "train.ema_decay=0.9",
                         "--set", "data.cache=false", "--set", "data.flips=true", "--export", home / "exported")
    assert code == 0, err
    run = _run_dir(out)
    vae_runs = sorted((home / "runs").glob("generation-bluemarble-small-vae-*"))
    assert len(vae_runs) == 1 and run.name.startswith("generation-bluemarble-small-")
    stage = json.loads((run / "generation.json").read_text())
    assert stage["stage"] == "unet" and stage["vae_run"] == vae_runs[0].name
    assert stage["cache"]["enabled"] is False and stage["cache"]["latent_variants"] is None  # encoded per batch
    assert stage["caption_template"]["name"] == "bluemarble-plain"
    assert json.loads((run / "captions.json").read_text())["captions"] == {"a satellite image": 20}  # train + val
    assert "Caption template of the default model" in (run / "caption_template.yaml").read_text()
    # the VAE stage set the scaling factor, and the UNet run's model carries that VAE
    vae_cfg = json.loads((run / "model" / "vae" / "config.json").read_text())
    assert vae_cfg["scaling_factor"] == pytest.approx(
        json.loads((vae_runs[0] / "summary.json").read_text())["scaling_factor"])
    wb = json.loads((run / "model" / "workbench.json").read_text())
    assert wb["gsd"] == 7421.0 and wb["size"] == 32 and wb["training"]["steps"] == 3
    assert wb["date"] == "2004-06-15"   # the tiles' date: `workbench generate` uses it when no --date
    assert wb["sampling"] == {"steps": 20, "guidance": 3.0, "scheduler": "ddim"} and wb["prompt"] == "a satellite image"
    assert wb["training"]["command"].startswith("workbench generate train --init tiny")
    assert "--export" in wb["training"]["command"] and wb["vae_stage"]["run"] == vae_runs[0].name
    # the saved UNet holds the EMA weights of the last checkpoint
    ckpt = load_file(run / "checkpoints" / "last.safetensors")
    saved = load_file(run / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    key = "metadata_embedding.0.linear_1.weight"
    assert torch.equal(saved[key], ckpt[f"ema.{key}"]) and not torch.equal(saved[key], ckpt[f"model.{key}"])
    assert (home / "runs" / "latest-generation").read_text().strip() == str(run.resolve())
    assert (home / "exported" / "unet" / "config.json").is_file()

    for model in (run / "model", run.name, "latest", home / "exported"):
        code, out, err = cli("generate", "--model", model, "--lat", 10, "--lon", 20, "--prompt", "a satellite image",
                             "--steps", 2, "--seed", 1, "--no-progress", "--out", home / "gen" / Path(str(model)).name)
        assert code == 0, err
    tif = next((home / "gen" / "model").glob("*.tif"))
    info = geotiff.read_info(tif)
    assert (info.width, info.height) == (32, 32) and info.gsd_metres() == pytest.approx(7421.0)

    # fine-tuning an existing folder (a run's model here): its VAE / text encoder are copied, centre crops
    code, out, err = cli("generate", "train", "--model", run.name, "--set", "data.size=16", "--set",
                         "train.max_steps=1", "--set", "train.batch_size=4", "--set", "train.trackers=[none]",
                         "--name", "ft", "--no-progress")
    assert code == 0, err
    ft = _run_dir(out)
    assert json.loads((ft / "generation.json").read_text())["base_model"] == str(run / "model")
    for part in ("vae", "text_encoder"):
        assert (ft / "model" / part / "config.json").read_text() == (run / "model" / part / "config.json").read_text()
    assert json.loads((ft / "model" / "workbench.json").read_text())["size"] == 16


@pytest.mark.slow
def test_resume_continues_exactly(home, cli, one_torch_thread):
    make_catalog(home)
    common = [*TINY, "--set", "train.checkpoint_every_steps=1", "--set", "train.ema_decay=0.9",
              "--set", "train.schedule.name=constant", "--set", "model.noise_offset=0.05", "--set", "data.flips=true"]
    code, out, err = cli("generate", "train", *common, "--set", "train.max_steps=5", "--name", "whole")
    assert code == 0, err
    whole = _run_dir(out)
    code, out, err = cli("generate", "train", *common, "--set", "train.max_steps=2", "--name", "cut")
    assert code == 0, err
    cut = _run_dir(out)
    assert json.loads((cut / "summary.json").read_text())["steps"] == 2
    assert json.loads((cut / "generation.json").read_text())["cache"]["latent_variants"] == 4  # every flip
    code, out, err = cli("generate", "train", "--resume", cut.name, "--set", "train.max_steps=5", "--no-progress")
    assert code == 0, err
    assert _run_dir(out) == cut and json.loads((cut / "summary.json").read_text())["steps"] == 5
    a, b = load_file(whole / "checkpoints" / "last.safetensors"), load_file(cut / "checkpoints" / "last.safetensors")
    weights = [k for k in a if k.startswith(("model.", "ema."))]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    losses = lambda run: [r["train/loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                          if r["event"] == "train"]  # noqa: E731
    assert losses(whole) == losses(cut) and len(losses(whole)) == 5


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("args, needle", [
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--preset", "finetune"), "give exactly one of model.path"),
    (("--set", "data.caption_dropout=2"), "data.caption_dropout: must be in [0, 1]"),
    (("--set", "data.captions=nope"), "caption template 'nope': unknown"),
    (("--set", "model.init=huge"), "model.init 'huge'"),
    (("--init", "tiny", "--split", "test"), "drop --split"),
    (("--model", "/nowhere/at/all"), "model.path /nowhere/at/all: no such model folder"),
    (("--resume", "generation-nothing"), "generation-nothing: no such run"),
    (("--resume", "x", "--preset", "bluemarble-small"), "--resume continues a run"),
    (("--init", "tiny", "--set", "vae.enabled=true", "--model", "x"), "not allowed with argument"),
    (("--run", "generation-nothing"), "generation-nothing: no such run"),
    (("--run", "x", "--model", "y"), "not allowed with argument"),
    (("--resume", "x", "--run", "y"), "drop --model/--run/--init"),
    (("--set", "train.lr=fast"), "train.lr"),
])
def test_bad_input_is_one_line_exit_2(home, cli, args, needle):
    make_catalog(home, n=10)
    code, _, err = cli("generate", "train", *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not list(home.glob("runs/generation-*"))


def test_no_catalog_is_one_line(home, cli):
    code, _, err = cli("generate", "train", "--init", "tiny", "--catalog", home / "missing.sqlite")
    assert code == 2 and "no such catalog" in err and len(err.strip().splitlines()) == 1
