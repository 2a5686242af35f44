"""Earth Engine batch exports (Drive / Cloud Storage), their status, and importing what they wrote.

For areas too large to download chip by chip: every chip of every scene (or of the
composite) becomes two ``ee.batch.Export.image.toDrive`` / ``toCloudStorage`` tasks
on the same grid (``crs``, ``crsTransform``, ``dimensions``), named so that the files
pair the way ``workbench data import`` reads them::

    {name}_{scene}_{chip}.tif        the bands (uint16, 0 = no data)
    {name}_{scene}_{chip}_mask.tif   the water mask (uint8, 1 / 0 / 255 = unknown)

Each task is started with a request id derived from the request and the file name, so
starting the same task twice (a re-run after a kill) gives the server the same id and
does not export twice; the started tasks go into ``manifest.json`` in the output folder
together with what each chip is (scene, date, cloud cover, split). ``task_status``
follows them (``ee.data.listOperations``, then ``ee.data.getTaskStatus`` for the rest);
``import_exported`` runs the folder import on the downloaded files and fills in what a
GeoTIFF export cannot carry (date, cloud cover, scene, band names, split) from the
manifest.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.catalog import Catalog
from workbench.data.sources.ee_export import (
    ExportLog,
    ExportResult,
    FolderLock,
    export_units,
    list_scenes,
    open_manifest,
    plan_jobs,
    read_manifest,
    start_export,
    utc_now,
    write_manifest,
)
from workbench.data.sources.ee_graph import build_export
from workbench.data.sources.ee_spec import IMAGE_NODATA, MASK_NODATA, ExportSpec
from workbench.data.sources.ee_transport import RetryPolicy, call_with_retries
from workbench.errors import WorkbenchError

DESTINATIONS = ("drive", "gcs")
MAX_TASKS = 3000                     # Earth Engine queues at most a few thousand tasks per user
SAVE_EVERY = 20
OPERATION_TO_TASK_STATE = {"PENDING": "READY", "RUNNING": "RUNNING", "SUCCEEDED": "COMPLETED",
                           "FAILED": "FAILED", "CANCELLING": "CANCEL_REQUESTED", "CANCELLED": "CANCELLED"}
ACTIVE_STATES = ("READY", "RUNNING", "CANCEL_REQUESTED", "SUBMITTED")


def export_batch(spec: ExportSpec, out: str | Path, destination: str = "drive", bucket: str | None = None,
                 drive_folder: str | None = None, policy: RetryPolicy | None = None, project: str | None = None,
                 echo: Callable[[str], None] | None = None, max_tasks: int = MAX_TASKS) -> ExportResult:
    """Start the export tasks of ``spec`` and record them in ``out/manifest.json``; resumable."""
    import ee

    if destination not in DESTINATIONS:
        raise WorkbenchError(f"destination {destination!r}: unknown (known: {', '.join(DESTINATIONS)})")
    if destination == "gcs" and not bucket:
        raise WorkbenchError("a Cloud Storage export needs --bucket NAME")
    t0 = time.perf_counter()
    policy = policy or RetryPolicy()
    out, plan = start_export(spec, out, project)
    result = ExportResult(out=out, mode="batch", spec=spec, crs=plan.crs)
    with FolderLock(out):
        log = ExportLog(out, echo)
        manifest = open_manifest(out, spec, "batch")
        old_name = manifest.get("spec", {}).get("name")
        if manifest.get("tasks") and old_name and old_name != spec.name:
            raise WorkbenchError(f"{out}: this request was exported as {old_name!r}; drop --name (or give "
                                 f"--name {old_name}) to resume it, or use another --out")
        units = export_units(spec, list_scenes(spec, policy, log))
        jobs = plan_jobs(spec, plan, units, out)
        if 2 * len(jobs) > max_tasks:
            raise WorkbenchError(f"{2 * len(jobs):,} export tasks ({len(jobs):,} chips x image + mask) is more than "
                                 f"{max_tasks:,}: use a larger --chip-size, --composite median or --max-scenes")
        result.units, result.planned = units, len(jobs)
        folder = drive_folder or spec.name
        dest = ({"type": "drive", "folder": folder} if destination == "drive"
                else {"type": "gcs", "bucket": bucket, "prefix": spec.name})
        manifest.update(crs=plan.crs, chip_size=spec.chip_size, chips_planned=len(jobs), destination=dest,
                        units=[u.to_json() for u in units])
        tasks: list[dict] = manifest.setdefault("tasks", [])
        started = {t["description"] for t in tasks}
        result.already = sum(1 for j in jobs if _base(spec, j) in started)
        write_manifest(out, manifest)
        log(f"batch export {spec.name}: {len(jobs)} chip(s) in {len(units)} unit(s), {result.already} started "
            f"before; destination {dest}")
        graphs: dict[str, Any] = {}
        fresh = 0
        try:
            for job in jobs:
                base = _base(spec, job)
                for kind in ("image", "mask"):
                    description = base if kind == "image" else f"{base}_mask"
                    if description in started:
                        continue
                    if job.unit.key not in graphs:
                        graphs[job.unit.key] = build_export(spec, job.unit.id)
                    g = graphs[job.unit.key]
                    task = _task(spec, job, g.image if kind == "image" else g.mask, description, dest,
                                 IMAGE_NODATA if kind == "image" else MASK_NODATA)
                    request_id = _request_id(spec, description)
                    start = lambda rid=request_id, cfg=task.config: ee.data.exportImage(rid, cfg)
                    operation = call_with_retries(start, policy, f"starting {description}", log)
                    name = operation.get("name", "") if isinstance(operation, dict) else ""
                    record = {"description": description, "kind": kind, "file": f"{description}.tif",
                              "id": name.rsplit("/", 1)[-1] if name else request_id, "operation": name,
                              "request_id": request_id, "chip": job.chip.id, "scene": job.unit.id,
                              "date": job.unit.date, "cloud_cover": None if job.unit.cloud is None
                              else job.unit.cloud / 100.0, "split": job.split, "block": job.block,
                              "bands": list(spec.bands) if kind == "image" else ["water"],
                              "crs": job.chip.crs, "crs_transform": job.chip.transform,
                              "lonlat": list(job.chip.lonlat), "state": "SUBMITTED", "started_at": utc_now()}
                    tasks.append(record)
                    started.add(description)
                    result.tasks.append(record)
                    fresh += 1
                    if fresh % SAVE_EVERY == 0:
                        write_manifest(out, manifest)
        finally:
            write_manifest(out, manifest)
    result.seconds = time.perf_counter() - t0
    log(f"started {len(result.tasks)} task(s) in {result.seconds:.1f} s; {len(tasks)} in the manifest")
    return result


def _base(spec: ExportSpec, job: Any) -> str:
    """The file name (without .tif) of a chip's image export; at most 100 characters (EE's limit
    for a task description)."""
    base = f"{spec.name}_{job.unit.key}_{job.chip.id}"
    if len(base) > 94:
        digest = uuid.uuid5(uuid.NAMESPACE_URL, base).hex[:8]
        base = f"{base[:85]}_{digest}"
    return base


def _request_id(spec: ExportSpec, description: str) -> str:
    """The same request and file always get the same id: a repeated start is not a second export."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"workbench-ee/{spec.fingerprint()}/{description}"))


