"""DiffusionSatPipeline: prompt + metadata -> images, with any diffusers scheduler.

A ``DiffusionPipeline`` with the components of Stable Diffusion (tokenizer, CLIP text
encoder, VAE, UNet, scheduler), so ``save_pretrained`` writes the diffusers folder
layout with a ``model_index.json``. ``from_pretrained`` is our own: it builds each
component from its subfolder (see ``folder.py``) instead of trusting diffusers' class
lookup, which knows neither ``SatUNet`` nor DiffusionSat's pipeline class.

Sampling follows DiffusionSat: classifier-free guidance with the empty prompt *and
all-zero metadata* as the unconditional branch, run together with the conditional
branch as one UNet batch of 2N (``batched_guidance=False`` runs them as two calls,
for benchmarks and for checking they agree). Image k is drawn from its own
``torch.Generator`` seeded ``seeds[k]``, so an image depends on its seed only, not on
how many images were asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers import schedulers as diffusers_schedulers
from transformers import CLIPTextModel, CLIPTokenizer

from workbench.errors import WorkbenchError

from .folder import ModelFolder, inspect_folder, size_multiple, unet_uses_metadata
from .satunet import SatUNet

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "ddpm": "DDPMScheduler",
}


class DiffusionSatPipeline(DiffusionPipeline):
    """Text + metadata to image. ``unet`` is a ``SatUNet`` (with or without metadata)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: SatUNet, scheduler: Any):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path | ModelFolder, scheduler: str | None = None,  # type: ignore[override]
                        dtype: torch.dtype | None = None) -> "DiffusionSatPipeline":
        """Load a DiffusionSat folder (ours, or a released one); ``scheduler`` picks a sampler by name."""
        info = folder if isinstance(folder, ModelFolder) else inspect_folder(folder)
        dtype = dtype or torch.float32
        unet_kwargs = {} if "use_metadata" in info.configs["unet"] else {
            "use_metadata": unet_uses_metadata(info.configs["unet"])}
        unet = _load(info, "unet", lambda p, v: SatUNet.from_pretrained(p, torch_dtype=dtype, variant=v,
                                                                       **unet_kwargs))
        vae = _load(info, "vae", lambda p, v: AutoencoderKL.from_pretrained(p, torch_dtype=dtype, variant=v))
        text_encoder = _load(info, "text_encoder", lambda p, v: CLIPTextModel.from_pretrained(
            p, dtype=dtype, variant=v, local_files_only=True))
        tokenizer = _load(info, "tokenizer", lambda p, v: CLIPTokenizer.from_pretrained(p, local_files_only=True))
        sched = make_scheduler(scheduler, info.configs["scheduler"])
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched)
        pipe.model_folder = info
        return pipe

    # ---- facts about the model -------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        return size_multiple(dict(self.vae.config), dict(self.unet.config))

    @property
    def uses_metadata(self) -> bool:
        return getattr(self.unet, "metadata_embedding", None) is not None

    def check_size(self, size: int) -> None:
        m = self.size_multiple
        if not isinstance(size, int) or size <= 0 or size % m:
            raise WorkbenchError(f"--size {size}: this model needs a positive multiple of {m} pixels "
                                 f"(VAE downsamples {self.vae_scale_factor}x, UNet {m // self.vae_scale_factor}x more)")

    # ---- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP's last hidden state for each prompt, padded to the tokenizer's length (as SD does)."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True,
                                return_tensors="pt")
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]

    @torch.no_grad()
    def __call__(self, prompt: str, metadata: Sequence[float] | None = None, num_images: int = 1,
                 seed: int = 0, seeds: Sequence[int] | None = None, steps: int = 20, guidance: float = 7.5,
                 size: int | None = None, batched_guidance: bool = True, eta: float = 0.0,
                 progress: bool = True, output: str = "uint8") -> np.ndarray | torch.Tensor:
        """Generate ``num_images`` images (uint8, N x H x W x 3) for one prompt and one metadata vector.

        ``metadata`` is the *normalised* 7-vector (``Metadata.normalised()``); image k uses
        seed ``seeds[k]`` (default ``seed + k``). ``guidance <= 1`` skips the unconditional branch.
        ``output="latent"`` returns the final latents instead of decoding them.
        """
        seeds = list(seeds) if seeds is not None else [seed + k for k in range(num_images)]
        return self.generate_batch([prompt] * len(seeds), None if metadata is None else [metadata] * len(seeds),
                                   seeds, steps=steps, guidance=guidance, size=size,
                                   batched_guidance=batched_guidance, eta=eta, progress=progress, output=output)

    @torch.no_grad()
    def generate_batch(self, prompts: Sequence[str], metadata: Sequence[Sequence[float]] | None,
                       seeds: Sequence[int], steps: int = 20, guidance: float = 7.5, size: int | None = None,
                       batched_guidance: bool = True, eta: float = 0.0, progress: bool = True,
                       output: str = "uint8") -> np.ndarray | torch.Tensor:
        """One image per (prompt, normalised metadata vector, seed), all denoised as one batch.

        Image k depends only on its own prompt, metadata and seed (its noise comes from its own
        generator), so batching changes nothing but speed.
        """
        seeds = [int(s) for s in seeds]
        if len(prompts) != len(seeds) or (metadata is not None and len(metadata) != len(seeds)):
            raise ValueError("generate_batch: prompts, metadata and seeds must have the same length")
        size = size or self.model_default_size()
        self.check_size(size)
        if steps < 1:
            raise WorkbenchError(f"--steps {steps}: need at least 1 denoising step")
        cond_md, uncond_md = self._metadata_tensors(metadata, len(seeds))
        unique = list(dict.fromkeys(prompts))
        embeddings = self.encode_prompt(unique)
        cond = embeddings[torch.tensor([unique.index(p) for p in prompts], device=embeddings.device)]
        uncond = self.encode_prompt([""]).expand(len(seeds), -1, -1) if guidance > 1 else None
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        latents = self._initial_latents(generators, size, cond.dtype)
        self.scheduler.set_timesteps(steps, device=self.device)
        step_kwargs = _step_kwargs(self.scheduler, generators, eta)
        self.set_progress_bar_config(**{**getattr(self, "_progress_bar_config", {}), "disable": not progress})
        with self.progress_bar(total=len(self.scheduler.timesteps)) as bar:
            for t in self.scheduler.timesteps:
                eps = self._predict_noise(latents, t, cond, uncond, cond_md, uncond_md, guidance, batched_guidance)
                latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample
                bar.update()
        return latents if output == "latent" else self.decode(latents)

    def model_default_size(self) -> int:
        folder = getattr(self, "model_folder", None)
        if folder is not None:
            return folder.default_size
        sample = self.unet.config.sample_size or 64
        return int(sample[0] if isinstance(sample, (list, tuple)) else sample) * self.vae_scale_factor

    def _metadata_tensors(self, metadata: Sequence[Sequence[float]] | None, n: int):
        """(cond, uncond) metadata, (n, num_metadata) each: one normalised vector per image, and zeros."""
        if not self.uses_metadata:
            return None, None
        if metadata is None:
            raise WorkbenchError("this model takes metadata (lat, lon, gsd, cloud cover, date): none given")
        md = torch.tensor([[float(v) for v in vector] for vector in metadata], dtype=torch.float32,
                          device=self.device)
        k = self.unet.config.num_metadata
        if md.ndim != 2 or md.shape[1] != k:
            raise WorkbenchError(f"metadata has {md.shape[-1] if md.ndim else md.numel()} values, "
                                 f"this model takes {k}")
        md = md.expand(n, -1)
        return md, torch.zeros_like(md)

    def _initial_latents(self, generators: list[torch.Generator], size: int, dtype: torch.dtype) -> torch.Tensor:
        side = size // self.vae_scale_factor
        shape = (1, self.unet.config.in_channels, side, side)
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return noise.to(self.device, dtype) * self.scheduler.init_noise_sigma

    def _predict_noise(self, latents, t, cond, uncond, cond_md, uncond_md, guidance: float, batched: bool):
        def unet(x, emb, md):
            x = self.scheduler.scale_model_input(x, t)
            extra = {"metadata": md} if md is not None else {}
            return self.unet(x, t, encoder_hidden_states=emb, **extra).sample

        if uncond is None:
            return unet(latents, cond, cond_md)
        if batched:
            both_md = torch.cat([uncond_md, cond_md]) if cond_md is not None else None
            eps_uncond, eps_cond = unet(torch.cat([latents, latents]), torch.cat([uncond, cond]), both_md).chunk(2)
        else:
            eps_uncond, eps_cond = unet(latents, uncond, uncond_md), unet(latents, cond, cond_md)
        return eps_uncond + guidance * (eps_cond - eps_uncond)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> uint8 images, one at a time (a 512 px decode is the memory peak)."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        images = []
        for z in latents.split(1):
            x = self.vae.decode(z / self.vae.config.scaling_factor + shift).sample
            x = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            images.append(x.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(images)


def make_scheduler(name: str | None, config: dict) -> Any:
    """A sampler by short name (ddim, dpm, euler, pndm, ddpm) from the model's own scheduler config,
    which keeps its betas, timestep count and prediction type; None keeps the saved class."""
    if name is None:
        class_name = config.get("_class_name") or "DDIMScheduler"
        if not hasattr(diffusers_schedulers, class_name):
            class_name = "DDIMScheduler"
    elif name in SCHEDULERS:
        class_name = SCHEDULERS[name]
    else:
        raise WorkbenchError(f"--scheduler {name}: unknown (choose from {', '.join(SCHEDULERS)})")
    overrides = {}
    if class_name == "PNDMScheduler":  # Stable Diffusion samples PNDM with PLMS only (PRK needs many steps)
        overrides["skip_prk_steps"] = config.get("skip_prk_steps", True)
    return getattr(diffusers_schedulers, class_name).from_config(config, **overrides)


def _step_kwargs(scheduler: Any, generators: list[torch.Generator], eta: float) -> dict:
    import inspect

    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in params:
        kwargs["generator"] = generators
    if "eta" in params:
        kwargs["eta"] = eta
    return kwargs


def _load(info: ModelFolder, name: str, loader) -> Any:
    path = info.paths[name]
    try:
        return loader(str(path), info.variants.get(name))
    except WorkbenchError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WorkbenchError(f"{path}: cannot load the {name} ({text})") from None
