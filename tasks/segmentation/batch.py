"""Many scenes, many processes: ``segment predict --input DIR|LIST.txt|COLLECTION.json --out DIR``.

    workbench segment predict --run RUN --input scenes.txt --out maps/ --to-catalog
    torchrun --nproc-per-node 4 -m workbench segment predict RUN --input scenes.txt --out maps/

Every scene the input names (:mod:`workbench.data.scene_list`) is mapped to
``OUT/<name>_mask.tif`` by :func:`tasks.segmentation.predict.predict_scene`. Under a launcher
each rank takes its share of the sorted scene list (:mod:`workbench.distributed`), writes its
masks atomically and records each finished scene in the batch's manifest
(:mod:`workbench.manifest`), so a killed batch, re-run with the same command, maps only what
is not finished and no scene is mapped twice.

The order of a batch, on every rank alike:

1. list the scenes, load the run, work out the batch's identity; a manifest of another batch in
   OUT is refused (nothing written);
2. each rank brings its unfinished scenes to the run's input contract; any rank's refusal stops
   every rank before the first mask (the error lines are gathered);
3. the main rank writes the manifest's identity and clears temporaries a killed batch left;
   barrier; each rank maps its share;
4. barrier; the main rank alone reads every entry, prints the table and, with ``--to-catalog``,
   adds one catalog row per map (source ``predicted``) in one transaction, so one process
   writes the catalog and a row present is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from workbench import distributed
from workbench.data.scene_list import Scene
from workbench.errors import WorkbenchError

SUMMARY_KEYS = ("input", "width", "height", "crs", "water_fraction", "valid_pixels", "nodata_pixels",
                "class_pixels", "areas_km2", "windows", "seconds", "inputs")


def mask_name(scene: Scene) -> str:
    return f"{scene.name}_mask.tif"


def identity(run: Any, scenes: list[Scene], args: argparse.Namespace) -> dict:
    """What decides a batch's outputs: the run and its checkpoint's bytes, every option that
    changes a mask (batch size and progress do not), and the scene list."""
    from workbench.manifest import file_sha256
    from workbench.train.checkpoint import resolve_checkpoint

    from .predict import _settings, precision_of

    window, overlap, _, blend, tta = _settings(run, args.window, args.overlap, args.batch_size, args.blend, args.tta)
    return {"run": str(Path(run.path).resolve()), "checkpoint_sha256": file_sha256(resolve_checkpoint(run.path)),
            "threshold": run.threshold, "window": window, "overlap": overlap, "blend": blend, "tta": tta,
            "precision": precision_of(run), "bands": list(args.bands) if args.bands else None, "scale": args.scale,
            "offset": args.offset, "scl_nodata": None if args.scl_nodata is None else list(args.scl_nodata),
            "out_crs": args.out_crs, "scenes": [s.path for s in scenes]}


def run_batch(args: argparse.Namespace) -> int:
    """``segment predict`` over many scenes (see the module docstring)."""
    with distributed.session() as ranks:
        return _batch(args, ranks)


def _check_outputs(args, scenes: list[Scene], out: Path) -> None:
    src = Path(args.input)
    if out.is_file() or (src.is_dir() and out.resolve() == src.resolve()):
        raise WorkbenchError(f"--out {out}: give a new folder for the masks (not the input folder, not a file)")
    if args.truth or args.probabilities or args.polygons:
        raise WorkbenchError(f"--input {args.input} names several scenes: --truth, --probabilities and --polygons "
                             "apply to one scene")
    outputs = {str((out / mask_name(s)).resolve()) for s in scenes}
    for s in scenes:
        if "://" not in s.path and not s.path.startswith("/vsi") and str(Path(s.path.split("#")[0]).resolve()) \
                in outputs:
            raise WorkbenchError(f"{s.path}: is one of the batch's outputs in --out {out}; an output never "
                                 "replaces an input")


def _batch(args, ranks: distributed.Ranks) -> int:
    from workbench.data.contract import check_scenes
    from workbench.data.scene_list import scenes_of
    from workbench.manifest import Manifest

    from .run import load_run

    out = Path(args.out)
    scenes = scenes_of(args.input)
    _check_outputs(args, scenes, out)
    run = load_run(args.run, device=_rank_device(args.device, ranks))
    if args.precision:
        run.cfg.predict.precision = args.precision
    manifest = Manifest(out, identity(run, scenes, args))
    manifest.check()
    mine = [s for s in distributed.share(scenes, ranks) if manifest.entry(s.name) is None]
    reading = dict(bands=args.bands, scale=args.scale, offset=args.offset, scl_nodata=args.scl_nodata)
    try:
        check_scenes(run.contract, run.stats, [s.path for s in mine], run=run.name, **reading)
        refusal = None
    except WorkbenchError as exc:
        refusal = str(exc)
    refusals = [r for r in distributed.gather(refusal) if r]
    if refusals:
        raise WorkbenchError(refusals[0])
    if ranks.is_main:
        if args.to_catalog:                     # a catalog that cannot be opened stops the batch before it maps
            _open_catalog(args).close()
        out.mkdir(parents=True, exist_ok=True)
        _clear_temporaries(out, scenes)
        manifest.write()
    distributed.barrier()
    _map_share(run, mine, out, manifest, args, ranks, total=len(scenes))
    distributed.barrier()
    if not ranks.is_main:
        return 0
    entries = manifest.entries([s.name for s in scenes])
    missing = [s.path for s in scenes if s.name not in entries]
    if missing:
        raise WorkbenchError(f"{manifest.path}: {len(missing)} scene(s) not finished after the batch "
                             f"(first {missing[0]}); is --out on storage every node shares?")
    added = _to_catalog(args, run, [entries[s.name] for s in scenes]) if args.to_catalog else None
    _report(args, run, scenes, entries, added)
    return 0


def _rank_device(name: str | None, ranks: distributed.Ranks) -> str:
    """``--device`` (default cuda when present); with several processes on a node, each its own GPU."""
    from workbench.devices import resolve_device

    return str(distributed.rank_device(resolve_device(name, "--device"), ranks))


def _clear_temporaries(out: Path, scenes: list[Scene]) -> None:
    """Half-written masks and entries of a killed batch (hidden temporary names of ours only)."""
    for s in scenes:
        for p in out.glob(f".{s.name}_mask*"):
            p.unlink(missing_ok=True)
        for p in (out / "done").glob(f".{s.name}.json.tmp-*"):
            p.unlink(missing_ok=True)


def _map_share(run, mine: list[Scene], out: Path, manifest, args, ranks: distributed.Ranks, total: int) -> None:
    from workbench.data.inputs import describe
    from workbench.progress import progress as progress_bar

    from .predict import predict_scene

    show = not args.no_progress
    bar = progress_bar(total=total, initial=manifest.finished(), desc="scenes", unit="scene",
                       enabled=show and ranks.is_main)
    with bar:
        for s in mine:
            res = predict_scene(run, s.path, out / mask_name(s), window=args.window, overlap=args.overlap,
                                batch_size=args.batch_size, blend=args.blend, progress=show and ranks.world == 1,
                                tta=args.tta, bands=args.bands, scale=args.scale, offset=args.offset,
                                scl_nodata=args.scl_nodata, out_crs=args.out_crs)
            scene = describe(s.path, bands=args.bands)
            summary = {k: res.get(k) for k in SUMMARY_KEYS}
            summary.update(scene_id=scene.scene_id, date=scene.date, rank=ranks.rank)
            manifest.record(s.name, s.path, res["out"], summary)
            bar.n = manifest.finished()         # every rank's finished scenes, counted from the entries
            bar.refresh()


def _open_catalog(args):
    from workbench import paths
    from workbench.data.catalog import Catalog

    return Catalog(getattr(args, "catalog", None) or paths.default_catalog())


def _to_catalog(args, run, entries: list[dict]) -> int:
    """One ``predicted`` row per map, in one transaction; a path already present is kept."""
    from workbench.data import geotiff
    from workbench.data.catalog import Tile

    tiles = []
    for e in entries:
        info = geotiff.read_info(e["out"])
        west, south, east, north = info.lonlat_bounds()
        s = e["summary"]
        tiles.append(Tile(path=e["out"], source="predicted", model_id=run.name, scene_id=s.get("scene_id"),
                          date=s.get("date"), west=west, south=south, east=east, north=north,
                          lon=(west + east) / 2, lat=(south + north) / 2, crs=info.crs, width=info.width,
                          height=info.height, gsd=info.gsd_metres(), bands=list(info.band_names),
                          water_fraction=s.get("water_fraction"),
                          extra={"input": e["scene"], "class_pixels": s.get("class_pixels"),
                                 "km2": s.get("areas_km2")}))
    with _open_catalog(args) as cat:
        before = cat.existing_paths(t.path for t in tiles)
        cat.add_tiles(tiles)
        return len(tiles) - len(before)


def _report(args, run, scenes: list[Scene], entries: dict[str, dict], added: int | None) -> None:
    rows = [entries[s.name] for s in scenes]
    if args.json:
        print(json.dumps({"run": str(run.path), "manifest": str(Path(args.out) / "manifest.json"),
                          "scenes": [{"scene": e["scene"], "out": e["out"], **e["summary"]} for e in rows],
                          "catalog_rows_added": added}, default=str))
        return
    from workbench.commands.data import format_table

    print(f"run       {run.path}")
    print(f"manifest  {Path(args.out) / 'manifest.json'}  {len(rows)} scene(s) finished")
    print(format_table(["scene", "size", "water %", "mask"],
                       [[e["name"], f"{e['summary']['width']}x{e['summary']['height']}",
                         "-" if e["summary"].get("water_fraction") is None
                         else f"{100 * e['summary']['water_fraction']:.1f}", e["out"]] for e in rows], right=(2,)))
    if added is not None:
        print(f"catalog   {added} row(s) added (source predicted), {len(rows) - added} already there")
