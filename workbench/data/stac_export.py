"""The catalog as a STAC Catalog holding one Collection, one Item per tile, for TorchGeo, QGIS, rslearn
and STAC browsers.

    done = export_stac(catalog, "exports/delta-stac", source="folder", split="test")
    # exports/delta-stac/catalog.json, .../delta-stac/collection.json, .../delta-stac/items/<id>.json

Why STAC: it is how the field exchanges georeferenced rasters, so a catalog built here can
be read by tools that know nothing of the workbench, and one written back by
:mod:`workbench.data.sources.stac_collection` comes back row for row.

What an Item holds (pystac writes it; STAC 1.1, projection v2 and eo v1.1 extensions):

- ``id``: the tile's file name, slugged, and a hash of its path in the catalog (stable across
  exports, unique in a catalog because paths are); ``geometry``/``bbox`` the lon/lat bounds
  (null for a tile without a CRS);
- ``datetime``: the tile's date at 00:00 UTC; a tile without one has ``datetime`` null and
  ``start_datetime`` 1970-01-01 / ``end_datetime`` its row's ``created_at`` ("some time before
  it was catalogued"), as the spec asks of an unknown instant;
- ``proj:code`` (or ``proj:wkt2`` for a CRS with no authority code), ``proj:shape``,
  ``proj:transform`` and ``proj:bbox`` in the tile's own CRS, read from the file's header;
- ``gsd``; ``eo:cloud_cover`` in percent;
- assets ``image`` (roles ``data``, with ``eo:bands``: the catalog's band names and their common
  names) and ``mask`` (roles ``labels``) when the tile has one; a link ``derived_from`` to the
  parent tile's item when the parent is in the export;
- every workbench column in ``workbench:*`` properties (:data:`FIELDS`), ``workbench:parent``
  as the parent's item id. Two of them repeat a standard field exactly where the standard
  one is a conversion: ``workbench:cloud_cover`` (the 0..1 fraction; ``x * 100 / 100`` is not
  always ``x`` in floating point) and ``workbench:lon``/``workbench:lat`` (the catalog's
  centre, not always the bbox's for generated and Earth Engine tiles).

Layout: ``out/catalog.json`` (the root Catalog), ``out/<id>/collection.json`` (the Collection:
extent from the items, license, summaries of sources and splits) and ``out/<id>/items/<item
id>.json``. Links between the JSON files are relative and no ``self`` link is written (pystac's
SELF_CONTAINED catalog), so the export folder can be moved or zipped as a whole. The tiles
are the user's and are never copied or moved: asset hrefs are absolute paths by default
(the export keeps working wherever it is moved on this machine), or, with
``relative_assets``, relative to each item file (an export inside the data folder, moved
with it). The export is written in a temporary folder beside ``out`` and renamed onto it: an
existing non-empty folder is refused, never merged into.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from workbench.data.catalog import Catalog, Tile
from workbench.errors import WorkbenchError

PREFIX = "workbench:"
# the catalog columns carried as workbench:<name> properties, as the catalog holds them
FIELDS = ("source", "split", "label", "pred_label", "pred_score", "model_id", "water_fraction", "caption",
          "scene_id", "extra", "created_at", "cloud_cover", "lon", "lat")
UNKNOWN_START = datetime(1970, 1, 1, tzinfo=UTC)
CATALOG_FILE, COLLECTION_FILE = "catalog.json", "collection.json"
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*:\d+$")


@dataclass
class Export:
    """What ``export_stac`` wrote: the root catalog and collection files, the item count, the extent."""

    path: Path
    collection: Path
    items: int
    bbox: list[float] | None
    interval: list[str | None]
    masks: int


def item_id(tile: Tile, root: Path) -> str:
    """A stable id: the file name (slugged) and 10 hex digits of the path as the catalog keys it
    (relative to the catalog's folder when under it, so a moved data folder keeps its ids)."""
    p = Path(tile.path)
    try:
        key = str(p.relative_to(root))
    except ValueError:
        key = str(p)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem).strip("_") or "tile"
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def export_stac(catalog: Catalog, out: str | Path, *, collection_id: str | None = None,
                description: str | None = None, license: str = "other", relative_assets: bool = False,
                progress: bool = False, **filters: Any) -> Export:
    """Write the tiles ``filters`` select (``Catalog.query`` keywords) as a STAC Collection under a
    root Catalog in the new folder ``out`` (see the module docstring). Refused with one line:
    ``out`` exists and is not an empty folder, a bad ``collection_id``, no tile matches, a tile's
    file is missing or unreadable; nothing is written then."""
    import pystac

    out = Path(out).absolute()
    _check_out(out)
    if collection_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", collection_id):
        raise WorkbenchError(f"--id {collection_id!r}: a collection id is letters, digits, '.', '_' and '-' "
                             "(it names a folder of the export)")
    cid = collection_id or re.sub(r"[^A-Za-z0-9._-]+", "-", out.name).strip("-.") or "workbench"
    tiles = catalog.query(**filters)
    if not tiles:
        raise WorkbenchError(f"{catalog.path}: no tile matches the filters; nothing to export")
    headers = _headers(tiles, progress)
    ids = {t.id: item_id(t, catalog.root) for t in tiles}
    parents = _parent_ids(catalog, tiles, ids)
    item_dir = out.parent.resolve() / out.name / cid / "items"       # where the items live once renamed
    href = (lambda p: os.path.relpath(p, item_dir)) if relative_assets else (lambda p: p)
    items = [tile_item(t, ids[t.id], parents.get(t.id), headers[t.id], href=href) for t in tiles]
    extent = _extent(items)
    coll = pystac.Collection(
        id=cid, description=description or f"Tiles exported from the workbench catalog {catalog.path}",
        extent=extent, license=license, title=cid,
        summaries=pystac.Summaries({f"{PREFIX}source": sorted({t.source for t in tiles}),
                                    f"{PREFIX}split": sorted({t.split for t in tiles if t.split})}))
    coll.add_items(items)
    by_id = {item.id: item for item in items}
    for item in items:                        # derived_from once every item has its place
        parent = item.properties.get(f"{PREFIX}parent")
        if parent in by_id:
            item.add_link(pystac.Link("derived_from", by_id[parent], media_type=pystac.MediaType.GEOJSON))
    root = pystac.Catalog(id=cid, title=cid, description=f"Workbench tiles: the collection {cid}")
    root.add_child(coll)
    _save(root, out)
    spatial = extent.spatial.bboxes[0] if extent.spatial.bboxes else None
    interval = [None if d is None else _iso(d) for d in extent.temporal.intervals[0]]
    return Export(path=out / CATALOG_FILE, collection=out / cid / COLLECTION_FILE, items=len(items),
                  bbox=list(spatial) if spatial else None, interval=interval,
                  masks=sum(1 for t in tiles if t.mask_path))


