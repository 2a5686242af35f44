"""Where patches come from: windows over tiles, chosen without any hidden RNG state.

A window is ``(tile index, row_off, col_off, size)`` in pixels of the tile's grid.
Two window samplers:

* :class:`RandomWindows` -- ``per_tile`` random windows per tile per epoch, with an
  optional water-ratio filter (keep windows whose mask water fraction lies in
  ``[water_min, water_max]``, found by rejection sampling over mask windows).
* :class:`GridWindows` -- a regular grid that covers every pixel of every tile
  (the last row/column is snapped to the tile edge), for inference and evaluation.

Every random draw is a pure function of ``(seed, epoch, attempt, index)`` through a
counter-based hash (splitmix64, vectorised in numpy), never a stateful generator:
sample ``i`` of epoch ``e`` is the same window whichever worker process computes
it, in whatever order, after however many restarts. That is what makes exact
resume and multi-process sharding trivial.

A sampler is *bound* to tile shapes before use (``sampler.bind(shapes)``);
:class:`~workbench.data.dataset.WindowDataset` does that for you.

:class:`EpochSampler` is the matching index sampler for a ``DataLoader``: a
shuffled order that is also a pure function of ``(seed, epoch)``, shardable by
rank, resumable mid-epoch, and yielding ``(epoch, index)`` pairs so persistent
DataLoader workers (which never see ``set_epoch`` on the main process's copy of the
dataset) still draw the right epoch's windows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError

# ---------------------------------------------------------------------------------------------
# Counter-based hashing
# ---------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Stream constants keep independent draws (row, column, augmentation, ...) apart.
STREAM_ROW = 0x524F57
STREAM_COL = 0x434F4C
STREAM_AUG = 0x415547
STREAM_BRIGHT = 0x425249
STREAM_CONTRAST = 0x434E54
STREAM_SHUFFLE = 0x534855
STREAM_SUBSET = 0x535542


def _u64(x) -> np.ndarray:
    """Any int / int array (negative ones included) as uint64, wrapping modulo 2**64."""
    if isinstance(x, (int, np.integer)):
        return np.array([int(x) & _MASK64], dtype=np.uint64)
    a = np.asarray(x)
    if a.dtype == np.uint64:
        return np.atleast_1d(a)
    return np.atleast_1d(a.astype(np.int64, copy=False)).view(np.uint64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _splitmix_int(x: int) -> int:
    """splitmix64 on one Python int (exactly what :func:`splitmix64` computes)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _scalar(k) -> int | None:
    if isinstance(k, (int, np.integer)):
        return int(k) & _MASK64
    a = np.asarray(k)
    if a.ndim == 0:
        return int(a.astype(np.int64)) & _MASK64 if a.dtype != np.uint64 else int(a)
    return None


def hash_keys(stream: int, *keys) -> np.ndarray:
    """One uint64 per element of the broadcast ``keys``: a pure function of (stream, *keys).

    ``h = splitmix64(h ^ key)`` over the keys in order; leading scalar keys are folded
    in pure Python (cheap), array keys in numpy.
    """
    h: int | np.ndarray = _splitmix_int(int(stream) & _MASK64)
    for k in keys:
        s = _scalar(k) if isinstance(h, int) else None
        if s is not None:
            h = _splitmix_int(h ^ s)
        else:
            base = np.uint64(h) if isinstance(h, int) else h
            h = splitmix64(base ^ _u64(k))
    return np.atleast_1d(np.asarray(h, dtype=np.uint64)) if isinstance(h, int) else h


