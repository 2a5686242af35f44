"""Sentinel-2 chips and water masks from Earth Engine, into the catalog.

The scripting API (the CLI ``workbench ee export|status|import`` is a thin shell over it)::

    from workbench.data.catalog import Catalog
    from workbench.data.sources.earthengine import Area, ExportSpec, export_direct, initialize

    initialize(project="my-ee-project")       # or WORKBENCH_EE_KEY_FILE / earthengine authenticate
    spec = ExportSpec(area=Area.from_point(105.85, 21.03, 5000), start="2023-01-01", end="2023-03-31",
                      water="jrc", composite="median", cloud_mask=True)
    with Catalog() as cat:
        result = export_direct(spec, "data/ee-hanoi", cat, workers=4)

Pieces:

- :mod:`ee_area` -- :class:`Area` (GeoJSON / bbox / point + radius) and the chip grid in the
  area's UTM zone (:func:`plan_chips`);
- :mod:`ee_spec` -- :class:`ExportSpec`, validated on construction;
- :mod:`ee_graph` -- the expression graphs (:func:`build_export`): collection filters,
  SCL cloud mask, bands, median composite, the water mask of each source;
- :mod:`ee_transport` -- retries with backoff (:class:`RetryPolicy`) and checked downloads;
- :mod:`ee_export` -- what both export modes share: credentials (:func:`initialize`), the
  scene list, the output folder (manifest, log, lock) and the chip plan;
- this module -- the scripting API (every name above, imported from where it lives) and
  :func:`export_direct`: per-chip ``ee.data.computePixels`` downloads in a bounded thread
  pool, each chip's image and mask renamed into place after a full read-back, then its
  catalog row in its own transaction. A re-run skips chips that have a row, so a run killed
  halfway and started again ends with every chip once;
- :mod:`ee_batch` -- :func:`export_batch` (Drive / Cloud Storage tasks), :func:`task_status`,
  :func:`import_exported`.

Credentials are read by the ``ee`` client and never logged, written to the manifest or
stored in the catalog.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.data.catalog import Catalog, Tile
from workbench.data.sources.ee_area import Area, Chip, ChipPlan, plan_chips, utm_epsg
from workbench.data.sources.ee_batch import export_batch, import_exported, task_status
from workbench.data.sources.ee_export import (
    KEY_FILE_ENV,
    LOG_FILE,
    MANIFEST,
    NO_CREDENTIALS,
    NO_PROJECT,
    PROJECT_ENVS,
    ChipJob,
    ExportLog,
    ExportResult,
    FolderLock,
    Scene,
    export_units,
    initialize,
    list_scenes,
    one_line,
    open_manifest,
    plan_jobs,
    read_manifest,
    resolve_project,
    start_export,
    unit_dir,
    write_manifest,
)
from workbench.data.sources.ee_graph import ExportGraphs, build_export
from workbench.data.sources.ee_spec import (
    COLLECTION,
    DEFAULT_BANDS,
    DEFAULT_CLOUD_CLASSES,
    DYNAMIC_WORLD_ID,
    HANSEN_ID,
    HANSEN_SEED_ID,
    IMAGE_NODATA,
    JRC_ID,
    MASK_NODATA,
    S2_BANDS,
    WATER_SOURCES,
    ExportSpec,
)
from workbench.data.sources.ee_transport import (
    RetriesExhausted,
    RetryPolicy,
    TransientError,
    call_with_retries,
    download_geotiff,
    tmp_name,
    transient_reason,
)
from workbench.errors import WorkbenchError
from workbench.progress import progress as progress_bar

__all__ = [
    "Area", "Chip", "ChipPlan", "ExportSpec", "ExportGraphs", "RetryPolicy", "Scene", "ExportResult",
    "initialize", "resolve_project", "plan_chips", "build_export", "list_scenes", "export_units", "plan_jobs",
    "check_direct_size", "export_direct", "export_batch", "task_status", "import_exported", "utm_epsg",
    "ChipJob", "ExportLog", "FolderLock", "open_manifest", "read_manifest", "write_manifest", "unit_dir",
    "COLLECTION", "HANSEN_ID", "HANSEN_SEED_ID", "JRC_ID", "DYNAMIC_WORLD_ID", "DEFAULT_BANDS",
    "DEFAULT_CLOUD_CLASSES", "S2_BANDS", "WATER_SOURCES", "KEY_FILE_ENV", "PROJECT_ENVS", "MANIFEST", "LOG_FILE",
    "NO_CREDENTIALS", "NO_PROJECT", "ABORT_AFTER_FAILURES", "MAX_DIRECT_BYTES", "MAX_DIRECT_CHIPS",
]

SKIPPED_FILE = "skipped.jsonl"
MAX_DIRECT_BYTES = 48 * 1024 * 1024        # computePixels answers at most 48 MiB
MAX_DIRECT_CHIPS = 20_000
ABORT_AFTER_FAILURES = 5                   # permanent errors in a row, nothing done: stop


# ---- the direct export: the output folder's own files -------------------------------------------

def _clean_stale_downloads(out: Path) -> int:
    """Temporary downloads left by a killed run (only called while holding the folder lock)."""
    n = 0
    for p in Path(out).rglob(".*.download-*"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


def _read_skipped(out: Path) -> set[str]:
    path = Path(out) / SKIPPED_FILE
    found = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                found.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue            # a line torn by a kill
    return found


# ---- one chip ----------------------------------------------------------------------------------------

@dataclass
class ChipOutcome:
    job: ChipJob
    status: str                       # ok | empty | failed
    water_fraction: float | None = None
    valid_fraction: float = 0.0
    error: str | None = None


def _fetch_chip(job: ChipJob, graphs: ExportGraphs, spec: ExportSpec, policy: RetryPolicy,
                log: Callable[[str], None]) -> ChipOutcome:
    """Download image and mask to temporary names, check them, name them, rename them into place."""
    import numpy as np

    from workbench.data import geotiff

    grid = job.chip.grid()
    what = f"{job.unit.key}/{job.chip.id}"
    img_tmp, msk_tmp = tmp_name(job.image_path), tmp_name(job.mask_path)
    try:
        call_with_retries(lambda: download_geotiff(graphs.image, grid, img_tmp, len(spec.bands)),
                          policy, f"{what} image", log)
        call_with_retries(lambda: download_geotiff(graphs.mask, grid, msk_tmp, 1), policy, f"{what} mask", log)
        image = geotiff.read(img_tmp)
        mask = geotiff.read(msk_tmp)[0]
        valid = np.any(image != IMAGE_NODATA, axis=0)
        valid_fraction = float(valid.mean())
        if valid_fraction == 0 or valid_fraction < spec.min_valid:
            return ChipOutcome(job, "empty", valid_fraction=valid_fraction)
        known = valid & (mask != MASK_NODATA)
        water_fraction = float((mask[known] == 1).sum() / known.sum()) if known.any() else None
        common = {"COLLECTION": COLLECTION, "WATER_SOURCE": spec.water, "CHIP_ID": job.chip.id,
                  "EXPORT": spec.name}
        _describe(msk_tmp, ["water"], MASK_NODATA,
                  {**common, "VALUES": "1 water, 0 not water, 255 unknown or no valid image pixel"})
        tags = {**common, "DATE_ACQUIRED": job.unit.date, "COMPOSITE": spec.composite,
                "SCENE_ID": job.unit.id or f"median of {job.unit.n_scenes} scenes"}
        if job.unit.cloud is not None:
            tags["CLOUDY_PIXEL_PERCENTAGE"] = f"{job.unit.cloud:.4f}"
        _describe(img_tmp, list(spec.bands), IMAGE_NODATA, tags)
        os.replace(msk_tmp, job.mask_path)            # the mask first: an image never lacks its mask
        os.replace(img_tmp, job.image_path)
        return ChipOutcome(job, "ok", water_fraction=water_fraction, valid_fraction=valid_fraction)
    finally:
        for p in (img_tmp, msk_tmp):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _describe(path: Path, band_names: Sequence[str], nodata: float, tags: dict) -> None:
    """Band names, nodata and tags written into a downloaded GeoTIFF in place (before its rename)."""
    import rasterio

    with rasterio.open(path, "r+") as ds:
        ds.nodata = nodata
        for i, name in enumerate(band_names[: ds.count]):
            ds.set_band_description(i + 1, name)
        ds.update_tags(**{k: str(v) for k, v in tags.items()})


def _tile(spec: ExportSpec, outcome: ChipOutcome) -> Tile:
    job, chip = outcome.job, outcome.job.chip
    lon, lat = chip.centre
    w, s, e, n = chip.lonlat
    wf = outcome.water_fraction
    label = None if wf is None else ("land" if wf < 0.05 else "water" if wf > 0.95 else "coast")
    extra = {"chip": chip.id, "grid": [chip.col, chip.row], "export": spec.name,
             "fingerprint": spec.fingerprint(), "composite": spec.composite, "water_source": spec.water,
             "cloud_mask": spec.cloud_mask, "collection": COLLECTION,
             "valid_fraction": round(outcome.valid_fraction, 6), "block_deg": job.block_deg, "block": job.block}
    if spec.composite == "median":
        extra.update(n_scenes=job.unit.n_scenes, date_range=[spec.start, spec.end])
    if spec.water == "jrc":
        extra["jrc_threshold"] = spec.jrc_threshold
    return Tile(path=str(job.image_path), mask_path=str(job.mask_path), source="earthengine", split=job.split,
                lon=lon, lat=lat, west=w, south=s, east=e, north=n, crs=chip.crs, width=chip.size,
                height=chip.size, gsd=spec.scale, date=job.unit.date,
                cloud_cover=None if job.unit.cloud is None else job.unit.cloud / 100.0,
                bands=list(spec.bands), water_fraction=wf, label=label, scene_id=job.unit.id, extra=extra)


# ---- the direct export ----------------------------------------------------------------------------

def check_direct_size(spec: ExportSpec) -> None:
    size = spec.chip_size * spec.chip_size * len(spec.bands) * 2
    if size > MAX_DIRECT_BYTES:
        raise WorkbenchError(f"--chip-size {spec.chip_size} with {len(spec.bands)} band(s) is "
                             f"{size / 2 ** 20:.0f} MiB per chip; --mode direct downloads at most "
                             f"{MAX_DIRECT_BYTES // 2 ** 20} MiB: use smaller chips or --mode batch")


def export_direct(spec: ExportSpec, out: str | Path, catalog: Catalog, workers: int = 4,
                  policy: RetryPolicy | None = None, project: str | None = None, progress: bool = False,
                  echo: Callable[[str], None] | None = None, max_chips: int = MAX_DIRECT_CHIPS) -> ExportResult:
    """Download every chip of ``spec`` into ``out`` and catalog it; resumable.

    Chips whose image already has a catalog row are skipped; a chip's files are renamed into
    place before its row is written, and files without a row are fetched again. Transient
    errors are retried per ``policy``; a chip that still fails is reported in
    ``result.failed`` (run again to retry it). Initialises ``ee`` if it is not already.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorkbenchError(f"--workers {workers}: at least 1")
    check_direct_size(spec)
    t0 = time.perf_counter()
    policy = policy or RetryPolicy()
    out, plan = start_export(spec, out, project)
    result = ExportResult(out=out, mode="direct", spec=spec, crs=plan.crs, catalog=str(catalog.path))
    with FolderLock(out):
        log = ExportLog(out, echo)
        manifest = open_manifest(out, spec, "direct")
        stale = _clean_stale_downloads(out)
        log(f"export {spec.name} ({spec.fingerprint()}): {spec.area.label}, {spec.start}..{spec.end}, "
            f"{len(plan)} chip location(s) of {spec.chip_size} px in {plan.crs}"
            + (f"; removed {stale} unfinished download(s) of an earlier run" if stale else ""))
        units = export_units(spec, list_scenes(spec, policy, log))
        jobs = plan_jobs(spec, plan, units, out)
        if len(jobs) > max_chips:
            raise WorkbenchError(f"{len(jobs):,} chips ({len(units)} scene(s) x up to {len(plan)} chips) is more "
                                 f"than {max_chips:,} for --mode direct: use --composite median, --max-scenes, "
                                 "a larger --chip-size or --mode batch")
        result.units, result.planned = units, len(jobs)
        manifest.update(mode="direct", crs=plan.crs, chip_size=spec.chip_size, chips_planned=len(jobs),
                        units=[u.to_json() for u in units])
        write_manifest(out, manifest)

        done = {str(Path(p).resolve()) for p in catalog.existing_paths([j.image_path for j in jobs])}
        known_empty = _read_skipped(out)
        todo = [j for j in jobs if str(j.image_path.resolve()) not in done
                and _rel(j.image_path, out) not in known_empty]
        result.already = len(jobs) - len(todo)
        log(f"{len(units)} unit(s), {len(jobs)} chip(s): {result.already} done before, {len(todo)} to fetch "
            f"with {workers} worker(s)")
        graphs = {}
        for unit in {j.unit.key: j.unit for j in todo}.values():
            graphs[unit.key] = build_export(spec, unit.id)
        for folder in {j.image_path.parent for j in todo}:
            folder.mkdir(parents=True, exist_ok=True)
        _run_pool(spec, todo, graphs, catalog, workers, policy, log, progress, result, out)
    result.seconds = time.perf_counter() - t0
    log(f"finished: {len(result.added)} added, {result.already} already done, {result.empty} empty, "
        f"{len(result.failed)} failed in {result.seconds:.1f} s")
    return result


