"""Applying a generation model: ``workbench generate``'s jobs in, georeferenced tiles and catalog rows out.

    from tasks.generation.jobs import single_job
    from tasks.generation.predict import Options, generate
    from tasks.generation.run import resolve_model
    outputs = generate([single_job("a satellite image of a river delta", 21.01, 105.81, 7421, 0.0, None)],
                       resolve_model(), Options(seed=0), out_dir="generated/delta")

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from workbench import paths
from workbench.devices import resolve_device
from workbench.errors import WorkbenchError
from workbench.files import check_can_create, replacing

from .jobs import Job
from .run import ModelFolder

CRS = "EPSG:4326"
BANDS = ["red", "green", "blue"]
MIN_COS_LAT = 0.01  # at the poles a degree of longitude has no length: cap the stretch at 100x
MAX_IMAGES = 100_000  # per job and command: a typo (--num-images 1e20) must not fill the disk for days


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
    batch_size: int = 8     # images per pipeline call: memory is bounded whatever --num-images asks


@dataclass
class Output:
    png: Path
    tif: Path
    job: Job
    seed: int
    tile_id: int | None = None
    extra: dict = field(default_factory=dict)


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
    if not 1 <= opts.num_images <= MAX_IMAGES:
        raise WorkbenchError(f"--num-images {opts.num_images}: must be within [1, {MAX_IMAGES}] (more: several "
                             "commands with other --seed values)")
    if opts.batch_size < 1:
        raise WorkbenchError(f"--batch-size {opts.batch_size}: must be at least 1")
    if not 0 <= opts.seed <= 2 ** 62 - opts.num_images:
        raise WorkbenchError(f"--seed {opts.seed}: must be within [0, 2**62 - --num-images] (image k uses seed + k)")
    if opts.device != "auto":
        resolve_device(opts.device, "--device")
    return size


def loading_notes(folder: ModelFolder, opts: Options, jobs: Sequence[Job] = ()) -> list[str]:
    """What the user should know before the images: which UNet, where the size comes from (when
    neither --size nor the folder gave it), prompt words and GSDs the model never saw, and that
    a UNet without metadata ignores the place, date, GSD and cloud cover."""
    notes = [folder.unet_note] if folder.unet_note else []
    if opts.size is None and "size" not in folder.defaults:  # a recorded size is named in the "generating" line
        size, source = folder.size_source()
        notes.append(f"size {size} px: {source}")
    notes += prompt_notes(folder, jobs) + gsd_notes(folder, jobs)
    if not folder.uses_metadata:
        notes.append(f"warning: {folder.paths['unet']} has use_metadata false: the model ignores the place, date, "
                     "GSD and cloud cover (they only georeference the tiles)")
    return notes


def prompt_notes(folder: ModelFolder, jobs: Sequence[Job]) -> list[str]:
    """One warning when the prompts hold words no training caption had: a model trained on fixed
    captions (the default: "a satellite image") has never seen them, so they condition nothing
    it learned. Models trained on open-ended captions (templates with fields) are not judged."""
    from .captions import template_from_text
    from .vocab import split_words

    recorded = (folder.defaults.get("training") or {}).get("caption_template")
    if not isinstance(recorded, str):
        return []
    try:
        template = template_from_text(recorded)
    except WorkbenchError:
        return []
    known = template.closed_vocabulary()
    if known is None:
        return []
    unknown = sorted({w for job in jobs for w in split_words(job.prompt) if w.isalpha() and w not in known})
    if not unknown:
        return []
    captions = " | ".join(dict.fromkeys(rule.text for rule in template.rules))
    return [f"warning: prompt word(s) {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} never occur in "
            f"the captions {folder.root.name} was trained on ({template.name}: \"{captions}\"); they steer "
            "nothing it learned"]


def gsd_notes(folder: ModelFolder, jobs: Sequence[Job]) -> list[str]:
    """One warning when a job's GSD is far (over 2x) from the one the model records as its own
    (``workbench.json`` ``gsd``: the default model saw Blue Marble's 7.4 km only), e.g. a
    prompt set written for 10 m Sentinel-2 given to the default model."""
    own = folder.defaults.get("gsd")
    if not isinstance(own, (int, float)) or isinstance(own, bool) or own <= 0:
        return []
    far = sorted({job.metadata.gsd for job in jobs if max(job.metadata.gsd / own, own / job.metadata.gsd) > 2})
    if not far:
        return []
    return [f"warning: GSD {', '.join(f'{g:g}' for g in far[:4])} m per pixel asked of {folder.root.name}, whose "
            f"own GSD is {own:g} m ({folder.root / 'workbench.json'}): it has not learned that scale (give --gsd, "
            "or --model a model trained at it)"]


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


IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def check_out(out: str | Path, images: int) -> tuple[Path, str | None]:
    """(folder, file stem or None) for ``--out``: a folder, or -- for exactly one image -- a file
    name ending in .png/.tif whose PNG and GeoTIFF go side by side. Checked before the model
    loads: a path under a file or in a folder that cannot be written fails in one line, at once."""
    out = Path(out)
    single = out.suffix.lower() in IMAGE_SUFFIXES
    if single and images != 1:
        raise WorkbenchError(f"--out {out}: names one image file, but {images} images are asked for: give a folder")
    folder = out.parent if single else out
    if single and out.is_dir():
        raise WorkbenchError(f"--out {out}: is a folder; give a new file name or the folder without a file name")
    check_can_create(folder, "--out")
    return folder, (out.stem if single else None)


def generate(jobs: Sequence[Job], folder: ModelFolder, opts: Options, out_dir: str | Path | None = None,
             catalog: str | Path | None = None, on_output: Callable[[Output], None] | None = None,
             log: Callable[[str], None] | None = None) -> list[Output]:
    """Generate every job, write PNG + GeoTIFF for each image and add them to the catalog.

    Images are made ``opts.batch_size`` at a time. The options, ``out_dir`` and the catalog are
    checked before the weights load, and ``log`` hears one line once the model is loaded (so an
    error before that stays the only line)."""
    from workbench.data.catalog import Catalog

    from .pipeline import load_pipeline, seeded_generators

    size = check_options(opts, folder)
    out_dir, stem = check_out(out_dir if out_dir else default_out_dir(), len(jobs) * opts.num_images)
    outputs: list[Output] = []
    with Catalog(catalog) as cat:
        pipe = load_pipeline(folder, scheduler=opts.scheduler, device=opts.device, progress=opts.progress)
        model_id = folder.model_id()
        if log:
            for line in loading_notes(folder, opts, jobs):
                log(line)
            log(f"generating {len(jobs) * opts.num_images} image(s) of {size} px with {folder.root} on {pipe.device} "
                f"({opts.scheduler}, {opts.steps} steps, guidance {opts.guidance:g}, seed {opts.seed})")
        for index, job in enumerate(jobs):
            prompt = job.prompt + (_describe(job) if opts.metadata_in_prompt else "")
            for first in range(0, opts.num_images, opts.batch_size):
                seeds = [opts.seed + k for k in range(first, min(first + opts.batch_size, opts.num_images))]
                images = pipe(prompt, job.metadata.normalised(), num_images_per_prompt=len(seeds),
                              generator=seeded_generators(seeds), num_inference_steps=opts.steps,
                              guidance_scale=opts.guidance, height=size, width=size,
                              batched_guidance=opts.batched_guidance, output_type="uint8").images
                made = [write_image(img, out_dir, index, job, seed, prompt, opts, model_id, stem=stem)
                        for img, seed in zip(images, seeds)]
                ids = cat.add_tiles([catalog_tile(o, model_id) for o in made], replace=True)
                for o, tile_id in zip(made, ids):
                    o.tile_id = tile_id
                    if on_output:
                        on_output(o)
                outputs.extend(made)
    return outputs


def write_image(image, out_dir: Path, index: int, job: Job, seed: int, prompt: str, opts: Options,
                model_id: str, metadata_normalised: list[float] | None = None, stem: str | None = None) -> Output:
    """PNG + GeoTIFF of one image at the job's place. ``metadata_normalised``: what the model was
    actually given, when not the place's own vector (an evaluation with the metadata zeroed).
    ``stem``: the files' name (``--out tile.png``), else one made of index, place, date and seed."""
    md = job.metadata
    stem = stem or f"{index:03d}_{job.place}_{md.day}_seed{seed}"
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
                date=md.date.isoformat() if md.date else None, cloud_cover=md.cloud_cover, bands=list(BANDS),
                model_id=model_id, caption=o.extra["prompt"],
                extra={k: o.extra[k] for k in ("seed", "place", "steps", "guidance", "scheduler",
                                               "metadata_normalised")} | {"png": str(o.png)})


def _write_png(path: Path, image, extra: dict) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key in ("prompt", "seed", "model_id", "place"):
        info.add_text(key, str(extra[key]))
    info.add_text("metadata", json.dumps(extra["metadata"]))
    with replacing(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
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
