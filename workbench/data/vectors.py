"""Polygons out of a class mask: lakes and shorelines as GIS users open them (QGIS, geopandas).

    result = write_mask_polygons("scene_mask.tif", "lakes.gpkg", classes=[1], min_area_m2=1e4, simplify_m=5)
    result["features"], result["crs"]

Why it is built this way:

- **Bounded memory.** A 10980 x 10980 mask is read in row blocks (``block_rows`` rows at a time,
  the full width) and each block polygonised with ``rasterio.features.shapes`` (GDAL's
  polygonize, 4-connected, the pixel edges exactly). A lake that a block edge cuts is the
  union of its pieces: the pieces touching a block's last row are kept aside and joined
  (``shapely.union_all``) with the pieces of the next block they share an edge segment with
  (a corner is not an edge: 4-connectivity, as GDAL). Only finished polygons are kept, as
  WKB, so the peak is one block plus the polygons still open at its lower edge plus the
  output itself (``docs/segmentation.md`` has the measured figures).
- **Pixel coordinates while merging**: the pieces are built on the integer pixel grid, where
  "touches the block edge" is an exact comparison and unions are exact, and moved to the
  mask's CRS only when finished. Each finished polygon is normalised (collinear vertices
  dropped, rings in a canonical order) before ``--simplify``, so the output does not depend on
  where the block edges fell.
- **Ground area** (``area_m2``): in a projected CRS the polygon's area times the CRS unit in
  metres squared (for an unsimplified polygon exactly its pixel count times the pixel area);
  in a geographic CRS the area on the WGS 84 ellipsoid through the authalic latitude, which is
  exact for the pixels' edges along meridians and parallels (a geodesic polygon would not
  follow them).
- **Formats as users expect them**: GeoPackage in the mask's CRS; GeoJSON in lon/lat
  (EPSG:4326, RFC 7946: counter-clockwise rings, no other CRS allowed by the standard). Both are
  written by pyogrio to a temporary name, opened again and checked, then renamed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.geodesy import WGS84_A, lonlat_cell_areas_m2, q_authalic
from workbench.errors import WorkbenchError
from workbench.files import temporary_name

FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON"}
BLOCK_ROWS = 1024
# GDAL's block cache while reading a mask or a scene here: each block is read once, so a bigger
# cache only grows the process (measured: a decimated read of a 10980 x 10980 tile peaked at
# 1.2 GB with GDAL's default cache, 0.2 GB with this one, in the same time)
READ_CACHE_BYTES = 64 << 20
# WGS 84: semi-major axis (m) and flattening; GRS 80 differs by 0.1 mm in the minor axis
LAYER = "polygons"


# ------------------------------------------------------------------------------ paths


def polygon_format(path: str | Path) -> str:
    """The OGR driver for ``path`` by its extension, or a one-line error naming the path: checked
    before a prediction runs, so a typo does not cost a whole scene."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise WorkbenchError(f"--polygons {path}: unknown extension {suffix or '(none)'!r}; give a .gpkg "
                             "(GeoPackage, the mask's CRS) or .geojson (lon/lat, RFC 7946) file")
    return FORMATS[suffix]


# ------------------------------------------------------------------------------ areas


def _ring_area_lonlat(coords: np.ndarray) -> float:
    """Area (m^2) of one lon/lat ring on the ellipsoid: -a^2/2 * closed integral of q(phi) dlambda,
    trapezoids in q between vertices (exact along parallels and meridians)."""
    lon, q = np.radians(coords[:, 0]), q_authalic(coords[:, 1])
    return abs(float(np.sum((lon[1:] - lon[:-1]) * (q[1:] + q[:-1]) / 2))) * WGS84_A ** 2 / 2


def _polygon_area_lonlat(geom: Any) -> float:
    import shapely

    total = 0.0
    for poly in shapely.get_parts(geom):
        total += _ring_area_lonlat(shapely.get_coordinates(poly.exterior))
        total -= sum(_ring_area_lonlat(shapely.get_coordinates(r)) for r in poly.interiors)
    return total


def _crs(crs: Any):
    from rasterio.crs import CRS

    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def unit_metres(crs: Any) -> float:
    """Metres per unit of a projected CRS (1 for UTM, 0.3048... for US survey feet)."""
    try:
        return float(_crs(crs).linear_units_factor[1])
    except Exception:
        return 1.0


