"""Catalog tiles as DiffusionSat training examples: image, caption, metadata.

* ``select_tiles``: the tiles of a split matching the run's query, checked for size.
* ``spread``: a deterministic, evenly spread subset (val tiles, eval places).
* ``metadata_vector``: a catalog row -> the 7 normalised metadata values (``metadata.py``);
  a value the row does not know (no date, no cloud cover) is 0, the same "unknown" that
  metadata dropout teaches the model.
* ``TileImages``: the centre ``size`` x ``size`` crop of each tile as float32 in [-1, 1].
* ``IndexBatches``: batches of example indices (the trainer's dataset when the frozen
  encoders' outputs are cached); with ``images`` it also carries the pixels.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any, Sequence

import numpy as np
import torch

from workbench.errors import WorkbenchError

from .metadata import DIVISOR, NUM_METADATA, SCALE, SHIFT, YEAR_MAX, YEAR_MIN


def select_tiles(cat, query: dict, split: str | None, size: int) -> list:
    """Tiles of ``split`` (None: any) matching ``query``, each at least ``size`` px on a side."""
    q = dict(query)
    if split is not None:
        q["split"] = split
    tiles = cat.query(**q)
    if not tiles:
        shown = ", ".join(f"{k}={v!r}" for k, v in q.items()) or "no filters"
        raise WorkbenchError(f"no tiles match the query ({shown}) in {cat.path}")
    for t in tiles:
        h, w = int(t.height or 0), int(t.width or 0)
        if h and w and min(h, w) < size:
            raise WorkbenchError(f"{t.path}: tile is {w}x{h} px, smaller than data.size {size} "
                                 f"(set --set data.size={min(h, w)})")
    return tiles


def spread(items: Sequence, n: int | None) -> list:
    """At most ``n`` items, evenly spaced over the sequence (all of them when ``n`` is None or larger)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def metadata_vector(tile: Any) -> list[float]:
    """``[lon, lat, gsd, cloud, year, month, day]`` shifted and scaled as DiffusionSat; unknown -> 0."""
    raw: list[float | None] = [tile.lon, tile.lat, tile.gsd, tile.cloud_cover, None, None, None]
    if tile.date:
        try:
            d = date.fromisoformat(str(tile.date)[:10])
        except ValueError:
            d = None
        if d is not None and YEAR_MIN <= d.year <= YEAR_MAX:
            raw[4:] = [float(d.year), float(d.month), float(d.day)]
    out = []
    for v, shift, div in zip(raw, SHIFT, DIVISOR):
        ok = v is not None and math.isfinite(float(v))
        out.append((float(v) + shift) / div * SCALE if ok else 0.0)
    return out


def metadata_matrix(tiles: Sequence) -> torch.Tensor:
    return torch.tensor([metadata_vector(t) for t in tiles], dtype=torch.float32).reshape(-1, NUM_METADATA)


class TileImages(torch.utils.data.Dataset):
    """The centre crop of each tile, (3, size, size) float32 in [-1, 1]; RGB from ``bands`` (1-based)."""

    def __init__(self, tiles: Sequence, size: int, bands: Sequence[int] | None = None,
                 value_max: float | None = None):
        self.tiles = list(tiles)
        self.size = int(size)
        self.bands = list(bands) if bands else [1, 2, 3]
        self.value_max = value_max
        self._memory: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tiles)

    def read(self, i: int) -> np.ndarray:
        """The crop as stored (3, size, size), before scaling."""
        from rasterio.windows import Window

        from workbench.data import geotiff

        t = self.tiles[i]
        w, h = int(t.width or self.size), int(t.height or self.size)
        if len(t.bands or []) and max(self.bands) > len(t.bands):
            raise WorkbenchError(f"{t.path}: tile has {len(t.bands)} band(s); data.bands {self.bands} needs "
                                 f"{max(self.bands)} (an RGB model wants three: set data.bands)")
        window = Window((w - self.size) // 2, (h - self.size) // 2, self.size, self.size)
        return geotiff.read(t.path, window=window, bands=self.bands)

    def scale(self, raw: np.ndarray, path: str = "") -> np.ndarray:
        top = self.value_max
        if top is None:
            if raw.dtype != np.uint8:
                raise WorkbenchError(f"{path}: tile is {raw.dtype}, not uint8: say which value is white with "
                                     "--set data.value_max=N (e.g. 3000 for Sentinel-2 reflectance)")
            top = 255.0
        x = raw.astype(np.float32) / float(top)
        return np.clip(x, 0.0, 1.0) * 2.0 - 1.0

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[i]
        return torch.from_numpy(self.scale(self.read(i), self.tiles[i].path))

    def preload(self) -> "TileImages":
        """Read every crop once (the Blue Marble train split is 30 MB as float32... x4: fine)."""
        if self._memory is None and len(self):
            self._memory = torch.stack([self[i] for i in range(len(self))])
        return self

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[torch.as_tensor(list(indices), dtype=torch.long)]
        return torch.stack([self[i] for i in indices])

    def uint8(self, i: int) -> np.ndarray:
        """(size, size, 3) uint8 for pictures and colour statistics."""
        x = self[i].numpy()
        return ((x.transpose(1, 2, 0) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


class IndexBatches(torch.utils.data.Dataset):
    """Examples by index; a batch is ``{"index": LongTensor}`` plus ``{"image": ...}`` when the
    images are not cached (the loss then encodes them with the frozen VAE)."""

    def __init__(self, n: int, images: TileImages | None = None):
        self.n = int(n)
        self.images = images

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int]) -> dict:
        batch = {"index": torch.as_tensor(list(indices), dtype=torch.long)}
        if self.images is not None:
            batch["image"] = self.images.batch(indices)
        return batch
