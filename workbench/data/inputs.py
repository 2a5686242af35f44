"""The one way to open a user's scene: any raster GDAL reads, a Sentinel-2 SAFE folder, a STAC item.

    scene = describe("S2B_MSIL2A_....SAFE")            # or x.tif, x.vrt, item.json, /vsicurl/..., SENTINEL2_L2A:...
    scene.names                                        # ['B02', 'B03', 'B04', 'B08', 'B05', ...]
    with scene.open(["B04", "B03", "B02", "B08"]) as stack:
        reflectance, valid = stack.read(window)        # float32 (4, h, w) on the finest band's grid

:func:`describe` only reads headers and metadata; it names every band canonically
(:mod:`workbench.data.bands`), finds how its numbers become reflectance
(:mod:`workbench.data.radiometry`), and keeps the scene's date, id and its Sentinel-2 SCL
band. :meth:`SceneInput.open` gives a :class:`Stack`: the chosen bands on one pixel grid (the
finest of them; coarser bands, e.g. 20 m B11 or SCL beside 10 m B02, are resampled on the fly
through a ``WarpedVRT``), read window by window, converted to reflectance, with nodata, NaN
and the SCL classes of :data:`SCL_INVALID` (no data, saturated, cloud shadow, clouds,
cirrus) marked invalid.

SAFE folders and STAC items are read by :mod:`workbench.data.sources.safe` and
:mod:`workbench.data.sources.stac`; everything else goes to rasterio as given, so
``/vsicurl/``, ``/vsis3/``, VRTs and GDAL subdatasets work as GDAL opens them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data import bands as band_names
from workbench.data.radiometry import Radiometry, by_convention, declared, user_given
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

    def open(self, names: Sequence[str] | None = None, *, use_scl: bool = True,
             scale: float | None = None, offset: float | None = None) -> Stack:
        """A :class:`Stack` of the bands ``names`` (default: all), in that order."""
        chosen = [self.band(n) for n in names] if names else list(self.bands)
        return Stack(self, chosen, self.scl if use_scl else None, scale=scale, offset=offset)


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


def describe(path: str | Path, bands: Sequence[str] | None = None) -> SceneInput:
    """Name the bands of any input (see the module docstring); ``bands`` names them in order
    when the input carries no names of its own. A path that is neither here nor a GDAL path is
    a one-line error."""
    text = str(path)
    p = Path(text)
    if not is_gdal_path(text) and not p.exists():
        raise WorkbenchError(f"{text}: no such file or folder")
    if p.is_dir():
        from workbench.data.sources import safe

        if safe.is_safe(p):
            scene = safe.read_safe(p)
        else:
            raise WorkbenchError(f"{text}: a folder that is not a Sentinel-2 .SAFE product (no MTD_MSIL2A.xml); "
                                 "give one of its GeoTIFFs, or `data import` the folder")
    elif text.lower().endswith(".json") or (is_gdal_path(text) and text.lower().split("?")[0].endswith(".json")):
        from workbench.data.sources import stac

        scene = stac.read_item(text)
    else:
        scene = describe_raster(text)
    if bands:
        scene.rename(bands)
    return scene


def _open(path: str):
    import rasterio
    from rasterio.errors import RasterioError

    try:
        return rasterio.open(path)
    except RasterioError as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: not a raster GDAL can read ({msg})") from None


def describe_raster(path: str) -> SceneInput:
    """One raster file (GeoTIFF, COG, VRT, JP2, a GDAL subdataset or remote path)."""
    with _open(path) as ds:
        tags = {k.upper(): v for k, v in ds.tags().items()}
        if not ds.count:
            subs = list(ds.subdatasets or [])
            if subs:
                raise WorkbenchError(f"{path}: holds subdatasets, not bands; give one of them, e.g. {subs[0]}")
            raise WorkbenchError(f"{path}: has no bands")
        names = band_names.canonical_names(list(ds.descriptions))
        res = abs(ds.transform.e) if ds.transform else None
        nodata = ds.nodata
        if nodata is None and ds.driver == "SENTINEL2" and tags.get("SPECIAL_VALUE_NODATA") is not None:
            nodata = float(tags["SPECIAL_VALUE_NODATA"])      # GDAL's SENTINEL2 driver declares none; L2A DN 0
        out = []
        for i, name in enumerate(names):
            out.append(BandSource(name=name, path=path, index=i + 1, radiometry=declared(ds, i + 1, tags, name),
                                  nodata=nodata, description=ds.descriptions[i] or "", resolution=res))
    scl = None
    if band_names.SCL in names:
        scl = out.pop(names.index(band_names.SCL))
    from workbench.data.sources.folder import cloud_from_tags, date_from_tags

    # GDAL's SENTINEL2 driver gives PRODUCT_START_TIME and PRODUCT_URI (``....SAFE``)
    date = date_from_tags(tags) or date_from_name(tags.get("PRODUCT_START_TIME", "")) or date_from_name(Path(path).name)
    uri = tags.get("PRODUCT_URI")
    uri = uri[:-5] if uri and uri.upper().endswith(".SAFE") else uri
    return SceneInput(path=path, kind="raster", bands=out, date=date,
                      scene_id=tags.get("SCENE_ID") or tags.get("PRODUCT_ID") or tags.get("SYSTEM:INDEX") or uri,
                      scl=scl, tags=tags, cloud_cover=cloud_from_tags(tags))


class Stack:
    """Bands of one scene on one pixel grid, read window by window in reflectance (or raw) units.

    The grid is that of the finest chosen band (ties: the first); other bands are warped onto
    it (``WarpedVRT``, bilinear; SCL nearest). ``radiometry`` per band is the user's, else the
    band's declared one, else its dtype's convention (:func:`radiometry.by_convention`)."""

    def __init__(self, scene: SceneInput, chosen: Sequence[BandSource], scl: BandSource | None,
                 scale: float | None = None, offset: float | None = None):
        self.scene, self.bands, self.scl_band = scene, list(chosen), scl
        self._handles: dict[str, object] = {}
        self._readers: list = []
        try:
            ref = min(self.bands, key=lambda b: (b.resolution or math.inf))
            base = self._handle(ref.path)
            self.crs, self.transform = base.crs, base.transform
            self.width, self.height = base.width, base.height
            self.dtype = np.dtype(base.dtypes[ref.index - 1])
            self._readers = [self._reader(b) for b in self.bands]
            self.scl = self._reader(scl, nearest=True) if scl is not None else None
            self.radiometry = [user_given(scale, offset, self._dtype_of(b)) or b.radiometry
                               or by_convention(self._dtype_of(b)) for b in self.bands]
        except BaseException:
            self.close()
            raise

    def _handle(self, path: str):
        if path not in self._handles:
            self._handles[path] = _open(path)
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
        if key not in self._handles:
            # the band's nodata, not the file's: a SAFE's JP2s have no tag but DN 0 is no data, and
            # bilinear resampling must not blend it into the valid pixels beside a swath edge
            nodata = b.nodata if b.nodata is not None else ds.nodata
            self._handles[key] = WarpedVRT(ds, crs=self.crs, transform=self.transform, width=self.width,
                                           height=self.height, src_nodata=nodata, nodata=nodata,
                                           resampling=Resampling.nearest if nearest else Resampling.bilinear)
        return self._handles[key], b.index

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def units(self) -> str:
        from workbench.data.radiometry import units_of

        return units_of(self.radiometry)

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

    def invalid(self, raw: np.ndarray, window=None) -> np.ndarray:
        """(h, w) True where any band is nodata or NaN, or SCL says no ground."""
        bad = np.zeros(raw.shape[1:], bool)
        for i, b in enumerate(self.bands):
            if b.nodata is not None and not (isinstance(b.nodata, float) and math.isnan(b.nodata)):
                bad |= raw[i] == np.asarray(b.nodata).astype(raw.dtype)
        if raw.dtype.kind == "f":
            bad |= np.isnan(raw).any(axis=0)
        if self.scl is not None:
            ds, index = self.scl
            scl = ds.read(index, window=window)
            bad |= np.isin(scl, SCL_INVALID)
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
        for h in reversed(list(self._handles.values())):
            try:
                h.close()
            except Exception:
                pass
        self._handles.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
