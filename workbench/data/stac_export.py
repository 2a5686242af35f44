"""The catalog as a STAC Catalog holding one Collection, one Item per tile, for TorchGeo, QGIS, rslearn
and STAC browsers.

    done = export_stac(catalog, "exports/delta-stac", source="folder", split="test")
    # exports/delta-stac/catalog.json, .../delta-stac/collection.json, .../delta-stac/items/<id>.json

Why STAC: it is how the field exchanges georeferenced rasters, so a catalog built here can
be read by tools that know nothing of the workbench, and one written back by
:mod:`workbench.data.sources.stac_collection` comes back row for row.

What an Item holds (STAC 1.1, projection v2 and eo v1.1 extensions; the JSON pystac writes for
the same objects, byte for byte -- see "Speed" below):

- ``id``: the tile's file name, slugged, and a hash of its path in the catalog (stable across
  exports, unique in a catalog because paths are); ``geometry``/``bbox`` the lon/lat bounds
  (null for a tile without a CRS);
- ``datetime``: the tile's date at 00:00 UTC; a tile without one has ``datetime`` null and
  ``start_datetime`` 1970-01-01 / ``end_datetime`` its row's ``created_at`` ("some time before
  it was catalogued"), as the spec asks of an unknown instant;
- ``proj:code`` (or ``proj:wkt2`` for a CRS with no authority code), ``proj:shape``,
  ``proj:transform`` and ``proj:bbox`` in the tile's own CRS, read from the file's header
  (the catalog keeps lon/lat bounds only, which do not give a UTM grid back);
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

Speed: an export is a few thousand items a second. The JSON is written here from plain dicts,
not through a ``pystac.Item`` per tile: pystac looks links up by scanning lists, which grows
with the square of the collection (a million tiles would take hours), and the dicts are the
ones pystac writes for the same items (checked file for file against pystac itself in the
tests; ``workbench.bench_stac`` keeps that pystac export as its baseline). Each tile's grid
comes from its TIFF tags (:mod:`workbench.data.tiff_grid`) where they give it plainly, else
from GDAL's header read as before.

Memory: tiles are read, made into items and written ``EXPORT_CHUNK`` at a time (the export
and ``geoparquet_export``'s alike), so a ten-million-tile catalog exports in bounded memory;
what is held for all of them is the collection's item ids (its links) and the exported ids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from workbench.data.catalog import Catalog, Tile
from workbench.errors import WorkbenchError
from workbench.files import check_can_create, temporary_name

PREFIX = "workbench:"
# the catalog columns carried as workbench:<name> properties, as the catalog holds them
FIELDS = ("source", "split", "label", "pred_label", "pred_score", "model_id", "water_fraction", "caption",
          "scene_id", "extra", "created_at", "cloud_cover", "lon", "lat")
UNKNOWN_START = datetime(1970, 1, 1, tzinfo=UTC)
CATALOG_FILE, COLLECTION_FILE = "catalog.json", "collection.json"
STAC_VERSION = "1.1.0"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJ_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
GEOTIFF, GEOJSON, JSON = "image/tiff; application=geotiff", "application/geo+json", "application/json"
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


def collection_id(out: Path, given: str | None) -> str:
    """``--id`` checked (it names a folder), or one made from the export folder's name."""
    if given is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", given):
        raise WorkbenchError(f"--id {given!r}: a collection id is letters, digits, '.', '_' and '-' "
                             "(it names a folder of the export)")
    return given or re.sub(r"[^A-Za-z0-9._-]+", "-", out.name).strip("-.") or "workbench"


