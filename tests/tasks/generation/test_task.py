"""The two task modules of generation training, without a training run: ``UnetTask.setup`` loads
the folder with its encoders frozen and embeds each caption once, one step of its loss trains
the metadata MLPs and never the VAE, a zero-terminal-SNR model trains on v, epsilon with zero
terminal SNR is refused, validation is repeatable; ``VaeTask`` reconstructs and scores tiles."""

from __future__ import annotations

import pytest
import torch

from tasks.generation.config import load_config
from tasks.generation.data import Examples, TileImages
from tasks.generation.models import build_model
from tasks.generation.task import UnetTask, VaeTask
from workbench.errors import WorkbenchError

ZERO_SNR = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
CAPTIONS = ["a satellite image of open deep water", "a satellite image of land"]


class OneProcess:
    """What the tasks ask of an accelerator, for one CPU process without mixed precision."""

    device = torch.device("cpu")
    mixed_precision = "no"
    is_main_process = True

    def reduce(self, tensor, reduction="sum"):
        return tensor


def cached_examples(n: int = 4, variants: int = 4, seed: int = 0, captions: int = 2) -> Examples:
    """Examples whose VAE posteriors are given (as ``data.cache`` leaves them), 16 x 16 latents."""
    g = torch.Generator().manual_seed(seed)
    return Examples(caption_ids=torch.arange(n) % captions, metadata=torch.rand(n, 7, generator=g) * 1000,
                    mean=torch.randn(n, variants, 4, 16, 16, generator=g),
                    std=torch.full((n, variants, 4, 16, 16), 0.01))


def test_one_training_step_gives_a_finite_loss_and_trains_the_metadata_mlps(tmp_path, one_torch_thread):
    folder = build_model("tiny", tmp_path / "tiny")
    cfg = load_config("bluemarble-small", ["model.min_snr_gamma=5"])
    task = UnetTask(cfg, folder, CAPTIONS, cached_examples())
    unet = task.setup(OneProcess())
    assert task.text.table.shape[0] == 3 and task.text.empty_id == 2
    assert unet is task.pipe.unet and unet.training
    assert not any(p.requires_grad for p in task.pipe.vae.parameters())
    assert not any(p.requires_grad for p in task.pipe.text_encoder.parameters())
    torch.manual_seed(0)
    loss, _ = task.loss(unet, {"index": torch.arange(4)})
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grad = unet.metadata_embedding[1].linear_1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in task.pipe.vae.parameters())


def test_zero_terminal_snr_model_trains_on_v_and_samples_from_pure_noise(tmp_path, one_torch_thread):
    """The default model's schedule (model.build.scheduler): the last training step keeps none of the
    image, sampling starts there, and the v loss is finite there (min-SNR off, as in the preset)."""
    from tasks.generation.pipeline import load_pipeline

    folder = build_model({"preset": "tiny", "scheduler": ZERO_SNR}, tmp_path / "tiny")
    sched = load_pipeline(folder, device="cpu").scheduler
    assert sched.config.beta_schedule == "scaled_linear"          # the rest kept from SD's
    assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) == 0.0
    sched.set_timesteps(20)
    assert int(sched.timesteps[0]) == 999 and int(sched.timesteps[-1]) == 49   # trailing: starts at T
    cfg = load_config("bluemarble-small")
    assert cfg.model.min_snr_gamma is None and cfg.model.build["scheduler"] == ZERO_SNR
    task = UnetTask(cfg, folder, ["a satellite image"], cached_examples(variants=1, captions=1))
    unet = task.setup(OneProcess())
    assert task.prediction_type == "v_prediction"
    z, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([999, 999])
    assert torch.allclose(task.noise.add_noise(z, noise, t), noise)          # nothing of z is left at T
    assert torch.allclose(task._target(z, noise, t), -z, atol=1e-6)          # so v at T is minus the image
    torch.manual_seed(0)
    loss, _ = task.loss(unet, {"index": torch.arange(4)})
    assert torch.isfinite(loss) and loss.item() > 0