def _save(root, out: Path) -> None:
    """pystac writes the whole catalog in a temporary folder beside ``out``, renamed onto it at the
    end (onto a missing or empty folder: never a merge); a failure leaves nothing behind."""
    import pystac

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        layout = pystac.layout.TemplateLayoutStrategy(item_template="items")     # <cid>/items/<id>.json
        root.normalize_hrefs(str(tmp / CATALOG_FILE), strategy=layout)
        root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        os.rename(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WorkbenchError(f"{out}: could not be written ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tile_item(tile: Tile, iid: str, parent: str | None, header: dict, href: Callable[[str], str]):
    """One catalog row as a ``pystac.Item`` (see the module docstring); ``header`` is the file's
    CRS, transform and size, ``href`` turns a file's absolute path into its asset href."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension

    from workbench.data import bands as band_names

    bounds = (tile.west, tile.south, tile.east, tile.north)
    placed = all(v is not None for v in bounds)
    geometry = _polygon(*bounds) if placed else None
    when, props = _when(tile)
    props.update({f"{PREFIX}{name}": getattr(tile, name) for name in FIELDS})
    props[f"{PREFIX}parent"] = parent
    if tile.gsd is not None:
        props["gsd"] = tile.gsd
    if tile.cloud_cover is not None:
        props["eo:cloud_cover"] = round(tile.cloud_cover * 100.0, 9)   # percent, without float noise
    item = pystac.Item(id=iid, geometry=geometry, bbox=list(bounds) if placed else None, datetime=when,
                       properties=props)
    image = pystac.Asset(href(tile.path), title="image", media_type=pystac.MediaType.GEOTIFF, roles=["data"])
    item.add_asset("image", image)
    eo = EOExtension.ext(item.assets["image"], add_if_missing=True)
    eo.bands = [Band.create(name=b, common_name=band_names.common_name(band_names.canonical(b) or b))
                for b in tile.bands]
    EOExtension.ext(item, add_if_missing=True)          # eo:cloud_cover is an item field of the extension
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
        props[f"{PREFIX}crs"] = crs          # the catalog's own spelling, which WKT does not keep
    else:
        proj.code = None
    proj.shape = [tile.height if tile.height is not None else header["height"],
                  tile.width if tile.width is not None else header["width"]]
    proj.transform = list(header["transform"])
    if crs:
        proj.bbox = list(header["bounds"])
    return item


def _when(tile: Tile) -> tuple[datetime | None, dict]:
    """The item's ``datetime`` (the tile's date at 00:00 UTC), or null with a start/end range."""
    if tile.date:
        try:
            day = date.fromisoformat(str(tile.date)[:10])
        except ValueError:
            raise WorkbenchError(f"{tile.path}: catalog date {tile.date!r} is not YYYY-MM-DD") from None
        props = {} if day.isoformat() == tile.date else {f"{PREFIX}date": tile.date}
        return datetime(day.year, day.month, day.day, tzinfo=UTC), props
    end = datetime.fromisoformat(tile.created_at) if tile.created_at else datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return None, {"start_datetime": _iso(UNKNOWN_START), "end_datetime": _iso(end)}


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _polygon(w: float, s: float, e: float, n: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _extent(items: Sequence):
    """The collection's extent: the union of the items' bboxes and of their times."""
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


def _headers(tiles: Sequence[Tile], progress: bool) -> dict[int, dict]:
    """CRS, transform, size and native bounds of every tile, from its file's header (the catalog
    keeps lon/lat bounds only); a missing or unreadable file is one line naming it."""
    from rasterio.crs import CRS

    from workbench.data.geotiff import read_info
    from workbench.progress import progress as progress_bar

    out = {}
    for t in progress_bar(tiles, desc="reading headers", unit="tile", enabled=progress):
        if not Path(t.path).is_file():
            raise WorkbenchError(f"{t.path}: no such file (catalog tile {t.id}); nothing exported -- "
                                 "remove the row (workbench data remove) or restore the file")
        info = read_info(t.path)
        crs = t.crs or info.crs
        wkt2 = None
        if crs and not _CODE.match(crs):
            wkt2 = CRS.from_user_input(crs).to_wkt(version="WKT2_2019")
        out[t.id] = dict(crs=info.crs, wkt2=wkt2, transform=info.transform[:6], bounds=info.bounds,
                         width=info.width, height=info.height)
    return out


def _parent_ids(catalog: Catalog, tiles: Sequence[Tile], ids: dict[int, str]) -> dict[int, str]:
    """Each tile's parent as an item id (the parent's own, exported or not)."""
    missing = sorted({t.parent_id for t in tiles if t.parent_id is not None and t.parent_id not in ids})
    extra = {p.id: item_id(p, catalog.root) for p in catalog.query(ids=missing)} if missing else {}
    return {t.id: ids.get(t.parent_id) or extra.get(t.parent_id) for t in tiles if t.parent_id is not None}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"{out}: exists and is not a folder; give a new folder for the export")
    if out.is_dir() and any(out.iterdir()):
        raise WorkbenchError(f"{out}: exists and is not empty; an export is written to a new folder, never "
                             "merged into one")
