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

- ``ground_splits``: what imports use. Blocks of a FIXED size on the ground (not chosen
  per import) and ``split_for_key`` per block, so a place gets the same split in every
  import, date, chip grid and CRS (the same ground in the next UTM zone has the same
  lon/lat). Shares are then only close to 70/15/15 over many blocks; ``split_warnings``
  says when a split is too small or lacks a class to be of use.

Pure Python (no numpy) so that importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_SALT = "workbench-split-v1"
MIN_BLOCKS = 20            # auto block size aims for at least this many occupied blocks
MIN_BLOCK_TILES = 2.0      # ... but a block is at least this many tiles wide
# Default ground block side for imports: 512 px x 10 m (the largest Sentinel-2 chip commonly cut),
# so a block holds 1 chip of 512 px, 2 x 2 of 256 px, 8 x 8 of 64 px, and one Sentinel-2 tile
# (110 km) spans about 460 blocks. Why not larger: a 64-chip import of 256 px chips (20 km square)
# covers 16-25 such blocks, enough for train, val and test to each get some; with 0.1 degree
# (11 km) blocks it would cover 4-9, and often leave val or test empty.
DEFAULT_BLOCK_M = 5120.0
METRES_PER_DEGREE_LAT = 111_320.0      # a degree of latitude (and of longitude at the equator), spherical
MIN_SPLIT_TILES = 3                    # fewer tiles than this in a split: warn (too few to choose on)


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


# ---- ground blocks of a fixed size (imports) ------------------------------------------------

def ground_block(lon: float, lat: float, block_m: float = DEFAULT_BLOCK_M) -> tuple[int, int]:
    """The (column, row) of the ``block_m``-metre square holding (lon, lat).

    Rows are bands of ``block_m`` metres of latitude; each row is cut into columns of
    ``block_m`` metres of longitude measured at the row's middle latitude, so blocks are
    (close to) squares on the ground at every latitude, not slivers near the poles.
    """
    height_deg = block_m / METRES_PER_DEGREE_LAT
    row = math.floor(lat / height_deg)
    mid = min(89.999, abs((row + 0.5) * height_deg))
    width_deg = height_deg / math.cos(math.radians(mid))
    return math.floor(lon / width_deg), row


def ground_splits(points: Sequence[tuple[float, float] | None], block_deg: float | None = None,
                  block_m: float = DEFAULT_BLOCK_M, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = DEFAULT_SALT, fallback_keys: Sequence[Hashable] | None = None,
                  ) -> tuple[list[str], list[tuple[int, int] | None], float]:
    """Splits of tiles at lon/lat centres that depend on where each tile is, and nothing else.

    Each tile's block is ``ground_block(lon, lat, block_m)`` (or, with ``block_deg`` -- the
    ``--block-size`` override -- a square of that many degrees, ``lonlat_block``), and the
    block's split is ``split_for_key`` of the block alone: which other tiles are imported,
    with them or later, changes nothing. (``balanced_splits``, which deals the blocks present,
    would give another split to the same ground when the import differs.) Tiles without a
    position (``None``) are split by the hash of their ``fallback_keys`` entry (e.g. the file
    name). Returns (splits, blocks -- (column, row) or None per tile --, block size in degrees
    of latitude, what ``extra.block_deg`` records).
    """
    fractions = _check_fractions(fractions)
    if block_deg is not None and not block_deg > 0:
        raise ValueError(f"block size must be a positive number of degrees, got {block_deg}")
    if not block_m > 0:
        raise ValueError(f"block size must be a positive number of metres, got {block_m}")
    splits: list[str] = []
    blocks: list[tuple[int, int] | None] = []
    for i, p in enumerate(points):
        if p is None:
            fk = fallback_keys[i] if fallback_keys is not None else i
            splits.append(split_for_key(("file", fk), fractions, salt))
            blocks.append(None)
            continue
        if block_deg is not None:
            block = lonlat_block(p[0], p[1], block_deg)
            key: tuple = ("deg", float(block_deg), *block)
        else:
            block = ground_block(p[0], p[1], block_m)
            key = ("m", float(block_m), *block)
        splits.append(split_for_key(key, fractions, salt))
        blocks.append(block)
    size = float(block_deg) if block_deg is not None else block_m / METRES_PER_DEGREE_LAT
    return splits, blocks, size


# ---- is a split of any use? -------------------------------------------------------------------

class _Row(NamedTuple):
    split: str | None
    label: str | None
    water_fraction: float | None


def _split_rows(tiles: Iterable) -> Iterable:
    """What ``split_warnings`` reads of each tile; a TileTable's from its columns (a tuple per
    row instead of a row view answering three look-ups)."""
    from workbench.data.tile_table import TileTable

    if not isinstance(tiles, TileTable) or not {"split", "label", "water_fraction"} <= set(tiles.names):
        return tiles
    return map(_Row._make, zip(tiles["split"], tiles["label"], tiles.values("water_fraction")))


def split_warnings(tiles: Iterable, splits: Sequence[str] = SPLITS, min_tiles: int = MIN_SPLIT_TILES,
                   hint: str = "import more ground or set --block-size") -> list[str]:
    """One line per problem that makes a split useless for choosing a checkpoint, a threshold
    or for scoring: a split with fewer than ``min_tiles`` tiles, tiles with masks
    (``water_fraction`` known) but none with water, or none with land, or a val/test split
    lacking a label the train split has. Lines, not errors: a user may know what they do
    (e.g. a test-only import); the import verb and ``segment train`` print them.

    ``splits`` are (train, val, test) names, in that order, as a run's config names them.
    """
    by_split: dict[str, list] = {s: [] for s in splits}
    for t in _split_rows(tiles):
        if t.split in by_split:
            by_split[t.split].append(t)
    roles = dict(zip(splits, ("train", "val", "test")))
    use = {"train": "a run has too little to learn from",
           "val": "a run cannot choose a checkpoint or threshold on it",
           "test": "a run's test metrics mean little"}
    train_labels = {t.label for t in by_split[splits[0]] if t.label} if splits else set()
    out = []
    for name, group in by_split.items():
        why = use[roles.get(name, "test")]
        if len(group) < min_tiles:
            out.append(f"warning: split {name} has {len(group)} tile(s) (fewer than {min_tiles}): {why}; {hint}")
            if not group:
                continue
        fractions = [t.water_fraction for t in group if getattr(t, "water_fraction", None) is not None]
        if fractions:
            if not any(f > 0 for f in fractions):
                out.append(f"warning: split {name} has no tile with water: {why}; {hint}")
            elif not any(f < 1 for f in fractions):
                out.append(f"warning: split {name} has no tile with land: {why}; {hint}")
        if roles.get(name) in ("val", "test") and train_labels and not fractions:
            missing = sorted(train_labels - {t.label for t in group if t.label})
            if missing:
                out.append(f"warning: split {name} has no tile labelled {', '.join(missing)}: {why}; {hint}")
    return out
