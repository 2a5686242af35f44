"""Labelled tiles for classification: selection per split, labels, class order, datasets.

A tile is read through the data layer's ``WindowDataset`` (no masks): in training one
random ``data.size`` crop per tile per epoch with flips / quarter turns; at evaluation a
grid of crops covering the tile, whose logits are averaged per tile (``tile_logits``),
so tiles larger than the crop are still judged whole. A 64-px Blue Marble tile at
``data.size: 64`` is exactly one crop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

from .config import ClassificationConfig

log = logging.getLogger(__name__)


def resolve_labels(cfg: ClassificationConfig, tiles: Sequence) -> str:
    """Turn ``data.labels: auto`` into ``water_fraction`` or ``label`` for the selected tiles
    (set in ``cfg``, so the run's config.yaml records what was used), and return it.

    ``water_fraction`` when every tile has one: the labels then follow ``data.land_max`` /
    ``data.water_min`` (the catalog's stored labels of Blue Marble and of mask imports are the
    same rule at 5 / 95 %, but could not be redefined); else the ``label`` column when every
    tile has one (class-per-folder imports carry no mask); else a user error naming a tile
    that has neither. Any other value is returned as it is."""
    d = cfg.data
    if d.labels != "auto":
        return d.labels
    from workbench.data.tile_table import TileTable

    if isinstance(tiles, TileTable):
        fractions, labels = tiles.values("water_fraction"), tiles.values("label")
    else:
        tiles = list(tiles)
        fractions, labels = [t.water_fraction for t in tiles], [t.label for t in tiles]
    if len(tiles) and all(f is not None for f in fractions):
        d.labels = "water_fraction"
    elif len(tiles) and all(labels):
        d.labels = "label"
    else:
        bad = next((tiles[i] for i, (f, lab) in enumerate(zip(fractions, labels)) if f is None and not lab), None)
        if bad is None:
            raise WorkbenchError("data.labels auto: some selected tiles have only a label, others only a water "
                                 "fraction: set data.labels=label or data.labels=water_fraction")
        raise WorkbenchError(f"tile {bad.id} ({bad.path}) has neither a label nor a water fraction (data.labels "
                             f"auto): import it with a mask or as a class folder (data import DIR --mode classes), "
                             f"or leave it out with --where")
    log.info("labels: %s", d.labels)
    return d.labels


def labels_of(tiles: Any, cfg: ClassificationConfig) -> list[str | None]:
    """``label_of`` of every tile; a TileTable's from its columns (no row object per tile)."""
    from workbench.data.tile_table import TileTable

    if not isinstance(tiles, TileTable):
        return [label_of(t, cfg) for t in tiles]
    if cfg.data.labels == "label":
        return list(tiles["label"])
    return [_class_of(wf, cfg) for wf in tiles.values("water_fraction")]


def label_of(tile, cfg: ClassificationConfig) -> str | None:
    """The tile's class: its ``label`` column, or land / coast / water from its water fraction."""
    if cfg.data.labels == "label":
        return tile.label
    return _class_of(tile.water_fraction, cfg)


def _class_of(wf: float | None, cfg: ClassificationConfig) -> str | None:
    if wf is None:
        return None
    return "land" if wf < cfg.data.land_max else "water" if wf > cfg.data.water_min else "coast"


def select_tiles(cat, query: dict, split: str, cfg: ClassificationConfig, need_labels: bool = True) -> Any:
    """Tiles of ``split`` matching ``query``, as a :class:`~workbench.data.tile_table.TileTable`
    (columns; ``table[i]`` and iteration give Tile-like rows); with ``need_labels`` every one
    must have a label. ``data.labels: auto`` is resolved here first, over the run's three splits
    (``resolve_labels``)."""
    from workbench.data.tile_table import DATASET_COLUMNS

    d = cfg.data
    if d.labels == "auto":
        resolve_labels(cfg, cat.table(columns=["path", "water_fraction", "label"],
                                      **{**query, "split": [d.train_split, d.val_split, d.test_split]}))
    tiles = cat.table(columns=DATASET_COLUMNS, **{**query, "split": split})
    if not tiles:
        shown = ", ".join(f"{k}={v!r}" for k, v in query.items()) or "no filters"
        raise WorkbenchError(f"no {split} tiles match the query ({shown}) in {cat.path}")
    if need_labels:
        missing = [tiles[i] for i, lab in enumerate(labels_of(tiles, cfg)) if lab is None]
        if missing:
            if cfg.data.labels == "label":
                what, fix = "label", "import labelled tiles or narrow the query, e.g. --where \"label IS NOT NULL\""
            else:          # a --where on the label column would not help: labels come from the masks here
                what = "water fraction (data.labels: water_fraction)"
                fix = ("import them with masks, take labels from the label column (--set data.labels=label), "
                       "or narrow the query, e.g. --where \"water_fraction IS NOT NULL\"")
            raise WorkbenchError(f"{len(missing)} of {len(tiles)} {split} tiles have no {what}, e.g. tile "
                                 f"{missing[0].id} ({missing[0].path}): {fix}")
    _check_sizes(tiles, cfg.data.size)
    return tiles


def _check_sizes(tiles: Sequence, size: int) -> None:
    from workbench.data.tile_table import TileTable

    if isinstance(tiles, TileTable):      # only the first too small a tile becomes a row
        shapes = tiles.shapes()
        small = np.flatnonzero((shapes > 0).all(axis=1) & (shapes.min(axis=1) < size))
        tiles = [tiles[int(small[0])]] if len(small) else []
    for t in tiles:
        h, w = int(t.height or 0), int(t.width or 0)
        if h and w and min(h, w) < size:
            raise WorkbenchError(f"{t.path}: tile is {w}x{h} px, smaller than data.size {size} "
                                 f"(set --set data.size={min(h, w)})")


def class_names(cfg: ClassificationConfig, train_tiles: Sequence) -> list[str]:
    """``data.classes`` when given and every train label is one of them (their order: the preset's
    water, coast, land), else the sorted train labels, said in one line on stderr: a preset's
    class list describes its default dataset, a class-folder import brings its own classes."""
    seen = sorted(set(labels_of(train_tiles, cfg)))
    if len(seen) < 2:
        raise WorkbenchError(f"the train tiles carry only the label(s) {seen}: a classifier needs two classes")
    if cfg.data.classes is None:
        return seen
    unknown = [c for c in seen if c not in cfg.data.classes]
    if unknown:
        import sys

        print(f"note: the train labels {seen} are not all in data.classes {list(cfg.data.classes)}: "
              f"the classes are the sorted train labels", file=sys.stderr)
        return seen
    return list(cfg.data.classes)


def label_indices(tiles: Sequence, cfg: ClassificationConfig, classes: Sequence[str]) -> torch.Tensor:
    """Class index per tile; -1 for a label outside ``classes`` (not scored, not trained on)."""
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index.get(label, -1) for label in labels_of(tiles, cfg)], dtype=torch.long)


