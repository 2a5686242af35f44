"""``workbench classify``: train, evaluate and apply tile classifiers.

Stdlib only at import time; each verb imports torch and the task modules when it runs.
"""

from __future__ import annotations

import argparse
import json

from workbench.commands import (
    add_catalog_immutable,
    add_command,
    add_input_options,
    add_run_option,
    add_verb,
    run_from_args,
)
from workbench.commands.train_verb import add_train_verb, finish_train, train_config
from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args

EXAMPLES = """examples:
  workbench classify train                                  water / coast / land on Blue Marble (make classify)
  workbench classify train --preset vit-scratch             a ViT from scratch (patch 8, width 100, 8 layers, 8 heads)
  workbench classify predict --run latest --source bluemarble
  workbench classify predict --run latest --input S2B_MSIL2A_...SAFE --out classes.tif
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"
  workbench classify eval --run latest --split val
"""

TRAIN_EXAMPLES = """examples:
  workbench classify train                                       preset 'water-coast-land' (make classify)
  workbench classify train --set model.name=efficientnet_b0 --set train.epochs=5
  workbench classify train --set data.land_max=0.02 --set data.water_min=0.98   redefine 'coast'
  workbench classify train --preset vit-tiny-finetune --set model.weights_path=weights/vit_tiny.safetensors
  workbench classify train --source folder --set data.size=32     a class-folder import (data import DIR --mode classes)
  workbench classify train --resume classification-water-coast-land-20250101-120000

Tiles come from the catalog's train/val/test split column (--source / --where replace the
preset's data.source and data.where). Labels (data.labels: auto) come from each tile's water
fraction when every tile has one (Blue Marble, mask imports: land < data.land_max, water >
data.water_min), else from the label column (class-per-folder imports); the classes are the
preset's data.classes when the train labels fit them, else the sorted train labels.
The run folder (printed last) gets config.yaml, band_stats.json, classes.json, tiles.json,
checkpoints/, metrics.json, plots/.
Presets: {presets}

""" + QUERY_HELP

EVAL_EXAMPLES = """examples:
  workbench classify eval --run RUN                             the test split of the run's tiles
  workbench classify eval --run latest --split val --json
  workbench classify eval --run latest --split test --bbox -30 30 60 75   one region

RUN is a run folder, a name under runs/, a unique prefix, or 'latest'. Filters narrow the
run's own tile query (--where replaces its where).

""" + QUERY_HELP

PREDICT_EXAMPLES = """examples:
  workbench classify predict --run latest                       every tile of the run's source
  workbench classify predict --run latest --split test --dry-run
  workbench classify predict --run RUN --where "source = 'generated'"
  workbench segment train --where "pred_label = 'coast' AND pred_score > 0.9"    then use them
  torchrun --nproc-per-node 4 -m workbench classify predict RUN --source earthengine    a large query, 4 processes
  workbench classify predict --run latest --input scene.tif --out classes.tif    a whole scene
  workbench classify predict --run latest --input S2B_MSIL2A_...SAFE --out classes.tif --stride 128 \\
      --probabilities probs.tif
  workbench classify predict --run latest --input scenes/ --out classes/             every scene of a folder
  workbench classify predict --run latest --input scenes.txt --out classes/ --to-catalog   a list, rows in the catalog
  torchrun --nproc-per-node 4 -m workbench classify predict RUN --input collection.json --out classes/
  accelerate launch --multi_gpu --num_processes 4 -m workbench classify predict RUN --input scenes.txt --out classes/

Catalog mode (tile filters): writes pred_label, pred_score (probability of that class) and
model_id (the run's name) into the catalog for every selected tile, in one transaction, and a
CSV under the run's predictions/ folder. Under torchrun / accelerate launch each process
classifies its share of the tiles and writes it to a shard file; the main process gathers them
and alone writes the catalog and the CSV (give RUN as a word: torchrun's parser takes --run).

Scene mode (--input/--out): the scene (a GeoTIFF/COG/VRT, a Sentinel-2 .SAFE folder, a STAC
item, any GDAL path), brought to the run's bands and units, is cut into windows of the run's
tile side (data.size) every --stride px (default: that side; the last row/column snapped to the
edge) and each window gets one class. The output is a uint8 GeoTIFF with one pixel per window
(the scene's CRS, its pixels scaled by the stride), the class index or 255 = no class (windows
less than half valid), the class names in its CLASSES tag; --probabilities adds a float32
GeoTIFF, one band per class (NaN = no class). The catalog is not touched.

Many scenes (--input a folder, a .txt list or a STAC collection / item collection / catalog;
--out a folder): each scene is classified to OUT/<name>_classes.tif and recorded in
OUT/manifest.json + OUT/done/; the same command again resumes (finished scenes are skipped);
under torchrun or accelerate launch each process classifies its share; --to-catalog adds a
'predicted' row per class map (its bounds, the run, the windows per class in extra; no
pred_label: the run labels windows, not scenes); --probabilities applies to one scene only
(docs/classification.md, "Many scenes").

""" + QUERY_HELP


