"""The two stages of generation training as ``TaskModule``s the shared trainer drives.

    task = VaeTask(cfg, folder, train_images, val_images)          # a fresh model's VAE first
    Trainer(task, vae_train_cfg, IndexBatches(len(train_images)), ...).fit()

    task = UnetTask(cfg, folder, captions, train=Examples(...), val=Examples(...))
    Trainer(task, cfg.train, IndexBatches(len(train)), IndexBatches(len(val)), ...).fit()

Both load the model folder in ``setup``, on the device the trainer picked: the frozen VAE
and text encoder are moved there (in the mixed-precision dtype, as diffusers' training
scripts store frozen parts), each distinct caption is embedded once, and with
``data.cache`` each train tile (and each of its flips) is encoded to its VAE posterior
once, so a step costs only the UNet. A batch is ``{"index": ...}`` (plus ``"image"`` when
the tiles are not cached, ``data.IndexBatches``).

The UNet loss (DIFFUSIONSAT.md): epsilon or v target as the model's scheduler says, min-SNR
weights, metadata and caption dropout, per-sample flips (``losses``). Validation uses fixed
noise and evenly spread timesteps, so ``val/loss`` is comparable across evaluations, and
scores the same examples with the metadata zeroed (what the metadata buys). Every random draw
of a training step uses the global torch RNG, which the trainer's checkpoints save.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from torch import nn

from workbench.train.task import TaskModule

from .config import GenerationConfig
from .data import Examples, TextBank, TileImages, encode_posteriors
from .losses import (
    FLIPS,
    drop_captions,
    drop_metadata,
    flip_batch,
    min_snr_weights,
    prediction_target,
    training_scheduler,
)

TASK = "generation"


def weight_dtype(accelerator: Any) -> torch.dtype:
    """The dtype frozen components are stored in: the mixed-precision dtype, float32 without."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


def gradient_checkpointing(cfg: GenerationConfig) -> bool:
    """``model.gradient_checkpointing``, or by default on whenever training runs on a GPU."""
    if cfg.model.gradient_checkpointing is not None:
        return bool(cfg.model.gradient_checkpointing)
    return torch.cuda.is_available() and not cfg.train.cpu


# ------------------------------------------------------------------------------ the VAE stage

class _Autoencoder(nn.Module):
    """The AutoencoderKL as one ``forward``, x -> (reconstruction, posterior): DDP synchronises the
    gradients of what runs inside ``forward`` only. Weights are saved under ``vae.``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, Any]:
        dist = self.vae.encode(x).latent_dist
        z = dist.sample() if sample else dist.mode()
        return self.vae.decode(z).sample, dist


class VaeTask(TaskModule):
    """Fit a fresh model's VAE to the train tiles (``vae.*``): L1 + MSE reconstruction plus a small KL.

    Args:
        cfg: the run's config (``vae`` weights, ``data.flips``).
        folder: the DiffusionSat folder whose VAE trains.
        train_images / val_images: the tiles' pixels, read by index from each batch.
    """

    name = TASK

    def __init__(self, cfg: GenerationConfig, folder: str | Path, train_images: TileImages,
                 val_images: TileImages | None = None):
        self.cfg, self.folder = cfg, Path(folder)
        self.train_images, self.val_images = train_images, val_images
        self.vae: nn.Module | None = None

    def setup(self, accelerator: Any) -> nn.Module:
        from .pipeline import load_pipeline

        self.vae = load_pipeline(self.folder, device="cpu").vae.train()
        return _Autoencoder(self.vae).to(accelerator.device)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        v = self.cfg.vae
        x = self.train_images.batch(batch["index"].tolist()).to(batch["index"].device)
        if self.cfg.data.flips:
            x = flip_batch(x, torch.randint(0, len(FLIPS), (x.shape[0],), device=x.device))
        rec, dist = model(x)
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = dist.kl().mean()
        return v.l1_weight * l1 + v.mse_weight * mse + v.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """L1, MSE and PSNR of the posterior mean's reconstruction (``val/loss`` = L1 + MSE)."""
        total = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            x = self.val_images.batch(batch["index"].tolist()).to(batch["index"].device)
            rec, _ = model(x, sample=False)
            err = (rec.float().clamp(-1, 1) - x)
            mse = err.square().mean((1, 2, 3))
            psnr = 10 * torch.log10(4.0 / mse.clamp(min=1e-10))   # signal range 2 ([-1, 1])
            total += torch.stack([err.abs().mean((1, 2, 3)).sum(), mse.sum(), psnr.sum(),
                                  torch.tensor(float(x.shape[0]), device=x.device)]).double().to(total.device)
        total = accelerator.reduce(total, "sum")
        l1, mse, psnr = (total[:3] / total[3].clamp(min=1)).tolist()
        return {"val/loss": l1 + mse, "val/l1": l1, "val/psnr": psnr}


