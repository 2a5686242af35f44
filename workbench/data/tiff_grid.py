"""A tile's pixel grid (size and geotransform) straight from its TIFF tags, for the plain case only.

    grid = read_grid("tiles/a.tif")     # Grid(width, height, transform, crs_key), or None: ask GDAL

Why: exporting or importing a million tiles as STAC needs every tile's grid, and
``rasterio.open`` costs about a millisecond a file (most of it Python and GDAL set-up, with
the GIL held: threads do not help), where the dozen tags that hold the grid are a few
kilobytes at the start or end of the file, read here in tens of microseconds.

This is not a second GeoTIFF reader: :func:`workbench.data.geotiff.read_info` stays the truth.
``read_grid`` answers only where its answer is GDAL's by construction, and None otherwise,
so that callers read the header with GDAL:

- a classic or BigTIFF file (either byte order), its first image a full-resolution one;
- the grid given as ModelPixelScale (x > 0, y > 0) and one ModelTiepoint at pixel (0, 0), so
  GDAL's geotransform ``(x, sx, 0, y, 0, -sy)`` comes out of the tags with no arithmetic;
- no ModelTransformation tag, no PixelIsPoint raster type (GDAL shifts those by half a pixel)
  and no ``.aux.xml`` beside the file (GDAL's PAM file outranks the tags).

``crs_key`` is the GeoKey directory with its double and text parameters, as bytes: two files
with the same key have the same CRS in GDAL's eyes (the converse need not hold; compare CRSs
with ``geotiff.same_crs`` when the keys differ). Any file that does not parse is None too: GDAL
then says what is wrong with it, in the words the user sees today.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

HEAD = 16 * 1024           # bytes read first: the whole header of a file whose tags come first
_WIDTH, _HEIGHT, _SUBFILE = 256, 257, 254
_SCALE, _TIEPOINT, _MATRIX = 33550, 33922, 34264
_GEOKEYS, _GEODOUBLES, _GEOASCII = 34735, 34736, 34737
_RASTER_TYPE_KEY, _PIXEL_IS_POINT = 1025, 2
# TIFF field type -> struct code (the types the grid tags use; others are skipped)
_CODES = {1: "B", 2: "s", 3: "H", 4: "I", 7: "B", 11: "f", 12: "d", 16: "Q"}
_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_WANTED = {_WIDTH, _HEIGHT, _SUBFILE, _SCALE, _TIEPOINT, _MATRIX, _GEOKEYS, _GEODOUBLES, _GEOASCII}


@dataclass(frozen=True)
class Grid:
    """A raster's size and GDAL geotransform ``(a, b, c, d, e, f)`` as rasterio's Affine orders it."""

    width: int
    height: int
    transform: tuple[float, float, float, float, float, float]
    crs_key: bytes

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the raster's own CRS, computed as ``RasterInfo.bounds`` does."""
        a, _, c, _, e, f = self.transform
        xs = [c, c + a * self.width]
        ys = [f, f + e * self.height]
        return min(xs), min(ys), max(xs), max(ys)


class GdalHeaders:
    """``with GdalHeaders() as gdal: gdal.read_info(path)``: :func:`workbench.data.geotiff.read_info`
    for many files in one GDAL environment, entered at the first read (none may be needed), in
    which GDAL looks a tile's sidecar files (``.aux.xml``, ``.ovr``, ...) up one by one instead of
    listing its whole folder on every open: the same answer, at half the cost in a folder of
    thousands of tiles."""

    def __init__(self) -> None:
        self._env = None

    def __enter__(self) -> GdalHeaders:
        return self

    def __exit__(self, *exc) -> None:
        if self._env is not None:
            self._env.__exit__(*exc)
            self._env = None

    def read_info(self, path: str | Path):
        from workbench.data import geotiff

        if self._env is None:
            import rasterio

            self._env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE")
            self._env.__enter__()
        return geotiff.read_info(path)


