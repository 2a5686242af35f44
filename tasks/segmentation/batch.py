"""Many scenes, many processes: ``segment predict --input DIR|LIST.txt|COLLECTION.json --out DIR``.

    workbench segment predict --run RUN --input scenes.txt --out maps/ --to-catalog
    torchrun --nproc-per-node 4 -m workbench segment predict RUN --input scenes.txt --out maps/

Every scene the input names (:mod:`workbench.data.scene_list`) is mapped to
``OUT/<name>_mask.tif`` by :func:`tasks.segmentation.predict.predict_scene`. Under a launcher
each rank takes its share of the sorted scene list (:mod:`workbench.distributed`), writes its
masks atomically and records each finished scene in the batch's manifest
(:mod:`workbench.manifest`), so a killed batch, re-run with the same command, maps only what
is not finished and no scene is mapped twice.

The steps of a batch (list, identity and manifest, checks gathered from every rank, barriers,
one process writing the catalog) are :mod:`workbench.scene_batch`'s, shared with ``classify
predict``; this module supplies what is segmentation's own: the mask's name, the options that
change a mask, the contract check, the one-scene prediction, the table and the catalog row
(source ``predicted``: the mask's bounds, its water fraction, pixels and km² per class).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench import distributed, scene_batch
from workbench.commands import refuse_immutable_writer
from workbench.data.scene_list import Scene
from workbench.errors import WorkbenchError

SUFFIX = "_mask.tif"

SUMMARY_KEYS = ("input", "width", "height", "crs", "water_fraction", "valid_pixels", "nodata_pixels",
                "class_pixels", "areas_km2", "windows", "seconds", "inputs")


def mask_name(scene: Scene) -> str:
    return scene_batch.output_name(scene, SUFFIX)


def identity(run: Any, args: argparse.Namespace) -> dict:
    """What decides a batch's masks, besides the scene list (the engine adds it): the run, how the
    scenes are read, every option that changes a mask (batch size and progress do not)."""
    from .predict import _settings, precision_of

    window, overlap, _, blend, tta = _settings(run, args.window, args.overlap, args.batch_size, args.blend, args.tta)
    return {**scene_batch.common_identity(run, args), "threshold": run.threshold, "window": window,
            "overlap": overlap, "blend": blend, "tta": tta, "precision": precision_of(run), "out_crs": args.out_crs}


def run_batch(args: argparse.Namespace) -> int:
    """``segment predict`` over many scenes (see the module docstring)."""
    from .run import load_run

    if args.to_catalog:
        refuse_immutable_writer(args, "--to-catalog")
    if args.truth or args.probabilities or args.polygons:
        raise WorkbenchError(f"--input {args.input} names several scenes: --truth, --probabilities and --polygons "
                             "apply to one scene")
    with distributed.session() as ranks:
        scenes = scene_batch.list_scenes(args.input, args.out, SUFFIX, "masks")
        run = load_run(args.run, device=scene_batch.rank_device(args.device, ranks))
        if args.precision:
            run.cfg.predict.precision = args.precision
        batch = scene_batch.Batch(
            run=str(run.path), identity=identity(run, args), suffix=SUFFIX,
            check=lambda mine: _check(run, mine, args), predict=lambda s, out, show: _predict(run, s, out, args, show),
            columns=["scene", "size", "water %", "mask"], row=_row, right=(2,),
            catalog_rows=lambda entries: _catalog_rows(run, entries))
        return scene_batch.run(batch, scenes, args.out, ranks, to_catalog=args.to_catalog,
                               catalog=getattr(args, "catalog", None), as_json=args.json,
                               progress=not args.no_progress)


def _check(run, mine: list[Scene], args) -> None:
    from workbench.data.contract import check_scenes

    check_scenes(run.contract, run.stats, [s.path for s in mine], run=run.name, bands=args.bands, scale=args.scale,
                 offset=args.offset, scl_nodata=args.scl_nodata)


def _predict(run, s: Scene, out: Path, args, progress: bool) -> tuple[str, dict]:
    from workbench.data.inputs import describe

    from .predict import predict_scene

    res = predict_scene(run, s.path, out, window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                        blend=args.blend, progress=progress, tta=args.tta, bands=args.bands, scale=args.scale,
                        offset=args.offset, scl_nodata=args.scl_nodata, out_crs=args.out_crs)
    scene = describe(s.path, bands=args.bands)
    summary = {k: res.get(k) for k in SUMMARY_KEYS}
    summary.update(scene_id=scene.scene_id, date=scene.date)
    return res["out"], summary


def _row(e: dict) -> list:
    s = e["summary"]
    water = "-" if s.get("water_fraction") is None else f"{100 * s['water_fraction']:.1f}"
    return [e["name"], f"{s['width']}x{s['height']}", water, e["out"]]


def _catalog_rows(run, entries: list[dict]) -> list:
    """One ``predicted`` row per mask: its bounds, size and GSD, the run, the scene's id and date."""
    return [scene_batch.map_tile(e, run.name, {"class_pixels": e["summary"].get("class_pixels"),
                                               "km2": e["summary"].get("areas_km2")},
                                 water_fraction=e["summary"].get("water_fraction")) for e in entries]
