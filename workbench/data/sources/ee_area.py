"""Areas of interest and the chip grid of an Earth Engine export (no ``ee`` needed).

An :class:`Area` is a lon/lat polygon (or several) from a GeoJSON file, a bounding
box, or a point and a radius in metres. :func:`plan_chips` cuts it into square
chips of ``chip_size`` pixels at ``scale`` metres in the UTM zone of the area's
centre (EPSG:326zz north of the equator, EPSG:327zz south of it). Chips sit on a
grid anchored at the zone's origin, so a chip's id (``EPSG_COL_ROW``) names the same
square of ground in every export: two exports of overlapping areas share chip ids.

Pure Python at import time; rasterio (GDAL) is imported by the functions that
reproject or rasterize.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

DEFAULT_SCALE = 10.0                 # Sentinel-2 visible/NIR bands: 10 m
MAX_GRID_CELLS = 4_000_000           # chip cells in the area's bounding box (guards a whole-continent bbox)
MAX_RADIUS_M = 500_000.0
CIRCLE_VERTICES = 128


# ---- the area ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Area:
    """Where to export: lon/lat polygons (GeoJSON geometry, EPSG:4326) and how they were given.

    Build one with :meth:`from_geojson`, :meth:`from_bbox` or :meth:`from_point`
    (the constructors validate; a bad value is a one-line ``WorkbenchError``).
    """

    geometry: dict                              # GeoJSON Polygon or MultiPolygon, lon/lat degrees
    kind: str = "geojson"                       # geojson | bbox | point
    point: tuple[float, float] | None = None    # (lon, lat) for kind == point
    radius: float | None = None                 # metres, for kind == point
    label: str = ""                             # where it came from, for messages and the manifest

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_bbox(cls, west: float, south: float, east: float, north: float) -> Area:
        w, s, e, n = (float(v) for v in (west, south, east, north))
        if not all(math.isfinite(v) for v in (w, s, e, n)):
            raise WorkbenchError(f"--bbox {w:g} {s:g} {e:g} {n:g}: not finite numbers")
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise WorkbenchError(f"--bbox {w:g} {s:g} {e:g} {n:g}: expected W < E in [-180, 180] "
                                 "and S < N in [-90, 90] (degrees)")
        if n > 84 or s < -80:
            raise WorkbenchError(f"--bbox {w:g} {s:g} {e:g} {n:g}: UTM chips need latitudes between "
                                 "-80 and 84 degrees")
        ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
        return cls(geometry={"type": "Polygon", "coordinates": [ring]}, kind="bbox",
                   label=f"bbox {w:g} {s:g} {e:g} {n:g}")

    @classmethod
    def from_point(cls, lon: float, lat: float, radius: float) -> Area:
        lon, lat, radius = float(lon), float(lat), float(radius)
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise WorkbenchError(f"--point {lon:g} {lat:g}: expected LON in [-180, 180] and LAT in [-90, 90]")
        if not -80 <= lat <= 84:
            raise WorkbenchError(f"--point {lon:g} {lat:g}: UTM chips need a latitude between -80 and 84")
        if not (math.isfinite(radius) and radius > 0):
            raise WorkbenchError(f"--radius {radius:g}: must be a positive number of metres")
        if radius > MAX_RADIUS_M:
            raise WorkbenchError(f"--radius {radius:g}: at most {MAX_RADIUS_M:g} m (use --geojson or --bbox "
                                 "for larger areas)")
        epsg = utm_epsg(lon, lat)
        cx, cy = _to_utm(epsg, [lon], [lat])
        ring = [(cx[0] + radius * math.cos(2 * math.pi * k / CIRCLE_VERTICES),
                 cy[0] + radius * math.sin(2 * math.pi * k / CIRCLE_VERTICES)) for k in range(CIRCLE_VERTICES)]
        ring.append(ring[0])
        lons, lats = _from_utm(epsg, [p[0] for p in ring], [p[1] for p in ring])
        geometry = {"type": "Polygon", "coordinates": [[[x, y] for x, y in zip(lons, lats)]]}
        return cls(geometry=geometry, kind="point", point=(lon, lat), radius=radius,
                   label=f"point {lon:g} {lat:g} radius {radius:g} m")

    @classmethod
    def from_geojson(cls, source: str | Path | dict) -> Area:
        """A GeoJSON file (or an already-parsed object): FeatureCollection, Feature, Polygon or
        MultiPolygon in lon/lat degrees. Every polygon of a collection is kept."""
        name = "GeoJSON" if isinstance(source, dict) else str(source)
        if isinstance(source, dict):
            obj = source
        else:
            path = Path(source)
            if not path.is_file():
                raise WorkbenchError(f"--geojson {path}: no such file")
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise WorkbenchError(f"--geojson {path}: not valid JSON ({_first_line(exc)})") from None
            except RecursionError:  # json's C decoder recurses per nesting level
                raise WorkbenchError(f"--geojson {path}: nested too deeply to be GeoJSON") from None
        try:
            polygons = _polygons_of(obj, name)
        except RecursionError:
            raise WorkbenchError(f"--geojson {name}: nested too deeply to be GeoJSON") from None
        if not polygons:
            raise WorkbenchError(f"--geojson {name}: no Polygon or MultiPolygon in it")
        for poly in polygons:
            _check_polygon(poly, name)
        geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                    else {"type": "MultiPolygon", "coordinates": polygons})
        area = cls(geometry=geometry, kind="geojson", label=f"geojson {name}")
        w, s, e, n = area.bounds
        if e - w > 180:
            raise WorkbenchError(f"--geojson {name}: spans {e - w:.0f} degrees of longitude (crosses the "
                                 "antimeridian?): split it into one file per side")
        if n > 84 or s < -80:
            raise WorkbenchError(f"--geojson {name}: UTM chips need latitudes between -80 and 84 degrees")
        return area

    # -- properties ----------------------------------------------------------------------------
    @property
    def polygons(self) -> list[list]:
        g = self.geometry
        return [g["coordinates"]] if g["type"] == "Polygon" else list(g["coordinates"])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        xs = [p[0] for poly in self.polygons for ring in poly for p in ring]
        ys = [p[1] for poly in self.polygons for ring in poly for p in ring]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def centre(self) -> tuple[float, float]:
        """(lon, lat): the point for kind ``point``, else the centre of the bounding box."""
        if self.point is not None:
            return self.point
        w, s, e, n = self.bounds
        return (w + e) / 2, (s + n) / 2

    @property
    def epsg(self) -> int:
        return utm_epsg(*self.centre)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def to_json(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "label": self.label}
        if self.kind == "point":
            d.update(point=list(self.point), radius=self.radius)
        elif self.kind == "bbox":
            d["bbox"] = list(self.bounds)
        else:
            d["geometry"] = self.geometry
        return d

    @classmethod
    def from_json(cls, d: dict) -> Area:
        if d["kind"] == "point":
            return cls.from_point(d["point"][0], d["point"][1], d["radius"])
        if d["kind"] == "bbox":
            return cls.from_bbox(*d["bbox"])
        return cls.from_geojson(d["geometry"])

    def ee_geometry(self):
        """The area as an ``ee.Geometry`` (needs an initialised client): a buffered point,
        a planar rectangle, or the GeoJSON polygons with planar (not geodesic) edges."""
        import ee

        if self.kind == "point":
            return ee.Geometry.Point([self.point[0], self.point[1]]).buffer(self.radius)
        if self.kind == "bbox":
            return ee.Geometry.Rectangle(list(self.bounds), "EPSG:4326", False)
        return ee.Geometry(self.geometry, "EPSG:4326", False)

    def utm_geometry(self, epsg: int | None = None) -> dict:
        """The area in UTM metres (GeoJSON), edges densified so they stay straight in lon/lat."""
        epsg = epsg or self.epsg
        out = []
        for poly in self.polygons:
            rings = []
            for ring in poly:
                dense = _densify(ring, max_step_deg=0.01)
                xs, ys = _to_utm(epsg, [p[0] for p in dense], [p[1] for p in dense])
                rings.append([[x, y] for x, y in zip(xs, ys)])
            out.append(rings)
        return {"type": "MultiPolygon", "coordinates": out}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _polygons_of(obj: Any, name: str) -> list:
    if not isinstance(obj, dict) or "type" not in obj:
        raise WorkbenchError(f"--geojson {name}: not a GeoJSON object (no \"type\")")
    crs = obj.get("crs")
    if isinstance(crs, dict):
        crs_name = str((crs.get("properties") or {}).get("name", ""))
        if crs_name and not any(k in crs_name.upper() for k in ("CRS84", "4326")):
            raise WorkbenchError(f"--geojson {name}: coordinates must be lon/lat degrees (EPSG:4326), "
                                 f"not {crs_name}")
    kind = obj["type"]
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list):
            raise WorkbenchError(f"--geojson {name}: a FeatureCollection needs a \"features\" list")
        return [p for f in feats for p in _polygons_of(f, name)]
    if kind == "Feature":
        geom = obj.get("geometry")
        return [] if geom is None else _polygons_of(geom, name)
    if kind == "GeometryCollection":
        geoms = obj.get("geometries")
        if not isinstance(geoms, list):
            raise WorkbenchError(f"--geojson {name}: a GeometryCollection needs a \"geometries\" list")
        return [p for g in geoms for p in _polygons_of(g, name)]
    coords = obj.get("coordinates")
    if kind == "Polygon":
        return [coords]
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise WorkbenchError(f"--geojson {name}: MultiPolygon coordinates must be a list")
        return list(coords)
    if kind in ("Point", "MultiPoint"):
        raise WorkbenchError(f"--geojson {name}: a {kind} has no area; use --point LON LAT --radius M")
    if kind in ("LineString", "MultiLineString"):
        raise WorkbenchError(f"--geojson {name}: a {kind} has no area; give a Polygon")
    raise WorkbenchError(f"--geojson {name}: unknown GeoJSON type {kind!r}")


def _check_polygon(poly: Any, name: str) -> None:
    if not isinstance(poly, list) or not poly:
        raise WorkbenchError(f"--geojson {name}: a Polygon needs a list of rings")
    for ring in poly:
        if not isinstance(ring, list) or len(ring) < 4:
            raise WorkbenchError(f"--geojson {name}: a polygon ring needs at least 4 positions")
        for p in ring:
            if (not isinstance(p, (list, tuple)) or len(p) < 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p[:2])):
                raise WorkbenchError(f"--geojson {name}: a position must be [lon, lat] numbers, got {p!r:.60}")
            lon, lat = p[0], p[1]
            if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
                raise WorkbenchError(f"--geojson {name}: position [{lon}, {lat}] is not lon/lat degrees "
                                     "(is the file in a projected CRS?)")
        if list(ring[0][:2]) != list(ring[-1][:2]):
            raise WorkbenchError(f"--geojson {name}: a polygon ring must end where it starts")
    outer = poly[0]
    if len({(p[0], p[1]) for p in outer}) < 3:
        raise WorkbenchError(f"--geojson {name}: a polygon with fewer than 3 distinct corners has no area")


def _densify(ring: Sequence[Sequence[float]], max_step_deg: float) -> list[tuple[float, float]]:
    out = []
    for (x0, y0), (x1, y1) in zip([tuple(p[:2]) for p in ring[:-1]], [tuple(p[:2]) for p in ring[1:]]):
        n = max(1, int(math.ceil(max(abs(x1 - x0), abs(y1 - y0)) / max_step_deg)))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(n)]
    out.append(tuple(ring[-1][:2]))
    return out


# ---- UTM ----------------------------------------------------------------------------------------

def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the standard UTM zone holding (lon, lat): 326zz north, 327zz south."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def _to_utm(epsg: int, lons: Sequence[float], lats: Sequence[float]) -> tuple[list, list]:
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", f"EPSG:{epsg}", list(lons), list(lats))
    return list(xs), list(ys)


def _from_utm(epsg: int, xs: Sequence[float], ys: Sequence[float]) -> tuple[list, list]:
    from rasterio.warp import transform

    lons, lats = transform(f"EPSG:{epsg}", "EPSG:4326", list(xs), list(ys))
    return list(lons), list(lats)


# ---- chips --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chip:
    """One square of ``size`` x ``size`` pixels of ``scale`` metres in UTM zone ``epsg``.

    ``col``/``row`` count chip widths east / north of the zone's origin, so the chip
    covers x in [col * span, (col + 1) * span) and y in [row * span, (row + 1) * span).
    """

    epsg: int
    col: int
    row: int
    size: int
    scale: float = DEFAULT_SCALE
    lonlat: tuple[float, float, float, float] | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return f"{self.epsg}_{self.col}_{self.row}"

    @property
    def span(self) -> float:
        return self.size * self.scale

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in UTM metres."""
        return self.col * self.span, self.row * self.span, (self.col + 1) * self.span, (self.row + 1) * self.span

    @property
    def transform(self) -> list[float]:
        """GDAL-order affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f."""
        xmin, _, _, ymax = self.bounds
        return [self.scale, 0.0, xmin, 0.0, -self.scale, ymax]

    def grid(self) -> dict:
        """The Earth Engine ``PixelGrid`` of this chip (``ee.data.computePixels``' ``grid``)."""
        a, b, c, d, e, f = self.transform
        return {"dimensions": {"width": self.size, "height": self.size},
                "affineTransform": {"scaleX": a, "shearX": b, "translateX": c,
                                    "shearY": d, "scaleY": e, "translateY": f},
                "crsCode": self.crs}

    @property
    def centre(self) -> tuple[float, float]:
        """(lon, lat) of the chip's centre (from ``lonlat`` bounds when known)."""
        if self.lonlat is not None:
            w, s, e, n = self.lonlat
            return (w + e) / 2, (s + n) / 2
        xmin, ymin, xmax, ymax = self.bounds
        lons, lats = _from_utm(self.epsg, [(xmin + xmax) / 2], [(ymin + ymax) / 2])
        return lons[0], lats[0]


