"""The STAC benchmark: export and import of N synthetic tiles, against the pystac path in the same run.

N tiles (32 px, 4 bands, a mask each; rows like ``data earthengine`` writes) are catalogued,
their files hard links to a few real GeoTIFF pairs (made before the clock starts; every tile
is its own path, opened on its own), then:

* ``export``: ``export_stac`` against :func:`pystac_export`, the export as it was written before
  (a ``pystac.Item`` per tile, GDAL's header of every tile, pystac's ``save``). The two write the
  same files byte for byte (the test suite checks it on every kind of row);
* ``export-parquet`` (with pyarrow installed): ``export_parquet`` of the same tiles, against
  ``export_stac``'s time (the same items, one file instead of a file each);
* ``import``: ``import_collection`` of that export into an empty catalog, against
  :func:`pystac_read`, the old import's costs without its checks: pystac's own reader
  (``Catalog.from_file`` and ``get_items``, each item migrated) and GDAL's header of every image
  and mask, then ``add_tiles`` of the rows.

The export runs first and the baseline second (any cold page cache is against ours); the
import's baseline runs after it. ``--quick``: 500 tiles (default 2,000; the pystac export
grows with the square of N, so its side is not run past 5,000).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from workbench.bench import BenchResult
from workbench.data.catalog import Catalog, Tile
from workbench.data.stac_export import (
    _CODE,
    CATALOG_FILE,
    FIELDS,
    PREFIX,
    UNKNOWN_START,
    _check_out,
    _iso,
    _polygon,
    item_id,
    parent_ids,
)
from workbench.data.stac_export import (
    collection_id as make_collection_id,
)
from workbench.errors import WorkbenchError

BANDS = ["B2", "B3", "B4", "B8"]
SOURCES_OF_LINKS = 16
PYSTAC_MAX = 5_000


# ---- the baselines: the export and import as pystac does them ---------------------------------------

def pystac_export(catalog: Catalog, out: str | Path, *, collection_id: str | None = None,
                  description: str | None = None, license: str = "other", relative_assets: bool = False,
                  **filters: Any) -> Path:
    """The export as it was before ``export_stac`` wrote its own JSON: a ``pystac.Item`` per tile,
    GDAL's header of every tile, a pystac Collection and Catalog saved SELF_CONTAINED. Kept as the
    benchmark's baseline and as the reference the tests hold ``export_stac``'s files to."""
    import pystac

    out = Path(out).absolute()
    _check_out(out)
    cid = make_collection_id(out, collection_id)
    tiles = catalog.query(**filters)
    headers = _gdal_headers(tiles)
    ids = {t.id: item_id(t, catalog.root) for t in tiles}
    parents = parent_ids(catalog, tiles, ids)
    item_dir = out.parent.resolve() / out.name / cid / "items"
    href = (lambda p: os.path.relpath(p, item_dir)) if relative_assets else (lambda p: p)
    items = [tile_item(t, ids[t.id], parents.get(t.id), headers[t.id], href=href) for t in tiles]
    coll = pystac.Collection(
        id=cid, description=description or f"Tiles exported from the workbench catalog {catalog.path}",
        extent=_pystac_extent(items), license=license, title=cid,
        summaries=pystac.Summaries({f"{PREFIX}source": sorted({t.source for t in tiles}),
                                    f"{PREFIX}split": sorted({t.split for t in tiles if t.split})}))
    coll.add_items(items)
    by_id = {item.id: item for item in items}
    for item in items:
        parent = item.properties.get(f"{PREFIX}parent")
        if parent in by_id:
            item.add_link(pystac.Link("derived_from", by_id[parent], media_type=pystac.MediaType.GEOJSON))
    root = pystac.Catalog(id=cid, title=cid, description=f"Workbench tiles: the collection {cid}")
    root.add_child(coll)
    layout = pystac.layout.TemplateLayoutStrategy(item_template="items")
    root.normalize_hrefs(str(out / CATALOG_FILE), strategy=layout)
    root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return out / CATALOG_FILE


def tile_item(tile: Tile, iid: str, parent: str | None, header: dict, href: Callable[[str], str]):
    """One catalog row as a ``pystac.Item``, built with pystac's extension classes."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension

    from workbench.data import bands as band_names

    bounds = (tile.west, tile.south, tile.east, tile.north)
    placed = all(v is not None for v in bounds)
    when, props = _when(tile)
    props.update({f"{PREFIX}{name}": getattr(tile, name) for name in FIELDS})
    props[f"{PREFIX}parent"] = parent
    if tile.gsd is not None:
        props["gsd"] = tile.gsd
    if tile.cloud_cover is not None:
        props["eo:cloud_cover"] = round(tile.cloud_cover * 100.0, 9)
    item = pystac.Item(id=iid, geometry=_polygon(*bounds) if placed else None, bbox=list(bounds) if placed else None,
                       datetime=when, properties=props)
    item.add_asset("image", pystac.Asset(href(tile.path), title="image", media_type=pystac.MediaType.GEOTIFF,
                                         roles=["data"]))
    eo = EOExtension.ext(item.assets["image"], add_if_missing=True)
    eo.bands = [Band.create(name=b, common_name=band_names.common_name(band_names.canonical(b) or b))
                for b in tile.bands]
    EOExtension.ext(item, add_if_missing=True)
    if tile.mask_path:
        item.add_asset("mask", pystac.Asset(href(tile.mask_path), title="mask", roles=["labels"],
                                            media_type=pystac.MediaType.GEOTIFF))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = tile.crs or header.get("crs")
    if crs and _CODE.match(crs):
        proj.code = crs.upper()
    elif crs:
        proj.code = None
        proj.wkt2 = header.get("wkt2")
        props[f"{PREFIX}crs"] = crs
    else:
        proj.code = None
    proj.shape = [tile.height if tile.height is not None else header["height"],
                  tile.width if tile.width is not None else header["width"]]
    proj.transform = list(header["transform"])
    if crs:
        proj.bbox = list(header["bounds"])
    return item