def _presets() -> list[str]:
    from .config import list_presets

    return list_presets()


def register(sub, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "classify", help="train and apply tile classifiers (CNN / ViT)",
                           description="Classification: timm CNNs and ViTs on labelled catalog tiles.",
                           epilog=EXAMPLES)

    from .config import DEFAULT_PRESET

    add_train_verb(verbs, common, default=DEFAULT_PRESET, task_dir="tasks/classification", func=run_train,
                   help="train a classifier from a preset",
                   description="Train a tile classifier: preset, then --set overrides, on the tiles the "
                               "filters select.",
                   epilog=TRAIN_EXAMPLES.format(presets=", ".join(_presets())))

    v = add_verb(verbs, "eval", common, help="score a run on a split or any labelled tile query",
                 description="Score a run's best weights on labelled catalog tiles and print the report.",
                 epilog=EVAL_EXAMPLES)
    add_run_option(v, older_positional=True)
    v.add_argument("--batch-size", type=int, default=256, metavar="N", help="crops per forward pass")
    v.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_query_args(v)
    add_catalog_immutable(v)
    v.set_defaults(func=run_eval)

    v = add_verb(verbs, "predict", common, help="classify catalog tiles, or every window of a whole scene",
                 description="Classify catalog tiles with a trained run and store the predictions; or classify "
                             "a whole scene window by window into a GeoTIFF class map.",
                 epilog=PREDICT_EXAMPLES)
    add_run_option(v, older_positional=True)      # RUN as a word: torchrun's parser takes --run for its --run-path
    v.add_argument("--input", metavar="SCENE",
                   help="scene to classify: a GeoTIFF/COG/VRT, a Sentinel-2 .SAFE folder, a STAC item JSON, or any "
                        "path GDAL opens (/vsicurl/..., SENTINEL2_L2A:...); or many: a folder of them, a .txt list "
                        "(one per line) or a STAC collection / item collection / catalog JSON (--out: a folder)")
    add_input_options(v)
    v.add_argument("--out", metavar="CLASSES.tif", help="scene mode: the class map (uint8, one pixel per window, "
                                                        "255 = no class); many scenes: a folder for "
                                                        "<name>_classes.tif")
    v.add_argument("--probabilities", metavar="P.tif", help="one scene: also write float32 class probabilities")
    v.add_argument("--stride", type=int, metavar="PX", help="scene mode: px between windows (default: the run's "
                                                           "tile side, data.size)")
    v.add_argument("--batch-size", type=int, metavar="N", help="crops (windows) per forward pass (default 256 "
                                                              "tiles, 64 scene windows)")
    v.add_argument("--device", metavar="D", help="torch device (default: cuda when available, else cpu)")
    v.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="scene mode: bf16 autocast or fp32 (default: the run's predict.precision, auto = bf16 on "
                        "CUDA and on CPUs with native bf16)")
    v.add_argument("--to-catalog", action="store_true",
                   help="many scenes: once every scene is classified, add one catalog row per class map (source "
                        "'predicted', written by one process; a row already there is kept)")
    v.add_argument("--dry-run", action="store_true", help="predict and report, but write nothing")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_query_args(v)
    v.set_defaults(func=run_predict)


def run_train(args: argparse.Namespace) -> int:
    from .config import PRESETS
    from .train import resolve_resume_config, train

    cfg = train_config(args, PRESETS, resolve_resume_config)
    summary = train(cfg, resume=args.resume, catalog=args.catalog, query_override=query_from_args(args),
                    catalog_immutable=args.catalog_immutable)
    return finish_train(args, summary)


def _batch_size(n: int) -> int:
    from workbench.errors import WorkbenchError

    if n < 1:
        raise WorkbenchError(f"--batch-size {n}: must be at least 1")
    return n



def run_eval(args: argparse.Namespace) -> int:
    from workbench.metrics import format_report

    from .evaluate import evaluate_run
    from .run import load_run

    ref, bs = run_from_args(args, "classify eval"), _batch_size(args.batch_size)
    run = load_run(ref)
    query = query_from_args(args)
    split = query.pop("split", None)
    m = evaluate_run(run, query, split=split, catalog=args.catalog, batch_size=bs, progress=True,
                     catalog_immutable=args.catalog_immutable)
    if args.json:
        print(json.dumps(m))
        return 0
    print(f"run {run.path}\nsplit {m['split']}: {m['tiles']} tiles")
    print(format_report(m, run.classes))
    return 0


