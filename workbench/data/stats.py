"""Per-band mean/std of the training split, stored with the run.

Statistics are in the tiles' reflectance units (``radiometry.of_tile``: uint16 DN x 0.0001,
an offset product's ``- 0.1``, float as it is; raw 8-bit values stay raw), so tiles of one
place in different forms pool into one normalisation, and band names are canonical.

Normalisation uses statistics of the data at hand, never ImageNet constants: a
Sentinel-2 NIR band or a uint16 reflectance has nothing to do with photographs.
:func:`compute_band_stats` reads tiles block by block (never a whole scene at
once), leaves nodata (and NaN) pixels out, accumulates in float64 with a
numerically stable merge of per-block moments, and uses a deterministic subset of
tiles when there are many.

A run with ``data.indices`` also gets each index's mean / std (``index_names``,
``index_mean``, ``index_std``), over the pixels where the index is defined, from the same
reflectance (``workbench.data.indices``): the index channels are then normalised like any
band. They are kept apart from the band lists so everything that selects or counts bands
(``select``, ``len``) is unchanged by them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from workbench.data import geotiff
from workbench.data.samplers import STREAM_SUBSET, hash_keys
from workbench.errors import WorkbenchError

_PIXELS_PER_READ = 1 << 20


@dataclass
class BandStats:
    """Mean and standard deviation per band (in the order the dataset reads bands)."""

    mean: list[float]
    std: list[float]
    band_names: list[str] = field(default_factory=list)
    pixels: int | None = None  # valid pixels counted
    tiles: list[str] = field(default_factory=list)  # files the statistics came from
    index_names: list[str] = field(default_factory=list)   # spectral index channels after the bands
    index_mean: list[float] = field(default_factory=list)
    index_std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        self.band_names = [str(b) for b in self.band_names] or [f"b{i + 1}" for i in range(len(self.mean))]
        if len(self.mean) != len(self.std) or len(self.band_names) != len(self.mean):
            raise WorkbenchError(f"band statistics disagree: {len(self.mean)} means, {len(self.std)} stds, "
                                 f"{len(self.band_names)} band names")
        if not all(math.isfinite(v) for v in self.mean + self.std) or any(s < 0 for s in self.std):
            raise WorkbenchError("band statistics must be finite numbers with std >= 0")
        self.index_names = [str(n) for n in self.index_names]
        self.index_mean = [float(v) for v in self.index_mean]
        self.index_std = [float(v) for v in self.index_std]
        if not len(self.index_names) == len(self.index_mean) == len(self.index_std):
            raise WorkbenchError(f"index statistics disagree: {len(self.index_names)} names, "
                                 f"{len(self.index_mean)} means, {len(self.index_std)} stds")
        if not all(math.isfinite(v) for v in self.index_mean + self.index_std) or any(s < 0 for s in self.index_std):
            raise WorkbenchError("index statistics must be finite numbers with std >= 0")

    def __len__(self) -> int:
        return len(self.mean)

    def select(self, bands: Sequence[int]) -> BandStats:
        """Statistics of a subset of bands (0-based positions)."""
        return BandStats([self.mean[b] for b in bands], [self.std[b] for b in bands],
                         [self.band_names[b] for b in bands], self.pixels, list(self.tiles),
                         list(self.index_names), list(self.index_mean), list(self.index_std))

    def index_stats(self, names: Sequence[str], where: str = "band statistics") -> BandStats:
        """Mean / std of the index channels ``names`` (in that order), as a BandStats of their own;
        an index without statistics (a run saved before it was added) is a one-line error."""
        missing = [n for n in names if n not in self.index_names]
        if missing:
            have = ", ".join(self.index_names) or "none"
            raise WorkbenchError(f"{where}: no statistics for index {', '.join(missing)} (the run's band "
                                 f"statistics have indices: {have})")
        pos = [self.index_names.index(n) for n in names]
        return BandStats([self.index_mean[p] for p in pos], [self.index_std[p] for p in pos], list(names),
                         self.pixels, list(self.tiles))

    def scale_bias(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(scale, bias)`` with ``(x - mean) / std == x * scale + bias`` (std floored at eps)."""
        std = np.maximum(np.asarray(self.std, np.float64), eps)
        scale = 1.0 / std
        return scale.astype(np.float32), (-np.asarray(self.mean, np.float64) * scale).astype(np.float32)

    def to_dict(self) -> dict:
        out = dict(mean=list(self.mean), std=list(self.std), band_names=list(self.band_names),
                   pixels=self.pixels, tiles=list(self.tiles))
        if self.index_names:
            out["indices"] = dict(names=list(self.index_names), mean=list(self.index_mean), std=list(self.index_std))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> BandStats:
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            raise WorkbenchError("band statistics need 'mean' and 'std' lists")
        idx = d.get("indices") or {}
        if not isinstance(idx, dict):
            raise WorkbenchError("band statistics: 'indices' must be a mapping of names, mean and std")
        return cls(list(d["mean"]), list(d["std"]), list(d.get("band_names") or []), d.get("pixels"),
                   list(d.get("tiles") or []), list(idx.get("names") or []), list(idx.get("mean") or []),
                   list(idx.get("std") or []))

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temp file + rename)."""
        from workbench.files import write_json_atomic

        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> BandStats:
        path = Path(path)
        if not path.is_file():
            raise WorkbenchError(f"{path}: no such band statistics file")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}: {exc}") from None


class _Moments:
    """Count / mean / M2 per band, merged with Chan et al.'s parallel update (float64)."""

    def __init__(self, bands: int):
        self.n = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def add(self, values: np.ndarray) -> None:  # values: (bands, n) float64
        nb = values.shape[1]
        if nb == 0:
            return
        mb = values.mean(axis=1)
        m2b = ((values - mb[:, None]) ** 2).sum(axis=1)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n