def export_stac(catalog: Catalog, out: str | Path, *, collection_id: str | None = None,
                description: str | None = None, license: str = "other", relative_assets: bool = False,
                progress: bool = False, **filters: Any) -> Export:
    """Write the tiles ``filters`` select (``Catalog.query`` keywords) as a STAC Collection under a
    root Catalog in the new folder ``out`` (see the module docstring). Refused with one line:
    ``out`` exists and is not an empty folder, a bad ``collection_id``, no tile matches, a tile's
    file is missing or unreadable; nothing is written then."""
    out = Path(out).absolute()
    _check_out(out)
    cid = _collection_id(out, collection_id)
    item_dir = out.parent.resolve() / out.name / cid / "items"       # where the items live once renamed
    with _staged(out) as tmp:
        folder = tmp / cid / "items"
        folder.mkdir(parents=True)

        def write(items: list[dict]) -> None:
            for d in items:
                _write(folder / f"{d['id']}.json", d)

        coll, n, masks = export_items(catalog, cid, filters, item_dir if relative_assets else None, progress, write,
                                      description=description, license=license, linked=True)
        _write(tmp / CATALOG_FILE, catalog_dict(cid))
        _write(tmp / cid / COLLECTION_FILE, coll)
    bbox, interval = coll["extent"]["spatial"]["bbox"][0], coll["extent"]["temporal"]["interval"][0]
    return Export(path=out / CATALOG_FILE, collection=out / cid / COLLECTION_FILE, items=n, bbox=bbox,
                  interval=interval, masks=masks)


_collection_id = collection_id        # the keyword of export_stac hides the function's name there


def export_items(catalog: Catalog, cid: str, filters: dict, relative_to: Path | None, progress: bool,
                 write: Callable[[list[dict]], None], *, description: str | None, license: str,
                 linked: bool) -> tuple[dict, int, int]:
    """What every export does: the tiles ``filters`` select become item dicts (asset hrefs relative
    to ``relative_to``, else absolute) handed to ``write`` ``EXPORT_CHUNK`` at a time, so memory
    stays bounded at ten million tiles; returns the collection dict over them all, the item and
    the mask count. ``linked``: the items are files beside the collection (a link to each,
    ``derived_from`` between them). No tile matching is a one-line error, before any ``write``."""
    import numpy as np

    from workbench.progress import progress as progress_bar

    total = catalog.count(**filters)
    if not total:
        raise WorkbenchError(f"{catalog.path}: no tile matches the filters; nothing to export")
    exported = np.sort(catalog.table(columns=["id"], **filters)["id"]) if linked else np.empty(0, np.int64)
    href = (lambda p: os.path.relpath(p, relative_to)) if relative_to is not None else (lambda p: p)
    seen = _Seen()
    with progress_bar(total=total, desc="exporting", unit="item", enabled=progress) as bar:
        for tiles in _chunks(catalog.iter_query(batch_size=EXPORT_CHUNK, **filters), EXPORT_CHUNK):
            headers = read_headers(tiles)
            ids = {t.id: item_id(t, catalog.root) for t in tiles}
            parents = parent_ids(catalog, tiles, ids)
            items = [item_dict(t, ids[t.id], parents.get(t.id), headers[t.id], href, cid,
                               derived_from=t.parent_id is not None and _holds(exported, t.parent_id))
                     for t in tiles]
            write(items)
            seen.add(tiles, items, linked)
            bar.update(len(tiles))
    coll = collection_dict(cid, seen.ids, seen.bbox or [-180.0, -90.0, 180.0, 90.0], seen.interval(),
                           license=license,          # no tile placed: the whole Earth, as pystac's default
                           description=description or f"Tiles exported from the workbench catalog {catalog.path}",
                           summaries={f"{PREFIX}source": sorted(seen.sources), f"{PREFIX}split": sorted(seen.splits)})
    return coll, seen.items, seen.masks


EXPORT_CHUNK = 10_000        # tiles read, made into items and written at a time


