"""The one GeoTIFF reader and writer.

Every task reads and writes rasters through here so that CRS, geotransform, nodata
and band names survive every step, files are written under a temporary name and
renamed (a killed process never leaves half a tile), and a broken file is reported
as one line naming it instead of a GDAL traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from workbench.errors import WorkbenchError

EARTH_METRES_PER_DEGREE = 111_319.49


@dataclass(frozen=True)
class RasterInfo:
    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None
    band_names: tuple[str, ...]

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the raster's own CRS."""
        a = self.affine
        xs = [a.c, a.c + a.a * self.width]
        ys = [a.f, a.f + a.e * self.height]
        return min(xs), min(ys), max(xs), max(ys)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        if not self.crs:
            raise WorkbenchError(f"{self.path}: has no CRS, cannot place it on the map")
        w, s, e, n = self.bounds
        if _is_lonlat(self.crs):
            return w, s, e, n
        return tuple(transform_bounds(self.crs, "EPSG:4326", w, s, e, n))  # type: ignore[return-value]

    def centre_lonlat(self) -> tuple[float, float]:
        w, s, e, n = self.lonlat_bounds()
        return (w + e) / 2, (s + n) / 2

    def gsd_metres(self) -> float:
        """Ground sample distance along the pixel's y side (the side that does not shrink with latitude)."""
        res = abs(self.affine.e)
        if self.crs and _is_lonlat(self.crs):
            return res * EARTH_METRES_PER_DEGREE
        return res

    def pixel_area_m2(self, rows: np.ndarray) -> np.ndarray:
        """Ground area (m^2) of one pixel in each of ``rows``: the cell's area in the CRS's linear
        unit (a US-foot grid is converted) or, in a geographic CRS, the cell's area on the WGS 84
        ellipsoid (``geodesy.lonlat_cell_areas_m2``, the very figure polygons' ``area_m2`` add up
        to). A raster without a CRS has no area (an error naming it)."""
        if not self.crs:
            raise WorkbenchError(f"{self.path}: has no CRS, its pixels have no ground area")
        a = self.affine
        rows = np.asarray(rows, dtype=np.float64)
        crs = rasterio.crs.CRS.from_user_input(self.crs)
        if crs.is_geographic:
            from workbench.data.geodesy import lonlat_cell_areas_m2

            top = a.f + a.e * rows
            return lonlat_cell_areas_m2(a.a, top, top + a.e)
        _, metres = crs.linear_units_factor
        return np.full(rows.shape, abs(a.a * a.e - a.b * a.d) * metres * metres)


def _is_lonlat(crs: str) -> bool:
    try:
        return rasterio.crs.CRS.from_user_input(crs).is_geographic
    except Exception:
        return False


def open_raster(path: str | Path):
    """Open for reading; a missing or unreadable file is a user error naming it."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise WorkbenchError(f"{path}: not a readable GeoTIFF ({_short(exc)})") from None


def info_of(ds) -> RasterInfo:
    names = tuple(d or f"b{i + 1}" for i, d in enumerate(ds.descriptions))
    return RasterInfo(
        path=str(ds.name), width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0],
        crs=ds.crs.to_string() if ds.crs else None, transform=tuple(ds.transform)[:6],
        nodata=ds.nodata, band_names=names,
    )


# what a file's extension claims, and the GDAL drivers that may answer it
CLAIMED_DRIVERS = {".tif": ("GTiff", "COG"), ".tiff": ("GTiff", "COG"), ".vrt": ("VRT",),
                   ".jp2": ("JP2OpenJPEG", "JPEG2000", "JP2KAK", "JP2ECW", "JP2MrSID")}


def read_info(path: str | Path, verify: bool = False) -> RasterInfo:
    """Header of a raster; with ``verify`` also read every block so truncation shows up now, and
    check the file is what its extension says (a PNG renamed ``.tif`` has no georeferencing or
    radiometry a GeoTIFF would carry, and must not be imported as one)."""
    with open_raster(path) as ds:
        if verify:
            claimed = CLAIMED_DRIVERS.get(Path(str(path)).suffix.lower())
            if claimed and ds.driver not in claimed:
                raise WorkbenchError(f"{path}: a {ds.driver} file named like a {Path(str(path)).suffix} "
                                     f"({' or '.join(claimed)}); convert it, or give it its own extension")
            verify_blocks(ds, path)
        return info_of(ds)


def verify_blocks(ds, path: str | Path) -> None:
    try:
        for _, window in ds.block_windows(1):
            ds.read(window=window)
    except RasterioError as exc:
        raise WorkbenchError(f"{path}: truncated or corrupt GeoTIFF ({_short(exc)})") from None


def read(path: str | Path, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read (bands, rows, cols); ``window`` keeps reads to the part that is needed."""
    with open_raster(path) as ds:
        try:
            return ds.read(list(bands) if bands else None, window=window)
        except RasterioError as exc:
            raise WorkbenchError(f"{path}: truncated or corrupt GeoTIFF ({_short(exc)})") from None


