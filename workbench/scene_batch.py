"""Many scenes, many processes: the steps every task's batch ``predict`` shares.

    with distributed.session() as ranks:
        scenes = scene_batch.list_scenes(args.input, args.out, "_mask.tif", "masks")   # before the run loads
        run = load_run(..., device=scene_batch.rank_device(args.device, ranks))
        batch = scene_batch.Batch(run=..., identity=..., suffix="_mask.tif", check=..., predict=..., ...)
        return scene_batch.run(batch, scenes, args.out, ranks, to_catalog=..., catalog=..., as_json=...)

Why here and not in each task: what makes a batch safe to kill, resume and shard (the order of
the steps below, who writes what, when every rank waits) is the same whatever a scene becomes;
written once, a segmentation batch and a classification batch cannot drift apart. The task
supplies only what is its own (:class:`Batch`): its outputs' name, the identity fields that
change an output, the check that a scene can be read, the one-scene predict function, the
summary table's columns and, for ``--to-catalog``, the rows. This module imports no task.

The order of a batch, on every rank alike:

1. list the scenes (:mod:`workbench.data.scene_list`); ``--out`` a file or the input folder, or
   a scene that is one of the outputs, is refused (before the run is loaded);
2. the batch's identity (the task's fields + the scene list); a manifest of another batch in
   OUT is refused (nothing written);
3. each rank checks its unfinished scenes (the task's ``check``); any rank's refusal stops every
   rank before the first output (the error lines are gathered);
4. the main rank opens the catalog once (``--to-catalog``: one that cannot be opened stops the
   batch before it maps), writes the manifest's identity and clears the temporaries a killed
   batch left; barrier; each rank maps its share (:func:`workbench.distributed.share`), each
   output written atomically by the task, then its entry (:mod:`workbench.manifest`);
5. barrier; the main rank alone reads every entry, prints the table (or the JSON) and, with
   ``--to-catalog``, adds the task's rows in one transaction, so one process writes the catalog
   and a row already present is kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import distributed
from workbench.data.scene_list import Scene
from workbench.errors import WorkbenchError

COUNT_EVERY_S = 5.0     # how often the main rank's bar counts every rank's entries (a folder listing)


@dataclass(frozen=True)
class Batch:
    """What a task's batch verb supplies to :func:`run` (everything else is the same for all)."""

    run: str                                            # the run's folder: printed, and in the JSON
    identity: Mapping[str, Any]                         # what changes an output, besides the scene list
    suffix: str                                         # a scene's output is OUT/<name><suffix>
    check: Callable[[list[Scene]], None]                # refuse (WorkbenchError) what the run cannot read
    predict: Callable[[Scene, Path, bool], tuple[str, dict]]   # (scene, output, progress) -> (written, summary)
    columns: Sequence[str]                              # the table the main rank prints at the end,
    row: Callable[[dict], Sequence[Any]]                # one row per manifest entry
    right: Sequence[int] = ()                           # right-aligned columns
    catalog_rows: Callable[[list[dict]], list] | None = None   # --to-catalog: catalog Tiles from the entries


def output_name(scene: Scene, suffix: str) -> str:
    return f"{scene.name}{suffix}"


def common_identity(run: Any, args: Any) -> dict:
    """What every task's outputs depend on besides its own options: the run (its folder and its
    checkpoint's bytes) and how the scenes are read (``--bands``, ``--scale``, ``--offset``,
    ``--scl-nodata``)."""
    from workbench.manifest import file_sha256
    from workbench.train.checkpoint import resolve_checkpoint

    return {"run": str(Path(run.path).resolve()), "checkpoint_sha256": file_sha256(resolve_checkpoint(run.path)),
            "bands": list(args.bands) if args.bands else None, "scale": args.scale, "offset": args.offset,
            "scl_nodata": None if args.scl_nodata is None else list(args.scl_nodata)}


def map_tile(entry: dict, model_id: str, extra: Mapping[str, Any], **fields: Any) -> Any:
    """The catalog row (source ``predicted``) of one finished output: its place, CRS, size, GSD
    and bands read from the file, the run, the scene's id and date from the entry's summary,
    ``extra`` beside the input's path, and any other ``fields`` the task has."""
    from workbench.data import geotiff
    from workbench.data.catalog import Tile

    info = geotiff.read_info(entry["out"])
    west, south, east, north = info.lonlat_bounds()
    s = entry["summary"]
    return Tile(path=entry["out"], source="predicted", model_id=model_id, scene_id=s.get("scene_id"),
                date=s.get("date"), west=west, south=south, east=east, north=north, lon=(west + east) / 2,
                lat=(south + north) / 2, crs=info.crs, width=info.width, height=info.height, gsd=info.gsd_metres(),
                bands=list(info.band_names), extra={"input": entry["scene"], **extra}, **fields)


def rank_device(name: str | None, ranks: distributed.Ranks) -> str:
    """``--device`` (default cuda when present); with several processes on a node, each its own GPU."""
    from workbench.devices import resolve_device

    return str(distributed.rank_device(resolve_device(name, "--device"), ranks))


