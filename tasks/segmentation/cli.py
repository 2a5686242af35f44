"""``workbench segment``: every verb of the segmentation task -- ``train``, ``eval`` and
``predict`` (a trained run over a whole GeoTIFF scene, or pseudo-masks for catalog tiles).

Stdlib only at import time (``workbench --help`` stays instant); each verb imports torch,
rasterio and the task modules when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.commands import (
    add_catalog_immutable,
    add_command,
    add_input_options,
    add_run_option,
    add_verb,
    catalog_from_args,
    refuse_immutable_writer,
    run_from_args,
)
from workbench.commands.train_verb import add_train_verb, finish_train, train_config
from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args
from workbench.errors import WorkbenchError

EXAMPLES = """examples:
  workbench segment train                                   the 'water' preset on Blue Marble tiles
  workbench segment train --preset unet3plus --set train.max_steps=50
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
  workbench segment eval --run segmentation-water-20250101-120000 --water-min 0.05 --water-max 0.95
  workbench segment eval --run latest --split val
  workbench segment predict --run latest --input scene.tif --out mask.tif
"""

TRAIN_EXAMPLES = """examples:
  workbench segment train                                        preset 'water' (the make segment run)
  workbench segment train --preset attention-unet --set train.epochs=5 --set data.window=64
  workbench segment train --set model.encoder=resnet34 --set train.lr=3e-4 --name r34
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
  workbench segment train --source folder                        your imported tiles, 'water' recipe
  workbench segment train --where "source = 'folder' AND date >= '2023'"
  workbench segment train --resume segmentation-water-20250101-120000

The train/val/test tiles are those matching the filters in each split of the catalog's
split column. A preset's data.source and data.where are its default dataset: --source, --where
(or --set data.source / data.where) replace both; --label, --bbox, --water-min ... narrow it.
The run folder (printed on the last line) gets config.yaml, band_stats.json, tiles.json,
threshold.json (chosen on val; 0.5 when val has no water), checkpoints/, metrics.json (test), plots/.
Presets: {presets}

""" + QUERY_HELP

EVAL_EXAMPLES = """examples:
  workbench segment eval --run RUN                               the test split of the run's tiles
  workbench segment eval --run RUN --split test --water-min 0.05 --water-max 0.95   coastal tiles only
  workbench segment eval --run latest --split val --threshold 0.4 --json

RUN is a run folder, a name under runs/, a unique prefix, or 'latest' (the last finished
segmentation run). Filters narrow the run's own tile query (--where replaces its where).

""" + QUERY_HELP

PREDICT_EXAMPLES = """examples:
  workbench segment predict --run latest --input data/bluemarble/mosaic.tif --out mosaic_pred.tif
  workbench segment predict --run segmentation-water-20250101-120000 --input scene.tif --out mask.tif \\
      --probabilities prob.tif --window 512 --overlap 64 --batch-size 8
  workbench segment predict --run latest --input scene.tif --out mask.tif --tta d4    8 views averaged
  workbench segment predict --run latest --input S2B_MSIL2A_20230415T100029_N0509_R122_T33TUL_20230415T130000.SAFE \\
      --out map.tif                                          SAFE: 10 m bands, offset, SCL clouds
  workbench segment predict --run latest --input item.json --out map.tif           STAC item over COGs
  workbench segment predict --run latest --input plain.tif --bands B02,B03,B04,B08 --offset -0.1 --out m.tif
  workbench segment predict --run latest --input scenes/ --out masks/              every scene of a folder
  workbench segment predict --run latest --input scenes.txt --out masks/ --to-catalog   a list, rows in the catalog
  torchrun --nproc-per-node 4 -m workbench segment predict RUN --input collection.json --out masks/
                                  (RUN as a word: torchrun's own parser would take --run for its --run-path)
  workbench segment predict --run latest --input scene.tif --out mask.tif --polygons lakes.gpkg \
      --min-area 10000 --simplify 5                          lakes of 1 ha or more, outlines within 5 m
  workbench segment predict --run latest --input data/bluemarble/mosaic.tif --out mosaic_pred.tif \\
      --truth data/bluemarble/mosaic_mask.tif                 also score: test tiles with 5-95 % water
  workbench segment predict --run latest --where "source = 'generated'" --write-masks --min-confidence 0.9

Scene mode (--input/--out): the input is brought to the run's bands and units by name and
radiometry, or refused (docs/sentinel2.md); a sliding window (default: the run's predict config,
window 256, overlap 32, batch 16, gaussian blend) over a scene of any size, in bounded memory
(the mask is written row band by row band); writes a uint8 Cloud-Optimised GeoTIFF mask on the
input's grid (0 land, 1 water or the class index, 255 nodata), optionally float32
probabilities, and <out stem>_preview.png beside it (image | mask overlay, 1024 px wide;
--no-preview: none; one scene only), and prints pixels and km2 per class. A scene whose pixels
are not the run's (20 m, lon/lat) is predicted at the run's resolution and the map resampled
back onto the scene's grid (or --out-crs). --polygons writes the outlines of the water (or
--polygon-classes) pixels with their class and ground area_m2: a .gpkg in the scene's CRS, a
.geojson in lon/lat (EPSG:4326, as RFC 7946 requires and QGIS/geopandas expect). With --truth,
the mask is scored against a truth mask on the same grid over the catalog tiles the filters
select (default --split test --water-min 0.05 --water-max 0.95), or over every pixel with
--all-pixels.

