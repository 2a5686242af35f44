"""DiffusionSatPipeline: prompt + metadata -> images, with any diffusers scheduler.

A ``DiffusionPipeline`` with the components of Stable Diffusion (tokenizer, CLIP text
encoder, VAE, UNet, scheduler) that is called the way diffusers' pipelines are::

    pipe = DiffusionSatPipeline.from_pretrained("tasks/generation/default_model", torch_dtype=torch.float32)
    out = pipe("a satellite image of a river delta", lat=21.01, lon=105.81, date="2004-06-15", gsd=7421,
               num_inference_steps=20, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    out.images[0].save("delta.png")

``__call__`` reads as diffusers' numbered steps (check inputs, encode the prompt, prepare
timesteps and latents, denoise, decode) and returns a ``DiffusionSatPipelineOutput`` (or a
tuple with ``return_dict=False``). ``from_pretrained`` takes diffusers' arguments
(``torch_dtype``, ``variant``, components to replace) but builds each component from its
subfolder (see ``run.py``) instead of trusting diffusers' class lookup, which knows neither
``SatUNet`` nor DiffusionSat's pipeline class. ``save_pretrained`` writes the diffusers
layout with a ``model_index.json`` (and the workbench's defaults, ``workbench.json``).

Metadata is given either in human units (``lat, lon, date, gsd, cloud_cover``: scalars, or one
value per prompt), shifted and normalised here as DiffusionSat's training did (``metadata.py``),
or as the normalised 7-vector itself (``metadata=``: one vector, or one per prompt). Both give
the same numbers for the same seed.

Sampling follows DiffusionSat: classifier-free guidance with the empty prompt *and all-zero
metadata* as the unconditional branch, run together with the conditional branch as one UNet
batch of 2N (``batched_guidance=False`` runs them as two calls, for benchmarks and for checking
they agree). Given a list of generators (one per image), image k's noise comes from generator
k alone, so an image depends on its own seed only, not on how many images were asked for
(``seeded_generators`` makes such a list from seeds).
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers import schedulers as diffusers_schedulers
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from workbench.devices import resolve_device
from workbench.errors import WorkbenchError

from .metadata import validate
from .run import ModelFolder, inspect_folder, size_multiple, unet_uses_metadata
from .satunet import SatUNet

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "ddpm": "DDPMScheduler",
}
# diffusers' output types, plus "uint8": the (N, H, W, 3) uint8 array the PIL images are made of
OUTPUT_TYPES = ("pil", "np", "pt", "uint8", "latent")
HUMAN_UNITS = ("lat", "lon", "date", "gsd", "cloud_cover")
# Errors name the pipeline's own arguments (a Python caller sees these names, not CLI flags).
ARGUMENT_LABELS = {name: name for name in HUMAN_UNITS}
LOAD_KWARGS = ("torch_dtype", "variant", "scheduler", "unet", "vae", "text_encoder", "tokenizer",
               "local_files_only")


@dataclass
class DiffusionSatPipelineOutput(BaseOutput):
    """What the pipeline returns (like diffusers' ``ImagePipelineOutput``).

    ``images``: a list of PIL images (``output_type="pil"``), an (N, H, W, 3) float array in
    [0, 1] (``"np"``), an (N, 3, H, W) float tensor in [0, 1] (``"pt"``), an (N, H, W, 3) uint8
    array (``"uint8"``), or the final latents (``"latent"``).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, image k seeded ``seeds[k]`` (the workbench's seed convention)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


class DiffusionSatPipeline(DiffusionPipeline):
    """Text + metadata to image. ``unet`` is a ``SatUNet`` (with or without metadata)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: SatUNet, scheduler: Any):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)

    # ---- loading and saving ----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | ModelFolder,  # type: ignore[override]
                        **kwargs: Any) -> DiffusionSatPipeline:
        """Load a DiffusionSat folder (ours, or a released one), as ``DiffusionPipeline.from_pretrained``.

        ``torch_dtype`` (default float32); ``variant`` (default: the plain weights, else the one
        variant there); ``scheduler``: a scheduler object, or a sampler by short name (``ddim``,
        ``dpm``, ``euler``, ``pndm``, ``ddpm``) made from the folder's own scheduler config, or
        None for the saved class; ``unet``/``vae``/``text_encoder``/``tokenizer``: objects that
        replace the folder's. Only local folders: ``local_files_only`` is accepted and always true.
        """
        unknown = sorted(set(kwargs) - set(LOAD_KWARGS))
        if unknown:
            raise TypeError(f"from_pretrained: unexpected argument(s) {', '.join(unknown)} "
                            f"(known: {', '.join(LOAD_KWARGS)})")
        folder = pretrained_model_name_or_path
        info = folder if isinstance(folder, ModelFolder) else inspect_folder(folder)
        dtype = kwargs.get("torch_dtype") or torch.float32
        variants = dict(info.variants)
        if kwargs.get("variant") is not None:
            variants = {name: kwargs["variant"] for name in variants}
        unet_kwargs = {} if "use_metadata" in info.configs["unet"] else {
            "use_metadata": unet_uses_metadata(info.configs["unet"])}
        loaders: dict[str, Callable[[str, str | None], Any]] = {
            "unet": lambda p, v: _complete(p, *SatUNet.from_pretrained(p, torch_dtype=dtype, variant=v,
                                                                     output_loading_info=True, **unet_kwargs)),
            "vae": lambda p, v: AutoencoderKL.from_pretrained(p, torch_dtype=dtype, variant=v),
            "text_encoder": lambda p, v: CLIPTextModel.from_pretrained(p, dtype=dtype, variant=v,
                                                                       local_files_only=True),
            "tokenizer": lambda p, v: CLIPTokenizer.from_pretrained(p, local_files_only=True),
        }
        parts = {name: kwargs[name] if kwargs.get(name) is not None else _load(info, name, variants, loader)
                 for name, loader in loaders.items()}
        scheduler = kwargs.get("scheduler")
        if scheduler is None or isinstance(scheduler, str):
            scheduler = make_scheduler(scheduler, info.configs["scheduler"])
        pipe = cls(scheduler=scheduler, **parts)
        pipe.model_folder = info
        return pipe

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        """diffusers' folder layout, plus the model folder's ``workbench.json`` defaults when it had any."""
        super().save_pretrained(save_directory, **kwargs)
        defaults = self.defaults
        if defaults:
            path = Path(save_directory) / "workbench.json"
            path.write_text(json.dumps(defaults, indent=2, default=list) + "\n", encoding="utf-8")

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

    @property
    def defaults(self) -> dict[str, Any]:
        """The model folder's own defaults (``workbench.json``: gsd, cloud_cover, date, size, sampling)."""
        folder = getattr(self, "model_folder", None)
        return dict(folder.defaults) if folder is not None else {}

    def model_default_size(self) -> int:
        """The generation size the model was made for (``workbench.json``), else the UNet's sample size.

        Released DiffusionSat configs inherit SD 2.1's ``sample_size`` 96 (768 px) although they
        were trained at 256 or 512 px, so a folder's ``workbench.json`` size wins."""
        folder = getattr(self, "model_folder", None)
        if folder is not None:
            return folder.default_size
        sample = self.unet.config.sample_size or 64
        return int(sample[0] if isinstance(sample, (list, tuple)) else sample) * self.vae_scale_factor

    # ---- the steps of __call__ -------------------------------------------------------------
    def check_inputs(self, prompt: str | list[str], height: int, width: int, num_inference_steps: int,
                     guidance_scale: float, metadata: Any, units: dict[str, Any], num_images_per_prompt: int,
                     generator: torch.Generator | list[torch.Generator] | None, output_type: str) -> None:
        """Every argument checked before any computation; errors name the argument."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise WorkbenchError(f"prompt {prompt!r}: expected a string or a non-empty list of strings")
        m = self.size_multiple
        for name, side in (("height", height), ("width", width)):
            if isinstance(side, bool) or not isinstance(side, int) or side <= 0 or side % m:
                raise WorkbenchError(f"{name} {side}: this model needs a positive multiple of {m} pixels "
                                     f"(VAE downsamples {self.vae_scale_factor}x, UNet "
                                     f"{m // self.vae_scale_factor}x more)")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise WorkbenchError(f"num_inference_steps {num_inference_steps}: need at least 1 denoising step")
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise WorkbenchError(f"guidance_scale {guidance_scale}: must be a number >= 0 (1 = no guidance)")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise WorkbenchError(f"num_images_per_prompt {num_images_per_prompt}: must be at least 1")
        if output_type not in OUTPUT_TYPES:
            raise WorkbenchError(f"output_type {output_type!r}: choose from {', '.join(OUTPUT_TYPES)}")
        n = len(prompts) * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != n:
            raise WorkbenchError(f"generator: {len(generator)} generators for {n} images "
                                 f"({len(prompts)} prompt(s) x {num_images_per_prompt}); give one per image")
        given = [k for k, v in units.items() if v is not None]
        if metadata is not None and given:
            raise WorkbenchError(f"metadata and {', '.join(given)}: give the normalised metadata vector or "
                                 "the values in human units, not both")
        if given:
            for key in ("lat", "lon"):
                if units[key] is None:
                    raise WorkbenchError(f"{key} is required with {', '.join(given)}")
            for key in given:
                value = units[key]
                if isinstance(value, (list, tuple)) and len(value) != len(prompts):
                    raise WorkbenchError(f"{key}: {len(value)} values for {len(prompts)} prompt(s); give one "
                                         "value, or one per prompt")

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

    def encode_metadata(self, metadata: Any, units: dict[str, Any], num_prompts: int,
                        num_images_per_prompt: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(cond, uncond) metadata, (N, num_metadata) each: one normalised vector per image, and zeros.

        ``metadata``: one normalised vector, or one per prompt (a list or a tensor); ``units``: the
        values in human units (scalars, or one per prompt), normalised as DiffusionSat's training
        was. A model without metadata ignores both."""
        if not self.uses_metadata:
            return None, None
        if metadata is None and any(v is not None for v in units.values()):
            metadata = self.normalise_metadata(num_prompts, **units)
        if metadata is None:
            raise WorkbenchError("this model takes metadata: pass metadata= (the normalised vector) or "
                                 "lat=, lon= (and optionally date=, gsd=, cloud_cover=)")
        if isinstance(metadata, torch.Tensor):
            md = metadata.to(device=self.device, dtype=torch.float32)
        else:
            rows = metadata if len(metadata) and isinstance(metadata[0], (list, tuple, np.ndarray, torch.Tensor)) \
                else [metadata]
            md = torch.tensor([[float(v) for v in vector] for vector in rows], dtype=torch.float32,
                              device=self.device)
        if md.ndim == 1:
            md = md[None]
        k = self.unet.config.num_metadata
        if md.ndim != 2 or md.shape[1] != k:
            raise WorkbenchError(f"metadata has {md.shape[-1] if md.ndim else md.numel()} values, "
                                 f"this model takes {k}")
        if md.shape[0] not in (1, num_prompts):
            raise WorkbenchError(f"metadata: {md.shape[0]} vectors for {num_prompts} prompt(s); give one "
                                 "vector, or one per prompt")
        md = md.expand(num_prompts, -1) if md.shape[0] == 1 else md
        if num_images_per_prompt > 1:
            md = md.repeat_interleave(num_images_per_prompt, dim=0)
        return md, torch.zeros_like(md)

    def normalise_metadata(self, num_prompts: int, lat: Any = None, lon: Any = None, date: Any = None,
                           gsd: Any = None, cloud_cover: Any = None) -> list[list[float]]:
        """Human units (scalars, or one value per prompt) -> one normalised vector per prompt.

        Unset values come from the model folder's defaults (``workbench.json``), else gsd 1 m,
        no cloud and today's date, as for ``workbench generate``."""
        defaults = self.defaults
        given = {"lat": lat, "lon": lon, "date": date if date is not None else defaults.get("date"),
                 "gsd": gsd if gsd is not None else defaults.get("gsd", 1.0),
                 "cloud_cover": cloud_cover if cloud_cover is not None else defaults.get("cloud_cover", 0.0)}

        def at(value: Any, i: int) -> Any:
            return value[i] if isinstance(value, (list, tuple)) else value

        return [validate(at(given["lat"], i), at(given["lon"], i), at(given["gsd"], i), at(given["cloud_cover"], i),
                         at(given["date"], i), labels=ARGUMENT_LABELS).normalised() for i in range(num_prompts)]

    def prepare_latents(self, batch_size: int, height: int, width: int, dtype: torch.dtype,
                        generator: torch.Generator | list[torch.Generator] | None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise, scaled by the scheduler's ``init_noise_sigma``. With a list of generators,
        image k's noise is drawn from generator k alone (on the generator's device, in float32)."""
        shape = (self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            if isinstance(generator, list):
                latents = torch.cat([torch.randn((1, *shape), generator=g, device=g.device, dtype=torch.float32)
                                     for g in generator])
            else:
                device = generator.device if generator is not None else torch.device("cpu")
                latents = torch.randn((batch_size, *shape), generator=generator, device=device,
                                      dtype=torch.float32)
        elif tuple(latents.shape) != (batch_size, *shape):
            raise WorkbenchError(f"latents of shape {tuple(latents.shape)}: expected {(batch_size, *shape)}")
        return latents.to(self.device, dtype) * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator: Any, eta: float) -> dict[str, Any]:
        """``generator`` and ``eta`` for the schedulers whose ``step`` takes them (DDIM: eta; DDPM: generator)."""
        params = inspect.signature(self.scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "generator" in params:
            kwargs["generator"] = generator
        if "eta" in params:
            kwargs["eta"] = eta
        return kwargs

    def predict_noise(self, latents: torch.Tensor, t: Any, cond: torch.Tensor, uncond: torch.Tensor | None,
                      cond_md: torch.Tensor | None, uncond_md: torch.Tensor | None, guidance_scale: float,
                      batched_guidance: bool) -> torch.Tensor:
        """The UNet's output at step ``t``, guided: uncond + scale * (cond - uncond)."""
        def unet(x, emb, md):
            x = self.scheduler.scale_model_input(x, t)
            extra = {"metadata": md} if md is not None else {}
            return self.unet(x, t, encoder_hidden_states=emb, **extra).sample

        if uncond is None:
            return unet(latents, cond, cond_md)
        if batched_guidance:
            both_md = torch.cat([uncond_md, cond_md]) if cond_md is not None else None
            eps_uncond, eps_cond = unet(torch.cat([latents, latents]), torch.cat([uncond, cond]), both_md).chunk(2)
        else:
            eps_uncond, eps_cond = unet(latents, uncond, uncond_md), unet(latents, cond, cond_md)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output_type: str = "uint8") -> Any:
        """Latents -> images of ``output_type``, decoded one at a time (a 512 px decode is the memory peak)."""
        if output_type == "latent":
            return latents
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        images = []
        for z in latents.split(1):
            x = self.vae.decode(z / self.vae.config.scaling_factor + shift).sample
            images.append((x.float() / 2 + 0.5).clamp(0, 1))   # in float32 first: fp16 would round here
        x = torch.cat(images)
        if output_type == "pt":
            return x
        if output_type == "np":
            return x.permute(0, 2, 3, 1).cpu().numpy()
        uint8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [PIL.Image.fromarray(image) for image in uint8] if output_type == "pil" else uint8

    # ---- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str], metadata: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor
                 | None = None, *, lat: Any = None, lon: Any = None, date: Any = None, gsd: Any = None,
                 cloud_cover: Any = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 20, guidance_scale: float = 7.5, num_images_per_prompt: int = 1,
                 eta: float = 0.0, generator: torch.Generator | list[torch.Generator] | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True,
                 batched_guidance: bool = True) -> DiffusionSatPipelineOutput | tuple:
        """Generate ``num_images_per_prompt`` images for each prompt.

        ``metadata``: the normalised 7-vector (``Metadata.normalised()``), one for every prompt or
        one per prompt; or give ``lat, lon`` (degrees) and optionally ``date`` (YYYY-MM-DD or a
        date), ``gsd`` (metres per pixel), ``cloud_cover`` (0..1), each a scalar or one per prompt.
        Images are ordered prompt by prompt. ``guidance_scale <= 1`` skips the unconditional branch.
        ``generator``: one generator, or a list of one per image (image k then depends on its
        own generator only). ``output_type``: ``pil``, ``np``, ``pt``, ``uint8`` or ``latent``.
        """
        units = {"lat": lat, "lon": lon, "date": date, "gsd": gsd, "cloud_cover": cloud_cover}
        # 0. Default height and width: the model's own size
        default = self.model_default_size()
        height = default if height is None else height
        width = default if width is None else width

        # 1. Check inputs
        self.check_inputs(prompt, height, width, num_inference_steps, guidance_scale, metadata, units,
                          num_images_per_prompt, generator, output_type)

        # 2. Call parameters
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch_size = len(prompts) * num_images_per_prompt
        do_guidance = guidance_scale > 1

        # 3. Encode the prompts (each distinct prompt once), the empty prompt for guidance, the metadata
        unique = list(dict.fromkeys(prompts))
        embeddings = self.encode_prompt(unique)
        order = [unique.index(p) for p in prompts for _ in range(num_images_per_prompt)]
        cond = embeddings[torch.tensor(order, device=embeddings.device)]
        uncond = self.encode_prompt([""]).expand(batch_size, -1, -1) if do_guidance else None
        cond_md, uncond_md = self.encode_metadata(metadata, units, len(prompts), num_images_per_prompt)

        # 4. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps

        # 5. Prepare latents
        latents = self.prepare_latents(batch_size, height, width, cond.dtype, generator, latents)

        # 6. Prepare extra step kwargs
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 7. Denoising loop
        with self.progress_bar(total=len(timesteps)) as bar:
            for t in timesteps:
                noise_pred = self.predict_noise(latents, t, cond, uncond, cond_md, uncond_md, guidance_scale,
                                                batched_guidance)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                bar.update()

        # 8. Decode
        images = self.decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return DiffusionSatPipelineOutput(images=images)


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
        raise WorkbenchError(f"scheduler {name!r}: unknown (choose from {', '.join(SCHEDULERS)})")
    overrides = {}
    if class_name == "PNDMScheduler":  # Stable Diffusion samples PNDM with PLMS only (PRK needs many steps)
        overrides["skip_prk_steps"] = config.get("skip_prk_steps", True)
    return getattr(diffusers_schedulers, class_name).from_config(config, **overrides)


