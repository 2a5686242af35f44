"""Generation benchmark: sampler settings and batched guidance, against baselines in the same run.

Register in ``workbench/tasks_registry.py``: ``"tasks.generation.bench:bench_generation"``.

With the default model (``tasks/generation/default_model``; the benchmark fails with one
clear line while there is none) on the test places of the Blue Marble catalog (built with
``workbench data bluemarble`` when missing) -- the places, captions, metadata and seeds of
``workbench generate eval`` (:func:`select_places`, :func:`captions_of`, place k has seed k),
128 places (16 with ``quick``):

(a) the model folder's sampling defaults (``workbench.json`` ``sampling``: e.g. ddim, 20 steps,
    guidance 3) against diffusers' default call (ddim, 50 steps, guidance 7.5), both through
    :func:`generate_all` at the evaluation batch (64) with the same seeds, so the ratio is the
    sampler settings alone. Images per second of each, and the location fidelity of each
    against the real tiles (the eval's measure: generated mean colour nearer the own place's
    real tile than a random other place's), which must be no worse. Goal: >= 2x images/s.
(b) classifier-free guidance as one UNet batch of 2N (cond + uncond, the pipeline's default)
    against two UNet calls of N per step (``batched_guidance=False``) with the defaults, the
    same places and seeds, at batch 1 (one place at a time, a plain sampling loop's way) on
    the first 16 places (4 with ``quick``) and at the evaluation batch on all of them; each
    batch is run both ways back to back so both see the same machine load. The images must
    agree: max |difference| of the uint8 images <= 1 (asserted in float32; only the last
    bits of the latents differ, reported).

Every configuration is warmed up by one small call first; times are ``time.perf_counter``
around sampling + VAE decoding, under ``torch.inference_mode``, at torch's default thread
count. Timings are printed, never asserted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

from .evaluate import (
    EvalOptions,
    caption_template,
    captions_of,
    generate_all,
    location_fidelity,
    mean_colours,
    other_places,
    real_images,
    sampler_settings,
    select_places,
    share_se,
)
from .run import ModelFolder

if TYPE_CHECKING:
    from workbench.bench import BenchResult

    from .pipeline import DiffusionSatPipeline

N_PLACES, N_PLACES_QUICK = 128, 16
SINGLE, SINGLE_QUICK = 16, 4          # places sampled one at a time in (b)
EVAL_BATCH = EvalOptions.batch_size   # the eval's batch: 64
MAX_UINT8_DIFF = 1                    # batched vs two-call guidance, float32


@dataclass(frozen=True)
class Sampling:
    """A sampler setting: what (a) compares."""

    steps: int
    guidance: float
    scheduler: str

    def label(self) -> str:
        return f"{self.scheduler} {self.steps} steps, guidance {self.guidance:g}"


# diffusers' default call, the baseline of (a): pipe(caption, num_inference_steps=50, guidance_scale=7.5), DDIM
DIFFUSERS_CALL = Sampling(steps=50, guidance=7.5, scheduler="ddim")


@dataclass
class Places:
    """The inputs of every measurement: the same places, prompts, metadata and seeds for each setting."""

    tiles: list
    prompts: list[str]
    metadata: list[list[float]] | None
    seeds: list[int]
    real: np.ndarray          # (n, size, size, 3) uint8, the real tiles
    size: int

    def __len__(self) -> int:
        return len(self.tiles)


@dataclass
class Timed:
    """One configuration's output over some places, and the seconds its sampling + decoding took."""

    images: np.ndarray
    latents: torch.Tensor | None
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.images) / self.seconds if self.seconds > 0 else math.nan


# ------------------------------------------------------------------------------ inputs


def default_sampling(folder: ModelFolder) -> Sampling:
    """The model folder's own sampling defaults, else the eval's (as ``workbench generate eval`` picks them)."""
    return Sampling(**sampler_settings(folder))