Many scenes (--input a folder, a .txt list or a STAC collection / item collection / catalog;
--out a folder): each scene is mapped to OUT/<name>_mask.tif and recorded in OUT/manifest.json
+ OUT/done/; the same command again resumes (finished scenes are skipped); under torchrun or
accelerate launch each process maps its share; --to-catalog adds a 'predicted' row per mask
(docs/segmentation.md, "Many scenes on many processes").

Tile mode (--write-masks): predicts each catalog tile the filters select and writes
<tile>_pseudo_mask.tif beside it (pixels below --min-confidence are 255 = nodata), then sets the
tiles' mask_path and water_fraction in one catalog transaction, so generated or classified
tiles can join a segmentation experiment.

RUN is a run folder, a name under runs/, a unique prefix, or 'latest'.

""" + QUERY_HELP

DEFAULT_SCORE_QUERY = {"split": "test", "water_min": 0.05, "water_max": 0.95}


def _presets() -> list[str]:
    from .config import list_presets

    return list_presets()


def register(sub, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "segment", help="train, evaluate and apply segmentation models (water masks)",
                           description="Segmentation: UNet-family models on catalog tiles with masks.",
                           epilog=EXAMPLES)

    add_train_verb(verbs, common, default="water", task_dir="tasks/segmentation", func=run_train,
                   help="train a model from a preset",
                   description="Train a segmentation model: preset, then --set overrides, on the tiles "
                               "the filters select.",
                   epilog=TRAIN_EXAMPLES.format(presets=", ".join(_presets())))

    v = add_verb(verbs, "eval", common, help="re-score a run on a split or any tile query",
                 description="Score a trained run's best weights on catalog tiles and print the "
                             "per-class table.",
                 epilog=EVAL_EXAMPLES)
    add_run_option(v, older_positional=True)
    v.add_argument("--threshold", type=float, metavar="T", help="probability threshold (default: the run's)")
    v.add_argument("--batch-size", type=int, metavar="N", help="windows per forward pass")
    v.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    v.add_argument("--out", metavar="FILE", help="also write the metrics JSON here")
    add_query_args(v)
    add_catalog_immutable(v)
    v.set_defaults(func=run_eval)

    v = add_verb(verbs, "predict", common, help="predict a whole scene, or pseudo-masks for tiles",
                 description="Sliding-window prediction of a trained run over a GeoTIFF scene, written "
                             "as a georeferenced mask; or pseudo-masks for catalog tiles.",
                 epilog=PREDICT_EXAMPLES)
    add_run_option(v, older_positional=True)      # RUN as a word: torchrun's parser takes --run for its --run-path
    v.add_argument("--input", metavar="SCENE",
                   help="scene to predict: a GeoTIFF/COG/VRT, a Sentinel-2 .SAFE folder, a STAC item JSON, any "
                        "path GDAL opens (/vsicurl/..., SENTINEL2_L2A:...); or many: a folder of them, a .txt list "
                        "(one per line) or a STAC collection / item collection / catalog JSON (--out: a folder)")
    add_input_options(v)
    v.add_argument("--out", metavar="MASK.tif", help="output mask GeoTIFF (uint8, 255 = nodata)")
    v.add_argument("--probabilities", metavar="PROB.tif", help="also write float32 probabilities here")
    v.add_argument("--polygons", metavar="FILE.gpkg|.geojson",
                   help="also write the water polygons (class, area_m2) here: a GeoPackage in the scene's CRS, or "
                        "GeoJSON in lon/lat (EPSG:4326, RFC 7946)")
    v.add_argument("--polygon-classes", metavar="C,C", type=_class_list,
                   help="with --polygons: the mask values to outline (default: 1 = water; with more than 2 "
                        "classes, every class but 0)")
    v.add_argument("--min-area", type=float, default=0.0, metavar="M2",
                   help="with --polygons: drop polygons smaller than M2 square metres")
    v.add_argument("--simplify", type=float, default=0.0, metavar="METRES",
                   help="with --polygons: simplify outlines with this tolerance in metres (holes kept)")
    v.add_argument("--no-preview", action="store_true",
                   help="no <out stem>_preview.png (image | mask overlay) beside the mask")
    v.add_argument("--window", type=int, metavar="N", help="window side in px (multiple of the model's stride)")
    v.add_argument("--overlap", type=int, metavar="N", help="overlap between windows in px")
    v.add_argument("--batch-size", type=int, metavar="N", help="windows per forward pass")
    v.add_argument("--blend", choices=("gaussian", "mean"), help="weighting of overlapping windows")
    v.add_argument("--tta", choices=("none", "flips", "d4"),
                   help="test-time augmentation: average over 4 flips or all 8 symmetries (4x / 8x the time)")
    v.add_argument("--truth", metavar="MASK.tif", help="score the prediction against this mask (same grid)")
    v.add_argument("--all-pixels", action="store_true", help="with --truth: score every pixel, not catalog tiles")
    v.add_argument("--write-masks", action="store_true", help="tile mode: write pseudo-masks for catalog tiles")
    v.add_argument("--min-confidence", type=float, default=0.9, metavar="P",
                   help="tile mode: pixels less confident than P become nodata (default 0.9)")
    v.add_argument("--out-crs", metavar="EPSG:XXXX",
                   help="write the mask and probabilities in this CRS (e.g. EPSG:4326) instead of the scene's own "
                        "grid; a scene whose pixels are not the run's is always predicted at the run's resolution "
                        "and resampled back (nearest for the mask, bilinear for probabilities)")
    v.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="bf16 autocast or fp32 (default: the run's predict.precision, auto = bf16 on CUDA and on "
                        "CPUs with native bf16)")
    v.add_argument("--device", metavar="D", help="torch device (default: cuda when available, else cpu)")
    v.add_argument("--to-catalog", action="store_true",
                   help="many scenes: once every scene is mapped, add one catalog row per mask (source 'predicted', "
                        "written by one process; a row already there is kept)")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_query_args(v)
    add_catalog_immutable(v)  # --truth reads tiles; --write-masks refuses it
    v.set_defaults(func=run_predict)


def run_train(args: argparse.Namespace) -> int:
    from .config import PRESETS
    from .train import resolve_resume_config, train

    cfg = train_config(args, PRESETS, resolve_resume_config)
    summary = train(cfg, resume=args.resume, catalog=args.catalog, query_override=query_from_args(args),
                    catalog_immutable=args.catalog_immutable)
    return finish_train(args, summary)


def run_eval(args: argparse.Namespace) -> int:
    from workbench.train.run_dir import resolve_run

    from .evaluate import evaluate_run, result_line
    from .metrics import format_table

    ref = resolve_run(run_from_args(args, "segment eval"), "segmentation")
    if args.batch_size is not None and args.batch_size < 1:
        raise WorkbenchError("--batch-size: must be at least 1")
    query = query_from_args(args)
    split = query.pop("split", None) or "test"
    metrics = evaluate_run(ref, split=split, query=query, catalog=args.catalog, threshold=args.threshold,
                           batch_size=args.batch_size, catalog_immutable=args.catalog_immutable)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"run {metrics['run']}")
    print(f"split {metrics['query'].get('split')}  threshold "
          f"{'-' if metrics['threshold'] is None else format(metrics['threshold'], 'g')}  "
          f"{result_line(metrics)}")
    print(format_table(metrics))
    return 0


# --------------------------------------------------------------------------- predict

def _class_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected class values such as 1 or 1,2") from None
    if not values or any(not 0 <= v < 255 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected class values between 0 and 254")
    return values


def _check_polygon_args(args) -> None:
    """Before anything runs: a --polygons path GDAL would not know, or polygon options without it."""
    import math

    if args.polygons:
        from workbench.data.vectors import polygon_format

        polygon_format(args.polygons)
    else:
        given = [f for f, v in (("--polygon-classes", args.polygon_classes), ("--min-area", args.min_area),
                                ("--simplify", args.simplify)) if v]
        if given:
            raise WorkbenchError(f"{given[0]} applies to --polygons FILE.gpkg|.geojson, which is not given")
    for flag, v in (("--min-area", args.min_area), ("--simplify", args.simplify)):
        if not math.isfinite(v) or v < 0:
            raise WorkbenchError(f"{flag} {v:g}: expected a finite number >= 0")


def _polygon_classes(args, run) -> list[int]:
    classes = int(run.classes)
    if args.polygon_classes:
        n = max(classes, 2)
        bad = [c for c in args.polygon_classes if c >= n]
        if bad:
            raise WorkbenchError(f"--polygon-classes {bad[0]}: run {run.name} maps classes 0..{n - 1}")
        return sorted(set(args.polygon_classes))
    return [1] if classes <= 2 else list(range(1, classes))


def _class_names(run) -> dict[int, str]:
    names = list(run.cfg.class_names)
    return {1: names[1]} if int(run.classes) <= 2 else {i: n for i, n in enumerate(names) if i}


def _outputs_after_mask(args, run, res: dict) -> None:
    """Polygons and the preview, from the written mask (so they show what the file holds)."""
    if args.polygons:
        from workbench.data.vectors import write_mask_polygons

        res["polygons"] = write_mask_polygons(res["out"], args.polygons, _polygon_classes(args, run),
                                              min_area_m2=args.min_area, simplify_m=args.simplify)
    if not args.no_preview:
        from workbench.preview import preview_path, write_preview

        res["preview"] = str(write_preview(args.input, res["out"], preview_path(res["out"]), bands=args.bands,
                                           class_names=_class_names(run)))


def _check_outputs_can_be_made(args) -> None:
    """Before the run loads: an output that is a folder, or lies under a file or in a folder that
    cannot be written, is refused now rather than after the whole prediction."""
    from workbench.files import check_can_create

    for flag, path in (("--out", args.out), ("--probabilities", args.probabilities), ("--polygons", args.polygons)):
        if path and Path(path).is_dir():
            raise WorkbenchError(f"{flag} {path}: is a folder; give a file name (a folder --out is for a folder "
                                 "of scenes)")
        if path:
            check_can_create(path, flag, folder=False)


def _device(name: str | None) -> str:
    from workbench.devices import resolve_device

    return str(resolve_device(name, "--device"))


def format_classes(res: dict) -> str:
    """A table line per class of a predicted scene: pixels, share of the valid ones, km^2 (the
    ground a user asks about: how much water, not how many pixels)."""
    valid = res["valid_pixels"]
    lines = [f"{'class':<12} {'pixels':>12} {'share':>7} {'km2':>12}"]
    for name, n in res["class_pixels"].items():
        km2 = res["areas_km2"][name]
        share = f"{100 * n / valid:.1f} %" if valid else "n/a"
        lines.append(f"{name:<12} {n:>12} {share:>7} {'n/a' if km2 is None else f'{km2:.4f}':>12}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    args.run = run_from_args(args, "segment predict")
    query = query_from_args(args)
    if args.write_masks:
        if args.input or args.out or args.truth or args.polygons or args.out_crs:
            raise WorkbenchError("--write-masks predicts catalog tiles: give filters (--where ...), "
                                 "not --input/--out/--truth/--polygons/--out-crs")
        if not query:
            raise WorkbenchError("--write-masks needs tile filters, e.g. --where \"source = 'generated'\"")
        refuse_immutable_writer(args, "--write-masks")
        return _run_write_masks(args, query)
    if not args.input or not args.out:
        raise WorkbenchError("give --input SCENE.tif and --out MASK.tif (or --write-masks with tile filters)")
    if args.truth and args.out_crs:
        raise WorkbenchError("--truth is scored on the scene's own grid: drop --out-crs (or reproject afterwards)")
    return _run_scene(args, query)


def _run_scene(args, query: dict) -> int:
    from workbench.data.inputs import refuse_overwrite
    from workbench.data.scene_list import is_many

    from .predict import predict_scene
    from .run import load_run

    _check_polygon_args(args)
    if is_many(args.input):
        from .batch import run_batch

        return run_batch(args)
    if args.to_catalog:
        raise WorkbenchError("--to-catalog records the maps of many scenes: give --input a folder, a list of "
                             "scenes (.txt) or a STAC collection, and --out a folder")
    from workbench.preview import preview_path

    refuse_overwrite({"--out": args.out, "--probabilities": args.probabilities, "--polygons": args.polygons,
                      "the preview": None if args.no_preview else preview_path(args.out)},
                     {"--input": args.input, "--truth": args.truth})
    _check_outputs_can_be_made(args)
    run = load_run(args.run, device=_device(args.device))
    if args.precision:
        run.cfg.predict.precision = args.precision
    if args.polygons:
        _polygon_classes(args, run)
    res = predict_scene(run, args.input, args.out, prob_path=args.probabilities, window=args.window,
                        overlap=args.overlap, batch_size=args.batch_size, blend=args.blend,
                        progress=not args.no_progress, tta=args.tta, bands=args.bands, scale=args.scale,
                        offset=args.offset, scl_nodata=args.scl_nodata, out_crs=args.out_crs)
    res["run"] = str(run.path)
    _outputs_after_mask(args, run, res)
    metrics = None
    if args.truth:
        from .scene import score_scene

        tiles = None
        if not args.all_pixels:
            q = {**DEFAULT_SCORE_QUERY, **query}
            with catalog_from_args(args, read_only=True) as cat:
                tiles = cat.query(**q)
            if not tiles:
                raise WorkbenchError(f"no catalog tiles match {q}; change the filters or use --all-pixels")
            metrics = score_scene(res["out"], args.truth, tiles, water_min=q.get("water_min"),
                                  water_max=q.get("water_max"))
        else:
            metrics = score_scene(res["out"], args.truth, None)
        res["score"] = {k: metrics[k] for k in ("mean_iou", "iou_water", "iou_land", "overall_accuracy", "pixels",
                                               "tiles_scored", "boundary")}
    if args.json:
        print(json.dumps({**res, "metrics": metrics}, default=str))
        return 0
    print(f"run          {run.path} ({run.weights} weights, threshold {run.threshold:g})")
    print(f"input        {res['input']}  {res['width']}x{res['height']}  {res['crs']}")
    if res.get("model_grid"):
        g = res["model_grid"]
        print(f"model grid   {g['width']}x{g['height']} px of {g['pixel']:g} in {g['crs']} (the run's resolution), "
              "resampled back")
    print(f"bands        {res['inputs']}")
    print(f"windows      {res['windows']} of {res['window_used'][0]}x{res['window_used'][1]} px, overlap "
          f"{res['overlap']}, batch {res['batch_size']}, {res['blend']} blend"
          f"{'' if res['tta'] == 'none' else ', tta ' + res['tta']}, {res['device']} {res['precision']}: "
          f"{res['seconds']:.1f} s ({res['windows_per_s']:.1f} windows/s)")
    if res.get("water_fraction") is not None:
        print(f"water        {100 * res['water_fraction']:.1f} % of {res['valid_pixels']} valid pixels "
              f"({res['nodata_pixels']} nodata)")
    print(format_classes(res))
    print(f"mask         {res['out']}")
    if res["probabilities"]:
        print(f"probabilities {res['probabilities']}")
    if res.get("polygons"):
        p = res["polygons"]
        print(f"polygons     {p['path']}  {p['features']} polygon(s) of class {','.join(map(str, p['classes']))} "
              f"in {p['crs']}" + (f" ({p['dropped']} smaller than {args.min_area:g} m² dropped)" if p["dropped"]
                                  else ""))
    if res.get("preview"):
        print(f"preview      {res['preview']}")
    if metrics is not None:
        from .metrics import format_table
        from .scene import format_boundary

        where = "every pixel" if args.all_pixels else f"{metrics['tiles_scored']} catalog tiles"
        print(f"\nscore against {args.truth} over {where}:")
        print(format_table(metrics))
        print(format_boundary(metrics["boundary"]))
    return 0


def _run_write_masks(args, query: dict) -> int:
    from .predict import write_masks
    from .run import load_run

    if not 0.0 <= args.min_confidence <= 1.0:
        raise WorkbenchError(f"--min-confidence {args.min_confidence:g}: expected a number between 0 and 1")
    run = load_run(args.run, device=_device(args.device))
    with catalog_from_args(args) as cat:
        tiles = cat.query(**query)
        if not tiles:
            raise WorkbenchError(f"no catalog tiles match {query}")
        n = write_masks(run, cat, tiles, min_confidence=args.min_confidence, progress=not args.no_progress)
        rows = cat.query(ids=[t.id for t in tiles])
    if args.json:
        print(json.dumps({"run": str(run.path), "tiles": n, "masks": [r.mask_path for r in rows]}))
        return 0
    print(f"run      {run.path}")
    print(f"wrote {n} pseudo-masks (confidence >= {args.min_confidence:g}, else 255 nodata) beside their tiles; "
          f"catalog {cat.path} updated (mask_path, water_fraction)")
    shown = rows[:10]
    width = max(len(str(r.id)) for r in shown)
    print(f"{'id'.rjust(width)}  water  mask")
    for r in shown:
        wf = "-" if r.water_fraction is None else f"{100 * r.water_fraction:4.1f}%"
        print(f"{str(r.id).rjust(width)}  {wf:>5}  {r.mask_path}")
    if len(rows) > len(shown):
        print(f"... and {len(rows) - len(shown)} more")
    sys.stdout.flush()
    return 0
