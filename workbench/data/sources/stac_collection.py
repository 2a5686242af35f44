"""A STAC Collection, Catalog or ItemCollection of tiles into the catalog: one row per item.

    result = import_collection(catalog, "exports/delta-stac/collection.json")
    result = import_collection(catalog, "exports/delta.parquet")        # a stac-geoparquet file

A stac-geoparquet file (``.parquet``, e.g. one ``data export-parquet`` wrote) is read with
pyarrow, each row turned back into the item it stands for
(:func:`workbench.data.geoparquet_export.row_item`), then checked and mapped as below.

The reverse of :mod:`workbench.data.stac_export`, and the way in for tiles another tool
catalogued. An item is one tile: its ``image`` asset (or its only raster asset with role
``data``) is the tile's file, its ``mask`` asset (or a raster with role ``labels``) the mask.
(A scene whose bands are separate assets is not a tile: ``data import ITEM.json`` cuts it
into chips instead, see :mod:`workbench.data.sources.stac`.)

Where each column comes from:

- items the workbench wrote (``workbench:source`` present): every ``workbench:*`` field as it
  is (:data:`~workbench.data.stac_export.FIELDS`), ``workbench:parent`` re-linked to the row of
  the item of that id when it comes in the same import; the standard fields for the rest. An
  export imported into an empty catalog gives its rows back, ids aside.
- any other item, from the standard fields: ``bbox`` (lon/lat bounds, centre), ``datetime`` or
  ``start_datetime`` (date), ``eo:cloud_cover`` (percent, kept as 0..1), ``gsd``, ``proj:code`` /
  ``proj:epsg`` / ``proj:wkt2`` (CRS), ``proj:shape``, ``eo:bands`` or STAC 1.1 ``bands`` of the
  image asset (band names); what an item leaves out from the file's header. The water fraction
  and label come from the mask, the split from the ground (``--split auto``) as for a folder;
  ``extra`` records the collection file and the item's id.

Hrefs are resolved relative to the item's own file (for an ItemCollection or a GeoParquet
file, to the file that holds it). Everything is checked before the catalog is touched, and all rows go in at once:
an item without an image asset, an asset whose file is missing (or not local), a mask off its
image's grid, a field of the wrong type or an item pystac cannot read is one line naming the
item, and nothing is written.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from workbench.data.catalog import Catalog, Tile
from workbench.data.stac_export import EO_SCHEMA, FIELDS, PREFIX, PROJ_SCHEMA, STAC_VERSION
from workbench.errors import WorkbenchError

KINDS = {"Collection": "collection", "Catalog": "catalog", "FeatureCollection": "item collection"}
PARQUET = (".parquet", ".geoparquet")
_TEXT = ("source", "split", "label", "pred_label", "model_id", "caption", "scene_id", "created_at")
_NUMBER = ("pred_score", "water_fraction", "cloud_cover", "lon", "lat")


@dataclass
class StacImport:
    """What one import did: items found, rows added (with their ids), items already catalogued."""

    path: Path
    kind: str
    found: int = 0
    added: list[Tile] = field(default_factory=list)
    already: int = 0
    unlinked: int = 0                  # items whose workbench:parent was not in this import
    block_deg: float | None = None     # the ground blocks of the splits computed here
    unplaced: int = 0                  # items split by file name (no position)


@dataclass
class _Entry:
    """One item read and checked: its tile, its parent's item id, whether it brought a split."""

    item_id: str
    where: str
    tile: Tile
    parent: str | None
    has_split: bool
    measure_water: bool = False     # another tool's item with a mask: its water fraction is read from it


def stac_kind(path: str | Path) -> str | None:
    """"collection", "catalog" or "item collection" when ``path`` is a local JSON file of that
    STAC type, "geoparquet" for a ``.parquet`` file (what ``data import`` sends here), else None
    (an item, a raster, a folder ...)."""
    p = Path(path)
    if p.suffix.lower() in PARQUET and p.is_file():
        return "geoparquet"
    if p.suffix.lower() != ".json" or not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError, OSError, RecursionError):
        return None                            # the item reader says what is wrong with it
    return KINDS.get(d.get("type")) if isinstance(d, dict) else None


def collection_file(path: str | Path) -> Path | None:
    """The STAC file ``data import PATH`` means: PATH itself when it is a catalog / collection /
    item collection JSON, or the ``catalog.json`` / ``collection.json`` of a folder (an export)."""
    p = Path(path)
    if p.is_dir():
        return next((p / name for name in ("catalog.json", "collection.json") if stac_kind(p / name)), None)
    return p if stac_kind(p) else None