SCENE_OPTIONS = ("out", "probabilities", "stride", "bands", "scale", "offset", "scl_nodata", "to_catalog")


def run_predict(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError

    args.run = run_from_args(args, "classify predict")
    query = query_from_args(args)
    if args.input:
        if query:
            raise WorkbenchError(f"--input classifies a scene; tile filters ({', '.join(sorted(query))}) select "
                                 "catalog tiles: give one or the other")
        if args.dry_run:
            raise WorkbenchError("--dry-run is for catalog tiles; a scene prediction writes only --out")
        if not args.out:
            raise WorkbenchError("--input needs --out CLASSES.tif, where the class map goes")
        return _run_scene(args)
    given = [f"--{o.replace('_', '-')}" for o in SCENE_OPTIONS if getattr(args, o, None) not in (None, False)]
    if given:
        raise WorkbenchError(f"{', '.join(given)} belong(s) to scene mode: give --input SCENE too")
    return _run_catalog(args, query)


def _run_scene(args: argparse.Namespace) -> int:
    from workbench.data.inputs import refuse_overwrite
    from workbench.data.scene_list import is_many
    from workbench.devices import resolve_device
    from workbench.errors import WorkbenchError

    from .predict import predict_scene
    from .run import load_run

    bs = _batch_size(args.batch_size if args.batch_size is not None else 64)
    if is_many(args.input):
        from .batch import run_batch

        return run_batch(args, bs)
    if args.to_catalog:
        raise WorkbenchError("--to-catalog records the class maps of many scenes: give --input a folder, a list of "
                             "scenes (.txt) or a STAC collection, and --out a folder")
    refuse_overwrite({"--out": args.out, "--probabilities": args.probabilities}, {"--input": args.input})
    device = str(resolve_device(args.device, "--device"))   # before the run is looked up or loaded
    run = load_run(args.run, device)
    if args.precision:
        run.cfg.predict.precision = args.precision
    res = predict_scene(run, args.input, args.out, prob_path=args.probabilities, stride=args.stride, batch_size=bs,
                        progress=not (args.no_progress or args.json), bands=args.bands, scale=args.scale,
                        offset=args.offset, scl_nodata=args.scl_nodata)
    if args.json:
        print(json.dumps(res, default=str))
        return 0
    print(f"run      {res['run']}")
    print(f"input    {res['input']}  {res['width']}x{res['height']}  {res['crs']}")
    print(f"bands    {res['inputs']}")
    print(f"windows  {res['rows']}x{res['cols']} of {res['size']} px every {res['stride']} px, batch "
          f"{res['batch_size']}, {res['device']} {res['precision']}: {res['seconds']:.1f} s")
    names = [*res["classes"], "no class"]
    counts = [*(res["counts"][c] for c in res["classes"]), res["no_class"]]
    width = max(len(n) for n in names)
    print(f"\n  {'class'.ljust(width)}  windows  share")
    for n, c in zip(names, counts):
        print(f"  {n.ljust(width)}  {c:7d}  {100 * c / max(res['windows'], 1):5.1f} %")
    print(f"\n{res['out']}")
    if res["probabilities"]:
        print(res["probabilities"])
    return 0


def _run_catalog(args: argparse.Namespace, query: dict) -> int:
    from workbench.metrics import format_report

    from .predict import predict_catalog

    out = predict_catalog(args.run, query, catalog=args.catalog,
                          batch_size=_batch_size(args.batch_size if args.batch_size is not None else 256),
                          device=args.device, dry_run=args.dry_run, progress=not (args.json or args.no_progress))
    if not out["main"]:                  # another rank of torchrun / accelerate launch: the main one reports
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "metrics"} |
                         {"macro_f1": (out["metrics"] or {}).get("mean_f1")}, default=str))
        return 0
    width = max(len(c) for c in out["classes"])
    print(f"\n{'written to the catalog' if out['written'] else 'dry run, nothing written'}: "
          f"{out['tiles']} tiles, model_id {out['model_id']}, mean score {out['mean_score']:.3f}")
    for c in out["classes"]:
        print(f"  {c.ljust(width)}  {out['counts'][c]}")
    if out["metrics"]:
        print(f"\nagainst the labels of the {out['metrics']['tiles']} predicted tiles the run did not train or "
              "select its checkpoint on:")
        print(format_report(out["metrics"], out["classes"]))
    if out["csv"]:
        print(f"\n{out['csv']}")
    return 0
