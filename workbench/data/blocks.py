"""Block mosaics: the tiles of one split block stitched into one image, so windows can be larger than a tile.

Splits are dealt by geographic blocks (``splits.py``; Blue Marble: 8 x 8 tiles of 64 px,
``extra.block`` = [block_row, block_col] on every tile row). A window cut from a block
mosaic has up to a block's context and never crosses into another split.

    from workbench.data.blocks import block_mosaics
    with Catalog(path) as cat:
        blocks = block_mosaics(cat, cat.query(source="bluemarble", split="train"), min_size=256)
    ds = WindowDataset(blocks, RandomWindows(256, per_tile=[max(1, b.picked_pixels // 256 ** 2) for b in blocks]))

Which tiles: the tiles given *pick* the blocks; a block holds every catalog tile that has a
mask and shares the source, scene, split and ``extra.block`` of a picked tile (its
neighbours come along, image and mask). A tile without ``extra.block`` is a block of its
own. ``Block.picked`` / ``picked_pixels`` say how much of the block the given tiles cover
(e.g. to weight windows per block).

Radiometry: a mosaic declares its tiles' scale/offset (GDAL's, ``radiometry.of_tile``), so it
is brought to reflectance as its tiles are; tiles with another scale/offset cannot share one.

Pixel grid: the tiles are placed by their geotransforms (one CRS, one pixel size, no
rotation, whole-pixel offsets; anything else is a user error naming the tile). Pixels that
no tile covers, and padding on the east/south sides up to ``min_size`` px, are the
tiles' image nodata (0 when they have none) and mask 255 (nodata: never trained on or
scored); a tile's own mask nodata becomes 255 too.

Files: ``<catalog folder>/.blocks/<source>-<split>-<block>-<hash>.tif`` and ``..._mask.tif``,
written atomically by ``geotiff.write``. A catalog whose folder this process may not write (a
read-only copy on shared storage) has its new mosaics written under the user's cache folder
(``workbench.paths.cache_dir()/blocks/<hash of the catalog folder>``); mosaics already in its
``.blocks`` are still read from there. The hash covers the member tiles (ids, paths,
file sizes and modification times) and the padding, so an unchanged block is reused and a
changed one gets a new file. The folder is a cache: delete it at will.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import Affine

from workbench import paths
from workbench.data import geotiff
from workbench.errors import WorkbenchError
from workbench.files import may_write

MASK_NODATA = 255
CACHE_DIR = ".blocks"


@dataclass
class Block:
    """One block mosaic; has the ``path``/``mask_path``/``height``/``width``/``bands`` that
    :class:`~workbench.data.dataset.WindowDataset` reads from a tile row."""

    path: str
    mask_path: str
    height: int
    width: int
    bands: list[str]
    source: str | None
    split: str | None
    block: tuple | None               # extra.block of its tiles (None: a tile without one)
    tiles: tuple[int, ...]            # catalog ids of every tile in the mosaic
    picked: tuple[int, ...]           # ... of the given tiles among them
    picked_pixels: int                # pixels of the picked tiles
    transform: tuple[float, ...]
    crs: str | None


def block_key(tile: Any) -> tuple:
    """What groups tiles into one block: source, scene, split, ``extra.block`` (or the tile itself)."""
    block = (getattr(tile, "extra", None) or {}).get("block")
    if block is None:
        return ("tile", tile.id if getattr(tile, "id", None) is not None else str(tile.path))
    return (tile.source, tile.scene_id, tile.split, tuple(block))


def block_mosaics(catalog: Any, tiles: Sequence[Any], min_size: int = 0,
                  folder: str | Path | None = None) -> list[Block]:
    """One :class:`Block` per block the ``tiles`` pick (in the order of their first tile),
    written under ``folder`` (default: ``<catalog folder>/.blocks``) unless already there."""
    tiles = list(tiles)
    folders = [Path(folder)] if folder is not None else cache_folders(Path(catalog.root))
    picked: dict[tuple, list] = {}
    for t in tiles:
        picked.setdefault(block_key(t), []).append(t)
    members: dict[tuple, list] = {k: list(v) for k, v in picked.items() if k[0] == "tile"}
    for source, split in {(k[0], k[2]) for k in picked if k[0] != "tile"}:
        for t in catalog.query(source=source, split=split):
            k = block_key(t)
            if k in picked and t.mask_path:
                members.setdefault(k, []).append(t)
    out = []
    for k, chosen in picked.items():
        group = members.get(k) or chosen
        out.append(_mosaic(k, group, chosen, int(min_size), folders))
    return out


def cache_folders(root: Path) -> list[Path]:
    """Where a catalog's mosaics are looked for, the one they are written to first: its
    ``.blocks``, or -- when that cannot be written here -- the user's cache, then ``.blocks``."""
    own = root / CACHE_DIR
    if may_write(own if own.exists() else root):
        return [own]
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return [paths.cache_dir() / "blocks" / key, own]


