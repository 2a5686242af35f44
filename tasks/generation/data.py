"""Catalog tiles as DiffusionSat training examples: image, caption, metadata.

* ``select_tiles``: the tiles of a split matching the run's query, checked for size.
* ``spread``: a deterministic, evenly spread subset (val tiles, eval places).
* ``metadata_vector``: a catalog row -> the 7 normalised metadata values (``metadata.py``);
  a value the row does not know (no date, no cloud cover) is 0, the same "unknown" that
  metadata dropout teaches the model.
* ``TileImages``: the centre ``size`` x ``size`` crop of each tile as float32 in [-1, 1].
* ``IndexBatches``: batches of example indices (the trainer's dataset when the frozen
  encoders' outputs are cached); with ``images`` it also carries the pixels.
* ``select`` -> ``Selection``: a training run's train and val tiles (query, catalog, tiles).
* ``captions_for`` / ``caption_table``: each tile's caption from a template, and the run's
  distinct captions with each tile's index into them.
* The latent datasets: ``TextBank`` (each distinct caption embedded once by the frozen text
  encoder), ``encode_posteriors`` (each tile, and each of its flips, encoded once by the
  frozen VAE) and ``Examples`` (one split's caption ids, metadata and cached posteriors).
  Both encoders are frozen, so their outputs for a tile never change during a run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

from .losses import FLIPS
from .metadata import DIVISOR, NUM_METADATA, SCALE, SHIFT, YEAR_MAX, YEAR_MIN

if TYPE_CHECKING:
    from .config import GenerationConfig

log = logging.getLogger(__name__)

TEXT_CACHE_MAX = 4096          # distinct captions embedded once; more are encoded per batch


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

    def preload(self) -> TileImages:
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


# ------------------------------------------------------------------------------ a run's tiles and captions

@dataclasses.dataclass
class Selection:
    """The tiles a training run uses: the query it ran (filters folded in, ``limit`` applied),
    the catalog it read, and its train and val tiles."""

    query: dict
    catalog: str
    train: list
    val: list


def select(cfg: GenerationConfig, catalog: Any, query_override: dict | None, immutable: bool = False) -> Selection:
    """The train tiles (``data.train_split``, at most ``data.max_tiles`` or ``--limit``, evenly
    spread) and the val tiles (``data.val_split``, at most ``data.val_tiles``; none, with a
    warning, when the split is empty) matching the run's query."""
    from workbench.data.catalog import open_existing, run_query
    from workbench.train.run_steps import refuse_split_filter

    refuse_split_filter(query_override, "generate train", splits=("train", "val"))
    d = cfg.data
    query = run_query(d.source, d.where, query_override)
    limit = query.pop("limit", None)
    with open_existing(catalog or d.catalog, read_only=True, immutable=immutable) as cat:
        splits = d.splits(d.train_split)
        train_tiles = spread(select_tiles(cat, query, splits if len(splits) > 1 else splits[0], d.size),
                             d.max_tiles or limit)
        val_tiles: list = []
        if d.val_split:
            try:
                val_tiles = spread(select_tiles(cat, query, d.val_split, d.size), d.val_tiles)
            except WorkbenchError as exc:
                log.warning("no validation loss: %s", exc)
        return Selection(query=query, catalog=str(cat.path), train=train_tiles, val=val_tiles)


def captions_for(tiles: Sequence, template: Any, metadata_in_caption: bool = False) -> list[str]:
    """Each tile's caption from ``template``; with ``metadata_in_caption`` the tile's place, GSD
    and date appended in words (DiffusionSat's caption form), where the tile knows them."""
    out = []
    for t in tiles:
        text = template.render(t)
        if metadata_in_caption:
            from .metadata import Metadata, describe

            if None not in (t.lat, t.lon, t.gsd) and t.date:
                md = Metadata(lon=t.lon, lat=t.lat, gsd=t.gsd, cloud_cover=t.cloud_cover or 0.0,
                              date=date.fromisoformat(str(t.date)[:10]))
                text += describe(md)
        out.append(text)
    return out


def caption_table(train_caps: Sequence[str], val_caps: Sequence[str]) -> tuple[list[str], list[int], list[int]]:
    """The distinct captions (first-seen order) and each train / val tile's index into them."""
    unique = list(dict.fromkeys([*train_caps, *val_caps]))
    index = {c: i for i, c in enumerate(unique)}
    return unique, [index[c] for c in train_caps], [index[c] for c in val_caps]


# ------------------------------------------------------------------------------ the latent datasets

@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: Any, prompts: Sequence[str], device: Any) -> torch.Tensor:
    """CLIP's last hidden state per prompt, padded to the tokenizer's length (as the pipeline does)."""
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    tokens = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


class TextBank:
    """The distinct captions (the empty prompt last) and their frozen embeddings."""

    def __init__(self, captions: Sequence[str], tokenizer: Any, text_encoder: Any, device: Any, cache: bool = True,
                 batch: int = 64):
        self.captions = list(captions) + [""]
        self.empty_id = len(self.captions) - 1
        self.tokenizer, self.text_encoder, self.device = tokenizer, text_encoder, device
        self.table = None
        if cache and len(self.captions) <= TEXT_CACHE_MAX:
            parts = [encode_text(tokenizer, text_encoder, self.captions[i:i + batch], device).float()
                     for i in range(0, len(self.captions), batch)]
            self.table = torch.cat(parts)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[ids.to(self.table.device)]
        unique, inverse = torch.unique(ids, return_inverse=True)
        emb = encode_text(self.tokenizer, self.text_encoder, [self.captions[i] for i in unique.tolist()],
                          self.device).float()
        return emb[inverse.to(emb.device)]


@torch.no_grad()
def encode_posteriors(vae: Any, images: TileImages, device: Any, dtype: torch.dtype, flips: bool, batch: int = 64,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of every image and, with ``flips``, of each of its flips:
    (N, V, C, h, w) float32 on ``device`` (exact: a conv encoder does not commute with flips)."""
    from workbench.progress import progress as progress_bar

    variants = FLIPS if flips else FLIPS[:1]
    means, stds = [], []
    chunks = range(0, len(images), batch)
    for start in progress_bar(chunks, desc="encoding tiles", unit="batch", enabled=progress):
        x = images.batch(range(start, min(start + batch, len(images)))).to(device, dtype)
        m_v, s_v = [], []
        for dims in variants:
            dist = vae.encode(x.flip(dims) if dims else x).latent_dist
            m_v.append(dist.mean.float())
            s_v.append(dist.std.float())
        means.append(torch.stack(m_v, 1))
        stds.append(torch.stack(s_v, 1))
    return torch.cat(means), torch.cat(stds)


@dataclasses.dataclass
class Examples:
    """One split's examples for the UNet stage: built on the CPU, moved to the training device
    (``to``) by the task, which fills ``mean`` / ``std`` from ``images`` when ``data.cache``."""

    caption_ids: torch.Tensor            # (N,) into the TextBank
    metadata: torch.Tensor               # (N, 7) normalised
    mean: torch.Tensor | None = None     # (N, V, C, h, w) VAE posterior mean per flip (cached)
    std: torch.Tensor | None = None
    images: TileImages | None = None     # the pixels the posteriors are encoded from

    def __len__(self) -> int:
        return int(self.caption_ids.shape[0])

    def to(self, device: Any) -> Examples:
        """The same examples with their tensors on ``device`` (``images`` stay where they are)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Examples(move(self.caption_ids), move(self.metadata), move(self.mean), move(self.std), self.images)