def list_scenes(input_path: str | Path, out: str | Path, suffix: str, what: str) -> list[Scene]:
    """The scenes ``--input`` names, with ``--out`` a folder for their ``what`` that is neither a
    file nor the input folder, and no scene one of the batch's outputs (one line each)."""
    from workbench.data.scene_list import scenes_of
    from workbench.data.sources.stac import split_item_ref
    from workbench.files import check_can_create

    out, src = Path(out), Path(str(input_path))
    scenes = scenes_of(src, suffix=suffix)
    if out.is_file() or (src.is_dir() and out.resolve() == src.resolve()):
        raise WorkbenchError(f"--out {out}: give a new folder for the {what} (not the input folder, not a file)")
    check_can_create(out, "--out")         # under a file, or in a folder this process may not write
    outputs = {str((out / output_name(s, suffix)).resolve()) for s in scenes}
    for s in scenes:
        if "://" not in s.path and not s.path.startswith("/vsi") and \
                str(Path(split_item_ref(s.path)[0]).resolve()) in outputs:
            raise WorkbenchError(f"{s.path}: is one of the batch's outputs in --out {out}; an output never "
                                 "replaces an input")
    return scenes


def run(batch: Batch, scenes: list[Scene], out: str | Path, ranks: distributed.Ranks, *, to_catalog: bool = False,
        catalog: str | Path | None = None, as_json: bool = False, progress: bool = True) -> int:
    """Map every scene of ``scenes`` once (see the module docstring); 0 on every rank."""
    from workbench.manifest import Manifest

    if to_catalog and batch.catalog_rows is None:
        raise WorkbenchError("--to-catalog: this task keeps no catalog rows of its maps")
    out = Path(out)
    manifest = Manifest(out, {**batch.identity, "scenes": [s.path for s in scenes]})
    manifest.check()
    mine = [s for s in distributed.share(scenes, ranks) if manifest.entry(s.name) is None]
    _check_everywhere(batch, mine)
    if ranks.is_main:
        if to_catalog:
            _open_catalog(catalog).close()
        out.mkdir(parents=True, exist_ok=True)
        _clear_temporaries(out, scenes, batch.suffix)
        manifest.write()
    distributed.barrier()
    _map_share(batch, mine, out, manifest, ranks, total=len(scenes), progress=progress)
    distributed.barrier()
    if not ranks.is_main:
        return 0
    entries = manifest.entries([s.name for s in scenes], verify=False)   # just written and checksummed
    missing = [s.path for s in scenes if s.name not in entries]
    if missing:
        raise WorkbenchError(f"{manifest.path}: {len(missing)} scene(s) not finished after the batch "
                             f"(first {missing[0]}); is --out on storage every node shares?")
    rows = [entries[s.name] for s in scenes]
    added = _to_catalog(batch, rows, catalog) if to_catalog else None
    _report(batch, manifest.path, rows, added, as_json)
    return 0


def _check_everywhere(batch: Batch, mine: list[Scene]) -> None:
    """Every rank checks its own scenes; the first refusal of any rank stops them all."""
    try:
        batch.check(mine)
        refusal = None
    except WorkbenchError as exc:
        refusal = str(exc)
    refusals = [r for r in distributed.gather(refusal) if r]
    if refusals:
        raise WorkbenchError(refusals[0])


def _clear_temporaries(out: Path, scenes: list[Scene], suffix: str) -> None:
    """Half-written outputs and entries of a killed batch (hidden temporary names of ours only)."""
    for s in scenes:
        for p in out.glob(f".{Path(output_name(s, suffix)).stem}*"):
            p.unlink(missing_ok=True)
        for p in (out / "done").glob(f".{s.name}.json.tmp-*"):
            p.unlink(missing_ok=True)


def _map_share(batch: Batch, mine: list[Scene], out: Path, manifest, ranks: distributed.Ranks, total: int,
               progress: bool) -> None:
    from workbench.progress import progress as progress_bar

    bar = progress_bar(total=total, initial=manifest.finished(), desc="scenes", unit="scene",
                       enabled=progress and ranks.is_main)
    counted = time.monotonic()
    with bar:
        for s in mine:
            written, summary = batch.predict(s, out / output_name(s, batch.suffix), progress and ranks.world == 1)
            manifest.record(s.name, s.path, written, {**summary, "rank": ranks.rank})
            bar.update(1)
            if ranks.world > 1 and time.monotonic() - counted > COUNT_EVERY_S:
                bar.n = manifest.finished()     # every rank's finished scenes, counted from the entries
                bar.refresh()
                counted = time.monotonic()


def _open_catalog(catalog: str | Path | None):
    from workbench import paths
    from workbench.data.catalog import Catalog

    return Catalog(catalog or paths.default_catalog())


def _to_catalog(batch: Batch, entries: list[dict], catalog: str | Path | None) -> int:
    """The task's rows in one transaction; a path already present is kept. Returns the rows added."""
    tiles = batch.catalog_rows(entries)
    with _open_catalog(catalog) as cat:
        before = cat.existing_paths(t.path for t in tiles)
        cat.add_tiles(tiles)
        return len(tiles) - len(before)


def _report(batch: Batch, manifest: Path, rows: list[dict], added: int | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"run": batch.run, "manifest": str(manifest),
                          "scenes": [{"scene": e["scene"], "out": e["out"], **e["summary"]} for e in rows],
                          "catalog_rows_added": added}, default=str))
        return
    from workbench.commands.data import format_table

    print(f"run       {batch.run}")
    print(f"manifest  {manifest}  {len(rows)} scene(s) finished")
    print(format_table(batch.columns, [batch.row(e) for e in rows], right=batch.right))
    if added is not None:
        print(f"catalog   {added} row(s) added (source predicted), {len(rows) - added} already there")