def _run_pool(spec: ExportSpec, todo: list[ChipJob], graphs: dict, catalog: Catalog, workers: int,
              policy: RetryPolicy, log: ExportLog, progress: bool, result: ExportResult, out: Path) -> None:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if not todo:
        return
    bar = progress_bar(total=len(todo), desc="chips", unit="tile", enabled=progress)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ee-chip")
    in_a_row = 0
    queue = iter(todo)
    pending: dict = {}

    def top_up() -> None:
        """Keep at most two chips per worker in flight: an abort stops soon, and a large area
        does not queue thousands of futures at once."""
        for job in queue:
            pending[pool.submit(_fetch_chip, job, graphs[job.unit.key], spec, policy, log)] = job
            if len(pending) >= 2 * workers:
                return

    try:
        top_up()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = pending.pop(fut)
                what = f"{job.unit.key}/{job.chip.id}"
                try:
                    outcome = fut.result()
                except (RetriesExhausted, TransientError) as exc:
                    outcome = ChipOutcome(job, "failed", error=str(exc))
                except WorkbenchError as exc:
                    outcome = ChipOutcome(job, "failed", error=str(exc))
                except Exception as exc:  # noqa: BLE001 -- an Earth Engine refusal (EEException, HttpError)
                    if not _is_ee_error(exc):
                        raise
                    outcome = ChipOutcome(job, "failed", error=f"{what}: {one_line(str(exc))}")
                bar.update(1)
                if outcome.status == "ok":
                    tile = _tile(spec, outcome)
                    catalog.add_tiles([tile])                  # this chip's row: one transaction
                    result.added.append(tile)
                    in_a_row = 0
                elif outcome.status == "empty":
                    _mark_empty(out, job, outcome.valid_fraction)
                    result.empty += 1
                    in_a_row = 0
                else:
                    result.failed.append((what, outcome.error or "failed"))
                    log(f"failed: {outcome.error}")
                    in_a_row += 1
                    if in_a_row >= ABORT_AFTER_FAILURES and not result.added:
                        raise WorkbenchError(f"Earth Engine refused {in_a_row} chips in a row, none done "
                                             f"(last: {outcome.error}); stopped")
            top_up()
    except BaseException:
        # Ctrl-C, a kill from a test, or the abort above: start nothing new. Chips already being
        # fetched finish their files but get no row, so the next run fetches them again.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def _is_ee_error(exc: BaseException) -> bool:
    import ee

    return isinstance(exc, ee.EEException) or transient_reason(exc) is not None or \
        type(exc).__module__.startswith(("googleapiclient", "google.auth", "requests", "httplib2"))


def _mark_empty(out: Path, job: ChipJob, valid: float) -> None:
    with open(Path(out) / SKIPPED_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"path": _rel(job.image_path, out), "valid_fraction": round(valid, 6)}) + "\n")


def _rel(path: Path, out: Path) -> str:
    """``path`` relative to the export folder (the folder can be moved)."""
    return Path(path).relative_to(out).as_posix()