OVERVIEW_RESAMPLINGS = ("nearest", "average", "mode", "bilinear", "cubic")


class RasterWriter:
    """Write a raster window by window, so a scene-sized map never has to sit in memory.

        with RasterWriter("mask.tif", width=W, height=H, count=1, dtype="uint8", affine=t, crs=crs,
                          nodata=255) as out:
            for row_off, rows in finished_rows():
                out.write(rows, row_off=row_off)
        path = out.path                      # closed (and renamed into place) by the ``with``

    Why this shape: pixels go to a tiled GeoTIFF under a temporary name beside the target (GDAL's
    block cache gathers partial tiles, so any row band may be written); ``close()`` turns that into
    a Cloud-Optimised GeoTIFF (``cog=True``: GDAL's COG driver via ``rasterio.shutil.copy``, which
    builds the internal overviews with ``overview_resampling`` and puts them before the full
    resolution, so a viewer or a range request reads a zoomed-out map without the whole file),
    reads every block of the result back (a disk that filled up must fail here), and only then
    renames it onto the target. An exception inside the ``with`` (or a failed write/close)
    removes the temporaries and leaves an existing target untouched; OS and GDAL errors are one
    line naming the target. ``cog=False`` keeps the plain (tiled or striped) GeoTIFF.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, count: int, dtype: str | np.dtype,
                 affine: Affine | Sequence[float], crs: str | None, nodata: float | None = None,
                 band_names: Sequence[str] | None = None, tags: dict | None = None, cog: bool = True,
                 overview_resampling: str = "nearest", compress: str | None = "deflate",
                 tiled: bool | None = None, blocksize: int = 256, scales: Sequence[float] | None = None,
                 offsets: Sequence[float] | None = None):
        self.path = Path(path)
        self.shape = (int(count), int(height), int(width))
        if min(self.shape) < 1:
            raise WorkbenchError(f"{self.path}: cannot write a raster of {count} band(s) x {height} x {width} px")
        if overview_resampling not in OVERVIEW_RESAMPLINGS:
            raise WorkbenchError(f"overview resampling {overview_resampling!r}: expected one of "
                                 f"{', '.join(OVERVIEW_RESAMPLINGS)}")
        if band_names is not None and len(band_names) != count:
            raise WorkbenchError(f"{self.path}: {len(band_names)} band name(s) for {count} band(s)")
        self.cog, self.compress, self.blocksize = cog, compress, int(blocksize)
        self.overview_resampling = overview_resampling
        if not isinstance(affine, Affine):
            affine = Affine(*list(affine)[:6])
        self.dtype = np.dtype(dtype)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        # the COG is a copy of a first, plain tiled file: the overviews must precede the pixels
        self._stage = self._tmp.with_name(self._tmp.name + ".stage") if cog else self._tmp
        profile = dict(driver="GTiff", width=self.shape[2], height=self.shape[1], count=self.shape[0],
                       dtype=self.dtype.name, crs=crs, transform=affine, nodata=nodata, BIGTIFF="IF_SAFER")
        if cog and compress:
            profile.update(compress="deflate", zlevel=1)     # the staged copy is read once: fast, not small
        elif compress:
            profile["compress"] = compress
        if tiled is None:
            tiled = cog or (width >= 512 and height >= 512)
        if tiled:
            profile.update(tiled=True, blockxsize=self.blocksize, blockysize=self.blocksize)
        self._ds = None
        self._done = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._ds = rasterio.open(self._stage, "w", **profile)
            for i, name in enumerate(band_names or []):
                self._ds.set_band_description(i + 1, name)
            if tags:
                self._ds.update_tags(**{k: str(v) for k, v in tags.items()})
            if scales is not None:
                self._ds.scales = tuple(float(v) for v in scales)
            if offsets is not None:
                self._ds.offsets = tuple(float(v) for v in offsets)
        except BaseException as exc:
            self.abort()
            raise self._one_line(exc) from None

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, array: np.ndarray, window: Window | None = None, *, row_off: int | None = None) -> None:
        """Write ``array`` ((bands, h, w), or (h, w) for one band) at ``window``, or as full-width
        rows starting at ``row_off`` (0 when neither is given)."""
        if self._ds is None:
            raise WorkbenchError(f"{self.path}: writer is closed")
        arr = array[None] if array.ndim == 2 else array
        count, height, width = self.shape
        if window is None:
            window = Window(0, int(row_off or 0), arr.shape[-1], arr.shape[-2])
        c0, r0 = int(window.col_off), int(window.row_off)
        if arr.shape != (count, int(window.height), int(window.width)) or c0 < 0 or r0 < 0 or \
                c0 + arr.shape[2] > width or r0 + arr.shape[1] > height:
            self.abort()
            raise WorkbenchError(f"{self.path}: a block of {arr.shape} at row {r0}, col {c0} does not fit a raster "
                                 f"of {count} band(s) x {height} x {width} px")
        try:
            self._ds.write(arr.astype(self.dtype, copy=False), window=window)
        except BaseException as exc:
            self.abort()
            raise self._one_line(exc) from None

    def close(self) -> Path:
        """Finish the file (overviews and COG layout when ``cog``), check it, rename it onto the target."""
        if self._done:
            return self.path
        if self._ds is None:
            raise WorkbenchError(f"{self.path}: writer was aborted, nothing written")
        try:
            ds, self._ds = self._ds, None
            ds.close()
            if self.cog:
                import rasterio.shutil

                options = dict(BLOCKSIZE=self.blocksize, OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
                               BIGTIFF="IF_SAFER", COMPRESS=(self.compress or "none").upper())
                rasterio.shutil.copy(self._stage, self._tmp, driver="COG", **options)
                self._stage.unlink()
            _check_written(self._tmp, self.path, self.shape)
            os.replace(self._tmp, self.path)
            self._done = True
        except BaseException as exc:
            self.abort()
            raise self._one_line(exc) from None
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target is left as it was."""
        ds, self._ds = self._ds, None
        if ds is not None:
            try:
                ds.close()
            except Exception:       # closing a half-written file may fail again; it is deleted next
                pass
        for p in {self._stage, self._tmp, self._tmp.with_name(self._tmp.name + ".ovr.tmp")}:
            try:
                p.unlink(missing_ok=True)
            except OSError:         # a name the file system refused never existed: nothing to remove
                pass

    def _one_line(self, exc: BaseException) -> BaseException:
        if isinstance(exc, OSError):        # a full disk, a read-only folder: one line, nothing renamed
            return WorkbenchError(f"{self.path}: could not be written ({exc.strerror or exc})")
        if isinstance(exc, RasterioError):
            return WorkbenchError(f"{self.path}: could not be written ({_short(exc)})")
        return exc