def default_model() -> ModelFolder:
    """The workbench's default model; without one the benchmark has nothing to measure, said in one line."""
    from .run import DEFAULT_MODEL_DIR, resolve_model

    try:
        return resolve_model(None)
    except WorkbenchError as exc:
        raise WorkbenchError(f"generation bench: no usable default model at {DEFAULT_MODEL_DIR} ({exc}); train "
                             "and export one with `workbench generate train --preset bluemarble-small --export "
                             "tasks/generation/default_model`") from None


def bluemarble_catalog() -> Path:
    """The home's catalog, with the Blue Marble tiles built into it (``workbench data bluemarble``) if missing."""
    from workbench.data.catalog import Catalog

    with Catalog() as cat:
        path, have = cat.path, cat.count(source="bluemarble", split="test")
    if not have:
        from workbench.cli import main

        print("building the Blue Marble catalog (workbench data bluemarble)...", flush=True)
        if main(["data", "bluemarble", "--no-progress"]) != 0:
            raise WorkbenchError("could not build data/bluemarble (workbench data bluemarble)")
    return Path(path)


def load_places(folder: ModelFolder, catalog: str | Path | None, n: int, size: int, seed: int,
                uses_metadata: bool) -> Places:
    """The eval's places (test split, evenly spread), captions and metadata; place k gets seed ``seed + k``."""
    from .data import metadata_vector

    _, tiles = select_places(folder, {}, n, catalog, size)
    if len(tiles) < 2:
        raise WorkbenchError(f"generation bench: only {len(tiles)} test place(s) in the catalog, need at least 2")
    return Places(tiles=tiles, prompts=captions_of(tiles, caption_template(folder)),
                  metadata=[metadata_vector(t) for t in tiles] if uses_metadata else None,
                  seeds=[seed + i for i in range(len(tiles))],
                  real=real_images(folder, tiles, size), size=size)


def use_scheduler(pipe: DiffusionSatPipeline, folder: ModelFolder, name: str) -> None:
    """Swap the sampler in place (the weights stay loaded): both settings of (a) run on one pipeline."""
    from .pipeline import make_scheduler

    pipe.scheduler = make_scheduler(name, folder.configs["scheduler"])


# ------------------------------------------------------------------------------ timing


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def warm_up(pipe, places: Places) -> None:
    """One small call down each path (batched and two-call guidance), so no timing pays for first-call
    costs (allocator, kernel selection, lazy imports)."""
    from .pipeline import seeded_generators

    k = min(2, len(places))
    md = None if places.metadata is None else places.metadata[:k]
    for batched in (True, False):
        pipe(places.prompts[:k], md, generator=seeded_generators(places.seeds[:k]), num_inference_steps=1,
             guidance_scale=2.0, height=places.size, width=places.size, batched_guidance=batched,
             output_type="uint8")


def sample(pipe, places: Places, index: Sequence[int], s: Sampling, batched: bool) -> Timed:
    """The places ``index`` as one batch (latents, then decoded), timed together: decoding is part of an image."""
    from .pipeline import seeded_generators

    md = None if places.metadata is None else [places.metadata[i] for i in index]

    def run() -> tuple[torch.Tensor, np.ndarray]:
        latents = pipe([places.prompts[i] for i in index], md,
                       generator=seeded_generators([places.seeds[i] for i in index]), num_inference_steps=s.steps,
                       guidance_scale=s.guidance, height=places.size, width=places.size,
                       batched_guidance=batched, output_type="latent").images
        return latents, pipe.decode(latents, "uint8")

    (latents, images), seconds = _timed(run)
    return Timed(images=images, latents=latents.float().cpu(), seconds=seconds)


def sample_all(pipe, places: Places, s: Sampling, batch: int, seed: int) -> Timed:
    """Every place at ``s`` through the eval's own :func:`generate_all` (batches of ``batch``)."""
    opts = EvalOptions(n=len(places), steps=s.steps, guidance=s.guidance, scheduler=s.scheduler, seed=seed,
                       batch_size=batch, progress=False)
    images, seconds = _timed(lambda: generate_all(pipe, places.prompts, places.metadata, places.seeds, opts,
                                                  places.size, s.label()))
    return Timed(images=images, latents=None, seconds=seconds)