# ------------------------------------------------------------------------------ the UNet stage

class UnetTask(TaskModule):
    """Train the SatUNet of a DiffusionSat folder with its VAE and text encoder frozen.

    Args:
        cfg: the run's config (``model``: min-SNR gamma, noise offset; ``data``: cache, flips,
            dropout rates; ``train.seed`` fixes the validation noise).
        folder: the DiffusionSat folder to start from.
        captions: the run's distinct captions (``Examples.caption_ids`` index them).
        train / val: the examples of each split on the CPU; with ``data.cache`` and no
            ``mean`` yet, ``setup`` encodes their ``images`` (train with every flip when
            ``data.flips``).
        progress: a progress bar while encoding the train tiles (main process only).

    After ``setup``: ``pipe`` (the loaded pipeline; ``pipe.unet`` is the trained model),
    ``text``, ``train`` / ``val`` on the device, ``weight_dtype``, ``cache_seconds``.
    """

    name = TASK

    def __init__(self, cfg: GenerationConfig, folder: str | Path, captions: Sequence[str], train: Examples,
                 val: Examples | None = None, progress: bool = False):
        self.cfg, self.folder, self.captions = cfg, Path(folder), list(captions)
        self.train, self.val = train, val
        self.progress = progress
        self.pipe: Any = None
        self.text: TextBank | None = None
        self.val_noise: torch.Tensor | None = None
        self.val_t: torch.Tensor | None = None
        self.cache_seconds = 0.0

    def setup(self, accelerator: Any) -> nn.Module:
        from .pipeline import load_pipeline

        d = self.cfg.data
        self.pipe = pipe = load_pipeline(self.folder, device="cpu")
        unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        self.noise = training_scheduler(pipe.scheduler.config)
        self.T = int(self.noise.config.num_train_timesteps)
        self.prediction_type = self.noise.config.prediction_type
        vae.requires_grad_(False).eval()
        text_encoder.requires_grad_(False).eval()
        if gradient_checkpointing(self.cfg):
            unet.enable_gradient_checkpointing()
        unet.train()
        device = accelerator.device
        self.weight_dtype = wdtype = weight_dtype(accelerator)
        for frozen in (vae, text_encoder):   # frozen: stored in the mixed-precision dtype, as diffusers does
            frozen.to(device) if wdtype == torch.float32 else frozen.to(device, wdtype)
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

        t0 = time.perf_counter()
        self.text = TextBank(self.captions, pipe.tokenizer, text_encoder, device, cache=True)
        self.train = self.train.to(device)
        self.val = self.val.to(device) if self.val is not None else None
        if d.cache:
            if self.train.mean is None and self.train.images is not None:
                self.train.mean, self.train.std = encode_posteriors(
                    vae, self.train.images, device, wdtype, d.flips,
                    progress=self.progress and accelerator.is_main_process)
            if self.val is not None and self.val.mean is None and self.val.images is not None:
                self.val.mean, self.val.std = encode_posteriors(vae, self.val.images, device, wdtype, False)
        if self.val is not None and self.val.mean is not None:
            self._fix_validation_noise(self.cfg.train.seed)
        self.cache_seconds = time.perf_counter() - t0
        return unet.to(device)

    # -- latents ------------------------------------------------------------------------
    def _latents(self, ex: Examples, idx: torch.Tensor, batch: dict, train: bool) -> torch.Tensor:
        """Scaled latents of examples ``idx``: a posterior sample of a random flip (train) or the
        posterior mean (val), from the cache or by encoding ``batch["image"]``."""
        n = idx.shape[0]
        device = idx.device
        if ex.mean is not None:
            v = ex.mean.shape[1]
            variant = torch.randint(0, v, (n,), device=device) if train and v > 1 else torch.zeros(
                n, dtype=torch.long, device=device)
            mean, std = ex.mean[idx, variant], ex.std[idx, variant]
            z = mean + std * torch.randn_like(mean) if train else mean
        else:
            x = batch["image"]
            if train and self.cfg.data.flips:
                x = flip_batch(x, torch.randint(0, len(FLIPS), (n,), device=device))
            with torch.no_grad():
                dist = self.vae.encode(x.to(self.weight_dtype)).latent_dist
                z = (dist.sample() if train else dist.mean).float()
        return (z - self.shift) * self.scaling

    def _target(self, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return prediction_target(self.noise, z, noise, t)

    # -- training -----------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        d, m = self.cfg.data, self.cfg.model
        ex = self.train
        idx = batch["index"].to(ex.caption_ids.device)
        z = self._latents(ex, idx, batch, train=True)
        noise = torch.randn_like(z)
        if m.noise_offset:
            noise = noise + m.noise_offset * torch.randn(z.shape[0], z.shape[1], 1, 1, device=z.device)
        t = torch.randint(0, self.T, (z.shape[0],), device=z.device)
        noisy = self.noise.add_noise(z, noise, t)
        ids = drop_captions(ex.caption_ids[idx], self.text.empty_id, d.caption_dropout)
        md = drop_metadata(ex.metadata[idx], d.metadata_dropout)
        pred = model(noisy, t, encoder_hidden_states=self.text(ids), metadata=md).sample
        per_sample = F.mse_loss(pred.float(), self._target(z, noise, t).float(), reduction="none").mean((1, 2, 3))
        weights = min_snr_weights(compute_snr(self.noise, t), m.min_snr_gamma, self.prediction_type)
        return (per_sample * weights).mean(), {}

    # -- validation ---------------------------------------------------------------------
    def _fix_validation_noise(self, seed: int) -> None:
        """Fixed noise and evenly spread timesteps per val example: val/loss is comparable across evaluations."""
        ex = self.val
        n = len(ex)
        g = torch.Generator().manual_seed(int(seed) + 99_991)
        self.val_noise = torch.randn((n, *ex.mean.shape[2:]), generator=g).to(ex.caption_ids.device)
        self.val_t = ((torch.arange(n) * self.T) // max(n, 1)).clamp(max=self.T - 1).to(ex.caption_ids.device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """Unweighted MSE with the true metadata (val/loss), with min-SNR weights, and with
        the metadata zeroed (what the metadata buys: val/metadata_gain = zeroed - true)."""
        ex = self.val
        total = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            idx = batch["index"].to(ex.caption_ids.device)
            z = self._latents(ex, idx, batch, train=False)
            if self.val_noise is not None:
                noise, t = self.val_noise[idx], self.val_t[idx]
            else:  # images not cached: noise from a generator seeded by the example index
                noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(i)))
                                     for i in idx.tolist()]).to(z.device)
                t = (idx * 7919) % self.T
            noisy = self.noise.add_noise(z, noise, t)
            emb = self.text(ex.caption_ids[idx])
            target = self._target(z, noise, t).float()
            md = ex.metadata[idx]
            mse = F.mse_loss(model(noisy, t, encoder_hidden_states=emb, metadata=md).sample.float(), target,
                             reduction="none").mean((1, 2, 3))
            mse0 = F.mse_loss(model(noisy, t, encoder_hidden_states=emb,
                                    metadata=torch.zeros_like(md)).sample.float(), target,
                              reduction="none").mean((1, 2, 3))
            w = min_snr_weights(compute_snr(self.noise, t), self.cfg.model.min_snr_gamma,
                                self.prediction_type)
            total += torch.stack([mse.sum(), (mse * w).sum(), mse0.sum(),
                                  torch.tensor(float(len(idx)), device=mse.device)]).double().to(total.device)
        total = accelerator.reduce(total, "sum")
        n = total[3].clamp(min=1)
        loss, weighted, zeroed = (total[:3] / n).tolist()
        return {"val/loss": loss, "val/loss_min_snr": weighted, "val/loss_zero_metadata": zeroed,
                "val/metadata_gain": zeroed - loss}
