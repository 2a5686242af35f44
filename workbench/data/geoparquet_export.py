"""The catalog's tiles as one stac-geoparquet file: a row per STAC item, for DuckDB, GeoPandas,
stac-geoparquet and any Parquet reader.

    done = export_parquet(catalog, "exports/delta.parquet", split="test")

Why: a STAC export of a million tiles is a million JSON files; one Parquet file of the same
items is read whole, or by column, in seconds, and queried with SQL (``SELECT id FROM
'delta.parquet' WHERE "workbench:label" = 'coast'``).

The rows are the items ``data export-stac`` writes (:func:`workbench.data.stac_export.item_dict`:
the same ids, properties and assets), laid out as stac-geoparquet does (its spec, and its
library's ``to_parquet``):

- ``type``, ``stac_version``, ``stac_extensions``, ``id``, ``collection``;
- ``geometry``: the footprint as ISO WKB (null for a tile without a CRS), with the GeoParquet
  1.1.0 ``geo`` metadata (primary column ``geometry``, encoding WKB, CRS OGC:CRS84 as PROJJSON,
  the extent as ``bbox``, the ``bbox`` column as its covering);
- ``bbox``: a struct of ``xmin``, ``ymin``, ``xmax``, ``ymax`` (float64: the catalog's values
  exactly; stac-geoparquet rounds them outwards to float32 by default);
- every property as a top-level column of its own type: ``datetime``, ``start_datetime`` and
  ``end_datetime`` as UTC timestamps, ``proj:shape`` / ``proj:transform`` / ``proj:bbox`` as
  lists, the ``workbench:*`` fields as text or float64, and ``workbench:extra`` as its JSON
  text (free-form: one row's keys and types need not be another's, which a Parquet struct
  column cannot hold);
- ``assets``: a struct of ``image`` (href, type, title, ``eo:bands``, roles) and ``mask``
  (null where the tile has none); ``links``: empty (an item's links name JSON files that do
  not exist beside a Parquet file; the parent is ``workbench:parent``).

The collection (extent, license, summaries, no item links) is in the file's metadata under
``stac-geoparquet`` (``{"version": "1.0.0", "collections": {id: collection}}``), as the
library writes it. The schema is fixed, not inferred, so two exports of one workbench always
concatenate. The file is written under a temporary name, checked and renamed; an existing
file is refused (as ``export-stac`` refuses a non-empty folder). Needs pyarrow
(``pip install 'satellite-workbench[parquet]'``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.data.catalog import Catalog
from workbench.data.stac_export import (
    FIELDS,
    PREFIX,
    export_items,
    parse_time,
)
from workbench.data.stac_export import (
    collection_id as make_collection_id,
)
from workbench.errors import WorkbenchError

GEOPARQUET_VERSION = "1.1.0"
STAC_GEOPARQUET_VERSION = "1.0.0"
STAC_GEOPARQUET_KEY = b"stac-geoparquet"
INSTALL = "pip install 'satellite-workbench[parquet]' (or: pip install pyarrow)"
TIMES = ("datetime", "start_datetime", "end_datetime")
_NUMBERS = {"pred_score", "water_fraction", "cloud_cover", "lon", "lat"}


@dataclass
class ParquetExport:
    """What ``export_parquet`` wrote: the file, its collection id, rows, rows with a mask, the extent."""

    path: Path
    collection: str
    items: int
    masks: int
    bbox: list[float]
    interval: list[str | None]


def require_pyarrow():
    """pyarrow, or the one line that says how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise WorkbenchError(f"a GeoParquet export needs pyarrow, which is not installed: {INSTALL}") from None
    return pyarrow