def ground_areas_m2(geoms: Sequence[Any] | np.ndarray, crs: Any) -> np.ndarray:
    """Ground area in m^2 of each polygon given in ``crs`` (see the module docstring)."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    if _crs(crs).is_geographic:
        return np.array([_polygon_area_lonlat(g) for g in geoms], np.float64)
    return shapely.area(geoms) * unit_metres(crs) ** 2


def row_pixel_areas_m2(transform: Any, crs: Any, row0: int, rows: int, width: int = 1) -> np.ndarray:
    """Ground area in m^2 of one pixel in each of the rows ``row0 .. row0 + rows - 1`` of a north-up
    grid (the area only changes with the row in a geographic CRS); column ``width // 2``'s pixel
    for a rotated grid."""
    import shapely
    from rasterio.transform import Affine

    t = transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])
    if not _crs(crs).is_geographic:
        return np.full(rows, abs(t.a * t.e - t.b * t.d) * unit_metres(crs) ** 2)
    if t.b == 0 and t.d == 0:  # north-up: each row is a band between two parallels
        top = t.f + t.e * np.arange(row0, row0 + rows, dtype=np.float64)
        return lonlat_cell_areas_m2(t.a, top, top + t.e)
    c = width // 2
    cells = [shapely.Polygon([t * (c, r), t * (c + 1, r), t * (c + 1, r + 1), t * (c, r + 1)])
             for r in range(row0, row0 + rows)]
    return ground_areas_m2(cells, crs)


def class_areas_m2(mask_path: str | Path, classes: Iterable[int] | None = None,
                   block_rows: int = BLOCK_ROWS) -> dict[int, float]:
    """Ground area in m^2 of each class value of a mask (nodata left out), read by row blocks:
    what the polygons of a class must add up to, and what the preview's title says."""
    import rasterio
    from rasterio.windows import Window

    wanted = None if classes is None else {int(c) for c in classes}
    out: dict[int, float] = {}
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), _open_mask(mask_path) as ds:
        nodata = ds.nodata
        for r0 in range(0, ds.height, block_rows):
            h = min(block_rows, ds.height - r0)
            block = ds.read(1, window=Window(0, r0, ds.width, h))
            areas = row_pixel_areas_m2(ds.transform, ds.crs, r0, h, ds.width)
            for v in np.unique(block):
                if (nodata is not None and v == nodata) or (wanted is not None and int(v) not in wanted):
                    continue
                out[int(v)] = out.get(int(v), 0.0) + float(((block == v).sum(axis=1) * areas).sum())
    return dict(sorted(out.items()))


def _open_mask(path: str | Path):
    from workbench.data import geotiff

    ds = geotiff.open_raster(path)
    if ds.crs is None:
        ds.close()
        raise WorkbenchError(f"{path}: the mask has no CRS; polygons and areas need one")
    return ds


# ------------------------------------------------------------------------------ polygonising


@dataclass
class Polygons:
    """Finished polygons of a mask, in its CRS: WKB geometries with their class and area."""

    crs: str
    wkb: list[bytes] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    areas_m2: list[float] = field(default_factory=list)
    dropped: int = 0              # smaller than min_area_m2

    def __len__(self) -> int:
        return len(self.wkb)

    def geometries(self) -> np.ndarray:
        import shapely

        return shapely.from_wkb(np.asarray(self.wkb, dtype=object))


class _Finisher:
    """Pixel-grid polygons -> normalised, filtered, simplified polygons in the mask's CRS."""

    def __init__(self, ds: Any, min_area_m2: float, simplify_m: float):
        from rasterio.transform import Affine

        self.t: Affine = ds.transform
        self.crs = ds.crs
        self.min_area_m2 = float(min_area_m2)
        # the tolerance on the pixel grid: metres over the pixel's side in metres (y side in lon/lat)
        side = abs(self.t.e) * (111_319.49 if self.crs.is_geographic else unit_metres(self.crs))
        self.tolerance_px = float(simplify_m) / side if simplify_m else 0.0
        self.out = Polygons(crs=self.crs.to_string())

    def _world(self, geoms: np.ndarray) -> np.ndarray:
        import shapely

        t = self.t
        m = np.array([[t.a, t.d], [t.b, t.e]])
        return shapely.transform(geoms, lambda xy: xy @ m + np.array([t.c, t.f]))

    def add(self, geoms: Sequence[Any], classes: Sequence[int]) -> None:
        import shapely

        if not len(geoms):
            return
        geoms = shapely.normalize(shapely.simplify(np.asarray(geoms, dtype=object), 0.0))
        classes = np.asarray(classes, np.int64)
        if self.min_area_m2 > 0:
            keep = ground_areas_m2(self._world(geoms), self.crs) >= self.min_area_m2
            self.out.dropped += int((~keep).sum())
            geoms, classes = geoms[keep], classes[keep]
        if self.tolerance_px > 0:
            geoms = shapely.simplify(geoms, self.tolerance_px, preserve_topology=True)
        world = shapely.orient_polygons(self._world(geoms))
        self.out.wkb.extend(shapely.to_wkb(world))
        self.out.classes.extend(int(c) for c in classes)
        self.out.areas_m2.extend(float(a) for a in ground_areas_m2(world, self.crs))