def fidelity(images: np.ndarray, places: Places, seed: int) -> float:
    """The eval's location fidelity of ``images`` at ``places`` (the same random other places for every setting)."""
    return location_fidelity(mean_colours(images), mean_colours(places.real), other_places(len(places), seed))


# ------------------------------------------------------------------------------ (a) sampler settings


def bench_settings(pipe, folder: ModelFolder, places: Places, defaults: Sampling, diffusers_call: Sampling, batch: int,
                   seed: int, rows: list, notes: list) -> None:
    """(a) The defaults against diffusers' default call: images/s and location fidelity, same places and seeds."""
    out: dict[str, tuple[Timed, float]] = {}
    for name, s in (("diffusers", diffusers_call), ("defaults", defaults)):
        use_scheduler(pipe, folder, s.scheduler)
        run = sample_all(pipe, places, s, batch, seed)
        out[name] = run, fidelity(run.images, places, seed)
    use_scheduler(pipe, folder, defaults.scheduler)
    (d, fid_d), (b, fid_b) = out["defaults"], out["diffusers"]
    speed = d.images_per_s / b.images_per_s
    b_eff = min(batch, len(places))
    rows.append(_row("(a) diffusers default call", diffusers_call, b_eff, b.images_per_s, None, fid_b, goal="baseline"))
    rows.append(_row("(a) model defaults", defaults, b_eff, d.images_per_s, speed, fid_d,
                     goal=f">= 2x: {'met' if speed >= 2 else 'not met'}"))
    se = share_se(0.5, len(places))   # a share's standard error is at most this
    notes.append(f"(a) goal >= 2x images/s: {'met' if speed >= 2 else 'not met'} ({speed:.2f}x; "
                 f"{d.seconds:.2f} s vs {b.seconds:.2f} s for {len(places)} images)")
    notes.append(f"(a) location fidelity no worse: {'met' if fid_d >= fid_b else 'not met'} "
                 f"({fid_d:.3f} defaults vs {fid_b:.3f} diffusers call, ratio {_ratio(fid_d, fid_b):.2f}; "
                 f"1 s.e. <= {se:.3f} at {len(places)} places; chance 0.5)")
    notes.append(f"(a) both at batch {b_eff} through generate_all with the places' metadata, so the ratio is the "
                 "sampler settings alone; (b)'s batching gain comes on top of it")


# ------------------------------------------------------------------------------ (b) batched guidance


def bench_guidance(pipe, places: Places, s: Sampling, batches: Sequence[tuple[int, int]], rows: list,
                   notes: list) -> list[dict]:
    """(b) One UNet call of 2N per step against two of N, for each (batch size, places) in ``batches``.

    Each batch runs both ways back to back (alternating which goes first), so intermittent load
    from other processes falls on both alike. Returns the agreement figures per batch size."""
    fp32 = pipe.unet.dtype == torch.float32
    found = []
    for batch, count in batches:
        one, two = [], []
        for k, start in enumerate(range(0, count, batch)):
            index = list(range(start, min(start + batch, count)))
            order = (True, False) if k % 2 == 0 else (False, True)
            runs = {batched: sample(pipe, places, index, s, batched) for batched in order}
            one.append(runs[True])
            two.append(runs[False])
        agree = _agreement(one, two)
        if fp32:
            assert agree["uint8"] <= MAX_UINT8_DIFF, (
                f"batched and two-call guidance differ by {agree['uint8']} (uint8) at batch {batch}")
        fast, slow = _rate(one), _rate(two)
        rows.append(_row("(b) two UNet calls of N per step", s, batch, slow, None, None, goal="baseline"))
        rows.append(_row("(b) batched guidance: 1 UNet call of 2N", s, batch, fast, fast / slow, None,
                         diff=agree["uint8"], goal=f"outputs agree (<= {MAX_UINT8_DIFF})"))
        notes.append(f"(b) batch {batch} ({count} places): {fast / slow:.2f}x; max |difference| uint8 "
                     f"{agree['uint8']} ({'asserted' if fp32 else 'not asserted'} <= {MAX_UINT8_DIFF} in "
                     f"{str(pipe.unet.dtype).removeprefix('torch.')}), latents {agree['latent']:.1e} "
                     f"(relative {agree['relative']:.1e})")
        found.append({"batch": batch, **agree, "ratio": fast / slow})
    notes.append("(b) on 2 CPU cores with a tiny UNet the gain is small (~1.06-1.3x, most at batch 1, where two "
                 "calls of 1 leave the cores idler than one of 2); it matters most on GPUs, where one call of "
                 "2N fills the device and halves the kernel launches")
    return found


