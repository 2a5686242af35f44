"""``workbench generate eval``: does the model put the right picture at the right place?

For ``n`` test-split places (evenly spread over the query, deterministic), one tile is
generated from each place's caption and metadata, and once more from the same caption and
seed with the metadata zeroed (the unconditional metadata input), so the difference
between the two columns is what conditioning on place and time adds.

* **Location fidelity**: the share of places whose generated tile's mean colour is nearer
  the real tile at that place than the real tile of another test place drawn at random
  (a fixed seed; the same draw for both columns). 0.5 is chance.
* **The nearest-training-place reference**: the same two measures for a lookup that answers
  each place with the real tile of the nearest place the model trained on (its recorded
  training source / where / splits; great-circle distance), water from the catalog's (GSHHS)
  fractions. A place-conditioned model can hardly know more of an unseen geographic block
  than its neighbours show, so this column says how much of the gap to 1.0 the split itself
  leaves. Absent for a model without a training record (e.g. an official checkpoint).
* **By distance**: both measures for the model and the reference in quartiles of the
  distance from each place to its nearest training place, which shows how far from its
  training data a model still tells places apart.
* **Water-fraction correlation**: generated tiles are written as GeoTIFFs into the catalog
  (source ``generated``, ``parent_id`` = the real tile, ``extra.eval_batch`` naming this
  evaluation); a water scorer given by the caller gives each of them a water fraction, and the
  Pearson correlation of those with the real tiles' (GSHHS) ones is reported. Generation has no
  water model of its own and imports no other task, so the scorer is a plain callable argument
  (``workbench generate eval`` passes one that runs a segmentation model, see
  ``experiments/water_scoring.py``).

Outputs in ``--out`` (default ``$WORKBENCH_HOME/generated/eval-<time>``): ``eval.json``,
``mosaic.png`` (real | generated | metadata zeroed, for 16 places), the generated tiles.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from workbench import paths
from workbench.errors import WorkbenchError

from .run import ModelFolder

VARIANTS = ("metadata", "zeroed")
MOSAIC_PLACES = 16


@dataclass
class EvalOptions:
    n: int = 128
    steps: int = 20
    guidance: float = 3.0
    scheduler: str = "ddim"
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    min_n: int = 100                      # fewer places than this: a warning in the report
    progress: bool = True


# ------------------------------------------------------------------------------ the measures

def other_places(n: int, seed: int) -> np.ndarray:
    """For each place i, another place j != i drawn uniformly with a fixed seed."""
    if n < 2:
        raise WorkbenchError(f"location fidelity needs at least 2 places, got {n}")
    rng = np.random.default_rng(seed)
    j = rng.integers(0, n - 1, size=n)
    return j + (j >= np.arange(n))


def location_fidelity(generated: np.ndarray, real: np.ndarray, others: np.ndarray) -> float:
    """Share of i with ||g_i - r_i|| < ||g_i - r_others[i]|| (ties count one half).

    ``generated`` and ``real`` are (n, k) features, here mean RGB colours."""
    return float(np.mean(place_hits(generated, real, others)))


def place_hits(generated: np.ndarray, real: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Each place's share of location fidelity: 1 if its tile is nearer its own place, 0.5 on a tie."""
    g, r = np.asarray(generated, dtype=np.float64), np.asarray(real, dtype=np.float64)
    own = np.linalg.norm(g - r, axis=1)
    other = np.linalg.norm(g - r[np.asarray(others)], axis=1)
    return (own < other) + 0.5 * (own == other)


def known_pairs(a: Sequence[float | None], b: Sequence[float | None]) -> list[tuple[float, float]]:
    """The (a_i, b_i) where both are known and finite: what r is computed over, and counted by."""
    return [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None
            and math.isfinite(float(x)) and math.isfinite(float(y))]


def pearson(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Pearson's r over the pairs where both are known; None when undefined (constant or < 3 pairs)."""
    pairs = known_pairs(a, b)
    if len(pairs) < 3:
        return None
    x, y = np.array(pairs).T
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def share_se(p: float, n: int) -> float:
    """Binomial standard error of a share of ``n`` places: how far another draw of noise and
    partner places may move location fidelity (at 128 places and 0.8 about 0.035), so that two
    models are not ranked by a difference of one or two places."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else float("nan")


def r_interval(r: float | None, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % interval of Pearson's r over ``n`` pairs (Fisher's z): r is far from normal near +-1."""
    if r is None or n < 4:
        return None
    centre, half = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), z / math.sqrt(n - 3)
    return math.tanh(centre - half), math.tanh(centre + half)


