"""How a band's numbers become surface reflectance, and when they cannot be trusted to.

Sentinel-2 L2A digital numbers are reflectance x 10000 (uint16, nodata 0); products of
processing baseline 04.00 and later add 1000 (``BOA_ADD_OFFSET -1000`` in ``MTD_MSIL2A.xml``);
Earth Engine's harmonised collection removes that offset, and users also export float
reflectance (``divide(10000)``) with no nodata tag. The model sees none of this: every tile
and scene is brought to reflectance (``value * scale + offset``, GDAL's convention) before it
is normalised, so the same ground in any of these forms gives the same tensors.

Where a band's radiometry comes from, first found wins:

1. what the user says (``--scale`` / ``--offset`` on the command line);
2. what the file declares: GDAL per-band scale/offset (GeoTIFF, VRT, COG, STAC ``raster:bands``),
   or Sentinel-2 metadata (``BOA_QUANTIFICATION_VALUE`` / ``BOA_ADD_OFFSET`` tags, a SAFE's
   ``MTD_MSIL2A.xml``);
3. the dtype's convention: float = reflectance, 16/32-bit integers = reflectance x 10000 (the
   Sentinel-2 / Earth Engine convention), 8-bit = display values in *raw* units (no
   reflectance; e.g. Blue Marble, PNG-like RGB): a raw run only reads the same raw dtype.

A convention is checked against the values (:func:`check_values`): float values far above 1
are DN, not reflectance; integer values that never go below 1000 while their darkest band
sits just above it carry the baseline-04.00 offset. Those are refused with the flag that
would settle them, never guessed.

numpy only; rasterio objects are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from workbench.errors import WorkbenchError

S2_QUANTIFICATION = 10000.0
S2_OFFSET_DN = -1000.0
RAW = "raw"
REFLECTANCE = "reflectance"
# float values whose 99th percentile is above this are not reflectance (bright snow and sun glint stay below)
MAX_FLOAT_REFLECTANCE = 2.0
# integer DN whose every band's 1st percentile is at or above OFFSET_FLOOR_DN, the darkest
# band's below OFFSET_DARK_DN, carry the +1000 offset: dark ground (water in NIR, shadow) sits
# just above 1000 then. Data that never gets that dark (a desert) cannot tell and is let through.
OFFSET_FLOOR_DN = 1000
OFFSET_DARK_DN = 1600


@dataclass(frozen=True)
class Radiometry:
    """``reflectance = value * scale + offset``; ``scale`` None: raw units (no reflectance)."""

    scale: float | None
    offset: float = 0.0
    source: str = ""          # where it came from: said in summaries and errors
    assumed: bool = False     # the dtype's convention, nothing declared it: check_values may refuse it

    @property
    def units(self) -> str:
        return RAW if self.scale is None else REFLECTANCE

    def affine(self) -> tuple[float, float]:
        """(scale, offset) to apply to raw values (1, 0 for raw units)."""
        return (1.0, 0.0) if self.scale is None else (float(self.scale), float(self.offset))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Radiometry:
        scale = d.get("scale")
        return cls(None if scale is None else float(scale), float(d.get("offset") or 0.0), str(d.get("source", "")),
                   bool(d.get("assumed", False)))


def by_convention(dtype: str) -> Radiometry:
    """What a dtype's values mean when nothing else says (see the module docstring)."""
    kind, size = np.dtype(dtype).kind, np.dtype(dtype).itemsize
    if kind == "f":
        return Radiometry(1.0, 0.0, "float values taken as reflectance", assumed=True)
    if kind in "ui" and size >= 2:
        return Radiometry(1.0 / S2_QUANTIFICATION, 0.0,
                          f"{dtype} values taken as reflectance x {S2_QUANTIFICATION:g} (Sentinel-2 / Earth Engine)",
                          assumed=True)
    return Radiometry(None, 0.0, f"{dtype} values in raw units (no reflectance)")


def from_s2_tags(tags: Mapping[str, str], band: str | None = None) -> Radiometry | None:
    """Sentinel-2 quantification / offset from metadata tags (GDAL's SENTINEL2 driver, our chips,
    a SAFE's ``MTD_MSIL2A.xml`` flattened): ``BOA_QUANTIFICATION_VALUE`` and ``BOA_ADD_OFFSET``
    (or ``BOA_ADD_OFFSET_<band>``)."""
    up = {str(k).upper(): v for k, v in tags.items()}
    q = up.get("BOA_QUANTIFICATION_VALUE") or up.get("QUANTIFICATION_VALUE")
    off = up.get(f"BOA_ADD_OFFSET_{band}") if band else None
    off = off if off is not None else up.get("BOA_ADD_OFFSET")
    if q is None and off is None:
        return None
    try:
        qv = float(q) if q is not None else S2_QUANTIFICATION
        ov = float(off) if off is not None else 0.0
    except ValueError:
        raise WorkbenchError(f"Sentinel-2 metadata: BOA_QUANTIFICATION_VALUE {q!r} / BOA_ADD_OFFSET {off!r} "
                             "are not numbers") from None
    if not qv > 0:
        raise WorkbenchError(f"Sentinel-2 metadata: BOA_QUANTIFICATION_VALUE {q!r} must be positive")
    return Radiometry(1.0 / qv, ov / qv, f"Sentinel-2 metadata (quantification {qv:g}, offset {ov:g})")


