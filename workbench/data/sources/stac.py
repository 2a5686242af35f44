"""STAC items as scenes: one asset per band (Cloud-Optimised GeoTIFFs, local or remote), read with pystac.

Why a reader of its own: a STAC item is how COG archives (Earth Search, Planetary Computer,
a user's own catalog) hand out a Sentinel-2 scene, one file per band at its native
resolution. A run needs those files by *band name*, each with the radiometry the item
declares, so the item is turned into the same :class:`~workbench.data.scene.SceneInput`
as a SAFE folder and :class:`~workbench.data.scene.Stack` brings the bands onto one grid.

What is read (STAC 1.0 and 1.1 alike, from the asset's own fields, which pystac keeps as
they are written):

- which band an asset holds: ``bands[].name`` / ``bands[].eo:common_name`` (STAC 1.1), else
  ``eo:bands[].name`` / ``common_name`` (eo extension v1; an integer there indexes the item's
  ``eo:bands``, as STAC 0.9 did), else the asset key (``B02``, ``blue``, ``nir``, ``B8A``,
  ``SCL``), all through :func:`workbench.data.bands.canonical`. In a Sentinel-2 item a common
  name becomes its Sentinel-2 band (``nir`` -> ``B08``), so the scene matches runs trained on
  SAFE folders or EE exports. A multi-band asset gives one band per entry.
- which assets are skipped: roles ``thumbnail``, ``overview``, ``visual`` (the 8-bit true
  colour image), ``metadata``; media types that are not rasters (PNG, JPEG, XML, JSON, HTML);
  assets naming no band (``aot``, ``wvp``, ``granule_metadata``). When two assets hold the same
  band (Earth Search's ``blue`` COG and ``blue-jp2``) the finest, then the COG, then the first wins.
- radiometry: ``raster:bands[].scale``/``offset`` (or STAC 1.1 ``raster:scale``/``raster:offset``)
  as ``Radiometry``; a scale 1 and offset 0 declares nothing (GDAL's rule). Nothing is
  inferred from ``s2:processing_baseline``: catalogs disagree with their own files about the
  +1000 offset, and an undeclared offset is caught from the values by
  :func:`workbench.data.radiometry.check_values` instead of guessed here.
- nodata: ``raster:bands[].nodata`` / ``bands[].nodata`` / the asset's ``nodata``, else the
  local file's header; in a Sentinel-2 item DN 0 is no data, as in L2A products.
- resolution: ``raster:bands[].spatial_resolution``, the asset's ``proj:transform`` or ``gsd``,
  the local file's header, the Sentinel-2 native resolution of the band, the item's ``gsd``.
- the item: date from ``datetime`` (or ``start_datetime``), scene id from ``id``,
  ``eo:cloud_cover`` (percent) as 0..1, scalar properties as ``tags``.

Hrefs: relative ones are made absolute against the item's own location; ``http(s)://``
becomes ``/vsicurl/<url>``, ``s3://`` ``/vsis3/``, ``gs://`` ``/vsigs/`` (rasterio reads
them through GDAL, nothing is downloaded here); a local file that does not exist is an error
naming the asset and the file. An item URL is fetched by pystac (``/vsicurl/<url>`` is
accepted too).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from workbench.data import bands as band_names
from workbench.data.radiometry import Radiometry
from workbench.data.scene import BandSource, SceneInput
from workbench.errors import WorkbenchError

SKIP_ROLES = frozenset({"thumbnail", "overview", "visual", "metadata", "preview"})
_NOT_RASTER_TYPES = ("image/png", "image/jpeg", "image/webp", "application/xml", "text/", "application/json",
                     "application/geo+json", "text/html")
_NOT_RASTER_EXT = (".png", ".jpg", ".jpeg", ".webp", ".xml", ".json", ".html", ".txt", ".safe")
_REMOTE = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
# Sentinel-2 band by common name (each common name is one band there)
_S2_OF_COMMON = {band_names.COMMON_OF[b]: b for b in band_names.SENTINEL2}


def read_item(path_or_url: str) -> SceneInput:
    """The bands of a STAC item (see the module docstring); SCL as ``scene.scl``.

    Refused with one line naming the item: not JSON, not a STAC item (a collection, catalog or
    item collection is named as such), no asset naming a band, an asset whose local file is
    missing, raster fields that are not numbers."""
    base, item_id = split_item_ref(str(path_or_url))
    href = _item_href(base)
    if item_id:
        d = _item_in_collection(href, item_id, str(path_or_url))
    else:
        d = _read_json(href, str(path_or_url))
    _check_is_item(d, str(path_or_url))
    item = _parse_item(d, href, str(path_or_url))
    where = str(path_or_url)
    props = item.properties or {}
    sentinel2 = _is_sentinel2(props)
    item_eo = props.get("eo:bands") if isinstance(props.get("eo:bands"), list) else []
    found: dict[str, tuple[tuple, BandSource]] = {}
    considered: list[str] = []
    for order, (key, asset) in enumerate(item.assets.items()):
        considered.append(key)
        if not _is_raster(asset):
            continue
        fields = asset.extra_fields or {}
        entries = _band_entries(fields, item_eo)
        names = [_band_name(e, key if len(entries) == 1 else None, sentinel2) for e in entries]
        if not any(names):
            continue
        path = _raster_path(asset, key, where)
        local = not path.startswith("/vsi")
        header = _header(path) if local else None
        for i, (entry, name) in enumerate(zip(entries, names)):
            if not name:
                continue
            nodata = _nodata(entry, fields, where, key)
            if nodata is None and header is not None:
                nodata = header["nodata"]
            if nodata is None and sentinel2:
                nodata = 0.0
            res = _resolution(entry, fields, where, key)
            if res is None and header is not None:
                res = header["resolution"]
            if res is None and sentinel2:
                res = band_names.SENTINEL2_RESOLUTION.get(name)
            if res is None:
                res = _number(item.properties.get("gsd"), where, "the item's gsd")
            radiometry = None if name == band_names.SCL else _radiometry(entry, where, key)
            desc = entry["eo"].get("name") or entry["b11"].get("name") or key
            source = BandSource(name=name, path=path, index=i + 1, radiometry=radiometry, nodata=nodata,
                                description=str(desc), resolution=res)
            rank = (res if res is not None else math.inf, _format_rank(asset), order, i)
            if name not in found or rank < found[name][0]:
                found[name] = (rank, source)
    scl = found.pop(band_names.SCL, (None, None))[1]
    if not found:
        listed = ", ".join(considered) if considered else "none"
        raise WorkbenchError(f"{where}: a STAC item without the assets of its bands: no asset names a band "
                             f"(by eo:bands, bands or its key; assets: {listed})")
    # sensor bands in their sensor's order (an archive's asset order is alphabetical or arbitrary),
    # any other band where the item lists it
    order_of = list(band_names.SENTINEL2) + list(band_names.LANDSAT)
    chosen = sorted(found.values(), key=lambda rs: (order_of.index(rs[1].name) if rs[1].name in order_of
                                                   else len(order_of), rs[0][2], rs[0][3]))
    return SceneInput(path=where, kind="stac", bands=[b for _, b in chosen], date=_date(item),
                      scene_id=item.id, scl=scl, tags=_tags(props, href), cloud_cover=_cloud(props))


# ---- reading the item ---------------------------------------------------------------------------

def _item_href(text: str) -> str:
    """What pystac reads: a URL as given (``/vsicurl/`` taken off), a local path made absolute."""
    if text.startswith("/vsicurl/"):
        return text[len("/vsicurl/"):]
    if text.startswith("/vsi"):
        raise WorkbenchError(f"{text}: a STAC item is read by pystac, which cannot open {text.split('/')[1]} "
                             "paths; give its http(s) URL or a local copy")
    if "://" in text:
        scheme = urlparse(text).scheme
        if scheme == "file":
            return unquote(urlparse(text).path)
        if scheme not in ("http", "https"):
            raise WorkbenchError(f"{text}: a STAC item is read over http(s) or from a local file, not {scheme}://")
        return text
    return str(Path(text).absolute())


def _read_json(href: str, where: str) -> Any:
    import pystac

    try:
        if "://" not in href:             # pystac would take a '#' in the file's name for a URL fragment
            return json.loads(Path(href).read_text(encoding="utf-8"))
        return pystac.StacIO.default().read_json(href)
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise WorkbenchError(f"{where}: not JSON (not UTF-8 text)") from None
    except RecursionError:
        raise WorkbenchError(f"{where}: nested too deeply to be a STAC item") from None
    except FileNotFoundError:
        raise WorkbenchError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise WorkbenchError(f"{where}: a folder, not a STAC item JSON file") from None
    except Exception as exc:        # pystac wraps urllib's HTTPError / URLError in a bare Exception
        cause = exc.__cause__ or exc
        reason = getattr(cause, "reason", None) or getattr(cause, "strerror", None) or cause
        code = getattr(cause, "code", None)
        text = f"HTTP {code} {reason}" if isinstance(code, int) else str(reason)
        raise WorkbenchError(f"{where}: cannot be read ({text.strip()[:160]})") from None


def split_item_ref(text: str) -> tuple[str, str | None]:
    """``ITEMS.json#<id>`` -> (``ITEMS.json``, ``<id>``): an item of an item collection. Any
    other text -> (text, None), so a file whose own name holds ``#`` is read as it is."""
    head, sep, item_id = text.partition("#")
    if not sep or not head.lower().endswith(".json") or Path(text).exists():
        return text, None
    return head, item_id