def import_collection(catalog: Catalog, path: str | Path, *, source: str | None = None, split: str = "auto",
                      block_deg: float | None = None, progress: bool = False) -> StacImport:
    """Add the items of the collection / catalog / item collection at ``path`` (see the module
    docstring); items whose image is already catalogued are skipped. ``source`` and a ``split``
    other than ``auto`` replace the items' own; ``auto`` keeps a workbench item's split and gives
    other items their ground block's."""
    from workbench.data.sources.folder import _check_options
    from workbench.data.tiff_grid import GdalHeaders
    from workbench.progress import progress as progress_bar

    _check_options(source, split, block_deg)
    path = collection_file(path) or Path(path)
    kind = stac_kind(path) or "collection"
    seen: dict[str, str] = {}
    images: dict[str, str] = {}
    entries: list[_Entry] = []
    with GdalHeaders() as gdal:       # each item made into its entry as it is read: no pystac Item kept
        for item, base in progress_bar(_read_items(path), desc="checking", unit="item", enabled=progress):
            entry = _entry(item, base, path, source, gdal)
            if entry.item_id in seen:
                raise WorkbenchError(f"{entry.where}: item id {entry.item_id} appears twice in {path} "
                                     f"(also {seen[entry.item_id]}); nothing imported")
            seen[entry.item_id] = entry.where
            if entry.tile.path in images:
                raise WorkbenchError(f"{entry.where}: its image {entry.tile.path} is also the image of "
                                     f"{images[entry.tile.path]}; a tile is one row, nothing imported")
            images[entry.tile.path] = entry.where
            entries.append(entry)
    result = StacImport(path=path, kind=kind, found=len(entries))
    known = catalog.existing_paths([e.tile.path for e in entries])   # resolved, as the tiles' paths are
    todo = [e for e in entries if e.tile.path not in known]
    result.already = len(entries) - len(todo)
    if not todo:
        return result
    _measure_water(todo)
    _give_splits(todo, split, block_deg, result)
    with catalog.transaction():               # the rows and their parent links commit as one
        ids = catalog.add_tiles([e.tile for e in todo])
        row_of = dict(zip((e.item_id for e in todo), ids))
        links = [(row_of[e.item_id], {"parent_id": row_of[e.parent]}) for e in todo if e.parent in row_of]
        if links:
            catalog.update_many(links)
    for e, tid in zip(todo, ids):
        e.tile.id = tid
        if e.parent in row_of:
            e.tile.parent_id = row_of[e.parent]
    result.added = [e.tile for e in todo]
    result.unlinked = sum(1 for e in todo if e.parent is not None and e.parent not in row_of)
    return result


# ---- reading ------------------------------------------------------------------------------------

def _read_items(path: Path) -> Iterator[tuple[Any, Path]]:
    """Every item with the folder its relative hrefs start from, one at a time (an import of a
    million items holds their entries, not their pystac Items): the links of the catalog and its
    children followed one by one, so a bad item is named with what pystac says is wrong with it;
    a stac-geoparquet file's rows (hrefs relative to the file's folder)."""
    if path.suffix.lower() in PARQUET and path.is_file():
        from workbench.data.geoparquet_export import read_items

        rows = read_items(path)
        rows.reverse()
        for i in range(len(rows)):          # each row's dict let go once its item is made
            yield _item(rows.pop(), None, f"{path} row {i}"), path.parent
        return
    d = _json(path, path)
    if isinstance(d, dict) and d.get("type") == "FeatureCollection":
        features = d.get("features")
        if not isinstance(features, list):
            raise WorkbenchError(f"{path}: an item collection without a \"features\" list")
        for i, f in enumerate(features):
            yield _item(f, None, f"{path} feature {i}"), path.parent
        return
    yield from _walk(_catalog(d, path.absolute()), path, set())


def _walk(cat, top: Path, seen: set[str]) -> Iterator[tuple[Any, Path]]:
    """The items of ``cat`` and of every catalog below it (each file once)."""
    for link in cat.get_links("item"):
        href = link.get_absolute_href()
        if href in seen:
            continue
        seen.add(href)
        yield _item(_json(Path(href), top), href, href), Path(href).parent
    for link in cat.get_links("child"):
        href = link.get_absolute_href()
        if href not in seen:
            seen.add(href)
            yield from _walk(_catalog(_json(Path(href), top), Path(href)), top, seen)


