"""The grids a scene is read and written on when it is not on the run's: any CRS, any pixel size in.

    grid = model_grid(stack.info, contract.gsd, contract.crs, where=path)   # None: its own grid will do
    stack.onto(grid)                                   # the bands read through WarpedVRTs onto it
    ...                                                # predict there, write a temporary mask
    out = target_grid(scene_info, out_crs)             # the scene's own grid, or --out-crs
    resample_to(tmp_mask, out, "scene_mask.tif", "nearest")       # window by window

Why: a model sees pixels at the scale it was trained on. A 20 m scene fed to a 10 m model
shows it every object at half size, and a scene in degrees (EPSG:4326) has pixels that are
not even square on the ground; both give a map that looks plausible and is wrong. So a
scene whose pixel size differs from the run's by more than :data:`GSD_TOLERANCE`, or whose CRS
is geographic while the run was trained in metres, is read onto a *model grid* at the run's
resolution: in the scene's own CRS when that is projected (no needless reprojection), in
the UTM zone of the scene's centre when it is geographic. The map is then brought back onto
the scene's own grid (what users overlay it on) or the CRS they ask for, nearest for class
masks and bilinear for probabilities. A scene merely in another UTM zone than the run's
tiles, at their resolution, is read as it is: metres are metres in any zone, so a run trained
on several zones accepts all of them.

Grids are :class:`workbench.data.geotiff.RasterInfo` (size, CRS, transform): the one type
masks are checked against and outputs written on. What cannot be reprojected is one line
naming the input: no CRS while the run knows its pixel size, bounds that do not transform.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from workbench.data.geotiff import EARTH_METRES_PER_DEGREE, RasterInfo, same_crs
from workbench.errors import WorkbenchError

GSD_TOLERANCE = 1.1         # pixels more than 10 % larger or smaller than the run's are resampled
MAX_LONGITUDE_SPAN = 12.0   # degrees: two UTM zones; wider geographic scenes have no one metric grid
ROWS = 512                  # rows per window of resample_to: memory is ROWS x width x bands, not the scene
RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode")


def parse_crs(value: str, what: str = "CRS"):
    """A rasterio CRS from ``EPSG:32633``, a WKT or a PROJ string; anything else is one line."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        with rasterio.Env():  # PROJ's complaint goes to the log, not stderr: the error is one line
            return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError) as exc:
        raise WorkbenchError(f"{what} {value!r}: not a CRS GDAL knows ({str(exc).strip()[:120]})") from None


def is_geographic(crs: str | None) -> bool:
    """Whether ``crs`` counts in degrees (unknown or unparsable: no)."""
    if not crs:
        return False
    try:
        return bool(parse_crs(crs).is_geographic)
    except WorkbenchError:
        return False


def pixel_metres(info: RasterInfo) -> float:
    """The pixel's y side in metres: degrees as ``geotiff.gsd_metres`` counts them, projected
    units through their metre factor (a US-feet state plane is not 0.3 m pixels)."""
    res = abs(info.affine.e)
    if not info.crs:
        return res
    crs = parse_crs(info.crs)
    if crs.is_geographic:
        return res * EARTH_METRES_PER_DEGREE
    try:
        return res * float(crs.linear_units_factor[1])
    except Exception:
        return res


def utm_zone(lon: float, lat: float) -> str:
    """The UTM CRS of a point (WGS 84, ``EPSG:326zz`` north / ``EPSG:327zz`` south); beyond 84 deg
    north / 80 deg south, where UTM is not defined, the polar stereographic one (UPS)."""
    if lat > 84.0:
        return "EPSG:32661"
    if lat < -80.0:
        return "EPSG:32761"
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def model_grid(info: RasterInfo, gsd: float | None, run_crs: tuple[str, ...] | list[str] = (), *,
               tolerance: float = GSD_TOLERANCE, where: str | None = None) -> RasterInfo | None:
    """The grid a scene on ``info`` is read on for a run trained on ``gsd``-metre pixels in the CRSs
    ``run_crs``, or None when its own grid will do (module docstring).

    A run that does not know its pixel size (older runs, tiles without a CRS) reads any scene as
    it is; a scene without a CRS for a run that knows it is refused: its scale cannot be told.
    A geographic scene for a run trained in degrees (the Blue Marble demo) stays in degrees."""
    where = where or info.path
    if not gsd or not math.isfinite(gsd) or gsd <= 0:
        return None
    if not info.crs:
        raise WorkbenchError(f"{where}: has no georeferencing (no CRS); the run was trained on {gsd:.3g} m pixels "
                             "and this scene's scale cannot be told")
    crs = parse_crs(info.crs, f"{where}: CRS")
    own = pixel_metres(info)
    run_in_degrees = any(is_geographic(c) for c in run_crs)
    close = 1 / tolerance <= own / gsd <= tolerance
    if close and (not crs.is_geographic or run_in_degrees):
        return None
    if crs.is_geographic and not run_in_degrees:
        w, s, e, n = _lonlat_bounds(info, where)
        if e - w > MAX_LONGITUDE_SPAN:
            raise WorkbenchError(f"{where}: spans {e - w:.3g} degrees of longitude; no one grid in metres (UTM) "
                                 f"holds it at {gsd:.3g} m undistorted: cut it into parts")
        return _grid_in(info, utm_zone((w + e) / 2, (s + n) / 2), gsd, where)
    if crs.is_geographic:
        return _grid_in(info, info.crs, gsd / EARTH_METRES_PER_DEGREE, where)
    metres_per_unit = own / abs(info.affine.e)
    return _grid_in(info, info.crs, gsd / metres_per_unit, where)