def _task(spec: ExportSpec, job: Any, image: Any, description: str, dest: dict, nodata: int):
    """An unstarted ``ee.batch.Task`` for one chip file."""
    import ee

    size = job.chip.size
    common = dict(image=image, description=description, fileNamePrefix=description, crs=job.chip.crs,
                  crsTransform=job.chip.transform, dimensions=f"{size}x{size}", maxPixels=int(1e10),
                  fileDimensions=int(math.ceil(size / 256) * 256), fileFormat="GeoTIFF",
                  formatOptions={"cloudOptimized": True, "noData": nodata})
    if dest["type"] == "drive":
        return ee.batch.Export.image.toDrive(folder=dest["folder"], **common)
    common["fileNamePrefix"] = f"{dest['prefix']}/{description}"
    return ee.batch.Export.image.toCloudStorage(bucket=dest["bucket"], **common)


# ---- status -------------------------------------------------------------------------------------------

@dataclass
class StatusReport:
    tasks: list[dict] = field(default_factory=list)       # id, description, state, error (, file)
    counts: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None
    destination: dict | None = None

    @property
    def done(self) -> bool:
        return bool(self.tasks) and all(t["state"] not in ACTIVE_STATES for t in self.tasks)


def _operation_task(op: dict) -> dict:
    meta = op.get("metadata") or {}
    name = op.get("name", "")
    state = OPERATION_TO_TASK_STATE.get(meta.get("state", ""), "UNKNOWN")
    error = (op.get("error") or {}).get("message") if op.get("done") else None
    return {"id": name.rsplit("/", 1)[-1], "operation": name, "description": meta.get("description", ""),
            "state": state, "error": error, "updated": meta.get("updateTime")}