@dataclass
class ChipPlan:
    """The chips of an area: which UTM zone, which squares."""

    epsg: int
    chip_size: int
    scale: float
    chips: list[Chip]

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def __len__(self) -> int:
        return len(self.chips)


def plan_chips(area: Area, chip_size: int, scale: float = DEFAULT_SCALE, epsg: int | None = None,
               max_cells: int = MAX_GRID_CELLS) -> ChipPlan:
    """Every chip of the grid that the area touches, north to south then west to east.

    The area is drawn (all touched cells) onto a grid whose cells are chips, so the
    chips cover the whole area, polygons with holes and several parts included.
    """
    check_chip_size(chip_size)
    import numpy as np
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    epsg = epsg or area.epsg
    geom = area.utm_geometry(epsg)
    xs = [p[0] for poly in geom["coordinates"] for ring in poly for p in ring]
    ys = [p[1] for poly in geom["coordinates"] for ring in poly for p in ring]
    if not all(math.isfinite(v) for v in xs + ys):
        raise WorkbenchError(f"{area.label}: cannot be projected to EPSG:{epsg}")
    span = chip_size * scale
    c0, c1 = math.floor(min(xs) / span), math.floor(max(xs) / span)
    r0, r1 = math.floor(min(ys) / span), math.floor(max(ys) / span)
    ncols, nrows = c1 - c0 + 1, r1 - r0 + 1
    if ncols * nrows > max_cells:
        raise WorkbenchError(f"{area.label}: about {ncols * nrows:,} chips of {chip_size} px at {scale:g} m: "
                             "too large; give a smaller area or a larger --chip-size")
    transform = Affine(span, 0.0, c0 * span, 0.0, -span, (r1 + 1) * span)
    cells = rasterize([(geom, 1)], out_shape=(nrows, ncols), transform=transform, all_touched=True,
                      fill=0, dtype="uint8")
    rows, cols = np.nonzero(cells)
    keys = [(c0 + int(j), r1 - int(i)) for i, j in zip(rows, cols)]
    return ChipPlan(epsg=epsg, chip_size=chip_size, scale=scale,
                    chips=_with_lonlat(epsg, chip_size, scale, keys))