def read_grid(path: str | Path) -> Grid | None:
    """The grid of the GeoTIFF at ``path`` when its tags give it plainly (see the module docs), else None."""
    path = os.fspath(path)
    try:
        if os.path.exists(path + ".aux.xml"):
            return None
        with open(path, "rb") as f:
            return _parse(f)
    except (OSError, struct.error, ValueError, KeyError, IndexError, OverflowError):
        return None


class _Reader:
    """Bytes of the file at any offset, from the head already read or a seek."""

    def __init__(self, f) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.head = f.read(HEAD)

    def at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:   # a count or offset the file cannot hold:
            raise ValueError("truncated")                   # never a read (an allocation) of that size
        if offset + n <= len(self.head):
            return self.head[offset:offset + n]
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("truncated")
        return data


def _parse(f) -> Grid | None:
    r = _Reader(f)
    order = {b"II": "<", b"MM": ">"}[r.at(0, 2)]
    (magic,) = struct.unpack(order + "H", r.at(2, 2))
    if magic == 42:
        (ifd,) = struct.unpack(order + "I", r.at(4, 4))
        count_fmt, entry_fmt, entry_size, inline = "H", "HHI", 12, 4
    elif magic == 43:
        size, zero, ifd = struct.unpack(order + "HHQ", r.at(4, 12))
        if (size, zero) != (8, 0):
            return None
        count_fmt, entry_fmt, entry_size, inline = "Q", "HHQ", 20, 8
    else:
        return None
    count_size = struct.calcsize(count_fmt)
    (n,) = struct.unpack(order + count_fmt, r.at(ifd, count_size))
    table = r.at(ifd + count_size, n * entry_size)
    tags: dict[int, tuple] = {}
    head_size = struct.calcsize(order + entry_fmt)
    for k in range(n):
        entry = table[k * entry_size:(k + 1) * entry_size]
        tag, kind, count = struct.unpack(order + entry_fmt, entry[:head_size])
        if tag not in _WANTED:
            continue
        if kind not in _CODES:
            return None
        nbytes = _SIZES[kind] * count
        raw = entry[head_size:head_size + nbytes] if nbytes <= inline else r.at(
            struct.unpack(order + ("I" if inline == 4 else "Q"), entry[head_size:])[0], nbytes)
        tags[tag] = (raw,) if kind == 2 else struct.unpack(f"{order}{count}{_CODES[kind]}", raw)
    return _grid(tags)


def _grid(tags: dict[int, tuple]) -> Grid | None:
    if _MATRIX in tags or _SCALE not in tags or _TIEPOINT not in tags or _GEOKEYS not in tags:
        return None
    if tags.get(_SUBFILE, (0,))[0] & 1:            # a reduced-resolution image first
        return None
    scale, tie, keys = tags[_SCALE], tags[_TIEPOINT], tags[_GEOKEYS]
    if len(scale) < 2 or len(tie) != 6 or tie[0] != 0 or tie[1] != 0:
        return None
    sx, sy = float(scale[0]), float(scale[1])
    if not (sx > 0 and sy > 0) or sx == float("inf") or sy == float("inf"):
        return None
    for i in range(4, 4 + 4 * keys[3], 4):          # GeoKey entries: id, location, count, value
        if keys[i] == _RASTER_TYPE_KEY and keys[i + 1] == 0 and keys[i + 3] == _PIXEL_IS_POINT:
            return None
    width, height = tags[_WIDTH][0], tags[_HEIGHT][0]
    if width <= 0 or height <= 0:
        return None
    key = b"|".join((struct.pack(f"<{len(keys)}H", *keys),
                     struct.pack(f"<{len(tags.get(_GEODOUBLES, ()))}d", *tags.get(_GEODOUBLES, ())),
                     tags.get(_GEOASCII, (b"",))[0]))
    e = -sy
    c = float(tie[3]) - float(tie[0]) * sx          # GDAL's own arithmetic (exact at pixel 0, 0)
    f = float(tie[4]) - float(tie[1]) * e
    return Grid(width=int(width), height=int(height), transform=(sx, 0.0, c, 0.0, e, f), crs_key=key)