def _when(tile: Tile) -> tuple[datetime | None, dict]:
    if tile.date:
        day = datetime.fromisoformat(str(tile.date)[:10])
        props = {} if day.date().isoformat() == tile.date else {f"{PREFIX}date": tile.date}
        return day.replace(tzinfo=UTC), props
    end = datetime.fromisoformat(tile.created_at) if tile.created_at else datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return None, {"start_datetime": _iso(UNKNOWN_START), "end_datetime": _iso(end)}


def _pystac_extent(items: Sequence):
    import pystac

    boxes = [i.bbox for i in items if i.bbox]
    bbox = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
            if boxes else [-180.0, -90.0, 180.0, 90.0])
    starts, ends = [], []
    for i in items:
        if i.datetime is not None:
            starts.append(i.datetime)
            ends.append(i.datetime)
        else:
            starts.append(datetime.fromisoformat(i.properties["start_datetime"].replace("Z", "+00:00")))
            ends.append(datetime.fromisoformat(i.properties["end_datetime"].replace("Z", "+00:00")))
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(starts), max(ends)]]))


def _gdal_headers(tiles: Sequence[Tile]) -> dict[int, dict]:
    from rasterio.crs import CRS

    from workbench.data.geotiff import read_info

    out = {}
    for t in tiles:
        if not Path(t.path).is_file():
            raise WorkbenchError(f"{t.path}: no such file (catalog tile {t.id})")
        info = read_info(t.path)
        crs = t.crs or info.crs
        wkt2 = CRS.from_user_input(crs).to_wkt(version="WKT2_2019") if crs and not _CODE.match(crs) else None
        out[t.id] = dict(crs=info.crs, wkt2=wkt2, transform=info.transform[:6], bounds=info.bounds,
                         width=info.width, height=info.height)
    return out


def pystac_read(path: Path, catalog: Catalog) -> int:
    """The old import's costs, without its checks: pystac's reader (every item migrated), GDAL's
    header of every image and mask asset, one ``add_tiles`` of rows made from the headers."""
    import pystac

    from workbench.data.geotiff import read_info

    rows = []
    for item in pystac.Catalog.from_file(str(path)).get_items(recursive=True):
        image = read_info(item.assets["image"].get_absolute_href())
        if "mask" in item.assets:
            read_info(item.assets["mask"].get_absolute_href())
        rows.append(Tile(path=image.path, source="folder", width=image.width, height=image.height, crs=image.crs,
                         bands=list(image.band_names)))
    catalog.add_tiles(rows)
    return len(rows)


# ---- the synthetic tiles -----------------------------------------------------------------------------