def _item_in_collection(href: str, item_id: str, where: str) -> Any:
    """``ITEMS.json#<id>``: the item of that id inside an item collection (a STAC API search
    saved to one file), so each of its items is a scene without a file of its own. A batch
    reads each of its N items several times: a local file's features are indexed once (until
    it changes), not parsed again per item."""
    features = _features_of(href, where)
    if features is None:
        raise WorkbenchError(f"{where}: #{item_id} names an item of an item collection, and this file is none")
    if item_id not in features:
        raise WorkbenchError(f"{where}: the item collection holds no item {item_id!r}")
    return copy.deepcopy(features[item_id])     # pystac takes the dict over (preserve_dict=False)


_FEATURES: dict[tuple, dict[str, Any] | None] = {}    # (href, mtime_ns, size) -> id -> feature


def _features_of(href: str, where: str) -> dict[str, Any] | None:
    """The features of the item collection at ``href`` by id (None: the file is not one);
    the first of an id wins, as a search through the list would find it."""
    try:
        st = Path(href).stat() if "://" not in href else None
    except OSError:
        st = None
    key = (href, st.st_mtime_ns, st.st_size) if st is not None else None
    if key is not None and key in _FEATURES:
        return _FEATURES[key]
    d = _read_json(href, where)
    features = d.get("features") if isinstance(d, dict) and d.get("type") == "FeatureCollection" else None
    index = None
    if isinstance(features, list):
        index = {}
        for f in features:
            if isinstance(f, dict) and isinstance(f.get("id"), str):
                index.setdefault(f["id"], f)
    if key is not None:
        if len(_FEATURES) >= 4:
            _FEATURES.clear()
        _FEATURES[key] = index
    return index


