"""Talking to Earth Engine: bounded retries with exponential backoff, and checked downloads.

Everything that crosses the network goes through ``ee.data`` (``computePixels``,
``computeValue``, ``exportImage``, ``getTaskStatus``, ``listOperations``), so a
test double replaces exactly those functions.

A failure is *transient* (retried) when it is an HTTP 429 or 5xx, a timeout or a
dropped connection, or a download whose bytes are not a complete GeoTIFF. The real
client turns HTTP errors into ``ee.EEException`` with the server's message and keeps
the ``HttpError`` (with its status) as the exception's context; both are looked at.
Anything else (a bad band name, a missing asset, a permission error) is permanent.
"""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

RETRY_STATUS = (429, 500, 502, 503, 504)
# Lower-case fragments of Earth Engine / HTTP messages that mean "try again later".
TRANSIENT_MESSAGES = (
    "too many requests", "too many concurrent", "rate limit", "quota exceeded", "resource_exhausted",
    "resource exhausted", "capacity exceeded", "internal error", "backend error", "service unavailable",
    "currently unavailable", "bad gateway", "gateway timeout", "deadline exceeded", "timed out", "timeout",
    "connection reset", "connection aborted", "connection refused", "temporarily", "try again",
)


class TransientError(Exception):
    """A failure worth another attempt (the reason is in the message)."""


class RetriesExhausted(WorkbenchError):
    """Every attempt failed with a transient error."""


@dataclass
class RetryPolicy:
    """Bounded attempts with exponential backoff and jitter.

    Before attempt ``k + 1`` (k = 1, 2, ...) it sleeps
    ``min(cap, base * 2 ** (k - 1)) * (1 + jitter * u)`` seconds, u uniform in [0, 1):
    with ``jitter <= 1`` each delay is longer than the one before until the cap.
    ``sleep`` (default ``time.sleep``, looked up when needed) and ``rng`` are injectable so
    tests neither wait nor guess.
    """

    attempts: int = 5
    base: float = 2.0
    cap: float = 120.0
    jitter: float = 0.5
    sleep: Callable[[float], None] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise WorkbenchError(f"--retries {self.attempts}: at least 1 attempt")
        self._lock = threading.Lock()

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        with self._lock:                   # random.Random is shared by the worker threads
            u = self.rng.random()
        return min(self.cap, self.base * 2 ** (failures - 1)) * (1 + self.jitter * u)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an error or of the error it was raised from (EEException keeps the
    googleapiclient HttpError as its context)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        resp = getattr(e, "resp", None)
        status = getattr(resp, "status", None) if resp is not None else getattr(e, "status_code", None)
        try:
            if status is not None:
                return int(status)
        except (TypeError, ValueError):
            pass
        e = e.__cause__ or e.__context__
    return None


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry ('HTTP 429', 'timeout', ...), or None if it is not."""
    if isinstance(exc, TransientError):
        return str(exc) or "transient"
    status = http_status(exc)
    if status is not None:
        return f"HTTP {status}" if status in RETRY_STATUS else None
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionError, http.client.HTTPException)):
        return f"connection ({type(exc).__name__})"
    name = type(exc).__name__.lower()
    module = type(exc).__module__ or ""
    if module.startswith(("requests", "urllib3", "httplib2")) and isinstance(exc, Exception):
        if "timeout" in name:
            return "timeout"
        return f"connection ({type(exc).__name__})"
    if isinstance(exc, OSError) and "timed out" in str(exc).lower():
        return "timeout"
    text = str(exc).lower()
    for fragment in TRANSIENT_MESSAGES:
        if fragment in text:
            return _short(exc)
    return None


def call_with_retries(fn: Callable[[], Any], policy: RetryPolicy, what: str,
                      log: Callable[[str], None] | None = None) -> Any:
    """``fn()`` until it succeeds, a permanent error escapes, or the attempts run out."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 -- classified below; KeyboardInterrupt is not caught
            reason = transient_reason(exc)
            if reason is None:
                raise
            if attempt == policy.attempts:
                raise RetriesExhausted(f"{what}: gave up after {attempt} attempts ({reason})") from None
            wait = policy.delay(attempt)
            if log:
                log(f"{what}: {reason}; attempt {attempt + 1}/{policy.attempts} in {wait:.1f} s")
            (policy.sleep or time.sleep)(wait)
    raise AssertionError("unreachable")


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# ---- checked GeoTIFF downloads --------------------------------------------------------------------

def compute_pixels_request(expression: Any, grid: dict) -> dict:
    """The ``ee.data.computePixels`` parameters for one chip."""
    return {"expression": expression, "fileFormat": "GEO_TIFF", "grid": grid}


def download_geotiff(expression: Any, grid: dict, dest: Path, expect_bands: int) -> Any:
    """``computePixels`` to ``dest`` (a temporary name), read back every block, check the grid.

    Raises ``TransientError`` when the bytes are not a complete GeoTIFF (a truncated
    response), ``WorkbenchError`` when the file is whole but not what was asked for.
    Returns the file's ``RasterInfo``.
    """
    import ee

    from workbench.data import geotiff

    data = ee.data.computePixels(compute_pixels_request(expression, grid))
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise TransientError("empty response")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        fh.write(data)
    try:
        info = geotiff.read_info(dest, verify=True)
    except WorkbenchError as exc:
        raise TransientError(f"incomplete GeoTIFF ({len(data)} bytes): {str(exc).split(': ', 1)[-1]}") from None
    check_grid(info, grid, expect_bands, dest)
    return info


def check_grid(info: Any, grid: dict, bands: int, path: Path) -> None:
    import math

    import rasterio

    dims = grid["dimensions"]
    at = grid["affineTransform"]
    want = [at["scaleX"], at["shearX"], at["translateX"], at["shearY"], at["scaleY"], at["translateY"]]
    problems = []
    if (info.width, info.height) != (dims["width"], dims["height"]):
        problems.append(f"size {info.width}x{info.height}, asked {dims['width']}x{dims['height']}")
    if info.count != bands:
        problems.append(f"{info.count} band(s), asked {bands}")
    if not info.crs or rasterio.crs.CRS.from_user_input(info.crs) != rasterio.crs.CRS.from_user_input(grid["crsCode"]):
        problems.append(f"CRS {info.crs}, asked {grid['crsCode']}")
    if not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(info.transform, want)):
        problems.append("another geotransform")
    if problems:
        raise WorkbenchError(f"{path.name}: Earth Engine sent a GeoTIFF off the requested grid ({'; '.join(problems)})")


def tmp_name(final: Path) -> Path:
    """A hidden temporary name beside ``final``, unique to this process and thread."""
    return final.with_name(f".{final.name}.download-{os.getpid()}-{threading.get_ident()}")