def load_pipeline(folder: ModelFolder | str | Path, *, scheduler: str | None = None, device: str = "auto",
                  progress: bool = True) -> DiffusionSatPipeline:
    """The pipeline on a device, for sampling and for training alike: fp16 on a GPU (as DiffusionSat
    samples), fp32 on the CPU (training loads on the CPU and lets the trainer place it).
    ``device``: ``auto`` (cuda if present), ``cpu``, ``cuda``, ``cuda:1``, ..."""
    target = resolve_device(device)
    dtype = torch.float16 if target.type == "cuda" else torch.float32
    with quiet_loading():
        pipe = DiffusionSatPipeline.from_pretrained(folder, scheduler=scheduler, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(target)


class quiet_loading:
    """transformers draws a progress bar per weight file: keep the terminal for our own bar. And
    diffusers' loading warnings (missing weights) are errors here (``_complete``), not log lines."""

    def __enter__(self) -> quiet_loading:
        from diffusers.utils import logging as diffusers_logging

        self.diffusers, self.verbosity = diffusers_logging, diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover
            self.hf = None
            return self
        self.hf = hf_logging
        self.was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.diffusers.set_verbosity(self.verbosity)
        if self.hf is not None and self.was_enabled:
            self.hf.enable_progress_bar()


def _complete(path: str, unet: SatUNet, loading: dict) -> SatUNet:
    """Refuse a UNet whose weights file lacks tensors its config asks for: diffusers only logs them
    (silenced while loading) and leaves them on the meta device or random, and the first ``.to()``
    then fails with "Cannot copy out of meta tensor"."""
    missing = sorted({*loading.get("missing_keys", []),
                      *(n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta)})
    if missing:
        files = sorted(f.name for f in Path(path).iterdir() if f.suffix in (".safetensors", ".bin"))
        hint = ("; a UNet saved without them needs \"use_metadata\": false in its config.json"
                if any(n.startswith("metadata_embedding") for n in missing) else "")
        shown = ", ".join(missing[:4]) + (f" ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise WorkbenchError(f"{Path(path) / (files[0] if files else '')}: lacks tensor(s) the UNet config "
                             f"needs: {shown}{hint}")
    return unet


def _load(info: ModelFolder, name: str, variants: dict[str, str | None], loader: Callable) -> Any:
    path = info.paths[name]
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol note: the refusal below says it in one line
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return loader(str(path), variants.get(name))
    except WorkbenchError:
        raise
    except pickle.UnpicklingError:
        pickles = sorted(f.name for f in path.iterdir() if f.suffix == ".bin")
        raise WorkbenchError(f"{path / (pickles[0] if pickles else '')}: the {name} weights are a pickle that holds "
                             "more than tensors (it could run code when loaded): refused, not executed") from None
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WorkbenchError(f"{path}: cannot load the {name} ({text})") from None