def _check_is_item(d: Any, where: str) -> None:
    if not isinstance(d, dict):
        raise WorkbenchError(f"{where}: not a STAC item (the JSON is a {type(d).__name__}, not an object)")
    kind = d.get("type")
    if kind == "Collection" or (kind is None and "extent" in d and "license" in d):
        raise WorkbenchError(f"{where}: a STAC collection ({d.get('id', '?')}), not an item; give one of its "
                             "items (a scene)")
    if kind == "Catalog" or (kind is None and "stac_version" in d and "links" in d and "assets" not in d):
        raise WorkbenchError(f"{where}: a STAC catalog ({d.get('id', '?')}), not an item; give one of its "
                             "items (a scene)")
    if kind == "FeatureCollection":
        n = len(d.get("features") or [])
        raise WorkbenchError(f"{where}: a STAC item collection ({n} items), not an item; give one of them "
                             "in a file of its own")
    if kind != "Feature":
        raise WorkbenchError(f"{where}: not a STAC item (its \"type\" is {kind!r}, an item's is \"Feature\")")
    if "stac_version" not in d:
        raise WorkbenchError(f"{where}: a GeoJSON feature, not a STAC item (no stac_version)")
    if not isinstance(d.get("assets"), dict):
        raise WorkbenchError(f"{where}: a STAC item without the assets of its bands: no \"assets\" at all")


def _parse_item(d: dict, href: str, where: str):
    import pystac

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # deprecation notes on old extension versions
            return pystac.Item.from_dict(d, href=href, migrate=True, preserve_dict=False)
    except (pystac.STACError, KeyError, TypeError, ValueError, AttributeError) as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{where}: not a valid STAC item ({msg})") from None


def _is_sentinel2(props: Mapping) -> bool:
    text = f"{props.get('constellation', '')} {props.get('platform', '')}".lower()
    return "sentinel-2" in text or "sentinel2" in text or any(str(k).startswith("s2:") for k in props)


# ---- assets -------------------------------------------------------------------------------------

def _is_raster(asset) -> bool:
    roles = {str(r).lower() for r in (asset.roles or [])}
    if roles & SKIP_ROLES:
        return False
    media = (asset.media_type or "").lower()
    if media and media.startswith(_NOT_RASTER_TYPES):
        return False
    path = urlparse(asset.href).path.lower() if "://" in asset.href else asset.href.lower()
    return media != "" or not path.endswith(_NOT_RASTER_EXT)


def _format_rank(asset) -> int:
    media = (asset.media_type or "").lower()
    if "cloud-optimized" in media:
        return 0
    return 1 if "tiff" in media or asset.href.lower().endswith((".tif", ".tiff")) else 2


