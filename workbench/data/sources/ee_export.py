"""What both Earth Engine export modes share: credentials, scenes, the output folder, the chip plan.

:mod:`~workbench.data.sources.earthengine` (the direct, chip-by-chip download and the
scripting API) and :mod:`~workbench.data.sources.ee_batch` (Drive / Cloud Storage tasks)
both build on this module and neither imports the other's internals:

- credentials: :func:`initialize`, :func:`resolve_project`;
- the scenes of a request: :class:`Scene`, :func:`list_scenes`, :func:`export_units`;
- the output folder: ``manifest.json`` (:func:`read_manifest`, :func:`write_manifest`,
  :func:`open_manifest`), ``export.log`` (:class:`ExportLog`) and the one-export-per-folder
  lock (:class:`FolderLock`);
- the plan: :class:`ChipJob` and :func:`plan_jobs` (splits by geographic block), and
  :func:`start_export`, the first steps of either mode;
- :class:`ExportResult`, what a run of either mode did.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from workbench.data.catalog import Tile
from workbench.data.sources.ee_area import Chip, ChipPlan, chips_in_footprint, plan_chips
from workbench.data.sources.ee_graph import scenes_query
from workbench.data.sources.ee_spec import COLLECTION, ExportSpec
from workbench.data.sources.ee_transport import RetryPolicy, call_with_retries
from workbench.errors import WorkbenchError

KEY_FILE_ENV = "WORKBENCH_EE_KEY_FILE"
PROJECT_ENVS = ("WORKBENCH_EE_PROJECT", "EE_PROJECT")
MANIFEST = "manifest.json"
LOG_FILE = "export.log"

NO_CREDENTIALS = ("no Earth Engine credentials: run `earthengine authenticate` once (and give --project ID "
                  f"or set {PROJECT_ENVS[0]}), or set {KEY_FILE_ENV} to a service-account JSON key file")
NO_PROJECT = (f"no Earth Engine project: give --project ID or set {PROJECT_ENVS[0]} (a Google Cloud project "
              "registered for Earth Engine)")


# ---- credentials ----------------------------------------------------------------------------------

def resolve_project(project: str | None = None) -> str | None:
    """--project, else $WORKBENCH_EE_PROJECT, else $EE_PROJECT, else None (the credentials' own)."""
    if project:
        return project
    for name in PROJECT_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def initialize(project: str | None = None, key_file: str | Path | None = None) -> str:
    """Initialise the ``ee`` client; returns how ('service account' or 'persistent credentials').

    A service-account key file (``key_file`` or $WORKBENCH_EE_KEY_FILE) wins; otherwise the
    credentials of ``earthengine authenticate``. Failure is one ``WorkbenchError`` line that
    says how to authenticate; neither the key nor its contents appear in any message.
    """
    import ee

    project = resolve_project(project)
    key_file = key_file or os.environ.get(KEY_FILE_ENV, "").strip() or None
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise WorkbenchError(f"{KEY_FILE_ENV}={path}: no such file (a service-account JSON key)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            email = info["client_email"]
            key_project = info.get("project_id")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise WorkbenchError(f"{KEY_FILE_ENV}={path}: not a service-account JSON key file "
                                 "(expected the key file downloaded from the Cloud console)") from None
        try:
            credentials = ee.ServiceAccountCredentials(email, key_file=str(path))
        except Exception as exc:  # noqa: BLE001 -- whatever the parser says may quote the key: say less
            raise WorkbenchError(f"{KEY_FILE_ENV}={path}: the key could not be read "
                                 f"({type(exc).__name__}); download a new key") from None
        how = "service account"
        kwargs = dict(credentials=credentials, project=project or key_project)
    else:
        how = "persistent credentials"
        kwargs = dict(project=project)
    try:
        ee.Initialize(**kwargs)
    except ee.EEException as exc:
        text = str(exc)
        if "earthengine authenticate" in text or "authorize access" in text.lower():
            raise WorkbenchError(NO_CREDENTIALS) from None
        if "project" in text.lower() and ("no project" in text.lower() or "not found" in text.lower()
                                          or "ee.Initialize(project" in text or "set a project" in text.lower()):
            raise WorkbenchError(NO_PROJECT) from None
        raise WorkbenchError(f"Earth Engine initialisation failed: {one_line(text)}") from None
    except Exception as exc:  # noqa: BLE001 -- google-auth refresh / transport errors
        if type(exc).__module__.startswith("google.auth"):
            raise WorkbenchError(f"Earth Engine credentials were refused ({type(exc).__name__}); "
                                 f"run `earthengine authenticate` again or check {KEY_FILE_ENV}") from None
        raise
    return how


def one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


# ---- scenes ---------------------------------------------------------------------------------------

@dataclass
class Scene:
    """One export unit: a Sentinel-2 scene, or the composite (``id`` None)."""

    id: str | None
    date: str
    cloud: float | None                 # CLOUDY_PIXEL_PERCENTAGE, percent (mean for a composite)
    footprint: dict | None = None
    n_scenes: int = 1

    @property
    def key(self) -> str:
        """Folder / file-name part: the scene's system:index, or 'median'."""
        return self.id or "median"

    def to_json(self) -> dict:
        return {"id": self.id, "date": self.date, "cloud": self.cloud, "n_scenes": self.n_scenes}


def list_scenes(spec: ExportSpec, policy: RetryPolicy | None = None,
                log: Callable[[str], None] | None = None) -> list[Scene]:
    """The scenes matching the request (one ``ee.data.computeValue`` call), oldest first."""
    import ee

    policy = policy or RetryPolicy()
    query = scenes_query(spec)
    rows = call_with_retries(lambda: ee.data.computeValue(query), policy, "listing scenes", log)
    scenes = []
    for row in rows or []:
        try:
            index, t_ms, cloud, footprint = (list(row) + [None] * 4)[:4]
            day = datetime.fromtimestamp(float(t_ms) / 1000.0, tz=UTC).date().isoformat()
            scenes.append(Scene(id=str(index), date=day, cloud=None if cloud is None else float(cloud),
                                footprint=footprint if isinstance(footprint, dict) else None))
        except (TypeError, ValueError):
            if log:
                log(f"ignoring a scene row Earth Engine sent in an unexpected form: {str(row)[:120]}")
    scenes.sort(key=lambda s: (s.date, s.id))
    return scenes


def export_units(spec: ExportSpec, scenes: Sequence[Scene]) -> list[Scene]:
    """Per-scene: the scenes. Median: one composite dated mid-range with the mean scene cloud."""
    if not scenes:
        raise WorkbenchError(f"no {COLLECTION} scene over {spec.area.label} from {spec.start} to {spec.end} "
                             f"with CLOUDY_PIXEL_PERCENTAGE <= {spec.max_cloud:g}: widen the dates or raise "
                             "--max-cloud")
    if spec.composite == "scene":
        return list(scenes)
    clouds = [s.cloud for s in scenes if s.cloud is not None]
    return [Scene(id=None, date=spec.middle_date, cloud=sum(clouds) / len(clouds) if clouds else None,
                  n_scenes=len(scenes))]


# ---- output folder: manifest, lock, log -----------------------------------------------------------

def unit_dir(out: Path, spec: ExportSpec, unit: Scene) -> Path:
    return out / (unit.id if unit.id else f"median_{spec.start}_{spec.end}")


def read_manifest(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise WorkbenchError(f"{path}: not a readable export manifest (JSON)") from None


def write_manifest(out: Path, manifest: dict) -> Path:
    """Atomically (temporary name, then rename)."""
    path = Path(out) / MANIFEST
    manifest["updated_at"] = utc_now()
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def open_manifest(out: Path, spec: ExportSpec, mode: str) -> dict:
    """This request's manifest in ``out``; a folder holding another request is an error."""
    old = read_manifest(out)
    if old is not None:
        if old.get("fingerprint") != spec.fingerprint():
            raise WorkbenchError(f"{out}: holds an export of another request ({MANIFEST}: "
                                 f"{old.get('spec', {}).get('name', '?')}); use another --out")
        if old.get("mode") != mode:
            raise WorkbenchError(f"{out}: holds a --mode {old.get('mode')} export of this request; "
                                 f"use another --out for --mode {mode}")
        return old
    return {"version": 1, "tool": "workbench ee export", "mode": mode, "fingerprint": spec.fingerprint(),
            "spec": spec.to_json(), "created_at": utc_now()}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ExportLog:
    """Lines to ``out/export.log`` (appended, time-stamped) and to ``echo`` (e.g. stderr)."""

    def __init__(self, out: Path | None, echo: Callable[[str], None] | None = None):
        self.path = Path(out) / LOG_FILE if out is not None else None
        self.echo = echo
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self._lock:
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(f"{utc_now()} {message}\n")
            if self.echo is not None:
                self.echo(message)


class FolderLock:
    """One export at a time per folder (an advisory lock the OS drops when the process dies)."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.fh = None

    def __enter__(self) -> FolderLock:
        self.fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:          # not POSIX: no lock
            return self
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise WorkbenchError(f"{self.path.parent}: another export is writing into this folder") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.close()


# ---- planning ----------------------------------------------------------------------------------------

@dataclass
class ChipJob:
    """One file pair to export: a chip of the grid in one unit (scene or composite), where
    it goes, and the split of its geographic block."""

    unit: Scene
    chip: Chip
    image_path: Path
    mask_path: Path
    split: str
    block: list[int]
    block_deg: float


def plan_jobs(spec: ExportSpec, plan: ChipPlan, units: Sequence[Scene], out: Path) -> list[ChipJob]:
    """(unit, chip) pairs: per scene, the chips its footprint touches. Splits come from the
    ground blocks of the chip *locations* (``splits.ground_splits``), so one place is in one split
    in every scene, every export and every later import of the same ground."""
    from workbench.data.splits import ground_splits

    centres = [c.centre for c in plan.chips]
    splits, blocks, block_deg = ground_splits(centres)
    where = {c.id: (s, list(b)) for c, s, b in zip(plan.chips, splits, blocks)}
    jobs = []
    for unit in units:
        folder = unit_dir(out, spec, unit)
        for chip in chips_in_footprint(plan.chips, unit.footprint):
            split, block = where[chip.id]
            jobs.append(ChipJob(unit=unit, chip=chip, image_path=folder / f"{chip.id}.tif",
                                mask_path=folder / f"{chip.id}_mask.tif", split=split, block=block,
                                block_deg=block_deg))
    return jobs


# ---- what a run did, and how every run starts ---------------------------------------------------

@dataclass
class ExportResult:
    """What one run of ``export_direct`` or ``export_batch`` did (counts, new tiles, started tasks)."""

    out: Path
    mode: str
    spec: ExportSpec
    crs: str = ""
    units: list[Scene] = field(default_factory=list)
    planned: int = 0                   # (unit, chip) pairs
    already: int = 0                   # had a catalog row (or were known empty) before this run
    added: list[Tile] = field(default_factory=list)
    empty: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)       # batch mode: tasks started by this run
    seconds: float = 0.0
    catalog: str | None = None


def start_export(spec: ExportSpec, out: str | Path, project: str | None) -> tuple[Path, ChipPlan]:
    """What both export modes do first: plan the chip grid, make sure the client is ready
    (credentials are checked here, before any file is written), create the output folder."""
    import ee

    out = Path(out)
    plan = plan_chips(spec.area, spec.chip_size, spec.scale)
    if not ee.data.is_initialized():
        initialize(project)
    out.mkdir(parents=True, exist_ok=True)
    return out, plan