def test_epsilon_with_zero_terminal_snr_is_refused(tmp_path):
    folder = build_model({"preset": "tiny", "scheduler": {"rescale_betas_zero_snr": True}}, tmp_path / "tiny")
    task = UnetTask(load_config("bluemarble-small"), folder, ["a"], cached_examples(captions=1))
    with pytest.raises(WorkbenchError, match="needs prediction_type v_prediction"):
        task.setup(OneProcess())


def test_validation_is_repeatable_and_scores_the_zeroed_metadata(tmp_path, one_torch_thread):
    folder = build_model("tiny", tmp_path / "tiny")
    cfg = load_config("bluemarble-small", ["model.min_snr_gamma=5"])
    task = UnetTask(cfg, folder, CAPTIONS, cached_examples(), val=cached_examples(variants=1, seed=1))
    unet = task.setup(OneProcess()).eval()
    assert task.val_noise.shape == (4, 4, 16, 16) and task.val_t.tolist() == [0, 250, 500, 750]
    loader = [{"index": torch.tensor([0, 1])}, {"index": torch.tensor([2, 3])}]
    with torch.no_grad():
        first = task.evaluate(unet, loader, OneProcess())
        torch.manual_seed(123)                              # validation draws nothing from the global RNG
        again = task.evaluate(unet, loader[::-1], OneProcess())
    assert set(first) == {"val/loss", "val/loss_min_snr", "val/loss_zero_metadata", "val/metadata_gain"}
    assert all(v == pytest.approx(again[k], rel=1e-6) for k, v in first.items())
    assert first["val/metadata_gain"] == pytest.approx(first["val/loss_zero_metadata"] - first["val/loss"])


def test_uncached_examples_are_encoded_per_batch_and_cached_ones_once(tmp_path, home, one_torch_thread):
    from tests.support.generation import make_catalog
    from workbench.data.catalog import Catalog

    make_catalog(home, n=5)
    with Catalog() as cat:
        tiles = cat.query(split="train")
    images = TileImages(tiles, 32).preload()
    folder = build_model("tiny", tmp_path / "tiny")
    examples = Examples(torch.zeros(len(tiles), dtype=torch.long), torch.zeros(len(tiles), 7), images=images)
    cached = UnetTask(load_config("bluemarble-small", ["data.flips=true"]), folder, ["a"], examples)
    cached.setup(OneProcess())
    assert cached.train.mean.shape == (len(tiles), 4, 4, 16, 16)           # every flip, encoded once
    plain = UnetTask(load_config("bluemarble-small", ["data.cache=false"]), folder, ["a"], examples)
    unet = plain.setup(OneProcess())
    assert plain.train.mean is None and plain.text.table is not None
    torch.manual_seed(0)
    loss, _ = plain.loss(unet, {"index": torch.arange(len(tiles)), "image": images.batch(range(len(tiles)))})
    assert torch.isfinite(loss)


def test_vae_task_reconstructs_and_scores_tiles(tmp_path, home, one_torch_thread):
    from tests.support.generation import make_catalog
    from workbench.data.catalog import Catalog

    make_catalog(home, n=5)
    with Catalog() as cat:
        tiles = cat.query()
    images = TileImages(tiles, 32).preload()
    task = VaeTask(load_config("bluemarble-small", ["data.flips=true"]), build_model("tiny", tmp_path / "tiny"),
                   images, images)
    model = task.setup(OneProcess())
    assert model.vae is task.vae and task.vae.training
    assert all(k.startswith("vae.") for k in model.state_dict())           # checkpoint keys under vae.
    torch.manual_seed(0)
    loss, logs = task.loss(model, {"index": torch.arange(3)})
    assert torch.isfinite(loss) and set(logs) == {"l1", "kl"}
    loss.backward()
    assert all(p.grad is not None for p in task.vae.encoder.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        val = task.evaluate(model, [{"index": torch.arange(5)}], OneProcess())
    assert set(val) == {"val/loss", "val/l1", "val/psnr"}
    assert val["val/loss"] > val["val/l1"] > 0 and val["val/psnr"] > 0