def _band_entries(fields: Mapping, item_eo: list) -> list[dict]:
    """Per band of an asset: its STAC 1.1 ``bands`` entry, ``eo:bands`` entry and ``raster:bands`` entry."""
    def listed(key: str) -> list:
        v = fields.get(key)
        return v if isinstance(v, list) else []

    b11, raster = listed("bands"), listed("raster:bands")
    eo = [item_eo[e] if isinstance(e, int) and 0 <= e < len(item_eo) else e for e in listed("eo:bands")]
    n = max(len(b11), len(eo), len(raster), 1)

    def at(xs: list, i: int) -> dict:
        return xs[i] if i < len(xs) and isinstance(xs[i], dict) else {}

    return [{"b11": at(b11, i), "eo": at(eo, i), "raster": at(raster, i)} for i in range(n)]


def _band_name(entry: dict, key: str | None, sentinel2: bool) -> str | None:
    """Canonical band of one asset band, from its names first and the asset key last."""
    for text in (entry["b11"].get("name"), entry["eo"].get("name"), entry["b11"].get("eo:common_name"),
                 entry["eo"].get("common_name"), key):
        name = band_names.canonical(text) if isinstance(text, str) else None
        if name:
            return _S2_OF_COMMON.get(name, name) if sentinel2 else name
    return None


def _raster_path(asset, key: str, where: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if href.startswith("/vsi"):
        return href
    if "://" in href:
        url = urlparse(href)
        if url.scheme == "file":
            href = unquote(url.path)
        elif url.scheme in _REMOTE:
            rest = href if url.scheme in ("http", "https") else href.split("://", 1)[1]
            return _REMOTE[url.scheme] + rest
        else:
            return href                            # let GDAL say whether it reads it
    if not Path(href).is_file():
        raise WorkbenchError(f"{where}: asset {key} points at {href}, which does not exist")
    return href


def _header(path: str) -> dict | None:
    """nodata and pixel size of a local file (cheap: the header only); None when it does not open."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            return {"nodata": ds.nodata, "resolution": abs(ds.transform.a) if ds.transform else None}
    except RasterioError:
        return None


def _number(value: Any, where: str, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise WorkbenchError(f"{where}: {what} {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise WorkbenchError(f"{where}: {what} {value!r} is not a number") from None


def _nodata(entry: dict, fields: Mapping, where: str, key: str) -> float | None:
    for source, value in (("raster:bands nodata", entry["raster"].get("nodata")),
                          ("bands nodata", entry["b11"].get("nodata")), ("nodata", fields.get("nodata"))):
        if value is not None:
            if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
                return float(value)
            return _number(value, where, f"asset {key} {source}")
    return None


def _resolution(entry: dict, fields: Mapping, where: str, key: str) -> float | None:
    for source, value in (("raster:bands spatial_resolution", entry["raster"].get("spatial_resolution")),
                          ("bands raster:spatial_resolution", entry["b11"].get("raster:spatial_resolution"))):
        if value is not None:
            res = _number(value, where, f"asset {key} {source}")
            if res is not None and res > 0:
                return res
    transform = fields.get("proj:transform")
    if isinstance(transform, list) and len(transform) >= 6 and isinstance(transform[0], (int, float)):
        if transform[0]:
            return abs(float(transform[0]))
    for source, value in (("bands gsd", entry["b11"].get("gsd")), ("gsd", fields.get("gsd"))):
        if value is not None:
            return _number(value, where, f"asset {key} {source}")
    return None


def _radiometry(entry: dict, where: str, key: str) -> Radiometry | None:
    raster, b11 = entry["raster"], entry["b11"]
    scale = _number(raster.get("scale", b11.get("raster:scale")), where, f"asset {key} raster:bands scale")
    offset = _number(raster.get("offset", b11.get("raster:offset")), where, f"asset {key} raster:bands offset")
    if scale is None and offset is None:
        return None
    s = 1.0 if scale is None else scale
    o = 0.0 if offset is None else offset
    if (s, o) == (1.0, 0.0):
        return None
    if not (math.isfinite(s) and s > 0 and math.isfinite(o)):
        raise WorkbenchError(f"{where}: asset {key} raster:bands scale {scale} / offset {offset}: the scale must "
                             "be a positive number (reflectance = value x scale + offset)")
    return Radiometry(s, o, f"STAC raster:bands of asset {key} (scale {s:g}, offset {o:g})")


# ---- the item's metadata ------------------------------------------------------------------------

def _date(item) -> str | None:
    when = item.datetime or item.common_metadata.start_datetime
    return when.date().isoformat() if when is not None else None


def _cloud(props: Mapping) -> float | None:
    value = props.get("eo:cloud_cover")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100:
        return float(value) / 100.0
    return None


def _tags(props: Mapping, href: str) -> dict:
    tags = {str(k): str(v) for k, v in props.items() if isinstance(v, (str, int, float, bool))}
    uri = props.get("s2:product_uri")
    if isinstance(uri, str):
        tags["PRODUCT_URI"] = uri
    tags["STAC_ITEM"] = href
    return tags
