"""Human units -> DiffusionSat's 7 metadata numbers, and back.

The released DiffusionSat models saw, for every training image, the vector
``[lon, lat, gsd, cloud_cover, year, month, day]`` *shifted* to non-negative values
(``lon + 180, lat + 90, gsd, cloud, year - 1980, month, day``) and then *scaled*
(``/ [360, 180, 1, 1, 120, 12, 31] * 1000``). Feeding raw degrees or a raw year such
as 2015 puts the values far outside anything the model saw, so the workbench only
ever takes human units and converts them here, after checking they make sense.

All-zero metadata is the *unconditional* input: training dropped each value to 0
with probability 0.1, which is what classifier-free guidance relies on.

A date may be *unknown* (``--date unknown``): DiffusionSat trained some cities with a zero
date, so the year, month and day entries of the normalised vector are 0 then (the same
zeros metadata dropout gives), while place, GSD and cloud cover stay conditioned.

Stdlib only (lists of floats), so the CLI can validate input before importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from workbench.errors import WorkbenchError

NUM_METADATA = 7
FIELDS = ("lon", "lat", "gsd", "cloud_cover", "year", "month", "day")
SHIFT = (180.0, 90.0, 0.0, 0.0, -1980.0, 0.0, 0.0)
DIVISOR = (360.0, 180.0, 1.0, 1.0, 120.0, 12.0, 31.0)
SCALE = 1000.0
YEAR_MIN, YEAR_MAX = 1980, 2100   # the shifted year/120 spans 0..1 over these years
UNKNOWN_DATE = "unknown"          # --date unknown: the zero date DiffusionSat trained some cities with

# How each value is named in an error message: the CLI flag by default.
CLI_LABELS = {"lat": "--lat", "lon": "--lon", "gsd": "--gsd", "cloud_cover": "--cloud-cover", "date": "--date"}


@dataclass(frozen=True)
class Metadata:
    """One place and time in human units: degrees, metres per pixel, fraction 0..1, a calendar day."""

    lon: float
    lat: float
    gsd: float
    cloud_cover: float
    date: date | None  # None: unknown (the zero date)

    @property
    def day(self) -> str:
        """The date as written in file names, tables and tags: YYYY-MM-DD, or ``unknown``."""
        return self.date.isoformat() if self.date is not None else UNKNOWN_DATE

    def raw(self) -> list[float]:
        """``[lon, lat, gsd, cloud, year, month, day]`` as given (DiffusionSat's order); an unknown
        date is the raw date that normalises to zeros (year 1980, month 0, day 0)."""
        d = self.date
        when = [float(d.year), float(d.month), float(d.day)] if d is not None else [-SHIFT[4], 0.0, 0.0]
        return [self.lon, self.lat, self.gsd, self.cloud_cover, *when]

    def shifted(self) -> list[float]:
        """The raw values moved to DiffusionSat's non-negative ranges (lon+180, lat+90, year-1980)."""
        return [v + s for v, s in zip(self.raw(), SHIFT)]

    def normalised(self) -> list[float]:
        """What the UNet takes: the shifted values divided by their span, times 1000."""
        return [v / div * SCALE for v, div in zip(self.shifted(), DIVISOR)]

    def as_dict(self) -> dict:
        return dict(lon=self.lon, lat=self.lat, gsd=self.gsd, cloud_cover=self.cloud_cover, date=self.day)


def unconditional() -> list[float]:
    """All-zero metadata: the unconditional branch of classifier-free guidance."""
    return [0.0] * NUM_METADATA


def denormalise(vector: Sequence[float]) -> list[float]:
    """Inverse of ``Metadata.normalised``: back to raw ``[lon, lat, gsd, cloud, year, month, day]``."""
    if len(vector) != NUM_METADATA:
        raise WorkbenchError(f"metadata vector has {len(vector)} values, expected {NUM_METADATA}")
    return [v / SCALE * div - s for v, div, s in zip(vector, DIVISOR, SHIFT)]


def parse_date(text: str | date, label: str = "--date") -> date:
    """A real calendar day written YYYY-MM-DD (2015-02-30 is rejected, not rolled over)."""
    if isinstance(text, datetime):
        return text.date()
    if isinstance(text, date):
        return text
    try:
        return datetime.strptime(str(text).strip(), "%Y-%m-%d").date()
    except ValueError:
        raise WorkbenchError(f"{label} {text}: not a real date (expected YYYY-MM-DD, or {UNKNOWN_DATE})") from None


def validate(lat: float, lon: float, gsd: float = 1.0, cloud_cover: float = 0.0,
             when: str | date | None = None, labels: Mapping[str, str] | None = None) -> Metadata:
    """Check human-unit values and bundle them; each error names the value and its rule.

    ``when`` defaults to today; ``"unknown"`` is the zero date. ``labels`` says how to name each value in an error
    (CLI flags unless told otherwise, e.g. keys of a prompt-set YAML).
    """
    names = {**CLI_LABELS, **(labels or {})}
    lat = _number(lat, names["lat"])
    lon = _number(lon, names["lon"])
    gsd = _number(gsd, names["gsd"])
    cloud_cover = _number(cloud_cover, names["cloud_cover"])
    if not -90.0 <= lat <= 90.0:
        raise WorkbenchError(f"{names['lat']} {lat:g}: latitude must be within [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise WorkbenchError(f"{names['lon']} {lon:g}: longitude must be within [-180, 180]")
    if not gsd > 0.0:
        raise WorkbenchError(f"{names['gsd']} {gsd:g}: ground sample distance must be > 0 metres per pixel")
    if not 0.0 <= cloud_cover <= 1.0:
        raise WorkbenchError(f"{names['cloud_cover']} {cloud_cover:g}: cloud cover is a fraction within [0, 1]")
    if isinstance(when, str) and when.strip().lower() == UNKNOWN_DATE:
        return Metadata(lon=lon, lat=lat, gsd=gsd, cloud_cover=cloud_cover, date=None)
    day = parse_date(when, names["date"]) if when is not None else date.today()
    if not YEAR_MIN <= day.year <= YEAR_MAX:
        raise WorkbenchError(f"{names['date']} {day.isoformat()}: year must be within "
                             f"[{YEAR_MIN}, {YEAR_MAX}] (the range DiffusionSat's metadata encodes)")
    return Metadata(lon=lon, lat=lat, gsd=gsd, cloud_cover=cloud_cover, date=day)


def _number(value, label: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{label} {value!r}: not a number") from None
    if not math.isfinite(x):
        raise WorkbenchError(f"{label} {value}: not a finite number")
    return x


def describe(md: Metadata) -> str:
    """The metadata in words, the way DiffusionSat's captions optionally carried it."""
    d = md.date
    text = f" at a resolution of {round(md.gsd, 5):g}. The longitude, latitude is {md.lon:g}, {md.lat:g}."
    return text + (f" The date is {d.year}, {d.month}, {d.day}" if d is not None else "")
