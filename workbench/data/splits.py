"""Geographic train/val/test splits by blocks, shared by every tile source.

Neighbouring tiles look alike, so a random per-tile split leaks the test set into
training. Instead tiles are grouped into geographic *blocks* (a square of tiles on a
raster grid, or a square of lon/lat degrees) and whole blocks go to one split.

Which split a block gets comes from a stable hash of its key (SHA-256 of the key's
text, never Python's ``hash()``, which changes between processes):

- ``split_for_key``: each block on its own, from where its hash falls in [0, 1).
  The same block always gets the same split, whatever else is imported later.
- ``balanced_splits``: blocks ranked by their hash and dealt out so that the
  *tile-weighted* shares come close to the fractions (with few blocks, independent
  draws can miss 70/15/15 by a lot). Deterministic for a given set of blocks.

Pure Python (no numpy) so that importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_SALT = "workbench-split-v1"
MIN_BLOCKS = 20            # auto block size aims for at least this many occupied blocks
MIN_BLOCK_TILES = 2.0      # ... but a block is at least this many tiles wide


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0,
                                                                                  abs_tol=1e-6):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def stable_unit(key: Hashable, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) that depends only on ``key``'s text and ``salt``."""
    digest = hashlib.sha256(f"{salt}|{key!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _split_at(u: float, fractions: Sequence[float]) -> str:
    edge = 0.0
    for name, f in zip(SPLITS, fractions):
        edge += f
        if u < edge:
            return name
    return SPLITS[-1]


def split_for_key(key: Hashable, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = DEFAULT_SALT) -> str:
    """The split of one block, independent of every other block."""
    return _split_at(stable_unit(key, salt), _check_fractions(fractions))


def balanced_splits(weights: Mapping[Hashable, float], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    salt: str = DEFAULT_SALT) -> dict[Hashable, str]:
    """Deal blocks (key -> number of tiles) to splits in hash order so the shares match.

    A block goes to the split in which the middle of its stretch of the cumulative
    tile count falls, so no split is more than half a block off its target.
    """
    fractions = _check_fractions(fractions)
    order = sorted(weights, key=lambda k: (stable_unit(k, salt), repr(k)))
    total = float(sum(weights[k] for k in order)) or 1.0
    out, done = {}, 0.0
    for key in order:
        w = float(weights[key])
        out[key] = _split_at((done + w / 2) / total, fractions)
        done += w
    return out


# ---- raster grids (tile row / column) -------------------------------------------------------

def grid_block(row: int, col: int, block_tiles: int) -> tuple[int, int]:
    """The block of a tile at (row, col) on a regular tile grid, ``block_tiles`` tiles a side."""
    return row // block_tiles, col // block_tiles


def grid_splits(cells: Iterable[tuple[int, int]], block_tiles: int,
                fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = DEFAULT_SALT) -> list[str]:
    """Splits for tiles at (row, col), whole ``block_tiles`` x ``block_tiles`` blocks at a time."""
    cells = list(cells)
    blocks = [grid_block(r, c, block_tiles) for r, c in cells]
    assignment = balanced_splits(Counter(blocks), fractions, salt)
    return [assignment[b] for b in blocks]


# ---- lon/lat blocks (tiles from anywhere) ---------------------------------------------------

def lonlat_block(lon: float, lat: float, block_deg: float) -> tuple[int, int]:
    """The (column, row) of the ``block_deg``-degree square holding (lon, lat)."""
    return math.floor(lon / block_deg), math.floor(lat / block_deg)


def auto_block_degrees(points: Sequence[tuple[float, float]], tile_span_deg: float | None = None,
                       min_blocks: int = MIN_BLOCKS) -> float:
    """A block size (a power of two in degrees) for a set of tile centres.

    The largest size that still gives ``min_blocks`` occupied blocks, but never
    smaller than ``MIN_BLOCK_TILES`` tiles (so a block holds neighbours together);
    when the tiles are too few or too close for that many blocks, the smallest
    allowed size. Powers of two make every smaller block nest in a larger one.
    """
    floor_deg = max((tile_span_deg or 0.0) * MIN_BLOCK_TILES, 2.0 ** -14)
    best = None
    for k in range(6, -15, -1):                     # 64 degrees down to ~7 m
        size = 2.0 ** k
        if size < floor_deg:
            break
        best = size
        if len({lonlat_block(lon, lat, size) for lon, lat in points}) >= min_blocks:
            return size
    return best if best is not None else 2.0 ** math.ceil(math.log2(floor_deg))


def lonlat_splits(points: Sequence[tuple[float, float] | None], block_deg: float | None = None,
                  tile_span_deg: float | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = DEFAULT_SALT, fallback_keys: Sequence[Hashable] | None = None,
                  ) -> tuple[list[str], float]:
    """Splits for tiles at lon/lat centres, by blocks of ``block_deg`` degrees (auto if None).

    Tiles without a position (``None``) are split one by one by the hash of their
    ``fallback_keys`` entry (e.g. the file name). Returns (splits, block size used).
    """
    placed = [p for p in points if p is not None]
    size = block_deg or (auto_block_degrees(placed, tile_span_deg) if placed else 1.0)
    keys = [(size, *lonlat_block(p[0], p[1], size)) if p is not None else None for p in points]
    assignment = balanced_splits(Counter(k for k in keys if k is not None), fractions, salt)
    out = []
    for i, key in enumerate(keys):
        if key is not None:
            out.append(assignment[key])
        else:
            fk = fallback_keys[i] if fallback_keys is not None else i
            out.append(split_for_key(("file", fk), fractions, salt))
    return out, size