def target_grid(info: RasterInfo, out_crs: str | None = None) -> RasterInfo:
    """The grid a scene's outputs are written on: its own (``out_crs`` None or its own CRS), else
    ``out_crs`` at the resolution GDAL suggests for it (``calculate_default_transform``)."""
    if out_crs is None:
        return info
    dst = parse_crs(out_crs, "--out-crs").to_string()
    if same_crs(info.crs, dst):
        return info
    if not info.crs:
        raise WorkbenchError(f"{info.path}: has no georeferencing (no CRS); it cannot be written in {out_crs}")
    return _grid_in(info, dst, None, info.path)


def _lonlat_bounds(info: RasterInfo, where: str) -> tuple[float, float, float, float]:
    w, s, e, n = info.bounds
    if not (-180.0 - 1e-6 <= w < e <= 180.0 + 1e-6 and -90.0 - 1e-6 <= s < n <= 90.0 + 1e-6):
        raise WorkbenchError(f"{where}: its bounds ({w:.6g}, {s:.6g}, {e:.6g}, {n:.6g}) are not longitudes and "
                             f"latitudes on the Earth, though its CRS ({info.crs}) is in degrees")
    return w, s, e, n


def _grid_in(info: RasterInfo, dst_crs: str, resolution: float | None, where: str) -> RasterInfo:
    """``info``'s footprint on a north-up grid in ``dst_crs`` (``resolution`` in its units; None: GDAL's)."""
    from rasterio.warp import calculate_default_transform

    w, s, e, n = info.bounds
    if is_geographic(info.crs):
        _lonlat_bounds(info, where)
    kw = {"resolution": resolution} if resolution else {}
    try:
        transform, width, height = calculate_default_transform(info.crs, dst_crs, info.width, info.height,
                                                               left=w, bottom=s, right=e, top=n, **kw)
    except Exception as exc:           # GDAL CPLE errors are no RasterioErrors: any failure = "does not transform"
        transform, width, height = None, 0, 0
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    else:
        why = "no finite footprint"
    if transform is None or not width or not height or not all(math.isfinite(v) for v in tuple(transform)[:6]):
        raise WorkbenchError(f"{where}: its bounds ({w:.6g}, {s:.6g}, {e:.6g}, {n:.6g} in {info.crs}) do not "
                             f"transform to {dst_crs} ({why})")
    return dataclasses.replace(info, crs=parse_crs(dst_crs).to_string(), transform=tuple(transform)[:6],
                               width=int(width), height=int(height))


def resample_to(src_path: str | Path, grid: RasterInfo, out_path: str | Path, resampling: str = "nearest", *,
                nodata: float | None = None, rows: int = ROWS, tags: dict | None = None) -> Path:
    """Warp the finished raster ``src_path`` onto ``grid`` and write it to ``out_path``, ``rows``
    rows at a time through ``geotiff.RasterWriter`` (a streaming, atomic COG writer; overviews
    nearest for masks, average otherwise), so memory is one window row, never the scene.
    ``nearest`` for class masks (no invented classes), ``bilinear`` for probabilities. Pixels of
    ``grid`` outside the source's footprint are the source's nodata (``nodata`` when it declares
    none). Band names and tags are kept (``tags`` added)."""
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    from workbench.data.geotiff import RasterWriter, open_raster

    if resampling not in RESAMPLING:
        raise WorkbenchError(f"resampling {resampling!r}: expected one of {', '.join(RESAMPLING)}")
    if not grid.crs:
        raise WorkbenchError(f"{out_path}: the grid to write on has no CRS")
    rows = max(1, int(rows))
    with open_raster(src_path) as src:
        if src.crs is None:
            raise WorkbenchError(f"{src_path}: has no georeferencing (no CRS); it cannot be resampled")
        fill = src.nodata if src.nodata is not None else nodata
        names = [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        with WarpedVRT(src, crs=grid.crs, transform=grid.affine, width=grid.width, height=grid.height,
                       resampling=Resampling[resampling], src_nodata=fill, nodata=fill) as vrt, \
                RasterWriter(out_path, width=grid.width, height=grid.height, count=src.count, dtype=src.dtypes[0],
                             affine=grid.affine, crs=grid.crs, nodata=fill, band_names=names,
                             tags={**src.tags(), **(tags or {})},
                             overview_resampling="nearest" if resampling in ("nearest", "mode") else "average") as out:
            for row in range(0, grid.height, rows):
                window = Window(0, row, grid.width, min(rows, grid.height - row))
                try:
                    block = vrt.read(window=window)
                except RasterioError as exc:
                    why = str(exc).strip()[:160]
                    raise WorkbenchError(f"{src_path}: truncated or corrupt raster ({why})") from None
                out.write(block, window)
            return out.close()