def _json(path: Path, top: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WorkbenchError(f"{path}: no such file" if path == top else
                             f"{top}: links to {path}, which does not exist; nothing imported") from None
    except IsADirectoryError:
        raise WorkbenchError(f"{path}: a folder, not a STAC JSON file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path}: not JSON ({exc})") from None
    except RecursionError:
        raise WorkbenchError(f"{path}: nested too deeply to be a STAC file") from None


def _catalog(d: Any, href: Path):
    import pystac

    if not isinstance(d, dict) or d.get("type") not in ("Catalog", "Collection"):
        kind = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise WorkbenchError(f"{href}: not a STAC catalog or collection (its type is {kind!r})")
    cls = pystac.Collection if d["type"] == "Collection" else pystac.Catalog
    return _parsed(lambda: cls.from_dict(d, href=str(href), migrate=True, preserve_dict=False), str(href),
                   d["type"].lower())


def _item(d: Any, href: str | None, where: str):
    import pystac

    if not isinstance(d, dict) or d.get("type") != "Feature":
        kind = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise WorkbenchError(f"{where}: not a STAC item (its type is {kind!r}, an item's is \"Feature\")")
    migrate = _needs_migration(d)
    return _parsed(lambda: pystac.Item.from_dict(d, href=href, migrate=migrate, preserve_dict=False), where, "item")


def _needs_migration(d: dict) -> bool:
    """pystac's migration (a deep copy, then each extension brought to its latest version) is two
    thirds of reading an item; an item of this STAC version whose extensions are the ones an
    export writes has nothing to migrate. (One without properties goes through it: pystac's
    migration is what names the missing field.)"""
    extensions = d.get("stac_extensions")
    return not (d.get("stac_version") == STAC_VERSION and isinstance(d.get("properties"), dict)
                and isinstance(extensions, list) and all(e in (EO_SCHEMA, PROJ_SCHEMA) for e in extensions))


def _parsed(make, where: str, what: str):
    """pystac's object, or one line naming the file and pystac's reason."""
    import pystac

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # deprecation notes on old extension versions
            return make()
    except (pystac.STACError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        if isinstance(exc, KeyError):
            reason = f"no {reason}"
        raise WorkbenchError(f"{where}: not a valid STAC {what} ({reason or type(exc).__name__})") from None


def _entry(item, base: Path, collection: Path, source: str | None, gdal) -> _Entry:
    """One item checked and turned into a tile (nothing written)."""
    from workbench.data.catalog import SOURCES

    href = item.get_self_href()
    where = f"{href} (item {item.id})" if href else f"{collection} item {item.id}"
    props = item.properties or {}
    ours = f"{PREFIX}source" in props
    tile, header, image_key = _files(item, base, where, gdal)
    tile.source = source or "folder"
    _standard_fields(tile, item, header, image_key, ours, where)
    parent = None
    if ours:
        _workbench_fields(tile, props, where)
        tile.source = source or tile.source
        parent = props.get(f"{PREFIX}parent")
        if parent is not None and not isinstance(parent, str):
            raise WorkbenchError(f"{where}: {PREFIX}parent {parent!r} is not an item id")
    else:
        tile.extra = {"imported_from": str(collection.resolve()), "stac_item": item.id}
    if tile.source not in SOURCES:
        raise WorkbenchError(f"{where}: {PREFIX}source {tile.source!r} is not a catalog source "
                             f"({', '.join(SOURCES)})")
    return _Entry(item_id=item.id, where=where, tile=tile, parent=parent,
                  has_split=ours and f"{PREFIX}split" in props, measure_water=not ours and tile.mask_path is not None)


def _measure_water(entries: list[_Entry]) -> None:
    """The water fraction and label of each foreign item's mask (a read of the whole mask: done
    only for the items that will be added, not for those a re-import skips)."""
    from workbench.data.sources.folder import label_of, water_fraction

    for e in entries:
        if e.measure_water:
            e.tile.water_fraction = water_fraction(e.tile.mask_path)
            e.tile.label = label_of(e.tile.water_fraction) if e.tile.water_fraction is not None else None


class _Header:
    """The image's GDAL header, read when a field the item leaves out needs it (``.info``)."""

    def __init__(self, path: Path, gdal) -> None:
        self.path, self._gdal = path, gdal

    @cached_property
    def info(self):
        return self._gdal.read_info(self.path)


def _files(item, base: Path, where: str, gdal):
    """The tile of the item's image (and mask, checked on its grid), the image's header, its asset key.

    Both files' grids come from their TIFF tags (:mod:`workbench.data.tiff_grid`); GDAL opens a
    file only where they do not give it plainly, or where the two grids differ (GDAL then says
    whether they do, and how). An image whose tags do not parse is opened by GDAL here, so a file
    that is not a raster is refused as before, even when the item says all the header would."""
    from workbench.data import geotiff
    from workbench.data.tiff_grid import read_grid

    image_key, mask_key = _asset_keys(item, where)
    image = _local_file(item.assets[image_key], image_key, base, where)
    mask = _local_file(item.assets[mask_key], mask_key, base, where) if mask_key else None
    header = _Header(image, gdal)
    grid = read_grid(image)
    if grid is None:
        header.info                                  # noqa: B018 -- GDAL reads it now, or says why not
    if mask is not None:
        mask_grid = read_grid(mask) if grid is not None else None
        if mask_grid is None or mask_grid != grid:
            why = geotiff.same_grid(header.info, gdal.read_info(mask))
            if why:
                raise WorkbenchError(f"{where}: its mask {mask} is not on its image's grid ({why})")
    return Tile(path=str(image), mask_path=str(mask) if mask else None, source="folder"), header, image_key


def _standard_fields(tile: Tile, item, header: _Header, image_key: str, ours: bool, where: str) -> None:
    """Place, CRS, shape, gsd, bands, date and cloud cover from STAC's own fields, else the header."""
    props = item.properties or {}
    _place(tile, item, header, where)
    tile.crs = _crs(props, where) or header.info.crs
    shape = props.get("proj:shape")
    if shape is not None:
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) and v > 0 for v in shape)):
            raise WorkbenchError(f"{where}: proj:shape {shape!r} is not [rows, columns]")
        tile.height, tile.width = int(shape[0]), int(shape[1])
    else:
        tile.height, tile.width = header.info.height, header.info.width
    gsd = _number(props.get("gsd"), where, "gsd")
    tile.gsd = gsd if gsd is not None else (header.info.gsd_metres() if header.info.crs else None)
    tile.bands = _band_names(item.assets[image_key], props, where) or list(header.info.band_names)
    tile.date = _date(item, ours, where)
    cloud = _number(props.get("eo:cloud_cover"), where, "eo:cloud_cover")
    if cloud is not None and not 0 <= cloud <= 100:
        raise WorkbenchError(f"{where}: eo:cloud_cover {cloud:g} is not a percentage (0..100)")
    tile.cloud_cover = None if cloud is None else cloud / 100.0


