"""The core of ``workbench generate``: jobs in, georeferenced tiles and catalog rows out.

Each image is written twice, atomically: a PNG to look at and a GeoTIFF (through the
one GeoTIFF writer) on an EPSG:4326 grid centred on the requested place, whose pixel
height is the requested GSD in metres and whose width is stretched by 1/cos(lat) so
pixels are square on the ground. The GeoTIFF is the catalog row (source
``generated``) with the prompt as caption and seed, metadata and sampler in ``extra``,
so generated tiles can be queried and fed to the other tasks like any other tile.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from workbench import paths
from workbench.errors import WorkbenchError

from .folder import ModelFolder, inspect_folder
from .jobs import Job

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
CRS = "EPSG:4326"
BANDS = ["red", "green", "blue"]
MIN_COS_LAT = 0.01  # at the poles a degree of longitude has no length: cap the stretch at 100x


@dataclass
class Options:
    """How to sample (shared by every job of a run)."""

    steps: int = 20
    guidance: float = 7.5
    scheduler: str | None = "ddim"
    seed: int = 0
    num_images: int = 1
    size: int | None = None
    batched_guidance: bool = True
    progress: bool = True
    metadata_in_prompt: bool = False
    device: str = "auto"


@dataclass
class Output:
    png: Path
    tif: Path
    job: Job
    seed: int
    tile_id: int | None = None
    extra: dict = field(default_factory=dict)


def resolve_model(path: str | Path | None) -> ModelFolder:
    """The model folder asked for, or the workbench's default one. A generation run (folder, name,
    unique prefix or ``latest``) stands for its ``model/`` folder."""
    if path is None:
        if not DEFAULT_MODEL_DIR.is_dir():
            raise WorkbenchError("no default model yet: pass --model DIR (a DiffusionSat folder)")
        path = DEFAULT_MODEL_DIR
    folder = Path(path).expanduser()
    if not (folder / "unet").is_dir() and (folder / "model" / "unet").is_dir():
        folder = folder / "model"              # a run folder given by its path
    elif not folder.exists():
        from workbench.train.run_dir import resolve_run

        try:
            run = resolve_run(str(path), "generation")
        except WorkbenchError:
            run = None
        if run is not None and (run / "model").is_dir():
            folder = run / "model"
    return inspect_folder(folder)


def check_options(opts: Options, folder: ModelFolder) -> int:
    """Reject impossible sampling options before any weights load; return the image size."""
    size = opts.size if opts.size is not None else folder.default_size
    m = folder.size_multiple
    if size <= 0 or size % m:
        raise WorkbenchError(f"--size {size}: this model needs a positive multiple of {m} pixels "
                             f"(VAE downsamples {folder.vae_scale_factor}x, UNet {m // folder.vae_scale_factor}x more)")
    train_steps = int(folder.configs["scheduler"].get("num_train_timesteps", 1000))
    if not 1 <= opts.steps <= train_steps:
        raise WorkbenchError(f"--steps {opts.steps}: must be within [1, {train_steps}]")
    if not (math.isfinite(opts.guidance) and opts.guidance >= 0):
        raise WorkbenchError(f"--guidance {opts.guidance:g}: must be >= 0 (1 = no guidance, 7.5 is usual)")
    if opts.num_images < 1:
        raise WorkbenchError(f"--num-images {opts.num_images}: must be at least 1")
    if not 0 <= opts.seed < 2 ** 62:
        raise WorkbenchError(f"--seed {opts.seed}: must be within [0, 2**62)")
    return size


def default_out_dir() -> Path:
    base = paths.home() / "generated"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out, n = base / stamp, 1
    while out.exists():
        n += 1
        out = base / f"{stamp}-{n}"
    return out


def geotransform(lat: float, lon: float, gsd: float, size: int) -> tuple[float, ...]:
    """(a, b, c, d, e, f) of a size x size EPSG:4326 grid centred on (lon, lat) with ``gsd`` metres per pixel."""
    from workbench.data.geotiff import EARTH_METRES_PER_DEGREE

    dy = gsd / EARTH_METRES_PER_DEGREE
    dx = dy / max(math.cos(math.radians(lat)), MIN_COS_LAT)
    return (dx, 0.0, lon - dx * size / 2, 0.0, -dy, lat + dy * size / 2)


def load_pipeline(folder: ModelFolder, opts: Options):
    """The pipeline on the chosen device: fp16 on a GPU (as DiffusionSat samples), fp32 on the CPU."""
    import torch

    from .pipeline import DiffusionSatPipeline

    device = _device(opts.device, torch)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with _quiet_loading():
        pipe = DiffusionSatPipeline.from_pretrained(folder, scheduler=opts.scheduler, dtype=dtype)
    return pipe.to(device)


def _device(name: str, torch):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WorkbenchError(f"--device {name}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    return device


def run(jobs: Sequence[Job], folder: ModelFolder, opts: Options, out_dir: Path | None = None,
        catalog: str | Path | None = None, on_output: Callable[[Output], None] | None = None,
        log: Callable[[str], None] | None = None) -> list[Output]:
    """Generate every job, write PNG + GeoTIFF for each image and add them to the catalog.

    ``log`` hears one line once the model is loaded (so an error before that stays the only line)."""
    from workbench.data.catalog import Catalog

    size = check_options(opts, folder)
    out_dir = Path(out_dir) if out_dir else default_out_dir()
    pipe = load_pipeline(folder, opts)
    model_id = folder.model_id()
    if log:
        log(f"generating {len(jobs) * opts.num_images} image(s) of {size} px with {folder.root} on {pipe.device} "
            f"({opts.scheduler}, {opts.steps} steps, guidance {opts.guidance:g}, seed {opts.seed})")
    outputs: list[Output] = []
    with Catalog(catalog) as cat:
        for index, job in enumerate(jobs):
            seeds = [opts.seed + k for k in range(opts.num_images)]
            prompt = job.prompt + (_describe(job) if opts.metadata_in_prompt else "")
            images = pipe(prompt, job.metadata.normalised(), seeds=seeds, steps=opts.steps,
                          guidance=opts.guidance, size=size, batched_guidance=opts.batched_guidance,
                          progress=opts.progress)
            made = [write_image(img, out_dir, index, job, seed, prompt, opts, model_id)
                    for img, seed in zip(images, seeds)]
            ids = cat.add_tiles([catalog_tile(o, model_id) for o in made], replace=True)
            for o, tile_id in zip(made, ids):
                o.tile_id = tile_id
                if on_output:
                    on_output(o)
            outputs.extend(made)
    return outputs


def write_image(image, out_dir: Path, index: int, job: Job, seed: int, prompt: str, opts: Options,
                model_id: str, metadata_normalised: list[float] | None = None) -> Output:
    """PNG + GeoTIFF of one image at the job's place. ``metadata_normalised``: what the model was
    actually given, when not the place's own vector (an evaluation with the metadata zeroed)."""
    md = job.metadata
    stem = f"{index:03d}_{job.place}_{md.date.isoformat()}_seed{seed}"
    given = md.normalised() if metadata_normalised is None else list(metadata_normalised)
    extra = {"seed": seed, "prompt": prompt, "place": job.place, "model_id": model_id, "steps": opts.steps,
             "guidance": opts.guidance, "scheduler": opts.scheduler or "model default",
             "metadata": md.as_dict(), "metadata_normalised": [round(v, 6) for v in given]}
    extra.update(size=image.shape[0], transform=list(geotransform(md.lat, md.lon, md.gsd, image.shape[0])))
    png = _write_png(out_dir / f"{stem}.png", image, extra)
    tif = _write_geotiff(out_dir / f"{stem}.tif", image, extra)
    return Output(png=png, tif=tif, job=job, seed=seed, extra=extra)


