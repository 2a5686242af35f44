"""``workbench ee``: Sentinel-2 chips and water masks from Earth Engine.

Stdlib only at import time (``workbench --help`` must not import ee, rasterio or
numpy); each verb imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.commands import add_command, add_verb

EXAMPLES = """examples:
  workbench ee export --point 105.85 21.03 --radius 5000 --start 2023-01-01 --end 2023-03-31 --out data/ee-hanoi
  workbench ee export --geojson aoi.geojson --start 2023-01-01 --end 2023-12-31 --out data/ee-delta \\
      --composite median --cloud-mask --water jrc
  workbench ee export --bbox 105.6 20.8 106.2 21.2 --start 2023-06-01 --end 2023-08-31 --out data/ee-big \\
      --mode batch --chip-size 1024
  workbench ee status --out data/ee-big           follow the batch tasks of an export
  workbench ee import data/ee-big                 catalog a downloaded batch export

Credentials: `earthengine authenticate` once (then --project ID, or $WORKBENCH_EE_PROJECT / $EE_PROJECT),
or $WORKBENCH_EE_KEY_FILE naming a service-account JSON key.
"""

EXPORT_EXAMPLES = """examples:
  workbench ee export --point 105.85 21.03 --radius 5000 --start 2023-01-01 --end 2023-03-31 --out data/ee-hanoi
  workbench ee export --bbox 105.6 20.8 105.9 21.1 --start 2023-01-01 --end 2023-12-31 --out data/ee-delta \\
      --max-cloud 10 --bands B2 B3 B4 B8 B11 --water dynamicworld --workers 8
  workbench ee export --geojson aoi.geojson --start 2023-01-01 --end 2023-12-31 --out data/ee-median \\
      --composite median --cloud-mask --water jrc --jrc-threshold 80
  workbench ee export --geojson aoi.geojson --start 2023-01-01 --end 2023-12-31 --out data/ee-batch \\
      --mode batch --chip-size 2048 --bucket my-bucket
  workbench ee export --bbox 105.6 20.8 105.9 21.1 --start 2023-01-01 --end 2023-01-31 --out x --dry-run

Chips are N x N px at 10 m on a grid in the UTM zone of the area's centre; each has an image
(the bands, uint16, 0 = no data) and a mask (uint8: 1 water, 0 not water, 255 unknown) on the same
grid. --mode direct downloads chips (ee.data.computePixels) and catalogs each one as it lands;
running the same command again skips what is done. --mode batch starts Drive / Cloud Storage tasks
(see `workbench ee status` and `workbench ee import`). Dates are inclusive.
"""

STATUS_EXAMPLES = """examples:
  workbench ee status --out data/ee-big       the tasks of one batch export (states saved in its manifest)
  workbench ee status                         every recent task of the project
  workbench ee status --out data/ee-big --json
"""

IMPORT_EXAMPLES = """examples:
  workbench ee import data/ee-big                       the downloaded files + data/ee-big/manifest.json
  workbench ee import ~/Downloads/s2_scene --manifest data/ee-big/manifest.json