def _digest(key: tuple, group: list, min_size: int) -> str:
    def stat(p):
        if not p:
            return None
        s = Path(p).stat()
        return [str(p), s.st_size, s.st_mtime_ns]

    parts = [min_size, repr(key)] + [[t.id, stat(t.path), stat(t.mask_path)] for t in group]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _mosaic(key: tuple, group: list, chosen: list, min_size: int, folders: list[Path]) -> Block:
    group = sorted(group, key=lambda t: (t.id is None, t.id or 0, str(t.path)))
    for t in group:
        if not t.mask_path:
            raise WorkbenchError(f"{t.path}: a tile without a mask cannot join a block mosaic")
    from workbench.data.radiometry import of_tile

    infos = [geotiff.read_info(t.path) for t in group]
    rads = [[r.affine() for r in of_tile(t)] for t in group]
    ref = infos[0]
    a, b, c0, d, e, f0 = ref.transform[:6]
    if b or d:
        raise WorkbenchError(f"{ref.path}: a rotated geotransform cannot be mosaicked into a block")
    offsets = []
    for i, info in enumerate(infos):
        ta, tb, tc, td, te, tf = info.transform[:6]
        why = None
        if not geotiff.same_crs(info.crs, ref.crs):
            why = f"CRS {info.crs} vs {ref.crs}"
        elif tb or td or not (math.isclose(ta, a, rel_tol=1e-9) and math.isclose(te, e, rel_tol=1e-9)):
            why = "a different pixel size or a rotation"
        col, row = (tc - c0) / a, (tf - f0) / e
        if why is None and (abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6):
            why = f"an offset of {col:g} x {row:g} px, not whole pixels"
        if why is None and (info.count, info.dtype, info.nodata) != (ref.count, ref.dtype, ref.nodata):
            why = "different bands, data type or nodata"
        if why is None and rads[i] != rads[0]:
            why = "another scale/offset to reflectance"
        if why:
            raise WorkbenchError(f"{info.path}: cannot share a block mosaic with {ref.path} ({why})")
        offsets.append((int(round(row)), int(round(col))))
    r_min, c_min = min(o[0] for o in offsets), min(o[1] for o in offsets)
    offsets = [(r - r_min, cc - c_min) for r, cc in offsets]
    height = max(max(r + i.height for (r, _), i in zip(offsets, infos)), min_size)
    width = max(max(cc + i.width for (_, cc), i in zip(offsets, infos)), min_size)
    transform = Affine(a, 0.0, c0 + c_min * a, 0.0, e, f0 + r_min * e)

    source, split = group[0].source, group[0].split
    block = key[3] if key[0] != "tile" else None
    where = "-".join(str(v) for v in block) if block is not None else f"tile{key[1]}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source}-{split}-{where}-{_digest(key, group, min_size)}")
    made = [(f / f"{stem}.tif", f / f"{stem}_mask.tif") for f in folders]
    path, mask_path = next(((p, m) for p, m in made if p.is_file() and m.is_file()), made[0])
    if not (path.is_file() and mask_path.is_file()):
        fill = ref.nodata if ref.nodata is not None else 0
        image = np.full((ref.count, height, width), fill, dtype=ref.dtype)
        mask = None
        for t, info, (r, cc) in zip(group, infos, offsets):
            image[:, r:r + info.height, cc:cc + info.width] = geotiff.read(t.path)
            with geotiff.open_raster(t.mask_path) as ds:
                m, m_nodata = ds.read(1), ds.nodata
            if mask is None:
                mask = np.full((height, width), MASK_NODATA, dtype=np.promote_types(m.dtype, np.uint8))
            if m_nodata is not None and not (isinstance(m_nodata, float) and math.isnan(m_nodata)):
                m = np.where(m == np.asarray(m_nodata).astype(m.dtype), MASK_NODATA, m)
            mask[r:r + info.height, cc:cc + info.width] = m
        tags = dict(BLOCK=json.dumps(list(block)) if block is not None else "", SPLIT=split,
                    TILE_IDS=json.dumps([t.id for t in group]))
        geotiff.write(path, image, transform, ref.crs, nodata=ref.nodata, band_names=list(ref.band_names),
                      tags=tags, scales=[a[0] for a in rads[0]], offsets=[a[1] for a in rads[0]])
        geotiff.write(mask_path, mask, transform, ref.crs, nodata=MASK_NODATA, band_names=["mask"], tags=tags)
    bands = list(group[0].bands or ref.band_names)
    chosen_paths = {str(t.path) for t in chosen}
    return Block(path=str(path), mask_path=str(mask_path), height=height, width=width, bands=bands,
                 source=source, split=split, block=block, tiles=tuple(t.id for t in group),
                 picked=tuple(t.id for t in chosen),
                 picked_pixels=sum(i.height * i.width for t, i in zip(group, infos) if str(t.path) in chosen_paths),
                 transform=tuple(transform)[:6], crs=ref.crs)