def polygonize(mask_path: str | Path, classes: Sequence[int] = (1,), *, min_area_m2: float = 0.0,
               simplify_m: float = 0.0, block_rows: int = BLOCK_ROWS) -> Polygons:
    """The polygons of the pixels of ``classes`` in a mask, read ``block_rows`` rows at a time (see
    the module docstring); ``min_area_m2`` drops smaller polygons, ``simplify_m`` simplifies with
    that tolerance in metres (topology preserved: holes stay holes)."""
    import rasterio
    import shapely
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from rasterio.windows import Window

    if min_area_m2 < 0 or not math.isfinite(min_area_m2):
        raise WorkbenchError(f"--min-area {min_area_m2:g}: expected a finite area >= 0 in m^2")
    if simplify_m < 0 or not math.isfinite(simplify_m):
        raise WorkbenchError(f"--simplify {simplify_m:g}: expected a finite tolerance >= 0 in metres")
    if block_rows < 1:
        raise ValueError("block_rows must be >= 1")
    wanted = np.array(sorted({int(c) for c in classes}))
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), _open_mask(mask_path) as ds:
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
            raise WorkbenchError(f"{mask_path}: a {ds.dtypes[0]} raster is not a class mask")
        finish = _Finisher(ds, min_area_m2, simplify_m)
        H, W = ds.height, ds.width
        open_geoms = np.empty(0, dtype=object)       # pieces touching the previous block's last row
        open_cls = np.empty(0, np.int64)
        for r0 in range(0, H, block_rows):
            r1 = min(H, r0 + block_rows)
            block = ds.read(1, window=Window(0, r0, W, r1 - r0))
            keep = np.isin(block, wanted)
            pieces, cls = [], []
            if keep.any():
                for g, v in shapes(block, mask=keep, connectivity=4, transform=Affine.translation(0, r0)):
                    pieces.append(shapely.geometry.shape(g))
                    cls.append(int(v))
            del block, keep
            geoms, gcls = _join(open_geoms, open_cls, np.asarray(pieces, dtype=object),
                                np.asarray(cls, np.int64), r0, finish)
            bottom = (shapely.bounds(geoms)[:, 3] == r1) if len(geoms) and r1 < H else np.zeros(len(geoms), bool)
            finish.add(geoms[~bottom], gcls[~bottom])
            open_geoms, open_cls = geoms[bottom], gcls[bottom]
        finish.add(open_geoms, open_cls)
    return finish.out