Same as `workbench data import DIR --source earthengine`, then date, cloud cover, scene id,
band names and split of every chip are filled in from the export manifest.
"""


def register(sub, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "ee", help="export Sentinel-2 chips + water masks from Earth Engine",
                           description="Sentinel-2 (COPERNICUS/S2_SR_HARMONIZED) chips with water masks from Hansen, "
                                       "JRC Global Surface Water or Dynamic World, into the catalog.",
                           epilog=EXAMPLES)

    v = add_verb(verbs, "export", common, help="export chips of an area and date range",
                 description="Export Sentinel-2 chips and water masks of an area (GeoJSON, bbox, or "
                             "point and radius) and date range.",
                 epilog=EXPORT_EXAMPLES)
    where = v.add_argument_group("area (one of)")
    area = where.add_mutually_exclusive_group(required=True)
    area.add_argument("--geojson", metavar="FILE", help="Polygon / MultiPolygon / Feature(Collection), lon/lat")
    area.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="lon/lat box in degrees")
    area.add_argument("--point", nargs=2, type=float, metavar=("LON", "LAT"), help="centre; needs --radius")
    where.add_argument("--radius", type=float, metavar="M", help="radius in metres around --point")
    v.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first day (inclusive)")
    v.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last day (inclusive)")
    v.add_argument("--out", required=True, metavar="DIR", help="output folder (chips, manifest.json, export.log)")
    v.add_argument("--max-cloud", type=float, default=20.0, metavar="PCT",
                   help="scene CLOUDY_PIXEL_PERCENTAGE at most PCT (default 20)")
    v.add_argument("--bands", nargs="+", metavar="BAND", help="Sentinel-2 bands (default B2 B3 B4 B8)")
    v.add_argument("--water", default="hansen", metavar="SOURCE",
                   help="water labels: hansen (GFC datamask == 2), jrc (GSW occurrence > threshold) or "
                        "dynamicworld (mode of label == 0 over the dates) (default hansen)")
    v.add_argument("--jrc-threshold", type=float, default=50.0, metavar="PCT",
                   help="--water jrc: occurrence above PCT %% is water (default 50)")
    v.add_argument("--chip-size", type=int, default=256, metavar="PX", help="chip side in pixels (default 256)")
    v.add_argument("--mode", default="direct", choices=("direct", "batch"),
                   help="direct: download chips now; batch: start Drive / Cloud Storage tasks (default direct)")
    v.add_argument("--composite", default="scene", metavar="KIND",
                   help="scene: one chip set per scene; median: one median composite (default scene)")
    v.add_argument("--cloud-mask", action="store_true",
                   help="mask cloud / shadow / cirrus pixels by the SCL band (classes 3, 8, 9, 10)")
    v.add_argument("--max-scenes", type=int, metavar="N", help="at most N scenes, the least cloudy")
    v.add_argument("--min-valid", type=float, default=0.01, metavar="F",
                   help="skip chips with less than this fraction of valid pixels (default 0.01)")
    v.add_argument("--name", metavar="NAME", help="export name (file-name prefix in batch mode)")
    v.add_argument("--project", metavar="ID",
                   help="Earth Engine cloud project (default $WORKBENCH_EE_PROJECT, $EE_PROJECT)")
    v.add_argument("--workers", type=int, default=4, metavar="N", help="parallel chip downloads (default 4)")
    v.add_argument("--retries", type=int, default=5, metavar="N",
                   help="attempts per request on 429 / 5xx / timeouts / truncated files (default 5)")
    v.add_argument("--bucket", metavar="NAME", help="--mode batch: export to this Cloud Storage bucket")
    v.add_argument("--drive-folder", metavar="NAME", help="--mode batch: Drive folder (default: the export name)")
    v.add_argument("--dry-run", action="store_true", help="check the request and print the chip grid; no Earth Engine")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=run_export)

    v = add_verb(verbs, "status", common, help="follow the tasks of a batch export",
                 description="States of the batch tasks recorded in DIR/manifest.json "
                             "(or of every recent task of the project).",
                 epilog=STATUS_EXAMPLES)
    v.add_argument("--out", metavar="DIR", help="the --out folder of a batch export")
    v.add_argument("--project", metavar="ID", help="Earth Engine cloud project")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=run_status)

    v = add_verb(verbs, "import", common, help="catalog a downloaded batch export",
                 description="Import the GeoTIFF pairs of a batch export and fill in their metadata "
                             "from the export manifest.",
                 epilog=IMPORT_EXAMPLES)
    v.add_argument("dir", metavar="DIR", help="folder with the downloaded X.tif + X_mask.tif files")
    v.add_argument("--manifest", metavar="FILE", help="the export's manifest.json (default DIR/manifest.json)")
    v.set_defaults(func=run_import)


# ---- helpers ------------------------------------------------------------------------------------------

def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spec_from_args(args: argparse.Namespace):
    """An ExportSpec from the command line (every check is a one-line WorkbenchError)."""
    from workbench.data.sources.ee_area import Area
    from workbench.data.sources.ee_spec import ExportSpec
    from workbench.errors import WorkbenchError

    if args.point is not None:
        if args.radius is None:
            raise WorkbenchError("--point LON LAT needs --radius M (metres)")
        area = Area.from_point(args.point[0], args.point[1], args.radius)
    elif args.radius is not None:
        raise WorkbenchError("--radius goes with --point LON LAT")
    elif args.bbox is not None:
        area = Area.from_bbox(*args.bbox)
    else:
        area = Area.from_geojson(args.geojson)
    return ExportSpec(area=area, start=args.start, end=args.end, bands=args.bands, max_cloud=args.max_cloud,
                      water=args.water, composite=args.composite, cloud_mask=args.cloud_mask,
                      chip_size=args.chip_size, jrc_threshold=args.jrc_threshold, max_scenes=args.max_scenes,
                      min_valid=args.min_valid, name=args.name or "")


def _catalog(args: argparse.Namespace):
    from workbench import paths
    from workbench.data.catalog import Catalog

    return Catalog(getattr(args, "catalog", None) or paths.default_catalog())


# ---- verbs ------------------------------------------------------------------------------------------------

def run_export(args: argparse.Namespace) -> int:
    from workbench.errors import WorkbenchError

    spec = spec_from_args(args)
    if args.workers < 1:
        raise WorkbenchError(f"--workers {args.workers}: at least 1")
    if args.retries < 1:
        raise WorkbenchError(f"--retries {args.retries}: at least 1")
    if args.mode == "direct" and (args.bucket or args.drive_folder):
        raise WorkbenchError("--bucket / --drive-folder go with --mode batch")
    from workbench.data.sources import earthengine as eng

    if args.mode == "direct":
        eng.check_direct_size(spec)
    plan = eng.plan_chips(spec.area, spec.chip_size, spec.scale)
    if args.dry_run:
        lon, lat = spec.area.centre
        print(f"{spec.name}: {spec.area.label}, {spec.start} .. {spec.end}, bands {' '.join(spec.bands)}, "
              f"water {spec.water}, {spec.composite} composite" + (", SCL cloud mask" if spec.cloud_mask else ""))
        print(f"  grid: {len(plan)} chip(s) of {spec.chip_size} px at {spec.scale:g} m in {plan.crs} "
              f"(UTM zone of {lon:.4f}, {lat:.4f}); per scene in --composite scene")
        for chip in plan.chips[:5]:
            print(f"  {chip.id}: lon/lat {chip.lonlat[0]:.5f} {chip.lonlat[1]:.5f} {chip.lonlat[2]:.5f} "
                  f"{chip.lonlat[3]:.5f}")
        if len(plan) > 5:
            print(f"  ... {len(plan) - 5} more")
        return 0
    how = eng.initialize(args.project)
    policy = eng.RetryPolicy(attempts=args.retries)
    out = Path(args.out)
    if args.mode == "batch":
        result = eng.export_batch(spec, out, destination="gcs" if args.bucket else "drive", bucket=args.bucket,
                                  drive_folder=args.drive_folder, policy=policy, echo=_err)
        dest = f"gs://{args.bucket}/{spec.name}/" if args.bucket else f"Drive folder {args.drive_folder or spec.name}"
        print(f"{out}: started {len(result.tasks)} export task(s) for {result.planned} chip(s) "
              f"in {len(result.units)} unit(s)" + (f"; {result.already} chip(s) started before" if result.already
                                                   else "") + f" ({how}, {result.seconds:.1f} s)")
        print(f"  destination: {dest}\n  manifest: {out / eng.MANIFEST}")
        print(f"  next: workbench ee status --out {out}; when COMPLETED, download the files into {out} and run "
              f"workbench ee import {out}")
        return 0
    with _catalog(args) as cat:
        result = eng.export_direct(spec, out, cat, workers=args.workers, policy=policy,
                                   progress=not args.no_progress, echo=_err)
    from collections import Counter

    print(f"{out}: {len(result.added)} chip(s) added, {result.already} done before, {result.empty} empty, "
          f"{len(result.failed)} failed ({result.seconds:.1f} s, {how})")
    if result.units:
        first, last = result.units[0].date, result.units[-1].date
        units = (f"{len(result.units)} scene(s) {first} .. {last}" if spec.composite == "scene"
                 else f"median of {result.units[0].n_scenes} scene(s), dated {first}")
        print(f"  {units}; grid {result.crs}, {spec.chip_size} px at {spec.scale:g} m; water {spec.water}")
    if result.added:
        by_split = Counter(t.split for t in result.added)
        print("  splits: " + ", ".join(f"{s} {by_split[s]}" for s in ("train", "val", "test") if by_split[s]))
    print(f"  catalog: {result.catalog}")
    if result.failed:
        for what, why in result.failed[:5]:
            _err(f"  failed {what}: {why}")
        _err(f"workbench: {len(result.failed)} chip(s) failed; run the same command again to retry them")
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    from workbench.data.sources import earthengine as eng
    from workbench.data.sources.ee_batch import task_status

    if args.out is not None and not Path(args.out).is_dir():
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"--out {args.out}: no such directory")
    eng.initialize(args.project)
    report = task_status(args.out, echo=_err)
    if args.json:
        print(json.dumps({"counts": report.counts, "done": report.done, "tasks": report.tasks,
                          "destination": report.destination}))
        return 0
    from workbench.commands.data import format_table

    rows = [[t["id"] or "-", t["state"], t.get("description") or "-", (t.get("error") or "")[:80]]
            for t in report.tasks]
    if rows:
        print(format_table(["task", "state", "description", "error"], rows))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "no tasks"
    print(f"{len(report.tasks)} task(s): {counts}")
    if args.out is not None and report.done:
        failed = report.counts.get("FAILED", 0) + report.counts.get("CANCELLED", 0)
        where = report.destination or {}
        src = (f"gs://{where.get('bucket')}/{where.get('prefix')}/" if where.get("type") == "gcs"
               else f"the Drive folder {where.get('folder')}")
        print(f"all tasks finished{f' ({failed} not completed)' if failed else ''}: download {src} into "
              f"{args.out} and run: workbench ee import {args.out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from workbench.data.sources.ee_batch import import_exported

    with _catalog(args) as cat:
        result = import_exported(cat, args.dir, manifest=args.manifest)
        print(f"{result.root}: {result.found} image(s); added {len(result.added)} tile(s) to {cat.path}"
              + (f"; {result.already} already in the catalog" if result.already else "")
              + f"; metadata from the manifest for {result.enriched}")
    return 0