def _with_lonlat(epsg: int, size: int, scale: float, keys: Iterable[tuple[int, int]]) -> list[Chip]:
    """Chips with their lon/lat bounds (corners and edge midpoints reprojected at once)."""
    keys = list(keys)
    if not keys:
        return []
    span = size * scale
    fr = (0.0, 0.5, 1.0)
    xs, ys = [], []
    for col, row in keys:
        for fx in fr:
            for fy in fr:
                xs.append((col + fx) * span)
                ys.append((row + fy) * span)
    lons, lats = _from_utm(epsg, xs, ys)
    out = []
    for k, (col, row) in enumerate(keys):
        lo, la = lons[9 * k: 9 * k + 9], lats[9 * k: 9 * k + 9]
        out.append(Chip(epsg=epsg, col=col, row=row, size=size, scale=scale,
                        lonlat=(min(lo), min(la), max(lo), max(la))))
    return out


def chips_in_footprint(chips: Sequence[Chip], footprint: dict | None) -> list[Chip]:
    """The chips that touch a scene footprint (GeoJSON Polygon / LinearRing / MultiPolygon in
    lon/lat, as Earth Engine's ``system:footprint``); all of them when there is none."""
    if not chips or not footprint:
        return list(chips)
    polygons = _footprint_polygons(footprint)
    if not polygons:
        return list(chips)
    import numpy as np
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    first = chips[0]
    epsg, span = first.epsg, first.span
    geom = Area(geometry={"type": "MultiPolygon", "coordinates": polygons}).utm_geometry(epsg)
    cols = [c.col for c in chips]
    rows = [c.row for c in chips]
    c0, r1 = min(cols), max(rows)
    shape = (r1 - min(rows) + 1, max(cols) - c0 + 1)
    cells = rasterize([(geom, 1)], out_shape=shape, transform=Affine(span, 0, c0 * span, 0, -span, (r1 + 1) * span),
                      all_touched=True, fill=0, dtype="uint8")
    return [c for c in chips if cells[r1 - c.row, c.col - c0]] if np.any(cells) else []


def _footprint_polygons(fp: dict) -> list:
    kind, coords = fp.get("type"), fp.get("coordinates")
    try:
        if kind == "LinearRing":
            return [[coords]]
        if kind == "Polygon":
            return [coords]
        if kind == "MultiPolygon":
            return list(coords)
    except TypeError:
        return []
    return []


def check_chip_size(chip_size: Any) -> int:
    if isinstance(chip_size, bool) or not isinstance(chip_size, int) or chip_size <= 0:
        raise WorkbenchError(f"--chip-size {chip_size}: must be a positive number of pixels")
    if chip_size > 32768:
        raise WorkbenchError(f"--chip-size {chip_size}: at most 32768 px")
    return chip_size
