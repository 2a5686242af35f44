"""What a scene is once described: named bands, where each is read from, and the :class:`Stack`
that reads them on one grid in reflectance.

These types live apart from :mod:`workbench.data.inputs` (which *finds* them for any input)
so that the readers of SAFE folders and STAC items (:mod:`workbench.data.sources.safe`,
:mod:`workbench.data.sources.stac`), which ``inputs.describe`` calls, can build them without
an import circle. ``inputs`` re-exports them: callers keep ``from workbench.data.inputs import ...``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.data import bands as band_names
from workbench.data.radiometry import REFLECTANCE, Radiometry, by_convention, user_given
from workbench.errors import WorkbenchError

# Sentinel-2 scene classification classes that are not ground to learn from or map
SCL_INVALID = (0, 1, 3, 8, 9, 10)
SCL_CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area", 3: "cloud shadow", 4: "vegetation",
               5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud medium probability",
               9: "cloud high probability", 10: "thin cirrus", 11: "snow"}
_GDAL_PREFIXES = ("/vsi", "SENTINEL2_L2A:", "SENTINEL2_L1C:", "HDF5:", "NETCDF:", "GTIFF_DIR:")
_DATE_IN_NAME = re.compile(r"(?<!\d)(20\d{2}|19\d{2})-?(\d{2})-?(\d{2})(?:T\d{6})?(?!\d)")


@dataclass
class BandSource:
    """One band of a scene: where it is read from and what its numbers are."""

    name: str                          # canonical (bands.canonical) or b<i> when unnamed
    path: str                          # what rasterio opens: a file, /vsicurl/..., a subdataset
    index: int = 1                     # 1-based band within that dataset
    radiometry: Radiometry | None = None   # declared by the input (None: nothing said)
    nodata: float | None = None
    description: str = ""              # as the input spells it
    resolution: float | None = None    # pixel size in the dataset's CRS units, when known


@dataclass
class SceneInput:
    """What :func:`describe` found: named bands, where each is, and the scene's metadata."""

    path: str
    kind: str                          # raster, safe, stac
    bands: list[BandSource]
    date: str | None = None
    scene_id: str | None = None
    scl: BandSource | None = None
    tags: dict = field(default_factory=dict)
    cloud_cover: float | None = None   # 0..1
    missing: dict = field(default_factory=dict)   # band -> why it is absent (a SAFE's listed but missing JP2)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    def band(self, name: str) -> BandSource:
        for b in self.bands:
            if b.name == name:
                return b
        wanted = band_names.canonical(name) or name
        if wanted in self.missing:
            raise WorkbenchError(f"{self.path}: {self.missing[wanted]}")
        raise WorkbenchError(f"{self.path}: has no band {name} (it has {', '.join(self.names)})")

    def rename(self, names: Sequence[str]) -> None:
        """Name the bands in order (``--bands B02,B03,B04,B08`` for a file that carries no names)."""
        if len(names) != len(self.bands):
            raise WorkbenchError(f"--bands names {len(names)} band(s) but {self.path} has {len(self.bands)}")
        for b, n in zip(self.bands, names):
            b.name = band_names.canonical(n) or n

    def open(self, names: Sequence[str] | None = None, *, scl_nodata: Sequence[int] | None = SCL_INVALID,
             scale: float | None = None, offset: float | None = None, grid: Any = None) -> Stack:
        """A :class:`Stack` of the bands ``names`` (default: all), in that order; on ``grid`` (a
        ``geotiff.RasterInfo``) when given, else on the finest band's."""
        chosen = [self.band(n) for n in names] if names else list(self.bands)
        return Stack(self, chosen, self.scl if scl_nodata else None, scale=scale, offset=offset,
                     scl_nodata=scl_nodata or (), grid=grid)


def date_from_name(name: str) -> str | None:
    """``YYYY-MM-DD`` from a file or product name (``20230415``, ``2023-04-15``, ``20230415T103021``)."""
    from datetime import date

    for m in _DATE_IN_NAME.finditer(name):
        try:
            return date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            continue
    return None


def is_gdal_path(path: str) -> bool:
    return str(path).startswith(_GDAL_PREFIXES) or "://" in str(path)