class _Seen:
    """What the collection says of all its items, gathered chunk by chunk: their ids (when linked),
    the union of their boxes and times, their sources and splits, the counts."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.bbox: list[float] | None = None
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.sources: set[str] = set()
        self.splits: set[str] = set()
        self.items = self.masks = 0

    def add(self, tiles: Sequence[Tile], items: list[dict], linked: bool) -> None:
        """The union of the items' boxes (None while none is placed) and of their times, compared
        as datetimes (RFC 3339 text orders as time only once parsed)."""
        for d in items:
            if "bbox" in d:
                b, o = d["bbox"], self.bbox
                self.bbox = list(b) if o is None else [min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]),
                                                       max(o[3], b[3])]
            p = d["properties"]
            start, end = (p["datetime"], p["datetime"]) if p["datetime"] is not None else \
                (p["start_datetime"], p["end_datetime"])
            start, end = parse_time(start), parse_time(end)
            self.start = start if self.start is None else min(self.start, start)
            self.end = end if self.end is None else max(self.end, end)
        if linked:
            self.ids.extend(d["id"] for d in items)
        self.sources.update(t.source for t in tiles)
        self.splits.update(t.split for t in tiles if t.split)
        self.items += len(items)
        self.masks += sum(1 for t in tiles if t.mask_path)

    def interval(self) -> list[str | None]:
        return [_iso(self.start), _iso(self.end)]


def _chunks(rows: Iterator[Tile], n: int) -> Iterator[list[Tile]]:
    while chunk := list(itertools.islice(rows, n)):
        yield chunk


def _holds(sorted_ids: Any, tile_id: int) -> bool:
    i = int(sorted_ids.searchsorted(tile_id))
    return i < len(sorted_ids) and int(sorted_ids[i]) == tile_id


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed onto it when the block ends (onto a missing or
    empty folder: never a merge); a failure leaves nothing behind."""
    tmp = temporary_name(out)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        yield tmp
        os.rename(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WorkbenchError(f"{out}: could not be written ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(path: Path, d: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(d, indent=2))


def _link(rel: str, href: str, media: str, title: str | None = None) -> dict:
    d = {"rel": rel, "href": href, "type": media}
    if title is not None:
        d["title"] = title
    return d


def catalog_dict(cid: str) -> dict:
    """The root Catalog: one child, the collection."""
    return {"type": "Catalog", "id": cid, "stac_version": STAC_VERSION,
            "description": f"Workbench tiles: the collection {cid}",
            "links": [_link("root", f"./{CATALOG_FILE}", JSON, cid),
                      _link("child", f"./{cid}/{COLLECTION_FILE}", JSON, cid)], "title": cid}


def collection_dict(cid: str, item_ids: Sequence[str], bbox: list[float], interval: list[str | None], *,
                    license: str, description: str, summaries: dict) -> dict:
    """The Collection: a link per item, the extent of them all, the sources and splits it holds."""
    links = [_link("root", f"../{CATALOG_FILE}", JSON, cid)]
    links += [{"rel": "item", "href": f"./items/{i}.json", "type": GEOJSON} for i in item_ids]
    links.append(_link("parent", f"../{CATALOG_FILE}", JSON, cid))
    return {"type": "Collection", "id": cid, "stac_version": STAC_VERSION, "description": description,
            "links": links, "title": cid,
            "extent": {"spatial": {"bbox": [bbox]},
                       "temporal": {"interval": [interval]}},
            "license": license, "summaries": summaries}


def item_dict(tile: Tile, iid: str, parent: str | None, header: dict, href: Callable[[str], str], cid: str,
              derived_from: bool = False) -> dict:
    """One catalog row as the STAC item JSON (see the module docstring) of an item in
    ``<cid>/items/``; ``header`` is the file's grid (:func:`read_headers`), ``href`` turns a file's
    absolute path into its asset href, ``derived_from``: the parent's item is in the same folder."""
    from workbench.data import bands as band_names

    bounds = [tile.west, tile.south, tile.east, tile.north]
    placed = all(v is not None for v in bounds)
    when, props = _when(tile)
    for name in FIELDS:
        props[f"{PREFIX}{name}"] = getattr(tile, name)
    props[f"{PREFIX}parent"] = parent
    if tile.gsd is not None:
        props["gsd"] = tile.gsd
    if tile.cloud_cover is not None:
        props["eo:cloud_cover"] = round(tile.cloud_cover * 100.0, 9)   # percent, without float noise
    crs = tile.crs or header.get("crs")
    props["proj:code"] = crs.upper() if crs and _CODE.match(crs) else None
    if crs and not _CODE.match(crs):
        if header.get("wkt2") is not None:
            props["proj:wkt2"] = header["wkt2"]
        props[f"{PREFIX}crs"] = crs          # the catalog's own spelling, which WKT does not keep
    props["proj:shape"] = [tile.height if tile.height is not None else header["height"],
                           tile.width if tile.width is not None else header["width"]]
    props["proj:transform"] = list(header["transform"])
    if crs:
        props["proj:bbox"] = list(header["bounds"])
    props["datetime"] = when
    links = [_link("root", f"../../{CATALOG_FILE}", JSON, cid), _link("collection", f"../{COLLECTION_FILE}", JSON, cid)]
    if derived_from:
        links.append({"rel": "derived_from", "href": f"./{parent}.json", "type": GEOJSON})
    links.append(_link("parent", f"../{COLLECTION_FILE}", JSON, cid))
    eo_bands = []
    for b in tile.bands:
        common = band_names.common_name(band_names.canonical(b) or b)
        eo_bands.append({"name": b, "common_name": common} if common is not None else {"name": b})
    assets = {"image": {"href": href(tile.path), "type": GEOTIFF, "title": "image", "eo:bands": eo_bands,
                        "roles": ["data"]}}
    if tile.mask_path:
        assets["mask"] = {"href": href(tile.mask_path), "type": GEOTIFF, "title": "mask", "roles": ["labels"]}
    d = {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [EO_SCHEMA, PROJ_SCHEMA], "id": iid,
         "geometry": _polygon(*bounds) if placed else None}
    if placed:
        d["bbox"] = bounds
    d.update(properties=props, links=links, assets=assets, collection=cid)
    return d


def _when(tile: Tile) -> tuple[str | None, dict]:
    """The item's ``datetime`` (the tile's date at 00:00 UTC), or null with a start/end range."""
    if tile.date:
        try:
            day = date.fromisoformat(str(tile.date)[:10])
        except ValueError:
            raise WorkbenchError(f"{tile.path}: catalog date {tile.date!r} is not YYYY-MM-DD") from None
        props = {} if day.isoformat() == tile.date else {f"{PREFIX}date": tile.date}
        return f"{day.isoformat()}T00:00:00Z", props
    end = datetime.fromisoformat(tile.created_at) if tile.created_at else datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return None, {"start_datetime": _iso(UNKNOWN_START), "end_datetime": _iso(end)}


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _polygon(w: float, s: float, e: float, n: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def parse_time(text: str) -> datetime:
    """An item's RFC 3339 time (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_headers(tiles: Sequence[Tile], progress: bool = False) -> dict[int, dict]:
    """Grid (transform, size, native bounds) of every tile and, where the row has none, its CRS:
    from the TIFF tags where they give it plainly (:func:`workbench.data.tiff_grid.read_grid`),
    else from GDAL's header (the catalog keeps lon/lat bounds only). A missing or unreadable file
    is one line naming it."""
    from workbench.data.tiff_grid import GdalHeaders, read_grid
    from workbench.progress import progress as progress_bar

    out = {}
    wkt2: dict[str, str] = {}
    with GdalHeaders() as gdal:
        for t in progress_bar(tiles, desc="reading headers", unit="tile", enabled=progress):
            grid = read_grid(t.path) if t.crs else None
            if grid is not None:
                h = dict(crs=None, transform=grid.transform, bounds=grid.bounds, width=grid.width, height=grid.height)
            else:
                if not Path(t.path).is_file():
                    raise WorkbenchError(f"{t.path}: no such file (catalog tile {t.id}); nothing exported -- "
                                         "remove the row (workbench data remove) or restore the file")
                info = gdal.read_info(t.path)
                h = dict(crs=info.crs, transform=info.transform[:6], bounds=info.bounds, width=info.width,
                         height=info.height)
            crs = t.crs or h["crs"]
            if crs and not _CODE.match(crs):
                if crs not in wkt2:
                    from rasterio.crs import CRS

                    wkt2[crs] = CRS.from_user_input(crs).to_wkt(version="WKT2_2019")
                h["wkt2"] = wkt2[crs]
            out[t.id] = h
    return out


def parent_ids(catalog: Catalog, tiles: Sequence[Tile], ids: dict[int, str]) -> dict[int, str]:
    """Each tile's parent as an item id (the parent's own, exported or not)."""
    missing = sorted({t.parent_id for t in tiles if t.parent_id is not None and t.parent_id not in ids})
    extra = {p.id: item_id(p, catalog.root) for p in catalog.query(ids=missing)} if missing else {}
    return {t.id: ids.get(t.parent_id) or extra.get(t.parent_id) for t in tiles if t.parent_id is not None}


def _check_out(out: Path) -> None:
    check_can_create(out.parent, "export")       # under a file, or in a folder that cannot be written
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"{out}: exists and is not a folder; give a new folder for the export")
    if out.is_dir() and any(out.iterdir()):
        raise WorkbenchError(f"{out}: exists and is not empty; an export is written to a new folder, never "
                             "merged into one")
