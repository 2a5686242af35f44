"""Catalog query -> tiles -> datasets for segmentation runs (training, evaluation, experiments).

    from tasks.segmentation.data import open_catalog, base_query, query_split, eval_dataset
    with open_catalog(cfg) as cat:
        tiles = query_split(cat, base_query(cfg), "val")
    ds = eval_dataset(tiles, cfg, stats)

A run's tiles are those matching ``data.source``/``data.where`` (plus CLI filters) in each
split of the catalog's ``split`` column, that have a mask. Masks are read with nodata = 255
(or the file's own nodata tag) never scored. Training windows are random (+ flips / quarter
turns); evaluation windows are a grid. With ``data.context: block`` a split is read from
mosaics of the split blocks its tiles pick (``context_of``), so windows can be larger than a
tile. ``train.py`` and ``evaluate.py`` both build on this module; it imports neither.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

from .config import SegmentationConfig

log = logging.getLogger(__name__)

MASK_NODATA = 255          # mask value never scored, whatever the file's nodata tag says


def open_catalog(cfg: SegmentationConfig, catalog: str | Path | None = None, immutable: bool = False) -> Any:
    """The run's catalog (``catalog`` when given, else ``data.catalog``), which must exist, opened
    read-only: training and scoring only read it (``immutable``: see ``Catalog``)."""
    from workbench.data.catalog import open_existing

    return open_existing(catalog or cfg.data.catalog, read_only=True, immutable=immutable)


def base_query(cfg: SegmentationConfig, override: dict | None = None) -> dict:
    """The tile filters of a run: ``data.source``/``data.where``, replaced key by key by ``override``."""
    from workbench.data.catalog import run_query

    return run_query(cfg.data.source, cfg.data.where, override)


def query_split(cat: Any, query: dict, split: str, what: str = "tiles", required: bool = True) -> Any:
    """Tiles of ``split`` matching ``query`` that have a mask, as a
    :class:`~workbench.data.tile_table.TileTable` (the columns a dataset reads: no object per
    tile, so a run over 600 k tiles starts in seconds; ``table[i]`` and iteration give Tile-like
    rows); an empty result is a user error unless not ``required``."""
    from workbench.data.tile_table import DATASET_COLUMNS

    tiles = cat.table(columns=DATASET_COLUMNS, **{**query, "split": split})
    with_mask = tiles.take(np.array([m is not None for m in tiles["mask_path"]], bool))
    if not with_mask and required:
        shown = ", ".join(f"{k}={v!r}" for k, v in query.items()) or "no filters"
        reason = "match" if not tiles else "with a mask match"
        raise WorkbenchError(f"no {split} {what} {reason} the query ({shown}) in {cat.path}")
    if len(with_mask) < len(tiles):
        log.warning("%d %s tiles have no mask and are left out", len(tiles) - len(with_mask), split)
    return with_mask


def bands0(cfg: SegmentationConfig) -> list[int] | None:
    """``data.bands`` (1-based) as the 0-based positions the data layer takes."""
    return None if cfg.data.bands is None else [b - 1 for b in cfg.data.bands]


def scan_masks(tiles: Any, num_classes: int, max_tiles: int | None = None) -> np.ndarray:
    """Pixel counts per class over the masks of ``tiles`` (an evenly spaced subset when many);
    a mask value that is not a class (nor nodata / 255) is a user error naming the file."""
    from workbench.data import geotiff

    n = max(2, num_classes)
    chosen = tiles if hasattr(tiles, "__getitem__") else list(tiles)
    if max_tiles and len(chosen) > max_tiles:   # indexed, not listed: a table makes a row only when asked
        idx = np.linspace(0, len(chosen) - 1, max_tiles).round().astype(int)
        chosen = [chosen[i] for i in np.unique(idx).tolist()]
    counts = np.zeros(n, np.int64)
    for t in chosen:
        with geotiff.open_raster(t.mask_path) as ds:
            m = ds.read(1)
            nodata = ds.nodata
        ok = m != MASK_NODATA
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            ok &= m != np.asarray(nodata).astype(m.dtype)
        values = m[ok]
        if values.size and (values.min() < 0 or values.max() >= n):
            bad = sorted(set(np.unique(values).tolist()) - set(range(n)))
            raise WorkbenchError(f"{t.mask_path}: mask holds value(s) {', '.join(map(str, bad[:5]))} but the model "
                                 f"has classes 0..{n - 1} (nodata: 255 or the file's nodata)")
        counts += np.bincount(values.astype(np.int64).ravel(), minlength=n)[:n]
    return counts


def eval_dataset(tiles: Any, cfg: SegmentationConfig, stats: Any, window: int | None = None) -> Any:
    """Grid windows over whole tiles (stride ``data.eval_stride`` or the window), no augmentation."""
    from workbench.data.dataset import WindowDataset
    from workbench.data.samplers import GridWindows

    size = window or cfg.data.window
    size = min(size, _smallest_side(tiles, size))
    stride = min(cfg.data.eval_stride or size, size)
    return WindowDataset(tiles, GridWindows(size, stride=stride), bands=bands0(cfg), stats=stats,
                         seed=cfg.train.seed, ignore_index=-100)


def _smallest_side(tiles: Any, default: int) -> int:
    """The shortest side of the tiles (``default`` for a tile whose size is unknown): from a
    table's columns, else row by row."""
    from workbench.data.tile_table import TileTable

    if isinstance(tiles, TileTable):
        shapes = tiles.shapes()
        return int(np.where(shapes > 0, shapes, default).min()) if len(shapes) else default
    return min((min(int(t.height or default), int(t.width or default)) for t in tiles), default=default)


def train_dataset(tiles: Any, cfg: SegmentationConfig, stats: Any) -> Any:
    """Random windows (+ flips / quarter turns); over block mosaics (``data.context: block``) each
    block gets as many windows as its picked tiles' pixels fill ``per_tile`` times (at least one),
    so an epoch sees about the same number of pixels whatever the window size."""
    from workbench.data.augment import Augment
    from workbench.data.blocks import Block
    from workbench.data.dataset import WindowDataset
    from workbench.data.samplers import RandomWindows

    d = cfg.data
    per_tile = d.per_tile
    if tiles and isinstance(tiles[0], Block):
        per_tile = [max(1, round(d.per_tile * b.picked_pixels / d.window ** 2)) for b in tiles]
    sampler = RandomWindows(d.window, per_tile, d.water_min, d.water_max)
    return WindowDataset(tiles, sampler, bands=bands0(cfg), stats=stats,
                         augment=Augment(flips=True, rotations=True) if d.augment else None,
                         seed=cfg.train.seed, ignore_index=-100)


def context_of(cat: Any, tiles: Any, cfg: SegmentationConfig) -> list:
    """What a split is read from: its tiles (``data.context: tile``), or the block mosaics they
    pick (``block``: every tile of the same split block, padded to at least ``data.window``)."""
    if cfg.data.context != "block" or not tiles:
        from workbench.data.tile_table import TileTable

        return tiles if isinstance(tiles, TileTable) else list(tiles)     # a TileTable stays one
    from workbench.data.blocks import block_mosaics

    return block_mosaics(cat, tiles, min_size=cfg.data.window)


def batch_valid(batch: dict) -> torch.Tensor:
    """The pixels of a batch that are scored and trained on: valid image pixels whose mask is a
    class (not nodata 255, not the dataset's ignore value -100)."""
    return batch["valid"] & (batch["mask"] != MASK_NODATA) & (batch["mask"] >= 0)