def export_parquet(catalog: Catalog, out: str | Path, *, collection_id: str | None = None,
                   description: str | None = None, license: str = "other", relative_assets: bool = False,
                   progress: bool = False, **filters: Any) -> ParquetExport:
    """Write the tiles ``filters`` select (``Catalog.query`` keywords) as the stac-geoparquet file
    ``out`` (see the module docstring). Asset hrefs are absolute paths, or with ``relative_assets``
    relative to the file's folder. Refused with one line, nothing written: pyarrow is missing,
    ``out`` exists, a bad collection id, no tile matches, a tile's file is missing or unreadable."""
    require_pyarrow()
    import pyarrow.parquet as pq

    from workbench.files import check_can_create, replacing

    out = Path(out).absolute()
    if out.exists() or out.is_symlink():
        raise WorkbenchError(f"{out}: exists; a GeoParquet export is written to a new file, never over one")
    check_can_create(out, "GeoParquet file", folder=False)
    cid = make_collection_id(out.with_suffix("") if out.suffix else out, collection_id)
    relative_to = out.parent.resolve() if relative_assets else None
    with replacing(out, keep_suffix=True) as tmp:
        writer: list = []            # the ParquetWriter, opened with the first chunk's schema

        def write(items: list[dict]) -> None:
            table = items_table(items)
            if not writer:
                writer.append(pq.ParquetWriter(tmp, table.schema, compression="zstd", store_schema=False))
            writer[0].write_table(table)

        try:
            coll, n, masks = export_items(catalog, cid, filters, relative_to, progress, write,
                                          description=description, license=license, linked=False)
            coll["links"] = []                            # no JSON files beside the Parquet one
            bbox, interval = coll["extent"]["spatial"]["bbox"][0], coll["extent"]["temporal"]["interval"][0]
            writer[0].add_key_value_metadata(parquet_metadata(bbox, {cid: coll}))   # known once all are written
        finally:
            for w in writer:
                w.close()
        written = pq.read_metadata(tmp)
        if written.num_rows != n or b"geo" not in (written.metadata or {}) or \
                not pq.read_schema(tmp).remove_metadata().equals(schema()):
            raise WorkbenchError(f"{out}: the written file does not read back ({written.num_rows} rows of "
                                 f"{n}); nothing was written")
    return ParquetExport(path=out, collection=cid, items=n, masks=masks, bbox=bbox, interval=interval)


def schema():
    """The Arrow schema of the rows (fixed, so that exports concatenate)."""
    import pyarrow as pa

    text, number, strings = pa.string(), pa.float64(), pa.list_(pa.string())
    when = pa.timestamp("us", tz="UTC")
    band = pa.struct([("name", text), ("common_name", text)])
    image = pa.struct([("href", text), ("type", text), ("title", text), ("eo:bands", pa.list_(band)),
                       ("roles", strings)])
    mask = pa.struct([("href", text), ("type", text), ("title", text), ("roles", strings)])
    link = pa.struct([("rel", text), ("href", text), ("type", text), ("title", text)])
    fields = [pa.field("type", text, nullable=False), pa.field("stac_version", text, nullable=False),
              pa.field("stac_extensions", strings, nullable=False), pa.field("id", text, nullable=False),
              pa.field("geometry", pa.binary()),
              pa.field("bbox", pa.struct([(k, number) for k in ("xmin", "ymin", "xmax", "ymax")])),
              pa.field("links", pa.list_(link), nullable=False),
              pa.field("assets", pa.struct([("image", image), ("mask", mask)]), nullable=False),
              pa.field("collection", text, nullable=False)]
    fields += [pa.field(name, when) for name in TIMES]
    fields += [pa.field(f"{PREFIX}{name}", number if name in _NUMBERS else text) for name in FIELDS]
    fields += [pa.field(f"{PREFIX}{name}", text) for name in ("parent", "date", "crs")]
    fields += [pa.field("gsd", number), pa.field("eo:cloud_cover", number), pa.field("proj:code", text),
               pa.field("proj:wkt2", text), pa.field("proj:shape", pa.list_(pa.int64())),
               pa.field("proj:transform", pa.list_(number)), pa.field("proj:bbox", pa.list_(number))]
    return pa.schema(fields)


def items_table(items: Sequence[dict]):
    """STAC item dicts (as ``item_dict`` makes them) as an Arrow table of :func:`schema`."""
    import pyarrow as pa

    sch = schema()
    props = [d["properties"] for d in items]
    columns: dict[str, list] = {
        "type": [d["type"] for d in items], "stac_version": [d["stac_version"] for d in items],
        "stac_extensions": [d["stac_extensions"] for d in items], "id": [d["id"] for d in items],
        "geometry": [polygon_wkb(d["bbox"]) if d.get("geometry") else None for d in items],
        "bbox": [dict(zip(("xmin", "ymin", "xmax", "ymax"), d["bbox"])) if "bbox" in d else None for d in items],
        "links": [[] for _ in items], "assets": [d["assets"] for d in items],
        "collection": [d["collection"] for d in items],
    }
    for name in TIMES:
        columns[name] = [None if p.get(name) is None else parse_time(p[name]) for p in props]
    extra = f"{PREFIX}extra"
    for field in sch:
        if field.name not in columns:
            columns[field.name] = [p.get(field.name) for p in props]
    columns[extra] = [None if p.get(extra) is None else json.dumps(p[extra], sort_keys=True) for p in props]
    unknown = {k for p in props for k in p} - set(sch.names)
    if unknown:                                      # a property item_dict gained without a column here
        raise AssertionError(f"properties without a GeoParquet column: {sorted(unknown)}")
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in sch}, schema=sch)