def _agreement(one: Sequence[Timed], two: Sequence[Timed]) -> dict[str, float]:
    a = np.concatenate([t.images for t in one]).astype(np.int16)
    b = np.concatenate([t.images for t in two]).astype(np.int16)
    la = torch.cat([t.latents for t in one])
    lb = torch.cat([t.latents for t in two])
    latent = float((la - lb).abs().max())
    return {"uint8": int(np.abs(a - b).max()), "latent": latent,
            "relative": latent / max(float(la.abs().max()), 1e-12)}


def _rate(runs: Sequence[Timed]) -> float:
    seconds = sum(t.seconds for t in runs)
    return sum(len(t.images) for t in runs) / seconds if seconds > 0 else math.nan


# ------------------------------------------------------------------------------ rows


def _row(case: str, s: Sampling, batch: int, ips: float, ratio: float | None, fid: float | None,
         diff: int | None = None, goal: str = "") -> dict:
    return {"case": case, "sampler": s.scheduler, "steps": s.steps, "guidance": float(s.guidance), "batch": batch,
            "images/s": ips, "ratio": ratio, "location fidelity": fid, "max |Δ| uint8": diff, "goal": goal}


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# ------------------------------------------------------------------------------ entry points


def measure(model: ModelFolder | str | Path | None = None, catalog: str | Path | None = None, n: int = N_PLACES,
            single: int = SINGLE, eval_batch: int = EVAL_BATCH, diffusers_call: Sampling = DIFFUSERS_CALL,
            defaults: Sampling | None = None, seed: int = 0, device: str = "auto") -> BenchResult:
    """(a) and (b) for ``model`` (a folder, a path, or None: the default model) on ``n`` test places of
    ``catalog`` (None: the home's). ``defaults`` overrides the model's sampling defaults (tests use few steps)."""
    from workbench.bench import BenchResult

    from .pipeline import load_pipeline
    from .predict import Options, check_options
    from .run import resolve_model

    folder = model if isinstance(model, ModelFolder) else (default_model() if model is None else resolve_model(model))
    defaults = defaults or default_sampling(folder)
    size = check_options(Options(steps=defaults.steps, guidance=defaults.guidance, scheduler=defaults.scheduler),
                         folder)
    check_options(Options(steps=diffusers_call.steps, guidance=diffusers_call.guidance,
                          scheduler=diffusers_call.scheduler), folder)
    pipe = load_pipeline(folder, scheduler=defaults.scheduler, device=device, progress=False)
    places = load_places(folder, catalog, n, size, seed, pipe.uses_metadata)
    rows: list[dict] = []
    notes = [f"model {folder.root} ({folder.model_id()}), {len(places)} test places of {size} px, seeds "
             f"{seed}..{seed + len(places) - 1}, on {pipe.device} ({pipe.unet.dtype}), "
             f"{torch.get_num_threads()} torch threads"]
    with torch.inference_mode():
        warm_up(pipe, places)
        bench_settings(pipe, folder, places, defaults, diffusers_call, eval_batch, seed, rows, notes)
        batches = [(1, min(single, len(places))), (min(eval_batch, len(places)), len(places))]
        bench_guidance(pipe, places, defaults, batches, rows, notes)
    return BenchResult("Generation: sampler defaults vs diffusers' default call, batched vs two-call guidance "
                       "(images/s: higher is better)", rows, notes)


def bench_generation(quick: bool = False) -> BenchResult:
    """``make bench``: the default model on the Blue Marble test places (128; 16 with ``quick``)."""
    folder = default_model()
    catalog = bluemarble_catalog()
    return measure(folder, catalog, n=N_PLACES_QUICK if quick else N_PLACES, single=SINGLE_QUICK if quick else SINGLE)

