"""What to export from Earth Engine: :class:`ExportSpec`, validated when it is built.

Pure Python (no ``ee``, no numpy): the CLI checks a request before it touches the
network or asks for credentials, and a script can build and check specs cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from workbench.data.sources.ee_area import DEFAULT_SCALE, Area, check_chip_size
from workbench.errors import WorkbenchError

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
HANSEN_ID = "UMD/hansen/global_forest_change_2023_v1_11"   # current GFC release
HANSEN_SEED_ID = "UMD/hansen/global_forest_change_2015"     # the 2015 release older exports were made from
JRC_ID = "JRC/GSW1_4/GlobalSurfaceWater"
DYNAMIC_WORLD_ID = "GOOGLE/DYNAMICWORLD/V1"

WATER_SOURCES = ("hansen", "jrc", "dynamicworld")
COMPOSITES = ("scene", "median")
DEFAULT_BANDS = ("B2", "B3", "B4", "B8")
# Bands of COPERNICUS/S2_SR_HARMONIZED that a chip may carry (exported as uint16).
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
            "AOT", "WVP", "SCL", "TCI_R", "TCI_G", "TCI_B", "MSK_CLDPRB", "MSK_SNWPRB", "QA60")
# Scene classification (SCL) classes masked by --cloud-mask: 3 cloud shadow, 8 cloud medium
# probability, 9 cloud high probability, 10 thin cirrus.
DEFAULT_CLOUD_CLASSES = (3, 8, 9, 10)
SCL_CLASSES = range(0, 12)
MASK_NODATA = 255          # mask value where the label is unknown or the image has no valid pixel
IMAGE_NODATA = 0           # Sentinel-2 L2A reflectance 0 means no data

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(text: Any, option: str) -> date:
    """A calendar date from YYYY-MM-DD; anything else (2023-02-30, 2023/01/01) is a one-line error."""
    s = str(text).strip()
    if not _DATE.match(s):
        raise WorkbenchError(f"{option} {s!r}: expected a date YYYY-MM-DD")
    try:
        return datetime.strptime(s, "%Y-%m-%d").date()
    except ValueError:
        raise WorkbenchError(f"{option} {s}: not a calendar date") from None


def normalise_bands(bands: Sequence[str] | str | None) -> tuple[str, ...]:
    """Band names as Earth Engine spells them (b8a -> B8A); commas split; unknown is an error."""
    if bands is None:
        return DEFAULT_BANDS
    if isinstance(bands, str):
        bands = [bands]
    names = [b.strip() for item in bands for b in str(item).split(",") if b.strip()]
    if not names:
        raise WorkbenchError("--bands: give at least one band, e.g. --bands B2 B3 B4 B8")
    by_upper = {b.upper(): b for b in S2_BANDS}
    out = []
    for name in names:
        canonical = by_upper.get(name.upper())
        if canonical is None:
            raise WorkbenchError(f"--bands {name}: unknown Sentinel-2 band (known: {', '.join(S2_BANDS)})")
        if canonical in out:
            raise WorkbenchError(f"--bands {name}: given twice")
        out.append(canonical)
    return tuple(out)


@dataclass(frozen=True)
class ExportSpec:
    """One Earth Engine export request: where, when, which bands, which water labels, which chips.

    ``start`` and ``end`` are inclusive calendar dates (the collection is filtered
    with ``filterDate(start, end + 1 day)``). ``max_cloud`` is the scene-level
    ``CLOUDY_PIXEL_PERCENTAGE`` ceiling in percent; ``cloud_mask`` additionally masks
    the SCL classes ``cloud_classes`` pixel by pixel. ``composite`` is ``scene`` (one
    chip set per scene) or ``median`` (one composite over the date range). Chips with
    less than ``min_valid`` of their pixels valid are not kept.
    """

    area: Area
    start: str
    end: str
    bands: tuple[str, ...] = DEFAULT_BANDS
    max_cloud: float = 20.0
    water: str = "hansen"
    composite: str = "scene"
    cloud_mask: bool = False
    cloud_classes: tuple[int, ...] = DEFAULT_CLOUD_CLASSES
    chip_size: int = 256
    scale: float = DEFAULT_SCALE
    jrc_threshold: float = 50.0
    hansen_id: str = HANSEN_ID
    max_scenes: int | None = None
    min_valid: float = 0.01
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.area, Area):
            raise WorkbenchError("ExportSpec.area must be an Area (Area.from_bbox / from_point / from_geojson)")
        start = parse_date(self.start, "--start")
        end = parse_date(self.end, "--end")
        if start > end:
            raise WorkbenchError(f"--start {start} is after --end {end}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("start", start.isoformat())
        set_("end", end.isoformat())
        set_("bands", normalise_bands(self.bands))
        water = str(self.water).strip().lower()
        if water not in WATER_SOURCES:
            raise WorkbenchError(f"--water {self.water}: unknown water source (known: {', '.join(WATER_SOURCES)})")
        set_("water", water)
        composite = str(self.composite).strip().lower()
        if composite not in COMPOSITES:
            raise WorkbenchError(f"--composite {self.composite}: unknown (known: {', '.join(COMPOSITES)})")
        set_("composite", composite)
        if not _number(self.max_cloud) or not 0 <= self.max_cloud <= 100:
            raise WorkbenchError(f"--max-cloud {self.max_cloud}: a percentage between 0 and 100")
        if not _number(self.jrc_threshold) or not 0 <= self.jrc_threshold < 100:
            raise WorkbenchError(f"--jrc-threshold {self.jrc_threshold}: a percentage in [0, 100)")
        classes = tuple(self.cloud_classes)
        if not classes or any(isinstance(c, bool) or not isinstance(c, int) or c not in SCL_CLASSES
                              for c in classes):
            raise WorkbenchError(f"cloud classes {classes}: SCL class numbers between 0 and 11")
        set_("cloud_classes", classes)
        check_chip_size(self.chip_size)
        if not _number(self.scale) or self.scale <= 0:
            raise WorkbenchError(f"scale {self.scale}: must be a positive number of metres")
        if self.max_scenes is not None and (isinstance(self.max_scenes, bool) or not isinstance(self.max_scenes, int)
                                            or self.max_scenes <= 0):
            raise WorkbenchError(f"--max-scenes {self.max_scenes}: must be a positive whole number")
        if not _number(self.min_valid) or not 0 <= self.min_valid <= 1:
            raise WorkbenchError(f"--min-valid {self.min_valid}: a fraction between 0 and 1")
        if not self.name:
            set_("name", default_name(self))
        elif not re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", self.name):
            raise WorkbenchError(f"--name {self.name!r}: letters, digits, '_', '.' or '-' (at most 60)")

    # -- derived ------------------------------------------------------------------------------
    @property
    def start_date(self) -> date:
        return date.fromisoformat(self.start)

    @property
    def end_date(self) -> date:
        return date.fromisoformat(self.end)

    @property
    def end_exclusive(self) -> str:
        """The day after ``end``: Earth Engine's filterDate excludes its end."""
        return (self.end_date + timedelta(days=1)).isoformat()

    @property
    def middle_date(self) -> str:
        """The middle of the date range: the date of a median composite."""
        s, e = self.start_date, self.end_date
        return (s + timedelta(days=(e - s).days // 2)).isoformat()

    def to_json(self) -> dict:
        d = asdict(self)
        d["area"] = self.area.to_json()
        d["bands"] = list(self.bands)
        d["cloud_classes"] = list(self.cloud_classes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> ExportSpec:
        d = dict(d)
        d["area"] = Area.from_json(d["area"])
        d["bands"] = tuple(d["bands"])
        d["cloud_classes"] = tuple(d["cloud_classes"])
        return cls(**d)

    def fingerprint(self) -> str:
        """What identifies the data (not the name): two specs with one fingerprint give the same chips."""
        d = self.to_json()
        d.pop("name", None)
        d["area"].pop("label", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def default_name(spec: ExportSpec) -> str:
    """A short export name: s2_{median|scene}_{start}_{end}."""
    return f"s2_{spec.composite}_{spec.start.replace('-', '')}_{spec.end.replace('-', '')}"
