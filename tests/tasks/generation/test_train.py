"""``workbench generate train``: the loss pieces, one training step, the two-stage recipe on a tiny
synthetic catalog, exact resume, the saved model folder, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.training_utils import compute_snr
from rasterio.transform import from_origin
from safetensors.torch import load_file

from tasks.generation.train import drop_captions, drop_metadata, flip_batch, min_snr_weights
from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile

from tests.support.generation import make_catalog

TINY = ["--init", "tiny", "--set", "data.size=32", "--set", "train.batch_size=4", "--set", "train.trackers=[none]",
        "--set", "vae.enabled=false", "--set", "train.log_every_steps=1", "--no-progress"]


def _run_dir(stdout: str) -> Path:
    return Path(stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the loss pieces

def test_min_snr_weights_worked_example():
    # alpha_bar 0.5, 0.9, 0.99, 1/6 -> snr 1, 9, 99, 0.2; the SNR is diffusers' compute_snr, as the loss uses it
    alphas = torch.tensor([0.5, 0.9, 0.99, 1 / 6], dtype=torch.float64)
    snr = compute_snr(SimpleNamespace(alphas_cumprod=alphas), torch.arange(4))
    assert torch.allclose(snr.double(), torch.tensor([1.0, 9.0, 99.0, 0.2], dtype=torch.float64), rtol=1e-5)
    eps = min_snr_weights(snr, 5.0)
    assert torch.allclose(eps, torch.tensor([1.0, 5 / 9, 5 / 99, 1.0]), rtol=1e-5)
    v = min_snr_weights(snr, 5.0, "v_prediction")
    assert torch.allclose(v, torch.tensor([0.5, 0.5, 5 / 100, 0.2 / 1.2]), rtol=1e-5)
    assert torch.equal(min_snr_weights(snr, None), torch.ones(4))


def test_compute_snr_is_alpha_bar_over_one_minus_alpha_bar_on_the_training_schedule():
    """diffusers' compute_snr (what the loss weights use) on the schedule our models train with: the
    closed form alpha_bar / (1 - alpha_bar) at every timestep, and so the same min-SNR weights."""
    from diffusers import DDPMScheduler

    from tasks.generation.models import SCHEDULER

    noise = DDPMScheduler.from_config(SCHEDULER)
    t = torch.arange(noise.config.num_train_timesteps)
    a = noise.alphas_cumprod[t].float()
    snr = compute_snr(noise, t)
    assert snr.shape == t.shape and snr.dtype == torch.float32
    assert torch.allclose(snr, a / (1 - a), rtol=1e-5)
    for prediction in ("epsilon", "v_prediction"):
        assert torch.allclose(min_snr_weights(snr, 5.0, prediction), min_snr_weights(a / (1 - a), 5.0, prediction),
                              rtol=1e-5)


def test_metadata_and_caption_dropout_rates():
    g = torch.Generator().manual_seed(0)
    md = torch.arange(1, 8, dtype=torch.float32).repeat(40_000, 1)
    dropped = drop_metadata(md, 0.1, generator=g)
    zero = dropped == 0
    assert torch.equal(dropped[~zero], md[~zero])                          # kept values untouched
    per_value = zero.float().mean(0)
    assert torch.allclose(per_value, torch.full((7,), 0.1), atol=0.006)   # each value ~ 10 %
    all_zero = zero.all(1).float().mean().item()
    assert all_zero < 1e-4                                                 # independent: 1e-7, not 0.1
    assert abs(zero[:, 0].float().mean() * zero[:, 1].float().mean() - (zero[:, 0] & zero[:, 1]).float().mean()) < 0.003
    ids = torch.zeros(100_000, dtype=torch.long)
    dropped_ids = drop_captions(ids, empty_id=9, p=0.1, generator=g)
    assert set(dropped_ids.unique().tolist()) == {0, 9}
    assert abs((dropped_ids == 9).float().mean().item() - 0.1) < 0.005
    assert torch.equal(drop_metadata(md[:5], 0.0), md[:5]) and torch.equal(drop_captions(ids[:5], 9, 0.0), ids[:5])


def test_flip_batch_applies_each_samples_own_flip():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3).repeat(4, 1, 1, 1)
    out = flip_batch(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    assert torch.equal(out[2], x[2].flip(-2)) and torch.equal(out[3], x[3].flip((-2, -1)))


def test_one_training_step_gives_a_finite_loss_and_trains_the_metadata_mlps(one_torch_thread):
    from tasks.generation.config import load_config
    from tasks.generation.models import build_pipeline
    from tasks.generation.train import Examples, Objective, TextBank

    pipe, _ = build_pipeline("tiny")
    cfg = load_config("bluemarble-small", ["model.min_snr_gamma=5"])
    text = TextBank(["a satellite image of open deep water", "a satellite image of land"], pipe.tokenizer,
                    pipe.text_encoder, torch.device("cpu"))
    assert text.table.shape[0] == 3 and text.empty_id == 2
    obj = Objective(cfg, dict(pipe.scheduler.config), pipe.vae, text, torch.float32)
    g = torch.Generator().manual_seed(0)
    obj.train = Examples(caption_ids=torch.tensor([0, 1, 0, 1]), metadata=torch.rand(4, 7, generator=g) * 1000,
                         mean=torch.randn(4, 4, 4, 16, 16, generator=g), std=torch.full((4, 4, 4, 16, 16), 0.01))
    unet = pipe.unet.train()
    torch.manual_seed(0)
    loss, _ = obj.loss(unet, {"index": torch.arange(4)})
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grad = unet.metadata_embedding[1].linear_1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in pipe.vae.parameters())


ZERO_SNR = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


def test_zero_terminal_snr_model_trains_on_v_and_samples_from_pure_noise(one_torch_thread):
    """The default model's schedule (model.build.scheduler): the last training step keeps none of the
    image, sampling starts there, and the v loss is finite there (min-SNR off, as in the preset)."""
    from tasks.generation.config import load_config
    from tasks.generation.models import build_pipeline
    from tasks.generation.train import Examples, Objective, TextBank

    pipe, resolved = build_pipeline({"preset": "tiny", "scheduler": ZERO_SNR})
    assert resolved["scheduler"]["beta_schedule"] == "scaled_linear"          # the rest kept from SD's
    sched = pipe.scheduler
    assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) == 0.0
    sched.set_timesteps(20)
    assert int(sched.timesteps[0]) == 999 and int(sched.timesteps[-1]) == 49   # trailing: starts at T
    cfg = load_config("bluemarble-small")
    assert cfg.model.min_snr_gamma is None and cfg.model.build["scheduler"] == ZERO_SNR
    text = TextBank(["a satellite image"], pipe.tokenizer, pipe.text_encoder, torch.device("cpu"))
    obj = Objective(cfg, dict(sched.config), pipe.vae, text, torch.float32)
    g = torch.Generator().manual_seed(0)
    obj.train = Examples(caption_ids=torch.zeros(4, dtype=torch.long), metadata=torch.rand(4, 7, generator=g) * 1000,
                         mean=torch.randn(4, 1, 4, 16, 16, generator=g), std=torch.full((4, 1, 4, 16, 16), 0.01))
    z, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([999, 999])
    assert torch.allclose(obj.noise.add_noise(z, noise, t), noise)          # nothing of z is left at T
    assert torch.allclose(obj._target(z, noise, t), -z, atol=1e-6)          # so v at T is minus the image
    torch.manual_seed(0)
    loss, _ = obj.loss(pipe.unet.train(), {"index": torch.arange(4)})
    assert torch.isfinite(loss) and loss.item() > 0


def test_epsilon_with_zero_terminal_snr_is_refused():
    from tasks.generation.config import load_config
    from tasks.generation.models import build_pipeline
    from tasks.generation.train import Objective, TextBank
    from workbench.errors import WorkbenchError

    pipe, _ = build_pipeline({"preset": "tiny", "scheduler": {"rescale_betas_zero_snr": True}})
    text = TextBank(["a"], pipe.tokenizer, pipe.text_encoder, torch.device("cpu"))
    with pytest.raises(WorkbenchError, match="needs prediction_type v_prediction"):
        Objective(load_config("bluemarble-small"), dict(pipe.scheduler.config), pipe.vae, text, torch.float32)


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
    vae_runs = sorted((home / "runs").glob("generation-bluemarble_small_vae-*"))
    assert len(vae_runs) == 1 and run.name.startswith("generation-bluemarble_small-")
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
