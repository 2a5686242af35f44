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


def read_info(path: str | Path, verify: bool = False) -> RasterInfo:
    """Header of a raster; with ``verify`` also read every block so truncation shows up now."""
    with open_raster(path) as ds:
        if verify:
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


def write(path: str | Path, array: np.ndarray, transform: Affine | Sequence[float], crs: str | None,
          nodata: float | None = None, band_names: Sequence[str] | None = None,
          compress: str | None = "deflate", tags: dict | None = None, tiled: bool | None = None,
          scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> Path:
    """Write atomically: to ``.name.tmp-PID`` beside the target, then rename. ``scales`` /
    ``offsets``: GDAL's per-band ``value * scale + offset`` (how the numbers become reflectance)."""
    path = Path(path)
    arr = array[None] if array.ndim == 2 else array
    count, height, width = arr.shape
    if not isinstance(transform, Affine):
        transform = Affine(*list(transform)[:6])
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=arr.dtype,
                   crs=crs, transform=transform, nodata=nodata)
    if compress:
        profile["compress"] = compress
    if tiled is None:
        tiled = width >= 512 and height >= 512
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            for i, name in enumerate(band_names or []):
                dst.set_band_description(i + 1, name)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
            if scales is not None:
                dst.scales = tuple(float(v) for v in scales)
            if offsets is not None:
                dst.offsets = tuple(float(v) for v in offsets)
        _check_written(tmp, path, arr)
        os.replace(tmp, path)
    except OSError as exc:                 # a full disk, a read-only folder: one line, nothing renamed
        raise WorkbenchError(f"{path}: could not be written ({exc.strerror or exc})") from None
    except RasterioError as exc:
        raise WorkbenchError(f"{path}: could not be written ({_short(exc)})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _check_written(tmp: Path, path: Path, arr: np.ndarray) -> None:
    """Read the temporary file back before it is renamed into place: a write the disk cut short
    (GDAL may only warn) must fail here, not leave a truncated GeoTIFF under the real name."""
    try:
        with rasterio.open(tmp) as ds:
            if (ds.count, ds.height, ds.width) != arr.shape:
                raise WorkbenchError(f"{path}: written file holds {ds.count}x{ds.height}x{ds.width}, not {arr.shape}")
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