def task_status(out: str | Path | None = None, policy: RetryPolicy | None = None,
                echo: Callable[[str], None] | None = None) -> StatusReport:
    """States of the tasks in ``out/manifest.json`` (saved back into it), or of every recent task
    of the project when ``out`` is None."""
    import ee

    policy = policy or RetryPolicy()
    operations = call_with_retries(lambda: ee.data.listOperations(), policy, "listing tasks", echo) or []
    by_id = {}
    for op in operations:
        if isinstance(op, dict) and op.get("name"):
            t = _operation_task(op)
            by_id[t["id"]] = t
    if out is None:
        report = StatusReport(tasks=list(by_id.values()))
    else:
        out = Path(out)
        manifest = read_manifest(out)
        if manifest is None:
            raise WorkbenchError(f"{out}: no {out / 'manifest.json'} (give the --out of a `workbench ee export "
                                 "--mode batch`)")
        if manifest.get("mode") != "batch":
            raise WorkbenchError(f"{out}: a --mode {manifest.get('mode')} export has no tasks to follow "
                                 "(its chips are in the catalog: workbench data list --source earthengine)")
        records = manifest.get("tasks") or []
        missing = [r["id"] for r in records if r.get("id") not in by_id]
        if missing:
            with warnings.catch_warnings():       # getTaskStatus is deprecated but still the batch lookup
                warnings.simplefilter("ignore")
                for i in range(0, len(missing), 50):
                    chunk = missing[i:i + 50]
                    for st in call_with_retries(lambda ids=chunk: ee.data.getTaskStatus(ids), policy, "task status",
                                                echo) or []:
                        by_id[st.get("id")] = {"id": st.get("id"), "description": st.get("description", ""),
                                               "state": st.get("state", "UNKNOWN"),
                                               "error": st.get("error_message")}
        tasks = []
        for r in records:
            st = by_id.get(r.get("id"), {})
            r["state"] = st.get("state", "UNKNOWN")
            r["error"] = st.get("error")
            tasks.append({"id": r.get("id"), "description": r["description"], "state": r["state"],
                          "error": r["error"], "file": r.get("file")})
        manifest["status_checked_at"] = utc_now()
        with FolderLock(out):
            write_manifest(out, manifest)
        report = StatusReport(tasks=tasks, manifest=out / "manifest.json", destination=manifest.get("destination"))
    for t in report.tasks:
        report.counts[t["state"]] = report.counts.get(t["state"], 0) + 1
    return report


# ---- import -------------------------------------------------------------------------------------------

def import_exported(catalog: Catalog, folder: str | Path, manifest: str | Path | None = None,
                    progress: bool = False) -> Any:
    """``workbench data import`` of a downloaded batch export, then date / cloud cover / scene /
    band names / split of every chip from the manifest (``folder/manifest.json`` by default)."""
    from workbench.data.sources.folder import import_folder

    folder = Path(folder)
    mpath = Path(manifest) if manifest else folder / "manifest.json"
    if not mpath.is_file():
        raise WorkbenchError(f"{mpath}: no such manifest (written by `workbench ee export --mode batch`; "
                             "give --manifest PATH)")
    data = read_manifest(mpath.parent) if mpath.name == "manifest.json" else None
    if data is None:
        import json

        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError:
            raise WorkbenchError(f"{mpath}: not a readable export manifest (JSON)") from None
    by_file = {t["file"]: t for t in data.get("tasks", []) if t.get("kind") == "image"}
    result = import_folder(catalog, folder, source="earthengine", mode="pairs")
    changes = []
    spec = data.get("spec", {})
    for tile in catalog.query(source="earthengine"):
        rec = by_file.get(Path(tile.path).name)
        if rec is None or not str(Path(tile.path).resolve()).startswith(str(folder.resolve())):
            continue
        extra = dict(tile.extra or {})
        extra.update(chip=rec["chip"], export=spec.get("name"), fingerprint=data.get("fingerprint"),
                     composite=spec.get("composite"), water_source=spec.get("water"), block=rec.get("block"),
                     task_id=rec.get("id"))
        changes.append((tile.id, {"date": rec.get("date"), "cloud_cover": rec.get("cloud_cover"),
                                  "scene_id": rec.get("scene"), "bands": rec.get("bands") or tile.bands,
                                  "split": rec.get("split") or tile.split, "gsd": spec.get("scale", tile.gsd),
                                  "extra": extra}))
    if changes:
        catalog.update_many(changes)
    result.enriched = len(changes)
    return result