def _asset_keys(item, where: str) -> tuple[str, str | None]:
    """The image asset (``image``, else the one raster with role ``data``) and the mask's, if any."""
    assets = item.assets or {}

    def raster(a) -> bool:
        media = (a.media_type or "").lower()
        return "tiff" in media or (not media and a.href.lower().endswith((".tif", ".tiff")))

    if "image" in assets:
        image = "image"
    else:
        data = [k for k, a in assets.items() if "data" in (a.roles or []) and raster(a)]
        if len(data) != 1:
            listed = ", ".join(assets) or "none"
            raise WorkbenchError(f"{where}: no image asset (an asset \"image\", or one GeoTIFF with role data; "
                                 f"assets: {listed}); a tile is one raster file -- a scene with one asset per "
                                 "band is imported as ITEM.json and cut into chips")
        image = data[0]
    if "mask" in assets:
        return image, "mask"
    labels = [k for k, a in assets.items() if k != image and "labels" in (a.roles or []) and raster(a)]
    return image, labels[0] if len(labels) == 1 else None


def _local_file(asset, key: str, base: Path, where: str) -> Path:
    href = asset.href
    if "://" in href:
        url = urlparse(href)
        if url.scheme != "file":
            raise WorkbenchError(f"{where}: asset {key} is {href}, not a local file; catalog tiles are local "
                                 "files (download it, or import the item as a scene)")
        href = unquote(url.path)
    p = Path(href)
    if not p.is_absolute():
        p = base / p
    p = Path(p).resolve()
    if not p.is_file():
        raise WorkbenchError(f"{where}: asset {key} points at {p}, which does not exist")
    return p