def open_dataset(path: str):
    import rasterio
    from rasterio.errors import RasterioError

    try:
        return rasterio.open(path)
    except RasterioError as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: not a raster GDAL can read ({msg})") from None


class Stack:
    """Bands of one scene on one pixel grid, read window by window in reflectance (or raw) units.

    The grid is that of the finest chosen band (ties: the first), or one given (``grid``, or
    later :meth:`onto`: the model grid of :func:`workbench.data.warp.model_grid`, another CRS
    or pixel size); bands not on it are warped onto it (``WarpedVRT``: bilinear, average where
    the band's pixels are at least twice finer than the grid's; SCL nearest). ``radiometry``
    per band is the user's, else the band's declared one, else its dtype's convention
    (:func:`radiometry.by_convention`)."""

    def __init__(self, scene: SceneInput, chosen: Sequence[BandSource], scl: BandSource | None,
                 scale: float | None = None, offset: float | None = None,
                 scl_nodata: Sequence[int] = SCL_INVALID, grid: Any = None):
        self.scene, self.bands, self.scl_band = scene, list(chosen), scl
        self.scl_nodata = tuple(int(c) for c in scl_nodata)
        self._handles: dict[str, object] = {}
        self._warps: dict[str, object] = {}
        self._readers: list = []
        self._footprint: list = []
        self.scl = None
        try:
            ref = min(self.bands, key=lambda b: (b.resolution or math.inf))
            base = self._handle(ref.path)
            self.dtype = np.dtype(base.dtypes[ref.index - 1])
            self.crs, self.transform = base.crs, base.transform
            self.width, self.height = base.width, base.height
            self.onto(grid)
            self.radiometry = [user_given(scale, offset, self._dtype_of(b)) or b.radiometry
                               or by_convention(self._dtype_of(b)) for b in self.bands]
        except BaseException:
            self.close()
            raise

    def onto(self, grid: Any) -> None:
        """Read from now on onto ``grid`` (a ``geotiff.RasterInfo``: CRS, transform, size); None
        keeps the current grid. One path for every band: those not on the grid are warped."""
        if grid is not None:
            from rasterio.crs import CRS
            from rasterio.transform import Affine

            self.crs = CRS.from_user_input(grid.crs) if grid.crs else None
            self.transform = Affine(*tuple(grid.transform)[:6])
            self.width, self.height = int(grid.width), int(grid.height)
        for h in self._warps.values():
            h.close()
        self._warps.clear()
        self._readers = [self._reader(b) for b in self.bands]
        self.scl = self._reader(self.scl_band, nearest=True) if self.scl_band is not None else None
        # warped bands without a nodata value: where the grid leaves their footprint they read 0
        # (valid-looking raw values); their warp's alpha says which pixels have no source
        self._footprint = [r for r, b in zip(self._readers, self.bands)
                           if r[0] is not self._handle(b.path) and self._nodata_of(b) is None]

    @property
    def warped(self) -> bool:
        """Whether any band is read through a warp (another grid than its file's)."""
        return any(ds is not self._handle(b.path) for (ds, _), b in zip(self._readers, self.bands))

    def _handle(self, path: str):
        if path not in self._handles:
            self._handles[path] = open_dataset(path)
        return self._handles[path]

    def _dtype_of(self, b: BandSource) -> str:
        return self._handle(b.path).dtypes[b.index - 1]

    def _reader(self, b: BandSource, nearest: bool = False):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        ds = self._handle(b.path)
        if ds.crs == self.crs and ds.transform == self.transform and (ds.width, ds.height) == (self.width,
                                                                                                self.height):
            return ds, b.index
        key = f"{b.path}|warp|{nearest}"
        if key not in self._warps:
            # the band's nodata, not the file's: a SAFE's JP2s have no tag but DN 0 is no data, and
            # bilinear resampling must not blend it into the valid pixels beside a swath edge
            nodata = self._nodata_of(b)
            how = Resampling.nearest if nearest else self._resampling(ds)
            self._warps[key] = WarpedVRT(ds, crs=self.crs, transform=self.transform, width=self.width,
                                         height=self.height, src_nodata=nodata, nodata=nodata, resampling=how,
                                         add_alpha=nodata is None and not nearest)
        return self._warps[key], b.index

    def _nodata_of(self, b: BandSource) -> float | None:
        return b.nodata if b.nodata is not None else self._handle(b.path).nodata

    def _resampling(self, ds):
        """Bilinear, or average when the band's pixels are at least twice finer than the grid's:
        bilinear would sample a 10 m band onto 20 m pixels from 4 of their 16 source pixels (aliasing)."""
        from rasterio.enums import Resampling

        from workbench.data.geotiff import info_of
        from workbench.data.warp import pixel_metres

        try:
            grid = dataclasses.replace(info_of(ds), crs=self.crs.to_string() if self.crs else None,
                                       transform=tuple(self.transform)[:6])
            finer = pixel_metres(grid) / pixel_metres(info_of(ds))
        except Exception:
            finer = 1.0
        return Resampling.average if finer >= 2.0 else Resampling.bilinear

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def units(self) -> str:
        from workbench.data.radiometry import units_of

        return units_of(self.radiometry)

    @property
    def info(self):
        """The stack's pixel grid as a ``geotiff.RasterInfo``: what masks are checked against and
        outputs are written on."""
        from workbench.data.geotiff import RasterInfo

        return RasterInfo(path=str(self.scene.path), width=self.width, height=self.height, count=len(self.bands),
                          dtype=str(self.dtype), crs=self.crs.to_string() if self.crs else None,
                          transform=tuple(self.transform)[:6], nodata=None, band_names=tuple(self.names))

    def sample(self, max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """A decimated read of every band (``radiometry.sample_values``) and its valid pixels
        (nodata only: the SCL is not sampled): what the units of a scene are checked on."""
        from workbench.data.radiometry import sample_values

        raw = np.concatenate([sample_values(ds, [index], max_side) for ds, index in self._readers])
        return raw, ~self.invalid(raw, scl=False)

    def read_raw(self, window=None) -> np.ndarray:
        """(bands, h, w) in the bands' own dtype (upcast to a common one)."""
        from rasterio.errors import RasterioError

        parts = []
        for (ds, index), b in zip(self._readers, self.bands):
            try:
                parts.append(ds.read(index, window=window))
            except RasterioError as exc:
                raise WorkbenchError(f"{b.path}: truncated or corrupt raster ({str(exc).strip()[:160]})") from None
        return np.stack(parts) if len(parts) > 1 else parts[0][None]

    def invalid(self, raw: np.ndarray, window=None, scl: bool = True) -> np.ndarray:
        """(h, w) True where any band is nodata or not finite, or (``scl``: a window of the grid, not a
        decimated sample) the SCL says no ground or a warped band has no source pixel."""
        bad = np.zeros(raw.shape[1:], bool)
        for i, b in enumerate(self.bands):
            if b.nodata is not None and not (isinstance(b.nodata, float) and math.isnan(b.nodata)):
                bad |= raw[i] == np.asarray(b.nodata).astype(raw.dtype)
        if all(b.nodata is None for b in self.bands) and self.units == REFLECTANCE:
            # reflectance without a declared nodata (e.g. an EE export of divide(10000)): 0 in
            # every band is where the export was masked, not ground (raw 8-bit RGB keeps its blacks)
            bad |= (raw == 0).all(axis=0)
        if raw.dtype.kind == "f":
            bad |= ~np.isfinite(raw).all(axis=0)
        if scl:                              # outside a warped band's footprint (bands without nodata)
            for ds, index in self._footprint:
                bad |= ds.read_masks(index, window=window) == 0
        if scl and self.scl is not None:
            ds, index = self.scl
            scl = ds.read(index, window=window)
            bad |= np.isin(scl, self.scl_nodata)
        return bad

    def read(self, window=None) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (bands, h, w) in reflectance (raw units stay raw), valid (h, w)); invalid pixels 0."""
        raw = self.read_raw(window)
        bad = self.invalid(raw, window)
        x = raw.astype(np.float32)
        for i, r in enumerate(self.radiometry):
            s, o = r.affine()
            if (s, o) != (1.0, 0.0):
                x[i] *= np.float32(s)
                x[i] += np.float32(o)
        if bad.any():
            x[:, bad] = 0.0
        return x, ~bad

    def close(self) -> None:
        for h in reversed(list(self._warps.values()) + list(self._handles.values())):
            try:
                h.close()
            except Exception:
                pass
        self._warps.clear()
        self._handles.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