def catalog_tile(o: Output, model_id: str):
    from workbench.data.catalog import Tile

    md = o.job.metadata
    size = o.extra["size"]
    a, _, west, _, e, north = o.extra["transform"]
    return Tile(path=str(o.tif), source="generated", lon=md.lon, lat=md.lat, west=west, north=north,
                east=west + a * size, south=north + e * size, crs=CRS, width=size, height=size, gsd=md.gsd,
                date=md.date.isoformat(), cloud_cover=md.cloud_cover, bands=list(BANDS), model_id=model_id,
                caption=o.extra["prompt"],
                extra={k: o.extra[k] for k in ("seed", "place", "steps", "guidance", "scheduler",
                                               "metadata_normalised")} | {"png": str(o.png)})


def _write_png(path: Path, image, extra: dict) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key in ("prompt", "seed", "model_id", "place"):
        info.add_text(key, str(extra[key]))
    info.add_text("metadata", json.dumps(extra["metadata"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_geotiff(path: Path, image, extra: dict) -> Path:
    from workbench.data import geotiff

    tags = {"source": "generated", "prompt": extra["prompt"], "seed": extra["seed"], "model_id": extra["model_id"],
            "metadata": json.dumps(extra["metadata"]), "metadata_normalised": json.dumps(extra["metadata_normalised"]),
            "sampler": f"{extra['scheduler']} steps={extra['steps']} guidance={extra['guidance']:g}"}
    return geotiff.write(path, image.transpose(2, 0, 1), extra["transform"], CRS, band_names=BANDS, tags=tags)


def _describe(job: Job) -> str:
    from .metadata import describe

    return describe(job.metadata)


class _quiet_loading:
    """transformers draws a progress bar per weight file: keep the terminal for our own bar."""

    def __enter__(self):
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover
            self.hf = None
            return self
        self.hf = hf_logging
        self.was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        if self.hf is not None and self.was_enabled:
            self.hf.enable_progress_bar()