def mean_colours(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, 3) mean RGB."""
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1, 3).mean(axis=1)


def sampler_settings(folder: ModelFolder, steps: int | None = None, guidance: float | None = None,
                     scheduler: str | None = None) -> dict[str, Any]:
    """Each sampler setting as given, else the model's own default (``workbench.json`` ``sampling``),
    else the eval's: how every command that samples for a measurement picks them."""
    sampling = folder.defaults.get("sampling") or {}

    def pick(value, key):
        return value if value is not None else sampling.get(key, getattr(EvalOptions, key))

    return {"steps": int(pick(steps, "steps")), "guidance": float(pick(guidance, "guidance")),
            "scheduler": str(pick(scheduler, "scheduler"))}


EARTH_RADIUS_KM = 6371.0


def nearest(query_lonlat: np.ndarray, lonlat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``lonlat`` of the point nearest to each query point on the sphere (haversine), so
    that 179 E is next to 179 W and a degree of longitude near a pole counts for little; and the
    great-circle distance to it in km."""
    q, p = np.radians(np.asarray(query_lonlat, np.float64)), np.radians(np.asarray(lonlat, np.float64))
    dlon = q[:, None, 0] - p[None, :, 0]
    dlat = q[:, None, 1] - p[None, :, 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(q[:, None, 1]) * np.cos(p[None, :, 1]) * np.sin(dlon / 2) ** 2
    idx = np.argmin(h, axis=1)
    h_min = np.clip(h[np.arange(len(idx)), idx], 0.0, 1.0)
    return idx, 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(h_min))


def by_distance(km: Sequence[float], hits: dict[str, np.ndarray], water: dict[str, Sequence[float | None]],
                real_water: Sequence[float | None], bins: int = 4) -> list[dict]:
    """Fidelity and water r in quantile bins of the distance to the nearest training place.

    A place-conditioned model can only interpolate: the breakdown shows where the totals come
    from (near the training places or far inside unseen blocks) and how far from its training
    data a model still tells places apart. ``hits`` / ``water`` hold one sequence per column
    (the model, the nearest-place reference, ...)."""
    km = np.asarray(km, dtype=np.float64)
    order = np.argsort(km, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, len(km))):     # never more bins than places: none empty
        row = {"km": [float(km[part].min()), float(km[part].max())], "places": int(len(part))}
        for name in hits:
            row[name] = {"location_fidelity": float(np.mean(np.asarray(hits[name])[part])),
                         "water_fraction_correlation": pearson([water[name][i] for i in part],
                                                               [real_water[i] for i in part])}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ the places

def training_record(folder: ModelFolder) -> dict:
    return dict(folder.defaults.get("training") or {})


def select_places(folder: ModelFolder, query_override: dict, n: int, catalog, size: int) -> tuple[dict, list]:
    """The evaluation places: the model's training source / where (else Blue Marble), split test."""
    from workbench.data.catalog import open_existing, run_query

    from .data import select_tiles, spread

    data = training_record(folder).get("data") or {}
    query = run_query(data.get("source", "bluemarble"), data.get("where"), query_override)
    query.setdefault("split", "test")
    limit = query.pop("limit", None)
    with open_existing(catalog, read_only=True) as cat:
        tiles = select_tiles(cat, query, None, size)
    return query, spread(tiles, min(n, limit) if limit else n)


def training_places(folder: ModelFolder, catalog, size: int) -> list:
    """The tiles the model was trained on: ``generate train``'s own selection (``data.select``)
    over its recorded data config, in this catalog; empty without a record."""
    from workbench.config import build

    from .config import DataConfig, GenerationConfig
    from .data import select

    data = training_record(folder).get("data")
    if not data:
        return []
    try:
        d = build(DataConfig, {**data, "catalog": None, "size": size, "val_split": None}, "training.data.")
        tiles = select(GenerationConfig(data=d), catalog, None).train
    except WorkbenchError:             # an older record, or a catalog that no longer holds them: no reference
        return []
    return [t for t in tiles if t.lon is not None and t.lat is not None]


def nearest_reference(folder: ModelFolder, tiles: Sequence, catalog, size: int, real_means: np.ndarray,
                      others: np.ndarray) -> dict | None:
    """Fidelity and water r of answering each place with its nearest training place's real tile."""
    train = training_places(folder, catalog, size)
    if not train:
        return None
    idx, km = nearest([[t.lon, t.lat] for t in tiles], [[t.lon, t.lat] for t in train])
    picked = [train[i] for i in idx]
    hits = place_hits(mean_colours(real_images(folder, picked, size)), real_means, others)
    return {"location_fidelity": float(np.mean(hits)),
            "water_fraction_correlation": pearson([t.water_fraction for t in picked],
                                                  [t.water_fraction for t in tiles]),
            "training_places": len(train), "median_km": float(np.median(km)),
            "per_place": {"tile_ids": [t.id for t in picked], "km": km.tolist(), "hits": hits,
                          "water": [t.water_fraction for t in picked]}}


def real_images(folder: ModelFolder, tiles: Sequence, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8: the real tiles as the model was trained to see them (its bands and scaling)."""
    from .data import TileImages

    data = training_record(folder).get("data") or {}
    images = TileImages(tiles, size, data.get("bands"), data.get("value_max"))
    return np.stack([images.uint8(i) for i in range(len(tiles))])


def caption_template(folder: ModelFolder):
    """The template the model was trained with (recorded in workbench.json), else None."""
    from .captions import load_template, template_from_text

    record = training_record(folder)
    if record.get("caption_template"):
        return template_from_text(record["caption_template"], record.get("captions") or "recorded")
    if record.get("captions"):
        return load_template(record["captions"])
    return None


def captions_of(tiles: Sequence, template) -> list[str]:
    if template is None:
        return [t.caption or "a satellite image" for t in tiles]
    return [template.render(t) for t in tiles]


def place_metadata(tile, folder: ModelFolder):
    """The place and time of a real tile in human units (the model's defaults where the row says nothing)."""
    from .metadata import Metadata

    day = date.today()
    if tile.date:
        try:
            day = date.fromisoformat(str(tile.date)[:10])
        except ValueError:
            pass
    gsd = tile.gsd or float(folder.defaults.get("gsd", 1.0))
    return Metadata(lon=float(tile.lon or 0.0), lat=float(tile.lat or 0.0), gsd=float(gsd),
                    cloud_cover=float(tile.cloud_cover or 0.0), date=day)


# ------------------------------------------------------------------------------ generation

def generate_all(pipe, prompts: Sequence[str], metadata: Sequence[Sequence[float]] | None, seeds: Sequence[int],
                 opts: EvalOptions, size: int, desc: str) -> np.ndarray:
    from workbench.progress import progress

    from .pipeline import seeded_generators

    pipe.set_progress_bar_config(disable=True)
    out = []
    chunks = range(0, len(prompts), opts.batch_size)
    for start in progress(chunks, desc=desc, unit="batch", enabled=opts.progress):
        stop = min(start + opts.batch_size, len(prompts))
        out.append(pipe(list(prompts[start:stop]), None if metadata is None else metadata[start:stop],
                        generator=seeded_generators(seeds[start:stop]), num_inference_steps=opts.steps,
                        guidance_scale=opts.guidance, height=size, width=size, output_type="uint8").images)
    return np.concatenate(out)


def write_generated(images: dict[str, np.ndarray], tiles: Sequence, prompts: Sequence[str], seeds: Sequence[int],
                    folder: ModelFolder, opts: EvalOptions, out_dir: Path, batch_id: str,
                    catalog) -> dict[str, list[int]]:
    """Every generated tile as PNG + GeoTIFF at its place, one catalog row each; ids per variant."""
    from workbench.data.catalog import Catalog

    from .metadata import unconditional

    ids: dict[str, list[int]] = {}
    with Catalog(catalog) as cat:
        for variant, imgs in images.items():
            rows = generated_rows(imgs, tiles, prompts, seeds, folder, opts, out_dir / variant,
                                  extra={"eval_batch": batch_id, "variant": variant},
                                  metadata_normalised=unconditional() if variant == "zeroed" else None)
            ids[variant] = cat.add_tiles(rows, replace=True)
    return ids


def generated_rows(images: np.ndarray, tiles: Sequence, prompts: Sequence[str], seeds: Sequence[int],
                   folder: ModelFolder, opts: EvalOptions, out_dir: Path, extra: dict | None = None,
                   split: str | None = None, metadata_normalised: list[float] | None = None) -> list:
    """Write image i as PNG + GeoTIFF at the place of real tile i (``out_dir``) and return its catalog
    row (source ``generated``, ``parent_id`` = the real tile, ``extra`` added, ``split`` set), not yet added.
    ``metadata_normalised``: what the model was given when not the place's own metadata."""
    from .jobs import Job, place_name
    from .predict import Options, catalog_tile, write_image

    model_id = folder.model_id()
    gen_opts = Options(steps=opts.steps, guidance=opts.guidance, scheduler=opts.scheduler, seed=opts.seed)
    rows = []
    for i, (img, tile, prompt, seed) in enumerate(zip(images, tiles, prompts, seeds)):
        md = place_metadata(tile, folder)
        job = Job(prompt=prompt, metadata=md, place=place_name(md.lat, md.lon))
        o = write_image(img, out_dir, i, job, seed, prompt, gen_opts, model_id,
                        metadata_normalised=metadata_normalised)
        row = catalog_tile(o, model_id)
        row.parent_id = tile.id
        row.split = split
        row.extra = {**row.extra, **(extra or {})}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ water

# Scores generated tiles' water: called with their catalog ids and the catalog path, it returns each
# id's water fraction (None where unknown) or raises WorkbenchError when it cannot score at all.
WaterScorer = Callable[[Sequence[int], Path], dict[int, float | None]]


# ------------------------------------------------------------------------------ pictures

def write_mosaic(path: Path, real: np.ndarray, generated: dict[str, np.ndarray], picks: Sequence[int],
                 captions: Sequence[str] | None = None) -> Path:
    """Places in a 4-wide grid, each a triplet real | generated | metadata zeroed (upscaled 2x)."""
    from PIL import Image, ImageDraw

    scale, gap, cols = 2, 6, 4
    h, w = real.shape[1] * scale, real.shape[2] * scale
    cell_w = 3 * w + 2 * 2 + gap
    rows = math.ceil(len(picks) / cols)
    header = 16
    canvas = Image.new("RGB", (cols * cell_w, header + rows * (h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c in range(cols):
        for k, name in enumerate(("real", "generated", "md zeroed")):
            draw.text((c * cell_w + k * (w + 2) + 2, 2), name, fill=(0, 0, 0))
    for n, i in enumerate(picks):
        r, c = divmod(n, cols)
        x0, y0 = c * cell_w, header + r * (h + gap)
        for k, img in enumerate((real[i], generated["metadata"][i], generated["zeroed"][i])):
            tile = Image.fromarray(img).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (x0 + k * (w + 2), y0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ------------------------------------------------------------------------------ the whole evaluation

def default_out_dir(folder: str = "generated", prefix: str = "eval") -> Path:
    """A new ``$WORKBENCH_HOME/<folder>/<prefix>-<time>`` (``-2``, ``-3``... when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = paths.home() / folder / f"{prefix}-{stamp}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def evaluate(folder: ModelFolder, opts: EvalOptions, query_override: dict | None = None, catalog=None,
             out_dir: Path | None = None, log: Callable[[str], None] | None = None,
             water_scorer: WaterScorer | None = None, water_record: dict[str, Any] | None = None) -> dict:
    """The whole evaluation (module docstring): writes ``eval.json`` and ``mosaic.png``, returns the result.

    ``water_scorer`` gives the generated tiles their water fractions (None: no water-fraction
    correlation); a WorkbenchError from it becomes a note, since the other figures still stand.
    ``water_record`` is what ``water_fraction_correlation`` records about the scorer (which model
    scores, or a ``note`` why there is none); its note is said once the places are known, before
    the long sampling, so that a missing water model is no surprise at the end."""
    from workbench.data.catalog import open_existing

    from .data import metadata_vector, spread
    from .pipeline import load_pipeline
    from .predict import Options, check_options

    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    size = check_options(Options(steps=opts.steps, guidance=opts.guidance, scheduler=opts.scheduler,
                                 seed=opts.seed), folder)
    if opts.n < 2:
        raise WorkbenchError(f"--n {opts.n}: need at least 2 places (the acceptance figures use >= 100)")
    if opts.batch_size < 1:
        raise WorkbenchError(f"--batch-size {opts.batch_size}: must be at least 1")
    with open_existing(catalog, read_only=True) as cat:
        catalog_path = cat.path
    query, tiles = select_places(folder, dict(query_override or {}), opts.n, catalog_path, size)
    if len(tiles) < 2:
        raise WorkbenchError(f"only {len(tiles)} tile(s) match {query}: need at least 2 places")
    water: dict[str, Any] = {"available": False, "note": None, **(water_record or {})}
    if water["note"] and log:
        say(f"water-fraction correlation {water['note']}")
    template = caption_template(folder)
    prompts = captions_of(tiles, template)
    seeds = [opts.seed + i for i in range(len(tiles))]
    metadata = [metadata_vector(t) for t in tiles]
    real = real_images(folder, tiles, size)

    pipe = load_pipeline(folder, scheduler=opts.scheduler, device=opts.device)
    say(f"evaluating {folder.root} on {len(tiles)} places ({query}) on {pipe.device}: {opts.scheduler}, "
        f"{opts.steps} steps, guidance {opts.guidance:g}, seed {opts.seed}")
    t_gen = time.perf_counter()
    zeros = [[0.0] * len(m) for m in metadata]
    generated = {"metadata": generate_all(pipe, prompts, metadata if pipe.uses_metadata else None, seeds, opts,
                                          size, "generating"),
                 "zeroed": generate_all(pipe, prompts, zeros if pipe.uses_metadata else None, seeds, opts, size,
                                        "metadata zeroed")}
    gen_s = time.perf_counter() - t_gen

    others = other_places(len(tiles), opts.seed)
    real_means = mean_colours(real)
    means = {v: mean_colours(generated[v]) for v in VARIANTS}
    hits = {v: place_hits(means[v], real_means, others) for v in VARIANTS}
    fidelity = {v: float(np.mean(hits[v])) for v in VARIANTS}
    reference = nearest_reference(folder, tiles, catalog_path, size, real_means, others)

    out_dir = Path(out_dir) if out_dir else default_out_dir()
    batch_id = out_dir.name
    ids = write_generated(generated, tiles, prompts, seeds, folder, opts, out_dir, batch_id, catalog_path)
    real_wf = [t.water_fraction for t in tiles]
    gen_wf: dict[str, list] = {v: [None] * len(tiles) for v in VARIANTS}
    if water_scorer is not None:
        try:
            found = water_scorer(ids["metadata"] + ids["zeroed"], catalog_path)
        except WorkbenchError as exc:
            found, water["note"] = None, f"unavailable: {exc}"
        if found is not None:
            gen_wf = {v: [found.get(i) for i in ids[v]] for v in VARIANTS}
            water.update(available=True, **{v: pearson(gen_wf[v], real_wf) for v in VARIANTS})
            water["mean_abs_error"] = {v: _mae(gen_wf[v], real_wf) for v in VARIANTS}
            water["pairs"] = {v: len(known_pairs(gen_wf[v], real_wf)) for v in VARIANTS}
            water["ci95"] = {v: r_interval(water[v], water["pairs"][v]) for v in VARIANTS}

    near = None if reference is None else reference.pop("per_place")
    distance = None if near is None else by_distance(
        near["km"], {"metadata": hits["metadata"], "nearest_training_place": near["hits"]},
        {"metadata": gen_wf["metadata"], "nearest_training_place": near["water"]}, real_wf)
    picks = spread(range(len(tiles)), MOSAIC_PLACES)
    mosaic = write_mosaic(out_dir / "mosaic.png", real, generated, picks)
    result = {
        "model": str(folder.root), "model_id": folder.model_id(), "places": len(tiles), "query": query,
        "eval_batch": batch_id, "size": size, "steps": opts.steps, "guidance": opts.guidance,
        "scheduler": opts.scheduler, "seed": opts.seed, "device": str(pipe.device),
        "caption_template": None if template is None else template.name,
        "location_fidelity": fidelity,
        "location_fidelity_se": {v: share_se(fidelity[v], len(tiles)) for v in VARIANTS},
        "water_fraction_correlation": water,
        "nearest_training_place": reference,
        "by_distance": distance,
        "note": (f"only {len(tiles)} places (the acceptance figures use >= {opts.min_n})"
                 if len(tiles) < opts.min_n else None),
        "seconds": {"generation": round(gen_s, 1), "total": round(time.perf_counter() - t0, 1)},
        "mosaic": str(mosaic), "mosaic_places": [tiles[i].id for i in picks],
        "per_place": [{"tile_id": t.id, "lat": t.lat, "lon": t.lon, "caption": p, "seed": s,
                       "other_place": int(others[i]), "real_mean_rgb": _round(real_means[i]),
                       "generated_mean_rgb": _round(means["metadata"][i]),
                       "zeroed_mean_rgb": _round(means["zeroed"][i]), "real_water_fraction": real_wf[i],
                       "generated_water_fraction": gen_wf["metadata"][i],
                       "zeroed_water_fraction": gen_wf["zeroed"][i],
                       "generated_ids": {v: ids[v][i] for v in VARIANTS},
                       "nearest_training_tile": None if near is None else near["tile_ids"][i],
                       "nearest_training_km": None if near is None else round(near["km"][i], 1)}
                      for i, (t, p, s) in enumerate(zip(tiles, prompts, seeds))],
    }
    result["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["out_dir"] = str(out_dir)
    return result


def _round(v) -> list[float]:
    return [round(float(x), 2) for x in v]


def _mae(a: Sequence, b: Sequence) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return None if not pairs else float(np.mean([abs(x - y) for x, y in pairs]))


def _uncertainty_line(result: dict) -> str:
    """How much of the table a new draw could move: differences below these are noise."""
    se = result.get("location_fidelity_se", {}).get("metadata")
    parts = [] if se is None else [f"fidelity 1 s.e. {se:.3f} ({result['places']} places)"]
    wf = result["water_fraction_correlation"]
    ci = (wf.get("ci95") or {}).get("metadata")
    if ci is not None:
        parts.append(f"water r 95 % interval {ci[0]:.2f} to {ci[1]:.2f} ({wf['pairs']['metadata']} pairs)")
    return "spread:  " + "; ".join(parts) if parts else "spread:  -"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows of cells as text columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def _distance_table(rows: Sequence[dict]) -> list[str]:
    table = [("km to nearest train place", "places", "fidelity", "water r", "ref. fidelity", "ref. water r")]
    table += [(f"{r['km'][0]:,.0f} - {r['km'][1]:,.0f}", str(r["places"]),
               _f(r["metadata"]["location_fidelity"]), _f(r["metadata"]["water_fraction_correlation"]),
               _f(r["nearest_training_place"]["location_fidelity"]),
               _f(r["nearest_training_place"]["water_fraction_correlation"])) for r in rows]
    return ["by distance to the nearest training place (ref.: the nearest train place's own tile)", *_aligned(table)]


def report(result: dict) -> str:
    lf, wf = result["location_fidelity"], result["water_fraction_correlation"]
    ref = result.get("nearest_training_place")
    rows = [("", "metadata", "zeroed"),
            ("location fidelity", _f(lf["metadata"]), _f(lf["zeroed"])),
            ("water-fraction r", _f(wf.get("metadata")), _f(wf.get("zeroed")))]
    if ref is not None:
        rows = [r + (c,) for r, c in zip(rows, ("nearest train place", _f(ref["location_fidelity"]),
                                                 _f(ref["water_fraction_correlation"])))]
    lines = [f"model    {result['model']}",
             f"places   {result['places']} ({', '.join(f'{k}={v}' for k, v in result['query'].items())}); "
             f"{result['scheduler']} {result['steps']} steps, guidance {result['guidance']:g}, seed {result['seed']}",
             ""]
    lines += _aligned(rows)
    lines.append(_uncertainty_line(result))
    if not wf.get("available"):
        lines.append(f"\nwater-fraction correlation {wf.get('note')}")
    elif wf.get("seg_run"):
        lines.append(f"\nwater scored by segmentation run {Path(wf['seg_run']).name}")
    if ref is not None:
        lines.append(f"nearest train place: each place answered by the real tile of the nearest of the "
                     f"{ref['training_places']} training places (water: catalog fractions), the reference")
    if result.get("by_distance"):
        lines += ["", *_distance_table(result["by_distance"])]
    if result.get("note"):
        lines.append(f"note: {result['note']}")
    lines.append(f"chance level of location fidelity: 0.5; time {result['seconds']['total']:.0f} s")
    lines.append(f"mosaic   {result['mosaic']}")
    return "\n".join(lines)