def parquet_metadata(bbox: list[float], collections: dict[str, dict]) -> dict[bytes, bytes]:
    """The file's ``geo`` (GeoParquet 1.1.0) and ``stac-geoparquet`` metadata."""
    from rasterio.crs import CRS

    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
           "columns": {"geometry": {
               "encoding": "WKB", "geometry_types": ["Polygon"],
               "crs": CRS.from_user_input("OGC:CRS84").to_dict(projjson=True), "edges": "planar", "bbox": bbox,
               "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}
    stac = {"version": STAC_GEOPARQUET_VERSION, "collections": collections}
    return {b"geo": json.dumps(geo).encode(), STAC_GEOPARQUET_KEY: json.dumps(stac).encode()}


def polygon_wkb(bbox: Sequence[float]) -> bytes:
    """The footprint ring of ``item_dict`` (west-south, east-south, east-north, west-north, closed)
    as little-endian ISO WKB: the byte order flag, type 3 (Polygon), one ring of five points."""
    w, s, e, n = bbox
    return struct.pack("<BIII10d", 1, 3, 1, 5, w, s, e, s, e, n, w, n, w, s)


# ---- reading back: a row as the STAC item it was --------------------------------------------------

TOP_LEVEL = ("type", "stac_version", "stac_extensions", "id", "geometry", "bbox", "links", "assets", "collection")


def read_items(path: Path) -> list[dict]:
    """The rows of a stac-geoparquet file as STAC item dicts (:func:`row_item`); a file that is not
    Parquet, or not GeoParquet with an ``id`` column, is one line naming it."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: not a readable Parquet file ({reason})") from None
    if b"geo" not in (table.schema.metadata or {}) or "id" not in table.column_names:
        raise WorkbenchError(f"{path}: not a stac-geoparquet file (no GeoParquet \"geo\" metadata or no id column)")
    return [row_item(row) for row in table.to_pylist()]


def row_item(row: dict) -> dict:
    """One stac-geoparquet row (``pyarrow`` ``to_pylist``) as the STAC item JSON it stands for:
    the property columns back under ``properties`` (null ones left out, as JSON leaves out what
    an item does not have, but for ``datetime`` and the ``workbench:*`` fields, which an export
    writes null: a null ``workbench:split`` is a tile without a split, not one to give a split),
    timestamps as RFC 3339 text, WKB as GeoJSON, the bbox struct as a list, ``workbench:extra``
    parsed from its JSON text."""
    props = {k: _json(v) for k, v in row.items()
             if k not in TOP_LEVEL and (v is not None or k == "datetime" or k.startswith(PREFIX))}
    extra = props.get(f"{PREFIX}extra")
    if isinstance(extra, str):
        try:
            props[f"{PREFIX}extra"] = json.loads(extra)
        except ValueError:
            pass                                     # left as text: the import says it is not an object
    box = row.get("bbox")
    d = {"type": row.get("type") or "Feature", "stac_version": row.get("stac_version"),
         "stac_extensions": row.get("stac_extensions") or [], "id": row.get("id"),
         "geometry": _geojson(row.get("geometry"))}
    if isinstance(box, dict):
        keys = ("xmin", "ymin", "zmin", "xmax", "ymax", "zmax") if box.get("zmin") is not None else \
            ("xmin", "ymin", "xmax", "ymax")
        d["bbox"] = [box.get(k) for k in keys]
    elif box is not None:
        d["bbox"] = list(box)
    d["properties"] = props
    d["links"] = [_json(link) for link in row.get("links") or []]
    d["assets"] = {k: _json(v) for k, v in (row.get("assets") or {}).items() if v is not None}
    if row.get("collection") is not None:
        d["collection"] = row["collection"]
    return d


def _json(value: Any) -> Any:
    """An Arrow value as JSON: structs without their null fields, timestamps as text, WKB as GeoJSON."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, bytes):
        return _geojson(value)
    return value


def _geojson(wkb: bytes | None) -> dict | None:
    if wkb is None:
        return None
    import shapely

    try:
        return shapely.geometry.mapping(shapely.from_wkb(wkb))
    except shapely.errors.ShapelyError:
        return None                                  # pystac then says the item has no valid geometry