def uniform(stream: int, *keys) -> np.ndarray:
    """Floats in [0, 1) (53 random bits), a pure function of the keys."""
    return (hash_keys(stream, *keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def randint(n, stream: int, *keys) -> np.ndarray:
    """Integers in [0, n) (``n`` may be an array), a pure function of the keys."""
    u = uniform(stream, *keys)
    return np.minimum((u * np.asarray(n, dtype=np.float64)).astype(np.int64), np.asarray(n, np.int64) - 1)


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """A batch of windows: parallel int64 arrays. ``fallback`` marks windows that did not
    pass the water filter and are the best candidate found instead."""

    tile: np.ndarray
    row: np.ndarray
    col: np.ndarray
    size: int
    fallback: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tile)

    def __getitem__(self, i: int) -> tuple[int, int, int, int]:
        return int(self.tile[i]), int(self.row[i]), int(self.col[i]), self.size

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        return (self[i] for i in range(len(self)))


# ``fraction_fn(positions, tile, row, col) -> water fraction`` per candidate window (NaN when
# the window has no valid mask pixel). ``positions`` are the candidates' slots in the batch
# (a slot repeats when several attempts are tried at once), so a caller can keep the mask
# window it read for the candidate that wins.
FractionFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _as_shapes(shapes) -> np.ndarray:
    """(N, 2) int64 array of (height, width) from arrays, pairs, or catalog Tile rows."""
    if isinstance(shapes, np.ndarray) and shapes.ndim == 2 and shapes.shape[1] == 2:
        return shapes.astype(np.int64, copy=False)
    rows = []
    for s in shapes:
        if hasattr(s, "height") and hasattr(s, "width"):
            if s.height is None or s.width is None:
                raise WorkbenchError(f"{getattr(s, 'path', s)}: tile size unknown; read the raster header first")
            rows.append((int(s.height), int(s.width)))
        else:
            h, w = s
            rows.append((int(h), int(w)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


class _WindowSampler:
    size: int
    _shapes: np.ndarray | None = None
    _names: list[str] | None = None

    @property
    def is_bound(self) -> bool:
        return self._shapes is not None

    @property
    def filters(self) -> bool:
        return False

    def bind(self, shapes, names: Sequence[str] | None = None):
        """A copy of this sampler bound to tile shapes ((height, width) pairs or Tile rows).

        ``names`` (usually file paths) are only used in error messages.
        """
        rows = shapes if isinstance(shapes, np.ndarray) else list(shapes)
        shapes = _as_shapes(rows)
        names = list(names) if names is not None else [
            str(getattr(s, "path", f"tile {i}")) for i, s in enumerate(rows)]
        if len(shapes) == 0:
            raise WorkbenchError("no tiles to sample windows from (empty tile list)")
        small = np.nonzero((shapes[:, 0] < self.size) | (shapes[:, 1] < self.size))[0]
        if len(small):
            i = int(small[0])
            raise WorkbenchError(f"{names[i]}: window of {self.size}x{self.size} px is larger than the tile "
                                 f"({shapes[i, 1]}x{shapes[i, 0]} px, width x height)")
        bound = copy.copy(self)
        bound._shapes = shapes
        bound._names = names
        bound._prepare()
        return bound

    def _prepare(self) -> None:
        pass

    def _require_bound(self) -> np.ndarray:
        if self._shapes is None:
            raise WorkbenchError(f"{type(self).__name__} is not bound to tiles; call .bind(shapes) first")
        return self._shapes

    def __len__(self) -> int:
        raise NotImplementedError

    def tiles_of(self, indices) -> np.ndarray:
        """The tile index of each window index (cheap: no window is drawn)."""
        raise NotImplementedError

    def _check(self, idx: np.ndarray) -> None:
        n = len(self)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"window index {bad} out of range for {n} windows")

    def windows(self, indices, seed: int = 0, epoch=0, fraction_fn: FractionFn | None = None) -> Windows:
        raise NotImplementedError

    def all_windows(self, seed: int = 0, epoch: int = 0, fraction_fn: FractionFn | None = None) -> Windows:
        return self.windows(np.arange(len(self)), seed=seed, epoch=epoch, fraction_fn=fraction_fn)


class RandomWindows(_WindowSampler):
    """``per_tile`` random square windows of ``size`` px per tile per epoch.

    ``per_tile`` is one count for every tile, or a sequence of counts, one per tile (in
    the order the sampler is bound to), e.g. more windows for a larger image.
    Index ``i`` belongs to tile ``i // per_tile`` (with counts: the tile whose stretch of
    ``cumsum(per_tile)`` holds ``i``); its window is drawn from
    ``hash(seed, epoch, attempt, i)``. With ``water_min``/``water_max`` set, candidates
    are drawn for attempt 0, 1, ... and the first whose mask water fraction (non-zero
    mask pixels over valid mask pixels) lies in ``[water_min, water_max]`` is kept.

    Fallback: if none of ``max_tries`` candidates passes, the candidate closest to the
    interval is used (never skipped, so the dataset length and the index -> tile map
    stay fixed, which exact resume and sharding rely on). Such windows are flagged in
    ``Windows.fallback``. Filter tiles that can never pass out of the catalog query
    (``water_min``/``water_max`` on the tile's ``water_fraction``) if fallbacks matter.
    """

    def __init__(self, size: int, per_tile: int | Sequence[int] = 1, water_min: float | None = None,
                 water_max: float | None = None, max_tries: int = 32):
        if int(size) < 1:
            raise WorkbenchError(f"window size must be a positive number of pixels, got {size}")
        counts = np.atleast_1d(np.asarray(per_tile, dtype=np.int64))
        if counts.size == 0 or counts.min() < 1:
            raise WorkbenchError(f"per_tile must be at least 1 (for every tile), got {per_tile}")
        for name, v in (("water_min", water_min), ("water_max", water_max)):
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise WorkbenchError(f"{name} must lie in [0, 1], got {v}")
        if water_min is not None and water_max is not None and float(water_min) > float(water_max):
            raise WorkbenchError(f"water_min ({water_min}) is larger than water_max ({water_max})")
        if int(max_tries) < 1:
            raise WorkbenchError(f"max_tries must be at least 1, got {max_tries}")
        self.size = int(size)
        self.per_tile: int | tuple[int, ...] = int(per_tile) if np.ndim(per_tile) == 0 else tuple(counts.tolist())
        self.water_min = None if water_min is None else float(water_min)
        self.water_max = None if water_max is None else float(water_max)
        self.max_tries = int(max_tries)

    def __repr__(self) -> str:
        return (f"RandomWindows(size={self.size}, per_tile={self.per_tile}, water_min={self.water_min}, "
                f"water_max={self.water_max}, max_tries={self.max_tries})")

    @property
    def filters(self) -> bool:
        return self.water_min is not None or self.water_max is not None

    def _prepare(self) -> None:
        if isinstance(self.per_tile, tuple):
            if len(self.per_tile) != len(self._shapes):
                raise WorkbenchError(f"per_tile has {len(self.per_tile)} counts for {len(self._shapes)} tiles")
            self._starts = np.concatenate([[0], np.cumsum(self.per_tile)])

    def __len__(self) -> int:
        shapes = self._require_bound()
        if isinstance(self.per_tile, tuple):
            return int(self._starts[-1])
        return len(shapes) * self.per_tile

    def tiles_of(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check(idx)
        if isinstance(self.per_tile, tuple):
            return np.searchsorted(self._starts, idx, side="right") - 1
        return idx // self.per_tile

    def candidates(self, indices, seed: int = 0, epoch=0, attempt=0) -> Windows:
        """Candidate windows for ``attempt`` (no filtering): pure function of the keys."""
        shapes = self._require_bound()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        tile = self.tiles_of(idx)
        h, w = shapes[tile, 0], shapes[tile, 1]
        row = randint(h - self.size + 1, STREAM_ROW, seed, epoch, attempt, idx)
        col = randint(w - self.size + 1, STREAM_COL, seed, epoch, attempt, idx)
        return Windows(tile, row, col, self.size, np.zeros(len(idx), bool))

    def _score(self, frac: np.ndarray) -> np.ndarray:
        """0 inside [water_min, water_max], else the distance to it; inf without a valid pixel."""
        lo = self.water_min if self.water_min is not None else 0.0
        hi = self.water_max if self.water_max is not None else 1.0
        frac = np.asarray(frac, dtype=np.float64)
        score = np.maximum(lo - frac, 0.0) + np.maximum(frac - hi, 0.0)
        return np.where(np.isnan(frac), np.inf, score)

    def windows(self, indices, seed: int = 0, epoch=0, fraction_fn: FractionFn | None = None) -> Windows:
        """The windows of ``indices`` for ``(seed, epoch)``; ``epoch`` may be per index.

        With a water filter ``fraction_fn`` is required (the dataset provides one that
        reads the mask windows); it is called once per round of attempts with the
        candidates of the still-pending windows only (``positions`` may repeat).
        """
        first = self.candidates(indices, seed, epoch, 0)
        if not self.filters:
            return first
        if fraction_fn is None:
            raise WorkbenchError("RandomWindows with water_min/water_max needs the masks: use it through "
                                 "WindowDataset (or pass fraction_fn)")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        scalar_epoch = np.ndim(epoch) == 0
        ep = np.broadcast_to(np.asarray(epoch, dtype=np.int64), idx.shape)
        out = first
        n = len(idx)
        best_score = np.full(n, np.inf)
        best_row, best_col = first.row.copy(), first.col.copy()
        pending = np.arange(n)
        attempt, chunk = 0, 1
        # Attempts are evaluated in chunks of 1, 2, 4, ... per pending window: a few vectorised
        # rounds instead of one round per attempt. The result is the same as trying attempts one
        # by one: the first passing attempt wins, and the fallback is the lowest score (earliest
        # attempt on ties).
        while len(pending) and attempt < self.max_tries:
            k = min(chunk, self.max_tries - attempt)
            P = len(pending)
            pos = np.repeat(pending, k)
            att = np.tile(np.arange(attempt, attempt + k, dtype=np.int64), P)
            if attempt == 0 and k == 1:
                cand = first
            else:
                cand = self.candidates(idx[pos], seed, epoch if scalar_epoch else ep[pos], att)
            score = self._score(fraction_fn(pos, cand.tile, cand.row, cand.col)).reshape(P, k)
            rows, cols = cand.row.reshape(P, k), cand.col.reshape(P, k)
            ar = np.arange(P)
            j = np.argmin(score, axis=1)  # first minimum: earliest attempt on ties
            better = score[ar, j] < best_score[pending]
            sel = pending[better]
            best_score[sel] = score[ar, j][better]
            best_row[sel], best_col[sel] = rows[ar, j][better], cols[ar, j][better]
            ok = score == 0
            passed = ok.any(axis=1)
            firstok = np.argmax(ok, axis=1)
            acc = pending[passed]
            out.row[acc] = rows[ar, firstok][passed]
            out.col[acc] = cols[ar, firstok][passed]
            pending = pending[~passed]
            attempt += k
            chunk *= 2
        # Never passed: the best candidate seen (attempt 0's window if none had a valid mask pixel).
        out.row[pending] = best_row[pending]
        out.col[pending] = best_col[pending]
        out.fallback[pending] = True
        return out


def grid_offsets(length: int, size: int, stride: int) -> np.ndarray:
    """Start offsets of windows of ``size`` every ``stride`` px covering ``[0, length)``;
    the last window is snapped to end exactly at the edge."""
    if size > length:
        raise WorkbenchError(f"window of {size} px is larger than the extent of {length} px")
    starts = np.arange(0, length - size + 1, stride, dtype=np.int64)
    if starts[-1] + size < length:
        starts = np.append(starts, length - size)
    return starts


class GridWindows(_WindowSampler):
    """A regular grid of ``size`` px windows every ``stride`` px (default: ``size - overlap``,
    overlap 0) covering every pixel of every tile; the last row/column is snapped to
    the tile edge, so edge windows overlap their neighbours more. Index order: tile,
    then row, then column. Independent of seed and epoch."""

    def __init__(self, size: int, stride: int | None = None, overlap: int | None = None):
        size = int(size)
        if size < 1:
            raise WorkbenchError(f"window size must be a positive number of pixels, got {size}")
        if stride is not None and overlap is not None and int(stride) != size - int(overlap):
            raise WorkbenchError(f"give stride or overlap, not both "
                                 f"(stride {stride} != size {size} - overlap {overlap})")
        if stride is None:
            overlap = int(overlap or 0)
            if not 0 <= overlap < size:
                raise WorkbenchError(f"overlap must lie in [0, {size}) for {size} px windows, got {overlap}")
            stride = size - overlap
        stride = int(stride)
        if stride < 1:
            raise WorkbenchError(f"stride must be at least 1 px, got {stride}")
        self.size, self.stride = size, stride

    def __repr__(self) -> str:
        return f"GridWindows(size={self.size}, stride={self.stride})"

    def _prepare(self) -> None:
        self._rows = [grid_offsets(int(h), self.size, self.stride) for h, _ in self._shapes]
        self._cols = [grid_offsets(int(w), self.size, self.stride) for _, w in self._shapes]
        counts = np.array([len(r) * len(c) for r, c in zip(self._rows, self._cols)], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._ncols = np.array([len(c) for c in self._cols], dtype=np.int64)

    def __len__(self) -> int:
        self._require_bound()
        return int(self._starts[-1])

    def tiles_of(self, indices) -> np.ndarray:
        self._require_bound()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check(idx)
        return np.searchsorted(self._starts, idx, side="right") - 1

    def tile_windows(self, tile: int) -> Windows:
        """Every window of one tile, in row-major order."""
        self._require_bound()
        rr, cc = np.meshgrid(self._rows[tile], self._cols[tile], indexing="ij")
        n = rr.size
        return Windows(np.full(n, tile, np.int64), rr.ravel(), cc.ravel(), self.size, np.zeros(n, bool))

    def windows(self, indices, seed: int = 0, epoch=0, fraction_fn: FractionFn | None = None) -> Windows:
        tile = self.tiles_of(indices)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        local = idx - self._starts[tile]
        ncols = self._ncols[tile]
        r_i, c_i = local // ncols, local % ncols
        row = np.fromiter((self._rows[t][i] for t, i in zip(tile, r_i)), np.int64, len(idx))
        col = np.fromiter((self._cols[t][i] for t, i in zip(tile, c_i)), np.int64, len(idx))
        return Windows(tile, row, col, self.size, np.zeros(len(idx), bool))


# ---------------------------------------------------------------------------------------------
# Index order for a DataLoader
# ---------------------------------------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that is a pure function of (seed, epoch)."""
    keys = hash_keys(STREAM_SHUFFLE, seed, epoch, np.arange(n, dtype=np.int64))
    return np.argsort(keys, kind="stable")


def torch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """``torch.randperm(n)`` from a local generator seeded with ``seed + epoch``: also a pure
    function of (seed, epoch), and the order the trainer has always drawn (so runs, and
    their figures, stay what they were). No global RNG is touched."""
    import torch

    rng = torch.Generator()
    rng.manual_seed(int(seed) + int(epoch))
    return torch.randperm(int(n), generator=rng).numpy()


Permutation = Callable[[int, int, int], np.ndarray]

try:  # torch is a dependency, but keep the hashing above importable without it
    from torch.utils.data import Sampler as _TorchSampler
except Exception:  # pragma: no cover
    _TorchSampler = object  # type: ignore[assignment,misc]


class EpochSampler(_TorchSampler):
    """Index order for a DataLoader: a pure function of (seed, epoch), shardable, resumable.

    The one index sampler of the workbench: the trainer's loaders and the data layer's
    benchmarks and tests all use it.

    * ``shuffle``: ``permutation(n, seed, epoch)`` per epoch (else ``0..n-1``); the default
      is the counter-hash :func:`epoch_permutation`, the trainer passes
      :func:`torch_permutation`.
    * ``rank``/``world_size``: each rank takes every ``world_size``-th index of the
      epoch's order (padded by wrapping so ranks get equal counts, unless ``drop_last``).
      Under accelerate the trainer leaves this at one rank: accelerate's
      ``BatchSamplerShard`` hands batch ``i`` of the global order to process ``i % world_size``.
    * ``start``: skip the first ``start`` indices of this rank's epoch (exact resume
      mid-epoch); it applies to the next ``__iter__`` only.
    * ``with_epoch``: yield ``(epoch, index)`` pairs, which :class:`WindowDataset`
      accepts, so persistent workers draw the right epoch's windows. Set False to
      yield plain ints for other datasets.

    No attribute is named ``generator``: accelerate would otherwise try to synchronise it.
    """

    def __init__(self, length, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, with_epoch: bool = True, start: int = 0,
                 permutation: Permutation = epoch_permutation):
        self.n = int(length if isinstance(length, (int, np.integer)) else len(length))
        if world_size < 1 or not 0 <= rank < world_size:
            raise WorkbenchError(f"rank {rank} is not in [0, world_size={world_size})")
        self.shuffle, self.seed, self.rank, self.world_size = bool(shuffle), int(seed), int(rank), int(world_size)
        self.drop_last, self.with_epoch = bool(drop_last), bool(with_epoch)
        self.permutation = permutation
        self.epoch = 0
        self.start = int(start)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        """Resume: the next iteration skips this rank's first ``start`` indices."""
        self.start = int(start)

    def _per_rank(self) -> int:
        if self.drop_last:
            return self.n // self.world_size
        return math.ceil(self.n / self.world_size)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's full index order for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        order = self.permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n)
        total = self._per_rank() * self.world_size
        if total > self.n and self.n:
            order = np.resize(order, total)  # wrap around to pad
        return order[:total][self.rank::self.world_size]

    def __len__(self) -> int:
        return max(self._per_rank() - self.start, 0)

    def __iter__(self):
        order = self.indices()[self.start:]
        self.start = 0
        if self.with_epoch:
            return iter([(self.epoch, int(i)) for i in order])
        return iter(order.tolist())