def _path_of(t) -> str:
    return str(getattr(t, "path", t))


def select_tiles(tiles: Sequence, split: str | None = "train", max_tiles: int | None = None,
                 seed: int = 0) -> list:
    """The tiles statistics are computed on: those of ``split`` (tiles with no split are
    kept), at most ``max_tiles`` of them chosen by a seeded hash (same seed, same subset)."""
    chosen = tiles if split is None else [t for t in tiles if getattr(t, "split", None) in (None, split)]
    if not chosen:
        raise WorkbenchError(f"no {split!r} tiles to compute band statistics on "
                             f"({len(tiles)} tile(s) given, none in that split)")
    if max_tiles is not None and len(chosen) > max_tiles:
        keys = hash_keys(STREAM_SUBSET, seed, np.arange(len(chosen)))
        keep = np.sort(np.argsort(keys, kind="stable")[:max_tiles])
        chosen = [chosen[i] for i in keep.tolist()]
    return chosen


def compute_band_stats(tiles: Sequence, bands: Sequence[int] | None = None, max_tiles: int | None = 64,
                       seed: int = 0, split: str | None = "train", indices: Sequence[str] = ()) -> BandStats:
    """Mean/std per band over the valid pixels of the ``split`` tiles (Tile rows or paths).

    ``bands`` are 0-based band positions (default: all). A pixel is left out when any
    selected band is the file's nodata value or NaN. Raises WorkbenchError, naming the
    file, when tiles disagree on band count (or on explicit band names), and when no
    valid pixel is found. ``indices`` (``data.indices``): also the mean/std of those
    spectral indices of the selected bands, over the pixels where they are defined; an
    index whose bands are not selected, or tiles in raw units, are a one-line error.
    """
    if not tiles:
        raise WorkbenchError("no tiles to compute band statistics on (empty tile list)")
    chosen = select_tiles(tiles, split, max_tiles, seed)
    first = geotiff.read_info(_path_of(chosen[0]))
    count = first.count
    sel = list(range(count)) if bands is None else [int(b) for b in bands]
    for b in sel:
        if not 0 <= b < count:
            raise WorkbenchError(f"{first.path}: band index {b} out of range (the file has {count} bands, "
                                 f"indices 0..{count - 1})")
    from workbench.data.bands import canonical_names
    from workbench.data.radiometry import of_tile

    names = [canonical_names(list(first.band_names))[b] for b in sel]
    explicit = _explicit_names(first)
    acc = _Moments(len(sel))
    from workbench.data import indices as spectral

    index_names = spectral.check_names(indices)
    pairs: list[tuple[int, int]] = []
    if index_names:   # bands by the names the contract uses: the catalog row's, else the file's
        every = canonical_names(list(getattr(chosen[0], "bands", None) or first.band_names))
        pairs = spectral.resolve(index_names, [every[b] for b in sel], first.path,
                                 also=every if len(sel) < len(every) else None)
    index_acc = _Moments(len(pairs))
    indexes = [b + 1 for b in sel]
    for t in chosen:
        path = _path_of(t)
        with geotiff.open_raster(path) as ds:
            info = geotiff.info_of(ds)
            if info.count != count:
                raise WorkbenchError(f"{path}: has {info.count} bands but {first.path} has {count}; "
                                     f"band statistics need the same bands in every tile")
            mine = _explicit_names(info)
            if explicit and mine and canonical_names(list(mine)) != canonical_names(list(explicit)):
                raise WorkbenchError(f"{path}: bands {list(mine)} differ from {list(explicit)} in {first.path}")
            rad = of_tile(t, ds)
            if pairs and any(rad[b].scale is None for b in sel):
                raise WorkbenchError(f"{path}: spectral indices ({', '.join(index_names)}) need reflectance; "
                                     f"this tile holds raw {info.dtype} values ({rad[sel[0]].source})")
            affine = [rad[b].affine() for b in sel]
            identity = all(a == (1.0, 0.0) for a in affine)
            sc = np.array([a[0] for a in affine])[:, None]
            of = np.array([a[1] for a in affine])[:, None]
            for window in _chunks(ds):
                try:
                    block = ds.read(indexes, window=window)
                except Exception as exc:  # rasterio's errors -> one line naming the file
                    raise WorkbenchError(f"{path}: truncated or corrupt GeoTIFF ({str(exc)[:160]})") from None
                flat = block.reshape(len(indexes), -1)
                ok = np.ones(flat.shape[1], bool)
                if info.nodata is not None and not (isinstance(info.nodata, float) and math.isnan(info.nodata)):
                    ok &= ~(flat == np.asarray(info.nodata).astype(flat.dtype)).any(axis=0)
                if np.issubdtype(flat.dtype, np.floating):
                    ok &= np.isfinite(flat).all(axis=0)
                values = flat.astype(np.float64) if ok.all() else flat[:, ok].astype(np.float64)
                refl = values if identity else values * sc + of
                acc.add(refl)
                if pairs:
                    idx, defined = spectral.values(refl[:, None, :], pairs)
                    index_acc.add(idx[:, 0, defined[0]].astype(np.float64))
    if acc.n == 0:
        raise WorkbenchError(f"no valid pixels to compute band statistics on: every pixel of "
                             f"{len(chosen)} tile(s) (e.g. {_path_of(chosen[0])}) is nodata")
    std = np.sqrt(acc.m2 / acc.n)
    if pairs and index_acc.n == 0:
        raise WorkbenchError(f"no pixel of {len(chosen)} tile(s) (e.g. {_path_of(chosen[0])}) has a defined "
                             f"{', '.join(index_names)}: their bands sum to 0 reflectance everywhere")
    index_std = np.sqrt(index_acc.m2 / max(index_acc.n, 1))
    return BandStats(acc.mean.tolist(), std.tolist(), names, int(acc.n), [_path_of(t) for t in chosen],
                     index_names, index_acc.mean.tolist() if pairs else [], index_std.tolist() if pairs else [])


def _explicit_names(info) -> tuple[str, ...] | None:
    """Band descriptions if the file really has them (not rasterio's b1, b2 defaults)."""
    default = tuple(f"b{i + 1}" for i in range(info.count))
    return None if info.band_names == default else tuple(info.band_names)


def _chunks(ds):
    """Row bands of whole blocks, about a million pixels each."""
    bh = ds.block_shapes[0][0] if ds.block_shapes else 256
    rows = max(bh, (_PIXELS_PER_READ // max(ds.width, 1)) // bh * bh)
    for r in range(0, ds.height, rows):
        yield Window(0, r, ds.width, min(rows, ds.height - r))
