"""Acquisition date and cloud cover from raster metadata tags, whoever wrote them.

Earth Engine writes ``system:time_start`` (epoch ms) and ``CLOUDY_PIXEL_PERCENTAGE``; other
providers ``DATE_ACQUIRED``, ``SENSING_TIME``, ``CLOUD_COVER`` ... Used by every reader
(folder imports, scenes, SAFE and STAC metadata). Stdlib only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# GeoTIFF tags that carry an acquisition date or a cloud percentage (upper-cased on lookup).
DATE_TAGS = ("DATE_ACQUIRED", "ACQUISITION_DATE", "SENSING_DATE", "SENSING_TIME", "DATE",
             "SYSTEM:TIME_START", "SYSTEM_TIME_START", "TIME_START")
CLOUD_TAGS = ("CLOUDY_PIXEL_PERCENTAGE", "CLOUD_COVER", "CLOUD_COVERAGE_ASSESSMENT", "CLOUDY_PERCENTAGE",
              "CLOUD_COVER_PERCENTAGE")


def date_from_tags(tags: dict) -> str | None:
    """An ISO date (YYYY-MM-DD) from the first date-like tag, or None."""
    for key in DATE_TAGS:
        value = tags.get(key)
        if value in (None, ""):
            continue
        text = str(value).strip()
        if re.fullmatch(r"\d{10,13}(\.\d+)?", text):          # epoch (EE system:time_start is in ms)
            seconds = float(text) / (1000 if float(text) > 1e11 else 1)
            return datetime.fromtimestamp(seconds, tz=UTC).date().isoformat()
        m = re.match(r"(\d{4})[-:/]?(\d{2})[-:/]?(\d{2})", text)
        if m:
            try:
                return datetime(int(m[1]), int(m[2]), int(m[3])).date().isoformat()
            except ValueError:
                continue
    return None


def cloud_from_tags(tags: dict) -> float | None:
    """Cloud cover as a fraction 0..1 (the catalog's unit, as DiffusionSat's metadata) from the
    first cloud tag, which Earth Engine and most providers write in percent; or None."""
    for key in CLOUD_TAGS:
        try:
            value = float(tags[key])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= value <= 100:
            return value / 100.0
    return None