def bands0(cfg: ClassificationConfig) -> list[int] | None:
    return None if cfg.data.bands is None else [b - 1 for b in cfg.data.bands]


def train_dataset(tiles: Sequence, cfg: ClassificationConfig, stats):
    from workbench.data.augment import Augment
    from workbench.data.dataset import WindowDataset
    from workbench.data.samplers import RandomWindows

    return WindowDataset(tiles, RandomWindows(cfg.data.size, per_tile=1), bands=bands0(cfg), stats=stats,
                         augment=Augment(flips=True, rotations=True) if cfg.data.augment else None,
                         with_mask=False, seed=cfg.train.seed)


def eval_dataset(tiles: Sequence, cfg: ClassificationConfig, stats, bands: list[int] | None = None):
    from workbench.data.dataset import WindowDataset
    from workbench.data.samplers import GridWindows

    return WindowDataset(tiles, GridWindows(cfg.data.size), bands=bands if bands is not None else bands0(cfg),
                         stats=stats, with_mask=False, seed=cfg.train.seed)


@torch.no_grad()
def tile_logits(model, dataset, device, batch_size: int, progress: bool = False) -> torch.Tensor:
    """(tiles, classes) logits: the mean over each tile's grid crops, in ``dataset.tiles`` order."""
    from workbench.data.dataset import passthrough_collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=passthrough_collate)
    sums: torch.Tensor | None = None
    counts = torch.zeros(len(dataset.tiles), dtype=torch.float64)
    from workbench.progress import progress as progress_bar

    it: Any = progress_bar(loader, desc="classify", unit="batch", enabled=progress, leave=True)
    model.eval()
    for batch in it:
        out = model(batch["image"].to(device)).float().cpu().double()
        if sums is None:
            sums = torch.zeros(len(dataset.tiles), out.shape[1], dtype=torch.float64)
        idx = batch["tile"].long()
        sums.index_add_(0, idx, out)
        counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    assert sums is not None
    return (sums / counts.clamp(min=1).unsqueeze(1)).float()


def class_counts(labels: torch.Tensor, n: int) -> np.ndarray:
    return np.bincount(labels[labels >= 0].numpy(), minlength=n)[:n]