def _join(above: np.ndarray, above_cls: np.ndarray, pieces: np.ndarray, cls: np.ndarray, edge: int,
          finish: _Finisher) -> tuple[np.ndarray, np.ndarray]:
    """Join the still-open polygons ``above`` the row ``edge`` with this block's ``pieces`` they
    share an edge segment with (same class); the open ones that join nothing are finished. Returns
    this block's polygons, joined."""
    import shapely

    if not len(above) or not len(pieces):
        finish.add(above, above_cls)
        return pieces, cls
    top = np.flatnonzero(shapely.bounds(pieces)[:, 1] == edge)
    tree = shapely.STRtree(pieces[top])
    a_idx, t_idx = tree.query(above, predicate="intersects")
    t_idx = top[t_idx]
    same = above_cls[a_idx] == cls[t_idx]
    a_idx, t_idx = a_idx[same], t_idx[same]
    shared = shapely.relate_pattern(above[a_idx], pieces[t_idx], "****1****")   # boundaries share a segment
    a_idx, t_idx = a_idx[shared], t_idx[shared]
    n_above = len(above)
    parent = list(range(n_above + len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, t in zip(a_idx.tolist(), t_idx.tolist()):
        ra, rt = root(a), root(n_above + t)
        if ra != rt:
            parent[ra] = rt
    groups: dict[int, list[int]] = {}
    for i in range(len(parent)):
        groups.setdefault(root(i), []).append(i)
    lonely = [i for i in range(n_above) if len(groups[root(i)]) == 1]
    finish.add(above[lonely], above_cls[lonely])
    out, out_cls = [], []
    for members in groups.values():
        news = [m - n_above for m in members if m >= n_above]
        if not news:
            continue
        if len(members) == 1:
            parts = [pieces[news[0]]]
        else:
            parts = list(shapely.get_parts(shapely.union_all([above[m] if m < n_above else pieces[m - n_above]
                                                              for m in members])))
        out.extend(parts)
        out_cls.extend([int(cls[news[0]])] * len(parts))
    return np.asarray(out, dtype=object), np.asarray(out_cls, np.int64)


# ------------------------------------------------------------------------------ writing


def write_polygons(polygons: Polygons, path: str | Path) -> dict:
    """Write ``polygons`` (``class``, ``area_m2`` attributes) to a GeoPackage in their CRS or a
    GeoJSON in EPSG:4326 (by the extension), to a temporary name, opened again and checked, then
    renamed; a failure is one line and leaves nothing under ``path``."""
    import pyogrio
    import pyogrio.raw
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError
    from rasterio.warp import transform as warp

    path = Path(path)
    driver = polygon_format(path)
    wkb = np.asarray(polygons.wkb, dtype=object)
    crs = polygons.crs
    options: dict[str, str] = {}
    if driver == "GeoJSON":
        options = {"RFC7946": "YES"}
        if len(wkb) and not _crs(crs).to_epsg() == 4326:
            geoms = shapely.transform(shapely.from_wkb(wkb),
                                      lambda xy: np.column_stack(warp(crs, "EPSG:4326", xy[:, 0], xy[:, 1])))
            wkb = shapely.to_wkb(geoms)
        crs = "EPSG:4326"
    fields = ["class", "area_m2"]
    data = [np.asarray(polygons.classes, np.int32), np.asarray(polygons.areas_m2, np.float64)]
    tmp = temporary_name(path, keep_suffix=True)    # pyogrio picks the driver by the extension
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            tmp.unlink()
        pyogrio.raw.write(tmp, wkb, data, fields, layer=LAYER, driver=driver, geometry_type="Polygon", crs=crs,
                          layer_options=options or None)
        info = pyogrio.read_info(tmp, layer=LAYER)
        if int(info["features"]) != len(wkb):
            raise WorkbenchError(f"{path}: the written file holds {info['features']} features, not {len(wkb)}; "
                                 "nothing was replaced (disk full?)")
        os.replace(tmp, path)
    except OSError as exc:
        raise WorkbenchError(f"{path}: could not be written ({exc.strerror or exc})") from None
    except (DataSourceError, DataLayerError, FieldError, GeometryError) as exc:
        raise WorkbenchError(f"{path}: could not be written ({str(exc).strip().splitlines()[0][:160]})") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal")):
            if leftover.exists():
                leftover.unlink()
    return {"path": str(path), "features": len(wkb), "crs": crs, "driver": driver}


def write_mask_polygons(mask_path: str | Path, out_path: str | Path, classes: Sequence[int] = (1,), *,
                        min_area_m2: float = 0.0, simplify_m: float = 0.0, block_rows: int = BLOCK_ROWS) -> dict:
    """:func:`polygonize` then :func:`write_polygons`; the summary a CLI prints (path, features, crs,
    classes, dropped, the total area per class in m^2)."""
    polygon_format(out_path)
    polys = polygonize(mask_path, classes, min_area_m2=min_area_m2, simplify_m=simplify_m, block_rows=block_rows)
    result = write_polygons(polys, out_path)
    per_class: dict[int, float] = {}
    for c, a in zip(polys.classes, polys.areas_m2):
        per_class[c] = per_class.get(c, 0.0) + a
    return {**result, "classes": sorted({int(c) for c in classes}), "dropped": polys.dropped,
            "area_m2": dict(sorted(per_class.items()))}