def synthetic_catalog(folder: Path, n: int) -> Path:
    """``folder/catalog.sqlite`` of ``n`` EE-style rows whose files are hard links to
    :data:`SOURCES_OF_LINKS` real 32 px pairs (row ``i`` links source ``i % 16``; its bounds are that
    source's). Returns the catalog's path."""
    from rasterio.transform import from_origin

    from workbench.data import geotiff

    rng = np.random.default_rng(0)
    sources = []
    for k in range(SOURCES_OF_LINKS):
        image = rng.integers(200, 3000, (len(BANDS), 32, 32)).astype("uint16")
        t = from_origin(500_000.0 + k * 320, 4_650_000.0, 10.0, 10.0)
        img = geotiff.write(folder / f"source_{k}.tif", image, t, "EPSG:32633", nodata=0, band_names=BANDS)
        mask = geotiff.write(folder / f"source_{k}_mask.tif", (image[0] > 1600).astype("uint8"), t, "EPSG:32633",
                             band_names=["water"])
        sources.append((img, mask, geotiff.read_info(img).lonlat_bounds()))
    chips = folder / "chips"
    chips.mkdir()
    rows = []
    for i in range(n):
        img, mask, (w, s, e, nn) = sources[i % SOURCES_OF_LINKS]
        path, mpath = chips / f"chip_{i:07d}.tif", chips / f"chip_{i:07d}_mask.tif"
        os.link(img, path)
        os.link(mask, mpath)
        rows.append(Tile(path=str(path), mask_path=str(mpath), source="earthengine",
                         split=("train", "val", "test")[i % 3], crs="EPSG:32633", width=32, height=32, gsd=10.0,
                         bands=list(BANDS), lon=(w + e) / 2, lat=(s + nn) / 2, west=w, south=s, east=e, north=nn,
                         date=f"2023-{1 + i % 12:02d}-15", cloud_cover=round(float(rng.uniform(0, 0.3)), 4),
                         water_fraction=0.4, label="coast", scene_id=f"S2_{i % 97:03d}",
                         extra={"chip": i, "export": "bench"}))
    path = folder / "catalog.sqlite"
    with Catalog(path) as cat:
        cat.add_tiles(rows)
    return path


# ---- the benchmark -----------------------------------------------------------------------------------

def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def bench_stac(quick: bool = False, n: int | None = None) -> BenchResult:
    from workbench.data.sources.stac_collection import import_collection
    from workbench.data.stac_export import export_stac

    n = n or (500 if quick else 2_000)
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-stac-")).resolve()
    rows: list[dict[str, Any]] = []
    try:
        t = time.perf_counter()
        catalog = synthetic_catalog(tmp, n)
        built = time.perf_counter() - t
        import pystac  # noqa: F401 -- imports made before the clocks start, for both sides
        import tqdm.auto  # noqa: F401

        import workbench.data.bands  # noqa: F401
        import workbench.data.sources.folder  # noqa: F401
        with Catalog(catalog, read_only=True) as cat:
            ours, done = _timed(lambda: export_stac(cat, tmp / "ours"))
            assert done.items == n
            base = None
            if n <= PYSTAC_MAX:
                base, _ = _timed(lambda: pystac_export(cat, tmp / "pystac"))
        rows.append(dict(case="export (export_stac vs pystac Items + save)", items=n, seconds=ours,
                         items_s=n / ours, baseline_items_s=n / base if base else None,
                         ratio=base / ours if base else None, goal=">= 1,000 items/s"))
        if _has_pyarrow():
            from workbench.data.geoparquet_export import export_parquet

            stac_seconds = ours
            with Catalog(catalog, read_only=True) as cat:
                ours, done = _timed(lambda: export_parquet(cat, tmp / "ours.parquet"))
            assert done.items == n
            rows.append(dict(case="export-parquet (vs export_stac)", items=n, seconds=ours, items_s=n / ours,
                             baseline_items_s=n / stac_seconds, ratio=stac_seconds / ours))
        with Catalog(tmp / "imported.sqlite") as cat:
            ours, result = _timed(lambda: import_collection(cat, tmp / "ours"))
            assert len(result.added) == n
        with Catalog(tmp / "baseline.sqlite") as cat:
            base, count = _timed(lambda: pystac_read(tmp / "ours" / CATALOG_FILE, cat))
            assert count == n
        rows.append(dict(case="import (import_collection vs pystac read + headers)", items=n, seconds=ours,
                         items_s=n / ours, baseline_items_s=n / base, ratio=base / ours, goal=">= 1,000 items/s"))
        notes = [f"{n:,} tiles of 32 px, 4 bands and a mask: hard links to {SOURCES_OF_LINKS} real GeoTIFF pairs, "
                 f"catalogued in {built:.1f} s (not timed); in {tempfile.gettempdir()}",
                 "ratio: the baseline's time / ours; both exports write the same bytes",
                 f"load average (1 min) {os.getloadavg()[0]:.1f} at the end: the ratios are the robust part"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BenchResult("STAC export and import (higher items/s is better)", rows, notes)
