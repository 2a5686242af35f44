"""Many scenes, many processes: ``classify predict --input DIR|LIST.txt|COLLECTION.json --out DIR``.

    workbench classify predict --run RUN --input scenes.txt --out classes/ --to-catalog
    torchrun --nproc-per-node 4 -m workbench classify predict RUN --input collection.json --out classes/

Every scene the input names (:mod:`workbench.data.scene_list`) is classified window by window
into ``OUT/<name>_classes.tif`` by :func:`tasks.classification.predict.predict_scene`, with the
steps every batch shares (:mod:`workbench.scene_batch`): a manifest, so a killed batch re-run
with the same command classifies only what is not finished and no scene twice; each rank of
torchrun / accelerate launch its share of the sorted list; one process writing the catalog.

What is classification's own:

- the identity: the run and its checkpoint's bytes, its classes, the window side and the
  stride, the precision, and how the scenes are read (bands, scale, offset, SCL classes);
  the batch size does not change a class;
- the check before the first map: each scene is brought to the run's contract and must hold
  at least one window, so a small scene or a bad ``--stride`` stops every rank up front;
- ``--probabilities`` is refused here, as ``segment predict`` refuses it for many scenes: the
  manifest proves one output per scene (size and checksum), so a lost probabilities file would
  not be made again on resume, and the flag names one file, not one per scene;
- ``--to-catalog``: one ``predicted`` row per class map, as segmentation's masks get (the map's
  bounds, CRS, size and ground pixel, the run as ``model_id``, the scene's id and date; in
  ``extra`` the input, the classes, the windows per class and without one, the window side and
  stride), so ``data list --source predicted`` finds the maps by place, date and run. Its
  ``pred_label`` stays empty: the run labels windows of its tile side, not scenes, and a
  scene's "dominant class" in the column tile queries select by (``pred_label = 'coast' AND
  pred_score > 0.9``) would be a label no model gave, on a file that is not an image.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench import distributed, scene_batch
from workbench.commands import refuse_immutable_writer
from workbench.data.scene_list import Scene
from workbench.errors import WorkbenchError

SUFFIX = "_classes.tif"
SUMMARY_KEYS = ("input", "width", "height", "crs", "classes", "counts", "no_class", "windows", "rows", "cols",
                "size", "stride", "seconds", "inputs")


def identity(run: Any, args: argparse.Namespace) -> dict:
    """What decides a batch's class maps, besides the scene list (the engine adds it)."""
    from workbench.inference import device_of, resolve_precision

    size = int(run.cfg.data.size)
    precision = getattr(getattr(run.cfg, "predict", None), "precision", "auto")
    return {**scene_batch.common_identity(run, args), "classes": list(run.classes), "size": size,
            "stride": size if args.stride is None else int(args.stride),
            "precision": resolve_precision(precision, device_of(run.model))}


def run_batch(args: argparse.Namespace, batch_size: int) -> int:
    """``classify predict`` over many scenes (see the module docstring)."""
    from .run import load_run

    if args.to_catalog:
        refuse_immutable_writer(args, "--to-catalog")
    if args.probabilities:
        raise WorkbenchError(f"--input {args.input} names several scenes: --probabilities applies to one scene "
                             "(give --input one scene)")
    with distributed.session() as ranks:
        scenes = scene_batch.list_scenes(args.input, args.out, SUFFIX, "class maps")
        run = load_run(args.run, scene_batch.rank_device(args.device, ranks))
        if args.precision:
            run.cfg.predict.precision = args.precision
        batch = scene_batch.Batch(
            run=str(run.path), identity=identity(run, args), suffix=SUFFIX, check=lambda mine: _check(run, mine, args),
            predict=lambda s, out, show: _predict(run, s, out, args, batch_size, show),
            columns=["scene", *run.classes, "no class", "map"], row=lambda e: _row(run, e),
            right=range(1, len(run.classes) + 2), catalog_rows=lambda entries: _catalog_rows(run, entries))
        return scene_batch.run(batch, scenes, args.out, ranks, to_catalog=args.to_catalog,
                               catalog=getattr(args, "catalog", None), as_json=args.json,
                               progress=not (args.no_progress or args.json))


def _reading(args) -> dict:
    return dict(bands=args.bands, scale=args.scale, offset=args.offset, scl_nodata=args.scl_nodata)


def _check(run, mine: list[Scene], args) -> None:
    """Each scene brought to the run's contract and holding one window at least (``plan_grid``)."""
    from workbench.data.contract import open_scene
    from workbench.inference import plan_grid

    for s in mine:
        scene = open_scene(run.contract, run.stats, s.path, run=run.name, warn=False, **_reading(args))
        try:
            info = scene.info
            plan_grid(info.height, info.width, int(run.cfg.data.size), args.stride, where=info.path)
        finally:
            scene.close()


def _predict(run, s: Scene, out: Path, args, batch_size: int, progress: bool) -> tuple[str, dict]:
    from workbench.data.inputs import describe

    from .predict import predict_scene

    res = predict_scene(run, s.path, out, stride=args.stride, batch_size=batch_size, progress=progress,
                        **_reading(args))
    scene = describe(s.path, bands=args.bands)
    return res["out"], {**{k: res.get(k) for k in SUMMARY_KEYS}, "scene_id": scene.scene_id, "date": scene.date}


def _row(run, e: dict) -> list:
    s = e["summary"]
    return [e["name"], *(s["counts"][c] for c in run.classes), s["no_class"], e["out"]]


def _catalog_rows(run, entries: list[dict]) -> list:
    """One ``predicted`` row per class map (see the module docstring: no ``pred_label``)."""
    rows = []
    for e in entries:
        s = e["summary"]
        rows.append(scene_batch.map_tile(e, run.name, {"classes": s.get("classes"), "windows": s.get("counts"),
                                                       "no_class": s.get("no_class"), "size": s.get("size"),
                                                       "stride": s.get("stride")}))
    return rows