def _place(tile: Tile, item, header: _Header, where: str) -> None:
    """Lon/lat bounds from the item's bbox (else the file's header), the centre between them."""
    bbox = item.bbox
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) in (4, 6) and all(_is_number(v) for v in bbox)):
            raise WorkbenchError(f"{where}: bbox {bbox!r} is not [west, south, east, north]")
        w, s, e, n = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    elif header.info.crs:
        w, s, e, n = header.info.lonlat_bounds()
    else:
        return
    w, s, e, n = (float(v) for v in (w, s, e, n))
    if not (-180.5 <= w <= e <= 180.5 and -90.5 <= s <= n <= 90.5):
        raise WorkbenchError(f"{where}: bbox {[w, s, e, n]} is not lon/lat bounds on the Earth")
    tile.west, tile.south, tile.east, tile.north = w, s, e, n
    tile.lon, tile.lat = (w + e) / 2, (s + n) / 2


def _crs(props: Mapping, where: str) -> str | None:
    """The CRS as the catalog writes it: ``workbench:crs``, ``proj:code``, ``proj:epsg``, WKT2, PROJJSON."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if isinstance(props.get(f"{PREFIX}crs"), str):
        return props[f"{PREFIX}crs"]
    code = props.get("proj:code")
    if isinstance(code, str) and code:
        return code
    epsg = props.get("proj:epsg")
    if epsg is not None:
        if not _is_int(epsg):
            raise WorkbenchError(f"{where}: proj:epsg {epsg!r} is not an EPSG code")
        return f"EPSG:{int(epsg)}"
    for key in ("proj:wkt2", "proj:projjson"):
        value = props.get(key)
        if value:
            try:
                return CRS.from_user_input(json.dumps(value) if isinstance(value, dict) else value).to_string()
            except CRSError as exc:
                raise WorkbenchError(f"{where}: {key} is not a CRS ({str(exc)[:120]})") from None
    return None


def _band_names(asset, props: Mapping, where: str) -> list[str]:
    fields = asset.extra_fields or {}
    for listed in (fields.get("eo:bands"), fields.get("bands"), props.get("eo:bands"), props.get("bands")):
        if listed is None:
            continue
        if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
            raise WorkbenchError(f"{where}: its bands {listed!r} are not a list of objects")
        names = [b.get("name") or b.get("common_name") or b.get("eo:common_name") for b in listed]
        if all(isinstance(n, str) and n for n in names):
            return names
    return []


def _date(item, ours: bool, where: str) -> str | None:
    """The tile's date: ``datetime``'s day; for another tool's item with a range, its start's day.
    A workbench item with a null datetime had no date (its range only says "before export")."""
    props = item.properties or {}
    if ours and isinstance(props.get(f"{PREFIX}date"), str):
        return props[f"{PREFIX}date"]
    when = item.datetime
    if when is None and not ours:
        when = item.common_metadata.start_datetime
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise WorkbenchError(f"{where}: datetime {when!r} is not a date")
    return when.date().isoformat()


def _workbench_fields(tile: Tile, props: Mapping, where: str) -> None:
    for name in FIELDS:
        key = f"{PREFIX}{name}"
        if key not in props:
            continue
        value = props[key]
        if value is None:
            if name != "source":
                setattr(tile, name, {} if name == "extra" else None)
                continue
        if name in _TEXT and not isinstance(value, str):
            raise WorkbenchError(f"{where}: {key} {value!r} is not text")
        if name in _NUMBER:
            value = _number(value, where, key)
        if name == "extra" and not isinstance(value, dict):
            raise WorkbenchError(f"{where}: {key} is not a JSON object")
        setattr(tile, name, value)


def _give_splits(entries: list[_Entry], split: str, block_deg: float | None, result: StacImport) -> None:
    """``--split S`` for all; ``auto``: items without a workbench split get their ground block's."""
    from workbench.data.splits import ground_splits

    if split != "auto":
        for e in entries:
            e.tile.split = split
        return
    todo = [e for e in entries if not e.has_split]
    if not todo:
        return
    points = [(e.tile.lon, e.tile.lat) if e.tile.lon is not None else None for e in todo]
    splits, blocks, size = ground_splits(points, block_deg=block_deg,
                                         fallback_keys=[Path(e.tile.path).name for e in todo])
    result.block_deg = size
    result.unplaced = sum(p is None for p in points)
    for e, s, b in zip(todo, splits, blocks):
        e.tile.split = s
        if b is not None:
            e.tile.extra.update(block_deg=size, block=list(b))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(value: Any, where: str, what: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise WorkbenchError(f"{where}: {what} {value!r} is not a number")
    return float(value)