def write(path: str | Path, array: np.ndarray, transform: Affine | Sequence[float], crs: str | None,
          nodata: float | None = None, band_names: Sequence[str] | None = None,
          compress: str | None = "deflate", tags: dict | None = None, tiled: bool | None = None,
          scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None, cog: bool = False,
          overview_resampling: str = "nearest") -> Path:
    """Write a whole array atomically (a :class:`RasterWriter` fed one block): to
    ``.name.tmp-PID`` beside the target, then rename. ``scales`` / ``offsets``: GDAL's per-band
    ``value * scale + offset`` (how the numbers become reflectance). ``cog``: a Cloud-Optimised
    GeoTIFF with internal overviews, for maps people look at (masks, probabilities)."""
    arr = array[None] if array.ndim == 2 else array
    count, height, width = arr.shape
    with RasterWriter(path, width=width, height=height, count=count, dtype=arr.dtype, affine=transform, crs=crs,
                      nodata=nodata, band_names=band_names, tags=tags, cog=cog,
                      overview_resampling=overview_resampling, compress=compress, tiled=tiled,
                      scales=scales, offsets=offsets) as out:
        out.write(arr)
    return out.path


def _check_written(tmp: Path, path: Path, shape: tuple[int, int, int]) -> None:
    """Read the temporary file back before it is renamed into place: a write the disk cut short
    (GDAL may only warn) must fail here, not leave a truncated GeoTIFF under the real name."""
    shape = tuple(shape)
    try:
        with rasterio.open(tmp) as ds:
            if (ds.count, ds.height, ds.width) != shape:
                raise WorkbenchError(f"{path}: written file holds {ds.count}x{ds.height}x{ds.width}, not {shape}")
            for _, window in ds.block_windows(1):
                ds.read(window=window)
    except RasterioError as exc:
        raise WorkbenchError(f"{path}: the written file does not read back ({_short(exc)}); nothing was "
                             "replaced (disk full?)") from None


def same_grid(a: RasterInfo, b: RasterInfo) -> str | None:
    """Why two rasters do not share a pixel grid, or None if they do."""
    if (a.width, a.height) != (b.width, b.height):
        return f"size {a.width}x{a.height} vs {b.width}x{b.height}"
    if not same_crs(a.crs, b.crs):
        return f"CRS {a.crs} vs {b.crs}"
    if not all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a.transform, b.transform)):
        return "different geotransforms"
    return None


def same_crs(a: str | None, b: str | None) -> bool:
    """The same CRS, however it is spelled (``EPSG:4326`` or its WKT)."""
    return a == b or bool(a and b and rasterio.crs.CRS.from_user_input(a) == rasterio.crs.CRS.from_user_input(b))


def require_same_grid(image: RasterInfo, mask: RasterInfo) -> None:
    why = same_grid(image, mask)
    if why:
        raise WorkbenchError(f"{mask.path}: mask is not on the grid of {image.path} ({why})")


def window_transform(info: RasterInfo, window: Window) -> Affine:
    return rasterio.windows.transform(window, info.affine)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
