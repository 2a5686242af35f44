"""One synthetic piece of Sentinel-2 L2A ground, written in every form users bring it in.

Tests of issue 18 check that the same ground gives the same reflectance (and the same map)
whatever form it comes in, so every writer here starts from one :class:`Ground` made by
:func:`ground` and only changes the *encoding*:

======================  ==========================================================================
form                    encoding
======================  ==========================================================================
``write_dn_geotiff``    uint16 DN = reflectance x 10000, nodata 0 declared, a nodata edge of 0,
                        band descriptions ``B02`` (``names="s2"``), ``B2`` (``"ee"``) or none;
                        ``dn_offset=1000`` adds the baseline-04.00 offset (declared in tags or not)
``write_float_geotiff`` float32 reflectance with NO nodata tag: what Earth Engine's
                        ``divide(10000)`` export gives; masked pixels (the edge) are 0.0, as EE
                        writes masked pixels of an export without ``noData`` as 0
``write_mask``          uint8 water mask, 1 water / 0 land, 255 (declared nodata) under the edge
``write_next_zone``     the DN GeoTIFF reprojected to the next UTM zone (EPSG:32634) + its mask
``write_safe``          a ``.SAFE`` L2A product: ``MTD_MSIL2A.xml`` + lossless JP2s at 10/20/60 m,
                        DN + 1000 with ``BOA_ADD_OFFSET -1000`` (``offset=True``), an SCL band
``write_stac_item``     one COG per band + a STAC item (pystac) with ``eo:bands``/``raster:bands``
``write_ee_chips``      ``X.tif`` + ``X_mask.tif`` chips like the workbench's EE export writes
======================  ==========================================================================

Why the ground looks the way it does: water (a sea behind a ragged coastline, a meandering
river, a lake; 10-30 % of the pixels) beside three land covers (vegetation, bare soil,
built-up) with surface reflectances typical of L2A products, so water is separable the way
it is in real scenes (dark in NIR/SWIR) and a model trained on one form can be checked on
another. A small bright cloud sits on land (SCL class 9 in the SAFE, visible in every form).

Exactness: reflectances are multiples of 1e-4, so DN = round(refl x 10000) is exact and every
encoding can be compared within 1e-4 (float32 rounding only). The 20 m and 60 m bands are
genuinely coarse: at 10 m they are constant over 2 x 2 (6 x 6) blocks, so a 20 m JP2 holds
exactly ``native(g, band)`` and the 13-band 10 m GeoTIFF is that repeated. Everything is made
with a seeded ``numpy.random.Generator``: the same ``(size, seed)`` gives the same arrays.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_origin

from workbench.data import geotiff
from workbench.data.bands import COMMON_OF, SENTINEL2, SENTINEL2_RESOLUTION

CRS = "EPSG:32633"
NEXT_ZONE_CRS = "EPSG:32634"
ORIGIN = (500_000.0, 4_600_000.0)      # upper-left corner (x, y) in EPSG:32633
RES = 10.0
DATE = "2023-04-15"
SENSING = "20230415T100029"
TILE = "T33TUL"
PRODUCT = f"S2B_MSIL2A_{SENSING}_N0509_R122_{TILE}_20230415T130000"
SCENE_ID = f"{SENSING}_20230415T100025_{TILE}"          # Earth Engine's system:index of that scene
TEN_M = ("B02", "B03", "B04", "B08")
DEFAULT_BANDS = TEN_M
ALL_BANDS = SENTINEL2                                     # the 13 bands, B01 .. B12 with B8A
L2A_BANDS = tuple(b for b in SENTINEL2 if b != "B10")     # an L2A product has no cirrus band B10
QUANTIFICATION = 10000
OFFSET_DN = 1000
NODATA_EDGE = 16

# Surface reflectance per cover, band order of SENTINEL2 (B01..B08, B8A, B09..B12).
SPECTRA = {
    "water":      (0.070, 0.060, 0.050, 0.030, 0.025, 0.015, 0.012, 0.010, 0.009, 0.005, 0.002, 0.005, 0.004),
    "vegetation": (0.025, 0.030, 0.060, 0.040, 0.100, 0.250, 0.310, 0.350, 0.370, 0.120, 0.010, 0.180, 0.090),
    "soil":       (0.100, 0.120, 0.150, 0.200, 0.230, 0.250, 0.270, 0.280, 0.290, 0.100, 0.010, 0.350, 0.300),
    "built":      (0.120, 0.130, 0.140, 0.150, 0.160, 0.170, 0.180, 0.190, 0.200, 0.070, 0.010, 0.220, 0.200),
    "cloud":      (0.450, 0.480, 0.490, 0.500, 0.510, 0.520, 0.520, 0.530, 0.530, 0.200, 0.050, 0.400, 0.300),
}
COVERS = ("water", "vegetation", "soil", "built", "cloud")
# SCL class of each cover (6 water, 4 vegetation, 5 not vegetated, 9 cloud high probability)
SCL_OF_COVER = {"water": 6, "vegetation": 4, "soil": 5, "built": 5, "cloud": 9}
SCL_NODATA = 0
MASK_NODATA = 255


@dataclass
class Ground:
    """The synthetic truth every form is written from.

    ``reflectance``: band -> float32 (size, size) surface reflectance at 10 m for all 13 bands
    (20 m / 60 m bands constant over 2 x 2 / 6 x 6 blocks); ``water``: uint8 1 water / 0 land;
    ``cover``: uint8 index into :data:`COVERS`; ``crs`` / ``transform``: the 10 m grid."""

    reflectance: dict[str, np.ndarray]
    water: np.ndarray
    cover: np.ndarray
    crs: str
    transform: Affine
    seed: int
    date: str = DATE
    scene_id: str = SCENE_ID

    @property
    def size(self) -> int:
        return int(self.water.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.water.shape)  # type: ignore[return-value]

    def stack(self, bands: Sequence[str] = DEFAULT_BANDS) -> np.ndarray:
        """(len(bands), h, w) float32 reflectance in the given order."""
        return np.stack([self.reflectance[b] for b in bands])

    def dn(self, bands: Sequence[str] = DEFAULT_BANDS, offset: int = 0) -> np.ndarray:
        """(len(bands), h, w) uint16 DN (+ ``offset``), no nodata edge."""
        return (np.rint(self.stack(bands).astype(np.float64) * QUANTIFICATION) + offset).astype(np.uint16)

    def valid(self, nodata_edge: int = NODATA_EDGE) -> np.ndarray:
        """(h, w) bool: False on the first ``nodata_edge`` columns (the swath border the writers blank)."""
        ok = np.ones(self.shape, bool)
        ok[:, :nodata_edge] = False
        return ok

    def scl(self) -> np.ndarray:
        """(h, w) uint8 scene classification at 10 m, before the nodata edge."""
        lut = np.array([SCL_OF_COVER[c] for c in COVERS], np.uint8)
        return lut[self.cover]


# ---- the ground ------------------------------------------------------------------------------

def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]-ish: a coarse normal grid interpolated bilinearly (numpy only)."""
    h, w = shape
    coarse = rng.normal(size=(cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    rows = np.stack([np.interp(xs, np.arange(cells + 1), r) for r in coarse])          # (cells+1, w)
    out = np.stack([np.interp(ys, np.arange(cells + 1), c) for c in rows.T], axis=1)   # (h, w)
    return out / (np.abs(out).max() or 1.0)


def _smooth1d(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    coarse = rng.normal(size=cells + 1)
    return np.interp(np.linspace(0, cells, n), np.arange(cells + 1), coarse)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (edge-padded to a multiple of f): the band at f times the pixel size."""
    h, w = a.shape
    ph, pw = -h % f, -w % f
    p = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return p.reshape(p.shape[0] // f, f, p.shape[1] // f, f).mean(axis=(1, 3))


def _repeat(a: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)[: shape[0], : shape[1]]


def ground(size: int = 256, seed: int = 0) -> Ground:
    """The synthetic ground, ``size`` x ``size`` px at 10 m (see the module docstring)."""
    if size < 32:
        raise ValueError("ground(): size must be at least 32 px")
    rng = np.random.default_rng(seed)
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size      # 0..1 down / across

    # sea in the south-east behind a ragged coastline
    coast = 1.08 - 0.45 * xx + 0.05 * _smooth1d(rng, size, 6)[None, :] + 0.02 * _smooth1d(rng, size, 32)[None, :]
    sea = yy > coast
    # a meandering river from the top edge down to the sea
    phase = rng.uniform(0, 2 * np.pi)
    centre = 0.45 + 0.08 * np.sin(2 * np.pi * 1.3 * yy + phase) + 0.03 * _smooth1d(rng, size, 5)[:, None]
    width = (0.012 + 0.006 * yy) + 2.0 / size
    river = np.abs(xx - centre) < width
    # a lake with a wobbly shore in the north-west (clear of the nodata edge)
    cy, cx = rng.uniform(0.22, 0.32), rng.uniform(0.22, 0.30)
    r = np.hypot((yy - cy) / 1.2, xx - cx)
    lake = r < 0.07 * (1 + 0.25 * _smooth(rng, shape, 4))
    water = sea | river | lake

    # land covers from two smooth fields: vegetation, bare soil, built-up
    f1, f2 = _smooth(rng, shape, 5), _smooth(rng, shape, 8)
    cover = np.where(f1 > np.quantile(f1, 0.4), 1, 2).astype(np.uint8)     # vegetation / soil
    cover[f2 > np.quantile(f2, 0.88)] = 3                                   # built-up patches
    # a small cloud on land, far from water
    land = ~water
    cyc, cxc = 0.75, 0.18
    cloud = (np.hypot(yy - cyc, xx - cxc) < 0.045) & land
    if not cloud.any():                      # the coast never reaches there, but keep the patch certain
        cloud[int(cyc * size), int(cxc * size)] = True
    cover[water] = 0
    cover[cloud] = 4

    texture = 0.08 * _smooth(rng, shape, 16)
    reflectance = {}
    for i, band in enumerate(SENTINEL2):
        base = np.array([SPECTRA[c][i] for c in COVERS])[cover]
        noise = rng.normal(0.0, 0.002 + 0.01 * base, shape)
        value = base * (1 + np.where(water, 0.3 * texture, texture)) + noise
        f = SENTINEL2_RESOLUTION[band] // 10
        if f > 1:                             # a coarse band: one value per 20 m / 60 m pixel
            value = _repeat(_block_mean(value, f), f, shape)
        value = np.clip(value, 0.0005, 1.0)   # DN never 0 (L2A's nodata) on valid ground
        reflectance[band] = (np.rint(value * QUANTIFICATION) / QUANTIFICATION).astype(np.float32)
    transform = from_origin(ORIGIN[0], ORIGIN[1], RES, RES)
    return Ground(reflectance=reflectance, water=water.astype(np.uint8), cover=cover, crs=CRS,
                  transform=transform, seed=seed)


def native(g: Ground, band: str, resolution: int | None = None) -> np.ndarray:
    """A band at ``resolution`` metres (default: its native Sentinel-2 one): block means of the
    10 m array (for a coarse band at its own resolution, exactly its values), shape
    ``ceil(size * 10 / resolution)``; reflectance, multiples of 1e-4."""
    res = resolution or SENTINEL2_RESOLUTION[band]
    f = res // 10
    a = g.reflectance[band].astype(np.float64)
    if f == 1:
        return a.astype(np.float32)
    return (np.rint(_block_mean(a, f) * QUANTIFICATION) / QUANTIFICATION).astype(np.float32)


def native_transform(g: Ground, resolution: int) -> Affine:
    return from_origin(g.transform.c, g.transform.f, float(resolution), float(resolution))


def upsampled(g: Ground, band: str, resolution: int | None = None) -> np.ndarray:
    """``native(g, band, resolution)`` repeated back onto the 10 m grid (nearest neighbour)."""
    res = resolution or SENTINEL2_RESOLUTION[band]
    return _repeat(native(g, band, res), res // 10, g.shape)


def ee_name(band: str) -> str:
    """Earth Engine's spelling of a Sentinel-2 band: ``B02`` -> ``B2``, ``B8A`` stays."""
    return band if band == "B8A" or not band[1:].isdigit() else f"B{int(band[1:])}"


def _names(bands: Sequence[str], names: str) -> list[str] | None:
    if names == "s2":
        return list(bands)
    if names == "ee":
        return [ee_name(b) for b in bands]
    if names == "none":
        return None
    raise ValueError(f"names={names!r}: one of 's2', 'ee', 'none'")


def _tags(g: Ground, extra: dict | None = None) -> dict:
    return {"DATE_ACQUIRED": g.date, "SCENE_ID": g.scene_id, "CLOUDY_PIXEL_PERCENTAGE": f"{_cloud_percent(g):.4f}",
            **(extra or {})}


def _cloud_percent(g: Ground) -> float:
    return float((g.cover == COVERS.index("cloud")).mean() * 100)


# ---- GeoTIFFs --------------------------------------------------------------------------------

def write_dn_geotiff(path: str | Path, g: Ground, bands: Sequence[str] = DEFAULT_BANDS, names: str = "s2",
                     nodata_edge: int = NODATA_EDGE, dn_offset: int = 0, declare_offset: bool = False,
                     tags: dict | None = None) -> Path:
    """uint16 DN (x 10000, + ``dn_offset``), nodata 0 declared, the first ``nodata_edge`` columns 0.

    ``bands`` in any order or all 13 (:data:`ALL_BANDS`; coarse bands are repeated onto 10 m).
    ``dn_offset=1000`` writes baseline-04.00 DN; ``declare_offset`` then adds the tags
    ``BOA_QUANTIFICATION_VALUE=10000`` / ``BOA_ADD_OFFSET=-1000`` (without it the offset is
    undeclared, which a reader must notice, not silently accept)."""
    arr = g.dn(bands, dn_offset)
    arr[:, ~g.valid(nodata_edge)] = 0
    extra = dict(tags or {})
    if declare_offset:
        extra.update(BOA_QUANTIFICATION_VALUE=str(QUANTIFICATION), BOA_ADD_OFFSET=str(-dn_offset))
    return geotiff.write(path, arr, g.transform, g.crs, nodata=0, band_names=_names(bands, names),
                         tags=_tags(g, extra))


def write_float_geotiff(path: str | Path, g: Ground, bands: Sequence[str] = DEFAULT_BANDS, names: str = "s2",
                        nodata_edge: int = NODATA_EDGE, edge_value: float = 0.0, tags: dict | None = None) -> Path:
    """float32 reflectance with NO nodata tag, as Earth Engine exports ``image.divide(10000)``:
    masked pixels (the nodata edge) come out as 0.0 (``edge_value``; NaN for exports that
    unmask with NaN)."""
    arr = g.stack(bands).astype(np.float32)
    arr[:, ~g.valid(nodata_edge)] = edge_value
    return geotiff.write(path, arr, g.transform, g.crs, nodata=None, band_names=_names(bands, names),
                         tags=_tags(g, tags))


def write_mask(path: str | Path, g: Ground, nodata_edge: int = NODATA_EDGE) -> Path:
    """The water mask: uint8 1 water / 0 land, 255 (declared nodata) under the nodata edge."""
    m = g.water.copy()
    m[~g.valid(nodata_edge)] = MASK_NODATA
    return geotiff.write(path, m, g.transform, g.crs, nodata=MASK_NODATA, band_names=["water"],
                         tags={"VALUES": "1 water, 0 not water, 255 unknown"})


def write_next_zone(path: str | Path, g: Ground, mask_path: str | Path | None = None,
                    bands: Sequence[str] = DEFAULT_BANDS, names: str = "s2", nodata_edge: int = NODATA_EDGE,
                    crs: str = NEXT_ZONE_CRS) -> tuple[Path, Path | None]:
    """The DN GeoTIFF of :func:`write_dn_geotiff` reprojected to the next UTM zone at 10 m
    (``rasterio.warp.reproject``, bilinear, nodata 0 outside the footprint), and with
    ``mask_path`` its water mask (nearest, 255 outside). Returns (image, mask or None)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    src = g.dn(bands)
    src[:, ~g.valid(nodata_edge)] = 0
    h, w = g.shape
    left, top = g.transform.c, g.transform.f
    bounds = (left, top - h * RES, left + w * RES, top)
    dst_t, dw, dh = calculate_default_transform(g.crs, crs, w, h, *bounds, resolution=RES)
    # snap the grid to whole 10 m like a real tile
    dst_t = from_origin(math.floor(dst_t.c / RES) * RES, math.ceil(dst_t.f / RES) * RES, RES, RES)
    dw, dh = dw + 1, dh + 1
    out = np.zeros((len(bands), dh, dw), np.uint16)
    reproject(src, out, src_transform=g.transform, src_crs=g.crs, dst_transform=dst_t, dst_crs=crs,
              src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear)
    image = geotiff.write(path, out, dst_t, crs, nodata=0, band_names=_names(bands, names), tags=_tags(g))
    mask = None
    if mask_path is not None:
        m = g.water.copy()
        m[~g.valid(nodata_edge)] = MASK_NODATA
        mo = np.full((dh, dw), MASK_NODATA, np.uint8)
        reproject(m, mo, src_transform=g.transform, src_crs=g.crs, dst_transform=dst_t, dst_crs=crs,
                  src_nodata=MASK_NODATA, dst_nodata=MASK_NODATA, resampling=Resampling.nearest)
        mask = geotiff.write(mask_path, mo, dst_t, crs, nodata=MASK_NODATA, band_names=["water"])
    return image, mask


# ---- SAFE ------------------------------------------------------------------------------------

def _copy_written(path: Path, arr: np.ndarray, transform: Affine, crs: str, nodata: float | None, suffix: str,
                  driver: str, **options) -> Path:
    """Write ``arr`` with a copy-only ``driver`` (JP2OpenJPEG, COG): through an in-memory GeoTIFF,
    to a temporary name, then renamed (writing with mode "w" would leave the georeferencing in
    an ``.aux.xml`` beside the temporary name)."""
    arr = arr[None] if arr.ndim == 2 else arr
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{suffix}")
    try:
        with MemoryFile() as mf:
            with mf.open(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                         dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata) as mem:
                mem.write(arr)
            with mf.open() as mem:
                rasterio.shutil.copy(mem, tmp, driver=driver, **options)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()
    return path


def _write_jp2(path: Path, arr: np.ndarray, transform: Affine, crs: str) -> Path:
    """A lossless JPEG 2000 (``QUALITY=100 REVERSIBLE=YES``) with GeoJP2/GMLJP2 georeferencing
    and no nodata, as in a SAFE product."""
    return _copy_written(path, arr, transform, crs, None, ".jp2", "JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES",
                         BLOCKXSIZE=1024, BLOCKYSIZE=1024)


# files of each resolution folder of a real L2A granule (B08 only at 10 m; B01, B09 at 60 m)
SAFE_FILES = {
    10: ("B02", "B03", "B04", "B08", "TCI"),
    20: ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL", "TCI"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12", "SCL", "TCI"),
}
_WAVELENGTHS = {"B01": (411, 456, 442.7), "B02": (456, 533, 492.3), "B03": (538, 583, 559.0),
                "B04": (646, 684, 665.0), "B05": (695, 714, 703.8), "B06": (731, 749, 739.1),
                "B07": (769, 797, 779.7), "B08": (784, 900, 833.0), "B8A": (848, 881, 864.0),
                "B09": (932, 958, 943.2), "B10": (1337, 1412, 1376.9), "B11": (1539, 1682, 1610.4),
                "B12": (2078, 2320, 2185.7)}


def safe_name(baseline: str = "05.09") -> str:
    """The product's folder name for a processing baseline (``N0509``)."""
    return f"S2B_MSIL2A_{SENSING}_N{baseline.replace('.', '')}_R122_{TILE}_20230415T130000.SAFE"


def granule_name() -> str:
    return f"L2A_{TILE}_A000000_{SENSING}"


def jp2_name(band: str, resolution: int) -> str:
    """``T33TUL_20230415T100029_B02_10m.jp2``"""
    return f"{TILE}_{SENSING}_{band}_{resolution}m.jp2"


def safe_band_path(safe: str | Path, band: str, resolution: int | None = None) -> Path:
    """Where a SAFE written by :func:`write_safe` holds ``band`` (default: its finest resolution)."""
    res = resolution or min(r for r, files in SAFE_FILES.items() if band in files)
    return Path(safe) / "GRANULE" / granule_name() / "IMG_DATA" / f"R{res}m" / jp2_name(band, res)


def scl_native(g: Ground, resolution: int, nodata_edge: int) -> np.ndarray:
    """SCL at 20 / 60 m: the class at each coarse pixel's upper-left 10 m pixel, cloud (9) wherever
    any of its 10 m pixels is cloud (as Sen2Cor errs on the side of cloud), 0 on the edge."""
    f = resolution // 10
    h, w = g.shape
    scl = g.scl()[::f, ::f][: math.ceil(h / f), : math.ceil(w / f)].copy()
    cloudy = _block_mean((g.cover == COVERS.index("cloud")).astype(np.float64), f) > 0
    scl[cloudy] = SCL_OF_COVER["cloud"]
    scl[:, : _coarse_edge(nodata_edge, f)] = SCL_NODATA
    return scl


def _coarse_edge(nodata_edge: int, f: int) -> int:
    return nodata_edge // f


def write_safe(folder: str | Path, g: Ground, offset: bool = True, baseline: str | None = None,
               nodata_edge: int = NODATA_EDGE, bands: Sequence[str] = L2A_BANDS, tci: bool = True,
               cloud_percent: float | None = None) -> Path:
    """A Sentinel-2 L2A ``.SAFE`` product folder inside ``folder``; returns the ``.SAFE`` path.

    ``offset=True`` (baseline default ``05.09``): DN = refl x 10000 + 1000 and
    ``BOA_ADD_OFFSET -1000`` for every band in ``MTD_MSIL2A.xml``; ``offset=False`` (default
    baseline ``03.01``): plain DN and no offset list, as before January 2022. DN 0 stays 0 (no
    data) on the first ``nodata_edge`` columns (``nodata_edge // 2`` at 20 m, ``// 6`` at 60 m).
    JP2s are lossless with GMLJP2/GeoJP2 georeferencing and no nodata tag, laid out as
    ``GRANULE/<id>/IMG_DATA/R10m|R20m|R60m/<tile>_<time>_<band>_<res>m.jp2`` with the extra
    coarse copies real products have (B02.. at 20 m and 60 m) and a TCI. ``bands``: which
    spectral bands to write (leave one out to make a product missing a band); SCL is always
    written. A granule ``MTD_TL.xml`` gives the tile geocoding (for GDAL's SENTINEL2 driver)."""
    baseline = baseline or ("05.09" if offset else "03.01")
    add = OFFSET_DN if offset else 0
    safe = Path(folder) / safe_name(baseline)
    img = safe / "GRANULE" / granule_name() / "IMG_DATA"
    written: list[tuple[str, int, Path]] = []
    for res, files in SAFE_FILES.items():
        f = res // 10
        t = native_transform(g, res)
        for band in files:
            if band == "SCL":
                arr = scl_native(g, res, nodata_edge)
            elif band == "TCI":
                if not tci:
                    continue
                rgb = np.stack([native(g, b, res) for b in ("B04", "B03", "B02")])
                arr = np.clip(rgb * 255 / 0.3, 1, 255).astype(np.uint8)     # display: 0.3 reflectance = 255
                arr[:, :, : _coarse_edge(nodata_edge, f)] = 0
            else:
                if band not in bands:
                    continue
                dn = np.rint(native(g, band, res).astype(np.float64) * QUANTIFICATION) + add
                arr = dn.astype(np.uint16)
                arr[:, : _coarse_edge(nodata_edge, f)] = 0
            p = _write_jp2(img / f"R{res}m" / jp2_name(band, res), arr, t, g.crs)
            written.append((band, res, p))
    cloud = _cloud_percent(g) if cloud_percent is None else cloud_percent
    _write_text(safe / "MTD_MSIL2A.xml", _mtd_msil2a(g, safe, baseline, offset, written, cloud))
    _write_text(safe / "GRANULE" / granule_name() / "MTD_TL.xml", _mtd_tl(g))
    return safe


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _mtd_msil2a(g: Ground, safe: Path, baseline: str, offset: bool, written: list[tuple[str, int, Path]],
                cloud_percent: float) -> str:
    """``MTD_MSIL2A.xml`` with the parts of ESA's Level-2A product metadata a reader uses
    (structure as in the product specification; values for this synthetic product)."""
    start = f"{DATE}T10:00:29.024Z"
    images = "\n".join(f"              <IMAGE_FILE>{p.relative_to(safe).with_suffix('').as_posix()}</IMAGE_FILE>"
                       for _, _, p in written)
    offsets = ""
    if offset:
        offsets = ("      <BOA_ADD_OFFSET_VALUES_LIST>\n"
                   + "\n".join(f'        <BOA_ADD_OFFSET band_id="{i}">{-OFFSET_DN}</BOA_ADD_OFFSET>'
                               for i in range(len(SENTINEL2)))
                   + "\n      </BOA_ADD_OFFSET_VALUES_LIST>\n")
    spectral = "\n".join(
        f'        <Spectral_Information bandId="{i}" physicalBand="{ee_name(b)}">\n'
        f"          <RESOLUTION>{SENTINEL2_RESOLUTION[b]}</RESOLUTION>\n"
        f"          <Wavelength>\n"
        f'            <MIN unit="nm">{_WAVELENGTHS[b][0]}</MIN>\n'
        f'            <MAX unit="nm">{_WAVELENGTHS[b][1]}</MAX>\n'
        f'            <CENTRAL unit="nm">{_WAVELENGTHS[b][2]}</CENTRAL>\n'
        f"          </Wavelength>\n"
        f"        </Spectral_Information>"
        for i, b in enumerate(SENTINEL2))
    west, south, east, north = _lonlat_bounds(g)
    footprint = f"{west} {north} {east} {north} {east} {south} {west} {south} {west} {north}"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{start}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{escape(safe.name)}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{escape(baseline)}</PROCESSING_BASELINE>
      <GENERATION_TIME>2023-04-15T13:00:00.000000Z</GENERATION_TIME>
      <Datatake datatakeIdentifier="GS2B_{SENSING}_000000_N{escape(baseline)}">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{start}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>122</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="S2B_OPER_MSI_L2A_DS_SYNT_20230415T130000_S{SENSING}_N{escape(baseline)}" \
granuleIdentifier="S2B_OPER_MSI_L2A_TL_SYNT_20230415T130000_A000000_{TILE}_N{escape(baseline)}" \
imageFormat="JPEG2000">
{images}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">{QUANTIFICATION}</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
{offsets}      <Spectral_Information_List>
{spectral}
      </Spectral_Information_List>
      <Scene_Classification_List>
{_scl_list()}
      </Scene_Classification_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Product_Footprint>
      <Product_Footprint>
        <Global_Footprint>
          <EXT_POS_LIST>{footprint}</EXT_POS_LIST>
        </Global_Footprint>
      </Product_Footprint>
    </Product_Footprint>
    <Coordinate_Reference_System>
      <GEO_TABLES version="1">EPSG</GEO_TABLES>
      <HORIZONTAL_CS_TYPE>GEOGRAPHIC</HORIZONTAL_CS_TYPE>
    </Coordinate_Reference_System>
  </n1:Geometric_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>{cloud_percent:.6f}</Cloud_Coverage_Assessment>
    <Image_Content_QI>
      <NODATA_PIXEL_PERCENTAGE>{100 * (1 - g.valid().mean()):.6f}</NODATA_PIXEL_PERCENTAGE>
      <CLOUDY_PIXEL_PERCENTAGE>{cloud_percent:.6f}</CLOUDY_PIXEL_PERCENTAGE>
      <WATER_PERCENTAGE>{100 * g.water.mean():.6f}</WATER_PERCENTAGE>
    </Image_Content_QI>
  </n1:Quality_Indicators_Info>
</n1:Level-2A_User_Product>
"""


def _scl_list() -> str:
    names = {0: "NODATA", 1: "SATURATED_DEFECTIVE", 2: "DARK_FEATURE_SHADOW", 3: "CLOUD_SHADOW",
             4: "VEGETATION", 5: "NOT_VEGETATED", 6: "WATER", 7: "UNCLASSIFIED", 8: "CLOUD_MEDIUM_PROBA",
             9: "CLOUD_HIGH_PROBA", 10: "THIN_CIRRUS", 11: "SNOW_ICE"}
    return "\n".join(f"        <L2A_Scene_Classification_ID>\n"
                     f"          <L2A_SCENE_CLASSIFICATION_TEXT>SC_{t}</L2A_SCENE_CLASSIFICATION_TEXT>\n"
                     f"          <L2A_SCENE_CLASSIFICATION_INDEX>{i}</L2A_SCENE_CLASSIFICATION_INDEX>\n"
                     f"        </L2A_Scene_Classification_ID>" for i, t in names.items())


def _mtd_tl(g: Ground) -> str:
    """The granule's ``MTD_TL.xml``: tile geocoding (CRS, size and upper-left per resolution)."""
    h, w = g.shape
    sizes = "\n".join(f'        <Size resolution="{r}">\n          <NROWS>{math.ceil(h * 10 / r)}</NROWS>\n'
                      f"          <NCOLS>{math.ceil(w * 10 / r)}</NCOLS>\n        </Size>" for r in (10, 20, 60))
    geo = "\n".join(f'        <Geoposition resolution="{r}">\n          <ULX>{g.transform.c:.0f}</ULX>\n'
                    f"          <ULY>{g.transform.f:.0f}</ULY>\n          <XDIM>{r}</XDIM>\n"
                    f"          <YDIM>-{r}</YDIM>\n        </Geoposition>" for r in (10, 20, 60))
    epsg = g.crs.split(":")[1]
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <TILE_ID>S2B_OPER_MSI_L2A_TL_SYNT_20230415T130000_A000000_{TILE}_N05.09</TILE_ID>
    <SENSING_TIME>{DATE}T10:00:29.024Z</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {epsg[-2:]}N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>
{sizes}
{geo}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""


def _lonlat_bounds(g: Ground) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    h, w = g.shape
    left, top = g.transform.c, g.transform.f
    return tuple(round(v, 6) for v in transform_bounds(g.crs, "EPSG:4326", left, top - h * RES,
                                                        left + w * RES, top))  # type: ignore[return-value]


# ---- STAC item over COGs ---------------------------------------------------------------------

def _write_cog(path: Path, arr: np.ndarray, transform: Affine, crs: str, nodata: float | None) -> Path:
    """A Cloud-Optimised GeoTIFF (GDAL's COG driver: tiled, deflate, overviews)."""
    return _copy_written(path, arr, transform, crs, nodata, ".tif", "COG", COMPRESS="DEFLATE", BLOCKSIZE=128,
                         OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="NEAREST")


def write_stac_item(path: str | Path, g: Ground, cog_dir: str | Path | None = None,
                    bands: Sequence[str] = ("B02", "B03", "B04", "B08", "B11", "B12"), keys: str = "s2",
                    offset: bool = False, scl: bool = True, extras: bool = True, nodata_edge: int = NODATA_EDGE,
                    proj: str = "epsg") -> Path:
    """One COG per band at its native resolution (``cog_dir``, default beside the item) and a STAC
    item JSON at ``path`` written with pystac; returns the item's path.

    Assets are keyed ``B02``.. (``keys="s2"``) or by common name ``blue``, ``nir``, ``swir16``
    (``"common"``, as Earth Search names them), each with ``eo:bands`` (name + common_name) and
    ``raster:bands`` (nodata 0, scale 0.0001, offset 0, or -0.1 with ``offset=True`` where the
    COG holds DN + 1000); hrefs are relative to the item file. ``scl`` adds an ``scl``/``SCL``
    asset (20 m); ``extras`` adds non-raster assets a reader must skip (a PNG thumbnail, the
    product metadata XML). ``proj="epsg"`` writes ``proj:epsg`` (projection extension v1, as
    Earth Search does), ``"code"`` pystac's ``proj:code`` (v2)."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    path = Path(path).absolute()
    cog_dir = Path(cog_dir).absolute() if cog_dir is not None else path.parent
    add = OFFSET_DN if offset else 0
    west, south, east, north = _lonlat_bounds(g)
    geometry = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                    [west, south]]]}
    when = datetime(2023, 4, 15, 10, 0, 29, tzinfo=UTC)
    item = pystac.Item(id=f"S2B_{TILE[1:]}_{SENSING[:8]}_0_L2A", geometry=geometry, bbox=[west, south, east, north],
                       datetime=when, properties={"platform": "sentinel-2b", "constellation": "sentinel-2",
                                                  "s2:product_uri": PRODUCT + ".SAFE"})
    for band in bands:
        res = SENTINEL2_RESOLUTION[band]
        f = res // 10
        dn = (np.rint(native(g, band, res).astype(np.float64) * QUANTIFICATION) + add).astype(np.uint16)
        dn[:, : _coarse_edge(nodata_edge, f)] = 0
        cog = _write_cog(cog_dir / f"{band}.tif", dn, native_transform(g, res), g.crs, 0)
        key = band if keys == "s2" else COMMON_OF[band]
        asset = pystac.Asset(href=str(cog), media_type=pystac.MediaType.COG, roles=["data", "reflectance"],
                             title=f"{band} ({COMMON_OF[band]}) - {res}m")
        item.add_asset(key, asset)
        EOExtension.ext(asset, add_if_missing=True).bands = [Band.create(name=band, common_name=COMMON_OF[band])]
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, data_type=DataType.UINT16, spatial_resolution=res, scale=1 / QUANTIFICATION,
                              offset=-add / QUANTIFICATION)]
        asset.extra_fields["proj:shape"] = list(dn.shape)
        asset.extra_fields["proj:transform"] = list(native_transform(g, res))[:6]
    if scl:
        arr = scl_native(g, 20, nodata_edge)
        cog = _write_cog(cog_dir / "SCL.tif", arr, native_transform(g, 20), g.crs, 0)
        asset = pystac.Asset(href=str(cog), media_type=pystac.MediaType.COG, roles=["data"],
                             title="Scene classification map (SCL)")
        item.add_asset("SCL" if keys == "s2" else "scl", asset)
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(nodata=0, data_type=DataType.UINT8, spatial_resolution=20, unit="1")]
    if extras:
        thumb = cog_dir / "thumbnail.png"
        rgb = np.clip(g.stack(("B04", "B03", "B02"))[:, ::4, ::4] * 255 / 0.3, 0, 255).astype(np.uint8)
        with warnings.catch_warnings(), MemoryFile() as mf:
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)    # a thumbnail has no grid
            with mf.open(driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8") as mem:
                mem.write(rgb)
            with mf.open() as mem:
                rasterio.shutil.copy(mem, thumb, driver="PNG")
        aux = thumb.with_name(thumb.name + ".aux.xml")
        if aux.exists():
            aux.unlink()
        item.add_asset("thumbnail", pystac.Asset(href=str(thumb), media_type=pystac.MediaType.PNG,
                                                 roles=["thumbnail"], title="Thumbnail"))
        meta = _write_text(cog_dir / "metadata.xml", "<metadata/>\n")
        item.add_asset("granule_metadata", pystac.Asset(href=str(meta), media_type=pystac.MediaType.XML,
                                                        roles=["metadata"]))
    EOExtension.ext(item, add_if_missing=True).cloud_cover = round(_cloud_percent(g), 4)
    item.set_self_href(str(path))
    item.make_asset_hrefs_relative()
    d = item.to_dict(include_self_link=False)
    epsg = int(g.crs.split(":")[1])
    if proj == "epsg":
        d["stac_extensions"].append("https://stac-extensions.github.io/projection/v1.1.0/schema.json")
        d["properties"]["proj:epsg"] = epsg
    else:
        d["stac_extensions"].append("https://stac-extensions.github.io/projection/v2.0.0/schema.json")
        d["properties"]["proj:code"] = g.crs
    return _write_text(path, json.dumps(d, indent=2) + "\n")


# ---- Earth Engine style chips ----------------------------------------------------------------

def write_ee_chips(folder: str | Path, g: Ground, chip: int = 64, bands: Sequence[str] = DEFAULT_BANDS,
                   dtype: str = "uint16", names: str = "ee", nodata_edge: int = NODATA_EDGE,
                   prefix: str = "chip") -> list[tuple[Path, Path]]:
    """The ground cut into ``chip`` x ``chip`` chips written as the workbench's EE export writes
    them: ``<prefix>_r<row>_c<col>.tif`` (uint16 DN with nodata 0, EE band names ``B2 B3 B4 B8``,
    tags ``DATE_ACQUIRED``/``SCENE_ID``/``CHIP_ID``...; or ``dtype="float32"``: reflectance, no
    nodata tag, 0.0 where masked) + ``..._mask.tif`` (1 water, 0 land, 255 unknown). Chips with no
    valid pixel are skipped, as the export does. Returns (image, mask) pairs."""
    folder = Path(folder)
    valid = g.valid(nodata_edge)
    if dtype == "uint16":
        full = g.dn(bands)
        nodata: float | None = 0
    elif dtype == "float32":
        full = g.stack(bands).astype(np.float32)
        nodata = None
    else:
        raise ValueError(f"dtype={dtype!r}: 'uint16' or 'float32'")
    full[:, ~valid] = 0
    m = g.water.copy()
    m[~valid] = MASK_NODATA
    out = []
    h, w = g.shape
    for r in range(0, h - chip + 1, chip):
        for c in range(0, w - chip + 1, chip):
            if not valid[r:r + chip, c:c + chip].any():
                continue
            cid = f"{prefix}_r{r // chip:03d}_c{c // chip:03d}"
            t = g.transform * Affine.translation(c, r)
            common = {"COLLECTION": "COPERNICUS/S2_SR_HARMONIZED", "CHIP_ID": cid, "EXPORT": "synthetic"}
            mask = geotiff.write(folder / f"{cid}_mask.tif", m[r:r + chip, c:c + chip], t, g.crs,
                                 nodata=MASK_NODATA, band_names=["water"],
                                 tags={**common, "VALUES": "1 water, 0 not water, 255 unknown or no valid image pixel"})
            image = geotiff.write(folder / f"{cid}.tif", full[:, r:r + chip, c:c + chip], t, g.crs, nodata=nodata,
                                  band_names=_names(bands, names), tags=_tags(g, common))
            out.append((image, mask))
    return out


def write_demo(folder: str | Path, train_size: int = 512, other_size: int = 384) -> dict[str, Path]:
    """The files of the figures in docs/results.md ("Sentinel-2 inputs"): a scene + mask to
    train on, and another piece of ground (+ its mask) in every form to predict."""
    folder = Path(folder)
    g, o = ground(train_size, seed=0), ground(other_size, seed=1)
    out = {"scene": write_dn_geotiff(folder / "scene.tif", g), "scene_mask": write_mask(folder / "scene_mask.tif", g),
           "other_mask": write_mask(folder / "other_mask.tif", o),
           "uint16": write_dn_geotiff(folder / "other.tif", o),
           "reordered": write_dn_geotiff(folder / "other_reordered.tif", o, bands=("B08", "B04", "B02", "B03")),
           "float": write_float_geotiff(folder / "other_float.tif", o),
           "13 bands": write_dn_geotiff(folder / "other_13.tif", o, bands=ALL_BANDS),
           "SAFE": write_safe(folder, o, offset=True),
           "STAC": write_stac_item(folder / "stac" / "item.json", o, offset=True)}
    return out


if __name__ == "__main__":
    import sys

    for what, path in write_demo(sys.argv[1] if len(sys.argv) > 1 else "s2-demo").items():
        print(f"{what:10s} {path}")


def trained_inputs(folder: str | Path, g: Ground):
    """(input contract, band statistics) that a run trained on ``g``'s uint16 DN GeoTIFF (written
    under ``folder``) records: what predict-side tests bring other encodings of the ground to."""
    from workbench.data.catalog import Tile
    from workbench.data.contract import contract_of
    from workbench.data.stats import compute_band_stats

    tile = Tile(path=str(write_dn_geotiff(Path(folder) / "dn.tif", g)), source="folder", split="train")
    return contract_of([tile]), compute_band_stats([tile], split=None)