def declared(ds, band_index: int, tags: Mapping[str, str] | None = None, band: str | None = None
             ) -> Radiometry | None:
    """What an open rasterio dataset declares for band ``band_index`` (1-based): a GDAL scale /
    offset other than 1 / 0, else Sentinel-2 tags (dataset or band level); None when nothing."""
    scale = (ds.scales or [1.0] * ds.count)[band_index - 1]
    offset = (ds.offsets or [0.0] * ds.count)[band_index - 1]
    if scale is not None and offset is not None and (scale != 1.0 or offset != 0.0):
        return Radiometry(float(scale), float(offset), "the file's scale/offset")
    merged = dict(tags if tags is not None else ds.tags())
    merged.update(ds.tags(band_index))
    return from_s2_tags(merged, band)


def user_given(scale: float | None, offset: float | None, dtype: str) -> Radiometry | None:
    """``--scale`` / ``--offset``; either alone keeps the dtype's conventional value of the other
    (``--offset -0.1`` on uint16 DN means DN x 0.0001 - 0.1)."""
    if scale is None and offset is None:
        return None
    s = (by_convention(dtype).scale or 1.0) if scale is None else float(scale)
    if not (math.isfinite(s) and s > 0):
        raise WorkbenchError(f"--scale {scale}: must be a positive number (reflectance = value x scale + offset)")
    return Radiometry(s, 0.0 if offset is None else float(offset), "--scale/--offset")


def sample_values(ds, indexes: Sequence[int], max_side: int = 512) -> np.ndarray:
    """A decimated read of whole bands (overviews when the file has them): (bands, h, w)."""
    from rasterio.enums import Resampling

    f = max(1, math.ceil(max(ds.width, ds.height) / max_side))
    shape = (len(indexes), max(1, ds.height // f), max(1, ds.width // f))
    return ds.read(list(indexes), out_shape=shape, resampling=Resampling.nearest)


def check_values(values: np.ndarray, valid: np.ndarray, radiometry: Sequence[Radiometry], what: str) -> None:
    """Refuse a convention the values contradict (see the module docstring). ``values``: raw
    (bands, h, w); ``valid``: (h, w) bool; only conventions (not declarations) are checked
    for float DN, but the +1000 offset is looked for whenever the offset was not declared."""
    if not valid.any():
        return
    kinds = values.dtype.kind
    px = values[:, valid].astype(np.float64)
    for i, r in enumerate(radiometry):
        if r.scale is None:
            continue
        if kinds == "f" and r.assumed:
            p99 = float(np.nanpercentile(px[i], 99))
            if p99 > MAX_FLOAT_REFLECTANCE:
                raise WorkbenchError(f"{what}: float values up to {p99:.0f} are not reflectance (0..1): they look "
                                     "like digital numbers; pass --scale 0.0001 (and --offset if the data "
                                     "has one)")
    if kinds in "ui" and radiometry and all(r.assumed and r.scale is not None for r in radiometry):
        floors = np.percentile(px, 1, axis=1)
        if np.all(floors >= OFFSET_FLOOR_DN) and floors.min() < OFFSET_DARK_DN:
            raise WorkbenchError(f"{what}: no band goes below {OFFSET_FLOOR_DN} (1st percentiles "
                                 f"{', '.join(f'{v:.0f}' for v in floors)}): the values look like Sentinel-2 DN "
                                 "with the +1000 offset of processing baseline 04.00, which the file does not "
                                 "declare; pass --offset -0.1 (reflectance = DN x 0.0001 - 0.1), or --offset 0 "
                                 "if there is no offset")


def units_of(radiometry: Sequence[Radiometry]) -> str:
    units = {r.units for r in radiometry}
    return units.pop() if len(units) == 1 else "mixed"


def of_dataset(ds) -> list[Radiometry]:
    """Per band of an open dataset: what it declares, else its dtype's convention."""
    tags = ds.tags()
    return [declared(ds, i + 1, tags) or by_convention(ds.dtypes[i]) for i in range(ds.count)]


def of_tile(tile, ds=None) -> list[Radiometry]:
    """A catalog tile's radiometry per band: what its import recorded (``extra.radiometry``), else
    what its file declares or its dtype's convention (``ds``: the tile's open image, if at hand)."""
    recorded = (getattr(tile, "extra", None) or {}).get("radiometry")
    if recorded:
        return [Radiometry.from_dict(d) for d in recorded]
    if ds is not None:
        return of_dataset(ds)
    from workbench.data import geotiff

    with geotiff.open_raster(getattr(tile, "path", tile)) as opened:
        return of_dataset(opened)
