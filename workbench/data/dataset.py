"""Training batches from catalog tiles: windowed reads, nodata handling, normalisation, augmentation.

``WindowDataset`` is a map-style torch ``Dataset`` whose items are windows chosen by
a sampler (:mod:`workbench.data.samplers`). It is built for speed on small CPUs:

* only the window is read (``DatasetReader`` windowed reads straight into a slot of a
  preallocated batch array), never a whole file to cut one patch;
* file handles are opened lazily, once per worker process, and cached (keyed by
  ``os.getpid()`` so a forked worker never touches its parent's handles; an LRU
  bound keeps the number of open files in check; closed on ``close()``/``del``);
* ``__getitems__`` builds a whole, already collated batch: nodata detection,
  normalisation (fused with brightness/contrast jitter into one per-sample-per-band
  affine), dihedral augmentation and mask conversion are each one vectorised pass
  over the batch; in a DataLoader worker all of a batch's tensors are carved out of
  one shared-memory segment. Use ``collate_fn=passthrough_collate``.

Items (and batches, stacked) are dicts:

* ``image``: float32 (C, H, W), ``(x - mean) / std`` per band when ``stats`` is given,
  else the values as float; ``x`` is reflectance (each tile's own ``value * scale + offset``,
  :func:`workbench.data.radiometry.of_tile`; raw 8-bit values stay raw) unless
  ``radiometry=False``; 0 in every band wherever ``valid`` is False.
* ``mask``: int64 (H, W) (only with ``with_mask``); ``ignore_index`` where not valid.
* ``valid``: bool (H, W); False where the image is nodata in any band (or NaN), or
  the mask is nodata.
* ``tile``: int64 index into ``tiles``; ``window``: int64 ``[row_off, col_off, size]``
  in the tile's pixel grid (the window read, before augmentation).

With ``finish_on_device`` (the trainer sets it when it trains on an accelerator),
``__getitems__`` returns a *raw* batch instead: ``image`` as the files hold it (uint16 DN),
``mask`` as read (uint8), ``tile``/``window``, and ``wire_*`` per-sample parameters;
:func:`workbench.data.collate.finish_batch` turns it, on the device, into exactly the batch
above. Items (``ds[i]``) are always finished. Reflectance exists before the fused affine
(:meth:`WindowDataset._affine`): a step that needs reflectance pixels goes there. A dataset with
spectral index channels (``indices``) always finishes its batches on the CPU, where the
indices are computed from reflectance (moving them to the device is the next step).

Indices may be plain ints (epoch from :meth:`WindowDataset.set_epoch`) or
``(epoch, index)`` pairs as yielded by :class:`~workbench.data.samplers.EpochSampler`.
Band indices are 0-based positions in the file (``bands=[3, 2, 1]``), or band names.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window

from workbench import fastpaths
from workbench.data import geotiff
from workbench.data.augment import Augment, dihedral_batch
from workbench.data.collate import finish_batch, passthrough_collate
from workbench.data.indices import IndexChannels
from workbench.data.radiometry import of_tile, units_of
from workbench.data.samplers import GridWindows, RandomWindows, Windows
from workbench.data.stats import BandStats
from workbench.data.tile_table import TileTable
from workbench.errors import WorkbenchError

__all__ = ["DEFAULT_IGNORE_INDEX", "WindowDataset", "passthrough_collate"]  # the collate_fn to use with it

DEFAULT_IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default
_CHUNK_BYTES = 1 << 19  # float output per processing chunk (see __getitems__)

def _read_window(ds, indexes: list[int], out: np.ndarray, row: int, col: int, size: int) -> None:
    """Read bands ``indexes`` (1-based) of a square window into ``out`` (bands, size, size)."""
    try:
        fastpaths.read_window(ds, indexes, out, Window(col, row, size, size))
    except RasterioError as exc:
        raise WorkbenchError(f"{ds.name}: truncated or corrupt GeoTIFF (reading rows {row}-{row + size}, "
                             f"columns {col}-{col + size}: {str(exc).strip()[:160]})") from None


class _TileReader:
    """The open image (and mask) of one tile in one process, with what batching needs."""

    __slots__ = ("image", "mask", "dtype", "mask_dtype", "nodata", "mask_nodata", "is_float", "affine", "units")

    def __init__(self, path: str, mask_path: str | None, count: int, shape: tuple[int, int],
                 tile=None, positions: Sequence[int] = ()):
        self.image = geotiff.open_raster(path)
        self.mask = None
        try:
            info = geotiff.info_of(self.image)
            rad = [of_tile(tile, self.image)[p] for p in positions] if tile is not None else []
            self.units = units_of(rad) if rad else None
            pairs = [r.affine() for r in rad]
            # (scale, offset) per selected band that bring this tile to reflectance; None: identity
            self.affine = None if all(a == (1.0, 0.0) for a in pairs) else np.asarray(pairs, np.float32).T
            if info.count != count:
                raise WorkbenchError(f"{path}: has {info.count} bands but the other tiles have {count}")
            if (info.height, info.width) != tuple(shape):
                raise WorkbenchError(f"{path}: is {info.width}x{info.height} px but its catalog row says "
                                     f"{shape[1]}x{shape[0]}")
            self.dtype = np.dtype(info.dtype)
            self.is_float = bool(np.issubdtype(self.dtype, np.floating))
            self.nodata = info.nodata
            if mask_path:
                self.mask = geotiff.open_raster(mask_path)
                minfo = geotiff.info_of(self.mask)
                if minfo.count != 1:
                    raise WorkbenchError(f"{mask_path}: a mask must have one band, this one has {minfo.count}")
                geotiff.require_same_grid(info, minfo)
                self.mask_dtype = np.dtype(minfo.dtype)
                self.mask_nodata = minfo.nodata
            else:
                self.mask_dtype, self.mask_nodata = None, None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ds in (self.image, self.mask):
            if ds is not None:
                try:
                    ds.close()
                except Exception:
                    pass


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``tiles`` chosen by ``sampler``, as normalised, augmented tensors.

    ``tiles``: catalog :class:`~workbench.data.catalog.Tile` rows (or anything with
    ``path``/``mask_path``; sizes and band lists are taken from the rows when
    present, else from the raster headers), or a
    :class:`~workbench.data.tile_table.TileTable` (``Catalog.table``): then paths, masks,
    sizes and band counts come from its columns, with no Python object per tile (what
    makes a dataset over 600 k tiles start in seconds); ``self.tiles`` is that table.
    ``bands``: 0-based band positions or names (default: all). ``stats``: per-band
    mean/std for all bands of the file or for the selected ones. ``augment``: an
    :class:`~workbench.data.augment.Augment`.
    ``ignore_index``: mask value where ``valid`` is False. ``max_open``: tiles whose
    files stay open per process (least recently used ones are closed).

    One instance serves one thread (per process): its file handles and scratch
    buffers are not shared between threads. DataLoader workers are processes: fine.
    """

    def __init__(self, tiles: Sequence, sampler: RandomWindows | GridWindows,
                 bands: Sequence[int | str] | None = None, stats: BandStats | None = None,
                 augment: Augment | None = None, with_mask: bool = True, seed: int = 0,
                 ignore_index: int = DEFAULT_IGNORE_INDEX, max_open: int = 256, radiometry: bool = True,
                 finish_on_device: bool = False):
        table = tiles if isinstance(tiles, TileTable) else None
        tiles = table if table is not None else list(tiles)
        if not len(tiles):
            raise WorkbenchError("no tiles for the dataset (empty tile list): check the catalog query")
        self.tiles = tiles
        self.paths = list(table["path"]) if table is not None else [str(t.path) for t in tiles]
        self.with_mask = bool(with_mask)
        if self.with_mask:
            if table is not None:
                self.mask_paths = list(table["mask_path"]) if "mask_path" in table else [None] * len(tiles)
            else:
                self.mask_paths = [getattr(t, "mask_path", None) for t in tiles]
            missing = [p for p, m in zip(self.paths, self.mask_paths) if not m]
            if missing:
                raise WorkbenchError(f"{missing[0]}: tile has no mask (with_mask=True); "
                                     f"{len(missing)} of {len(tiles)} tiles lack one")
            self.mask_paths = [str(m) for m in self.mask_paths]
        else:
            self.mask_paths = [None] * len(tiles)
        if getattr(sampler, "filters", False) and not self.with_mask:
            raise WorkbenchError("the water-ratio filter of RandomWindows needs masks (with_mask=True)")

        # Shapes and band counts: from the catalog rows when they have them, else the headers.
        shapes, counts, names = _table_shapes(table) if table is not None else _row_shapes(tiles)
        for i in np.flatnonzero(counts == 0).tolist():      # rows without a size or bands
            info = geotiff.read_info(self.paths[i])
            shapes[i] = (info.height, info.width)
            counts[i] = info.count
            if i == 0:
                names = list(info.band_names)
        self.count = int(counts[0])
        wrong = np.flatnonzero(counts != self.count)
        if len(wrong):
            path, c = self.paths[int(wrong[0])], int(counts[wrong[0]])
            raise WorkbenchError(f"{path}: has {c} bands but {self.paths[0]} has {self.count}; "
                                 f"all tiles of a dataset need the same bands")
        self.shapes = shapes
        self.band_names = list(names)[: self.count] + [f"b{i + 1}" for i in range(len(names), self.count)]
        self.bands = self._resolve_bands(bands)
        self._indexes = [b + 1 for b in self.bands]

        self.sampler = sampler.bind(self.shapes, self.paths)
        self.size = self.sampler.size
        self.stats = self._resolve_stats(stats)
        if self.stats is not None:
            self._scale, self._bias = self.stats.scale_bias()
        else:
            self._scale = np.ones(len(self.bands), np.float32)
            self._bias = np.zeros(len(self.bands), np.float32)
        # spectral index channels (data.indices, recorded in the statistics): the loop below
        # then gives reflectance and IndexChannels.append_batch appends them and normalises all
        self.indices = IndexChannels.for_dataset(self.stats, [self.band_names[b] for b in self.bands], augment,
                                                 self.paths[0])
        if self.indices is not None:
            self._scale, self._bias = np.ones_like(self._scale), np.zeros_like(self._bias)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.ignore_index = int(ignore_index)
        self.max_open = max(int(max_open), 1)
        self.radiometry = bool(radiometry)
        self.finish_on_device = bool(finish_on_device)
        self._units: tuple[str, str] | None = None
        self._pid: int | None = None
        self._readers: OrderedDict[int, _TileReader] = OrderedDict()
        self._scratch: dict[str, np.ndarray] = {}
        self._pool: list = []

    # ---- configuration ---------------------------------------------------------------------
    def _resolve_bands(self, bands) -> list[int]:
        if bands is None:
            return list(range(self.count))
        out = []
        for b in bands:
            if isinstance(b, str):
                if b not in self.band_names:
                    raise WorkbenchError(f"{self.paths[0]}: no band named {b!r} (bands: {', '.join(self.band_names)})")
                out.append(self.band_names.index(b))
            else:
                b = int(b)
                if not 0 <= b < self.count:
                    raise WorkbenchError(f"{self.paths[0]}: band index {b} out of range (the tiles have "
                                         f"{self.count} bands, indices 0..{self.count - 1})")
                out.append(b)
        if not out:
            raise WorkbenchError("no bands selected")
        return out

    def _resolve_stats(self, stats: BandStats | None) -> BandStats | None:
        if stats is None:
            return None
        wanted = [self.band_names[b] for b in self.bands]
        if not _default_names(stats.band_names) and not _default_names(self.band_names) \
                and all(n in stats.band_names for n in wanted):
            return stats.select([stats.band_names.index(n) for n in wanted])  # by name when both have names
        if len(stats) == len(self.bands):
            return stats
        if len(stats) == self.count:
            return stats.select(self.bands)
        raise WorkbenchError(f"band statistics have {len(stats)} bands, but the dataset reads {len(self.bands)} "
                             f"of {self.count} bands ({self.paths[0]})")

    def set_epoch(self, epoch: int) -> None:
        """Windows and augmentation of plain-int indices are those of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def channels(self) -> int:
        return len(self.bands) + (len(self.indices) if self.indices is not None else 0)

    # ---- file handles ------------------------------------------------------------------------
    def _reader(self, t: int) -> _TileReader:
        pid = os.getpid()
        if self._pid != pid:  # new process (forked worker): never use the parent's handles
            self._readers = OrderedDict()
            self._pid = pid
        r = self._readers.get(t)
        if r is None:
            r = _TileReader(self.paths[t], self.mask_paths[t], self.count, tuple(self.shapes[t]),
                            self.tiles[t] if self.radiometry else None, self.bands)
            if r.units is not None:
                if self._units is None:
                    self._units = (r.units, self.paths[t])
                elif r.units != self._units[0]:
                    r.close()
                    raise WorkbenchError(f"{self.paths[t]}: values in {r.units} units but {self._units[1]} is in "
                                         f"{self._units[0]}; one dataset reads one kind of units")
            self._readers[t] = r
        else:
            self._readers.move_to_end(t)
        return r

    def _buffer(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A scratch array reused from batch to batch in this process: fresh multi-megabyte
        arrays cost a page fault per 4 KiB page on every batch, more than the work on them.
        Never returned to the caller."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
            buf = self._scratch[name] = np.empty(shape, dtype)
        return buf

    def _outputs(self, specs: list[tuple[tuple[int, ...], torch.dtype]]) -> list[torch.Tensor]:
        """The batch's tensors, carved out of one storage (see :func:`_new_outputs`).

        Outside DataLoader workers, a storage whose every tensor and view the caller has
        dropped is recycled (torch counts the references to a storage), so a training loop
        does not page-fault a fresh batch into memory every step. Worker batches go to
        another process, where nobody here can see their references: never recycled.
        """
        nbytes = _outputs_nbytes(specs)
        recycle = torch.utils.data.get_worker_info() is None and fastpaths.counts_storage_references()
        if recycle:
            for st in self._pool:
                if st.nbytes() == nbytes and fastpaths.sole_reference(st):
                    return _new_outputs(specs, st)
        outs = _new_outputs(specs)
        if recycle:
            self._pool = ([outs[0].untyped_storage()] + self._pool)[:4]
        return outs

    def _trim(self) -> None:
        """Close the least recently used files beyond ``max_open`` (between batches only:
        a batch may need more files than that at once)."""
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()

    def close(self) -> None:
        """Close this process's open files (they reopen on the next read)."""
        if self._pid == os.getpid():
            for r in self._readers.values():
                r.close()
        self._readers = OrderedDict()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        state["_pid"] = None
        state["_scratch"] = {}
        state["_pool"] = []
        return state

    # ---- items -------------------------------------------------------------------------------
    def _parse(self, indices) -> tuple[np.ndarray, int | np.ndarray]:
        """Window indices and their epoch (an int, or an array when indices carry mixed epochs)."""
        if isinstance(indices, (int, np.integer)):
            indices = [indices]
        if isinstance(indices, np.ndarray) and indices.ndim == 1:
            indices = indices.tolist()
        idx, ep = [], []
        for i in indices:
            if isinstance(i, (tuple, list)):
                ep.append(int(i[0]))
                idx.append(int(i[1]))
            else:
                ep.append(self.epoch)
                idx.append(int(i))
        idx = np.asarray(idx, np.int64)
        n = len(self)
        if len(idx):
            bad = idx[(idx < -n) | (idx >= n)]
            if len(bad):
                raise IndexError(f"index {bad[0]} out of range for {n} windows")
            idx = np.where(idx < 0, idx + n, idx)
        if len(set(ep)) <= 1:
            return idx, ep[0] if ep else self.epoch
        return idx, np.asarray(ep, np.int64)

    def __getitem__(self, i) -> dict[str, torch.Tensor]:
        batch = finish_batch(self.__getitems__([i]))
        return {k: v[0] for k, v in batch.items()}

    def windows(self, indices, epoch: int | None = None) -> Windows:
        """The windows of ``indices`` (no pixels returned; the water filter reads masks)."""
        idx, ep = self._parse(indices)
        if epoch is not None:
            ep = int(epoch)
        return self._windows(idx, ep, np.empty((len(idx), self.size, self.size), np.int32)
                             if self.sampler.filters else None)[0]

    def _windows(self, idx: np.ndarray, ep, mbuf: np.ndarray | None) -> tuple[Windows, bool]:
        """Windows, and whether ``mbuf`` already holds every window's mask."""
        if not self.sampler.filters:
            return self.sampler.windows(idx, seed=self.seed, epoch=ep), False
        size = self.size

        reads: dict[tuple[int, int, int], np.ndarray] = {}  # (position, row, col) -> that mask window

        def fractions(pos, tile, row, col):
            # Reads in a tight loop into scratch, then one vectorised count over all candidates.
            tl = tile.tolist()
            masks = {t: self._reader(t) for t in set(tl)}
            scratch = np.empty((len(pos), size, size), mbuf.dtype)
            for j, (p, t, r, c) in enumerate(zip(pos.tolist(), tl, row.tolist(), col.tolist())):
                _read_window(masks[t].mask, [1], scratch[j:j + 1], r, c, size)
                reads[(p, r, c)] = scratch[j]
            sub = scratch.reshape(len(pos), -1)
            nodata = [_cast_nodata(masks[t].mask_nodata, mbuf.dtype) if masks[t].mask_nodata is not None else None
                      for t in tl]
            if all(v is None for v in nodata):
                return np.count_nonzero(sub, axis=1) / sub.shape[1]
            nd = np.array([0 if v is None else v for v in nodata], dtype=mbuf.dtype)[:, None]
            has = np.array([v is not None for v in nodata])[:, None]
            ok = ~(has & (sub == nd))
            n = ok.sum(axis=1)
            water = np.count_nonzero(ok & (sub != 0), axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, water / np.maximum(n, 1), np.nan)

        win = self.sampler.windows(idx, seed=self.seed, epoch=ep, fraction_fn=fractions)
        for p in range(len(win)):  # the chosen windows' masks were read already
            t, r, c, _ = win[p]
            m = reads.get((p, r, c))
            if m is not None:
                mbuf[p] = m
            else:  # pragma: no cover - every chosen window is a candidate that was read
                _read_window(self._reader(t).mask, [1], mbuf[p:p + 1], r, c, size)
        return win, True

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """A whole collated batch (see the module docs), or with ``finish_on_device`` the raw
        batch :func:`~workbench.data.collate.finish_batch` turns into the same one."""
        idx, ep = self._parse(indices)
        B, S, C = len(idx), self.size, len(self.bands)
        if B == 0:
            raise IndexError("empty batch")

        # Open (or reuse) every file the batch can touch first, so dtypes are known.
        readers = {t: self._reader(t) for t in np.unique(self.sampler.tiles_of(idx)).tolist()}
        raw_dtype = _common_dtype([r.dtype for r in readers.values()], np.float32)
        mask_dtype = _common_dtype([r.mask_dtype for r in readers.values()], np.int32) if self.with_mask else None
        if self.finish_on_device and self.indices is None:  # index channels are computed here, on the CPU
            return self._raw_batch(idx, ep, readers, raw_dtype, mask_dtype)
        mbuf = self._buffer("mask", (B, S, S), mask_dtype) if self.with_mask else None
        win, mask_read = self._windows(idx, ep, mbuf)
        tiles, rows, cols = win.tile.tolist(), win.row.tolist(), win.col.tolist()
        img_readers = [readers[t] for t in tiles]
        nodatas = [r.nodata for r in img_readers]
        mask_nodatas = [r.mask_nodata for r in img_readers]
        check_nan = any(r.is_float for r in readers.values())

        transforms, scale, bias, identity = self._affine(idx, ep, img_readers)
        s4, b4 = scale[:, :, None, None], bias[:, :, None, None]
        per_sample = s4.shape[0] > 1

        specs = [((B, C, S, S), torch.float32), ((B, S, S), torch.bool), ((B,), torch.int64), ((B, 3), torch.int64)]
        if self.with_mask:
            specs.append(((B, S, S), torch.int64))
        image, valid, tile_t, window_t, *mask_t = self._outputs(specs)
        img, val = image.numpy(), valid.numpy()
        msk = mask_t[0].numpy() if self.with_mask else None

        # Every step runs on a chunk of samples whose float output is about 512 KiB, so the
        # pixels a window read brings in are still in cache for nodata detection, the
        # flip/turn, the cast, the scale and shift and the zeroing, instead of streaming the
        # whole batch through memory once per step (what dominates at 128-256 px).
        step = max(1, _CHUNK_BYTES // (C * S * S * 4))
        n = min(step, B)
        raw = self._buffer("raw", (n, C, S, S), raw_dtype)
        turned = self._buffer("turned", (n, C, S, S), raw_dtype)
        eq = self._buffer("eq", (n, C, S, S), bool)
        bad_buf = self._buffer("bad", (n, S, S), bool)
        mbad_buf = self._buffer("mask_bad", (n, S, S), bool)
        meq = self._buffer("mask_eq", (n, 1, S, S), bool)
        bad_t_buf = self._buffer("bad_turned", (n, S, S), bool)
        indexes = self._indexes
        for a in range(0, B, step):
            z = min(B, a + step)
            k = z - a
            rc, tr = raw[:k], transforms[a:z]
            for i in range(a, z):
                _read_window(img_readers[i].image, indexes, rc[i - a], rows[i], cols[i], S)
                if self.with_mask and not mask_read:
                    _read_window(img_readers[i].mask, [1], mbuf[i:i + 1], rows[i], cols[i], S)
            # Invalid pixels: image nodata in any band (or NaN), mask nodata.
            bad = _nodata_pixels(rc, nodatas[a:z], check_nan, bad_buf[:k], eq[:k])
            if self.with_mask:
                mbad = _nodata_pixels(mbuf[a:z, None], mask_nodatas[a:z], False, mbad_buf[:k], meq[:k])
                if mbad is not None:
                    bad = mbad if bad is None else np.logical_or(bad, mbad, out=bad)
            geometric = bool(tr.any())
            src = dihedral_batch(rc, tr, out=turned[:k]) if geometric else rc
            dst = img[a:z]
            np.copyto(dst, src, casting="unsafe")
            if not identity:
                np.multiply(dst, s4[a:z] if per_sample else s4, out=dst)
                np.add(dst, b4[a:z] if per_sample else b4, out=dst)
            if bad is not None and geometric:
                bad = dihedral_batch(bad, tr, out=bad_t_buf[:k])
            if bad is not None:
                np.copyto(dst, 0.0, where=bad[:, None])
                np.logical_not(bad, out=val[a:z])
            else:
                val[a:z] = True
            if self.with_mask:
                m = msk[a:z]
                if geometric:
                    dihedral_batch(mbuf[a:z], tr, out=m)
                else:
                    np.copyto(m, mbuf[a:z], casting="unsafe")
                if bad is not None:
                    np.copyto(m, self.ignore_index, where=bad)

        if self.indices is not None:  # after reflectance, before normalisation (see __init__)
            image = self.indices.append_batch(image, valid, mask_t[0] if self.with_mask else None, self.ignore_index)
        out: dict[str, torch.Tensor] = {"image": image}
        if self.with_mask:
            out["mask"] = mask_t[0]
        out["valid"] = valid
        self._fill_position(tile_t, window_t, win)
        out["tile"] = tile_t
        out["window"] = window_t
        if len(self._readers) > self.max_open:
            self._trim()
        return out

    def _raw_batch(self, idx: np.ndarray, ep, readers: dict[int, _TileReader], raw_dtype: np.dtype,
                   mask_dtype: np.dtype | None) -> dict:
        """The batch as :func:`~workbench.data.collate.finish_batch` takes it: pixels as read,
        straight into the batch's (shared) memory, and what is left to do as per-sample numbers.
        The CPU does nothing but the windowed reads."""
        B, S, C = len(idx), self.size, len(self.bands)
        specs = [((B, C, S, S), _torch_dtype(raw_dtype)), ((B,), torch.int64), ((B, 3), torch.int64),
                 ((B, 2, C), torch.float32), ((B,), torch.int64), ((B,), torch.float64)]
        if self.with_mask:
            specs += [((B, S, S), _torch_dtype(mask_dtype)), ((B,), torch.float64)]
        image, tile_t, window_t, affine_t, transform_t, nodata_t, *mask_t = self._outputs(specs)
        mask = mask_t[0].numpy() if self.with_mask else None
        win, mask_read = self._windows(idx, ep, mask)
        rows, cols = win.row.tolist(), win.col.tolist()
        img_readers = [readers[t] for t in win.tile.tolist()]
        img, indexes = image.numpy(), self._indexes
        for i, r in enumerate(img_readers):
            _read_window(r.image, indexes, img[i], rows[i], cols[i], S)
            if self.with_mask and not mask_read:
                _read_window(r.mask, [1], mask[i:i + 1], rows[i], cols[i], S)
        transforms, scale, bias, _ = self._affine(idx, ep, img_readers)
        aff = affine_t.numpy()
        aff[:, 0], aff[:, 1] = scale, bias
        transform_t.numpy()[:] = transforms
        nodata_t.numpy()[:] = [_nodata_value(r.nodata, raw_dtype) for r in img_readers]
        self._fill_position(tile_t, window_t, win)
        out: dict = {"image": image}
        if self.with_mask:
            out["mask"] = mask_t[0]
            mask_t[1].numpy()[:] = [_nodata_value(r.mask_nodata, mask_dtype) for r in img_readers]
        out.update(tile=tile_t, window=window_t, wire_affine=affine_t, wire_transform=transform_t,
                   wire_nodata=nodata_t, wire_ignore=self.ignore_index)
        if self.with_mask:
            out["wire_mask_nodata"] = mask_t[1]
        if len(self._readers) > self.max_open:
            self._trim()
        return out

    def _affine(self, idx: np.ndarray, ep, img_readers: list[_TileReader]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Per sample: the dihedral transform, and ``(scale, bias)`` (each (1 or B, C) float32)
        with ``image = DN * scale + bias``: the tile's reflectance affine, the band statistics
        and the brightness/contrast jitter fused into one; and whether that is the identity.

        Reflectance exists only before the fusion: ``DN * aff[:, 0] + aff[:, 1]`` below, with
        the tile's radiometry. Augmentation parameters are a pure function of (seed, epoch, index)."""
        B, C = len(idx), len(self.bands)
        p = self.augment.params(self.seed, ep, idx) if self.augment is not None else None
        transforms = p.transform if p is not None else np.zeros(B, np.int64)
        scale, bias = self._scale[None, :], self._bias[None, :]
        if any(r.affine is not None for r in img_readers):    # to reflectance first, tile by tile
            ident = np.stack([np.ones(C, np.float32), np.zeros(C, np.float32)])
            aff = np.stack([ident if r.affine is None else r.affine for r in img_readers])  # (B, 2, C)
            bias = bias + scale * aff[:, 1]
            scale = scale * aff[:, 0]
        if p is not None and p.jitter:
            scale = scale * p.contrast[:, None]
            bias = bias * p.contrast[:, None] + p.brightness[:, None]
        identity = not (p is not None and p.jitter) and self.stats is None and \
            all(r.affine is None for r in img_readers)
        return transforms, scale, bias, identity

    def _fill_position(self, tile_t: torch.Tensor, window_t: torch.Tensor, win: Windows) -> None:
        tile_t.numpy()[:] = win.tile
        w = window_t.numpy()
        w[:, 0], w[:, 1], w[:, 2] = win.row, win.col, self.size


# ---- tile shapes -----------------------------------------------------------------------------


def _row_shapes(tiles: Sequence) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 2) (height, width), band counts and the first row's band names of Tile-like rows; 0
    (a count, and a shape) where a row lacks its size or band list (the header is read then)."""
    shapes = np.zeros((len(tiles), 2), np.int64)
    counts = np.zeros(len(tiles), np.int64)
    names: list[str] = []
    for i, t in enumerate(tiles):
        h, w, b = getattr(t, "height", None), getattr(t, "width", None), getattr(t, "bands", None)
        if h and w and b:
            shapes[i] = (int(h), int(w))
            counts[i] = len(b)
            if i == 0:
                names = list(b)
    return shapes, counts, names


def _table_shapes(table: TileTable) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``_row_shapes`` from a table's columns: no object per row."""
    n = len(table)
    if not {"height", "width", "bands"} <= set(table.names):
        return np.zeros((n, 2), np.int64), np.zeros(n, np.int64), []
    shapes = table.shapes()
    counts = table.band_counts()
    counts[(shapes[:, 0] <= 0) | (shapes[:, 1] <= 0)] = 0
    shapes[counts == 0] = 0
    names = list(table.value("bands", 0)) if counts[0] else []
    return shapes, counts, names


# ---- batch helpers ---------------------------------------------------------------------------


def _default_names(names: Sequence[str]) -> bool:
    return list(names) == [f"b{i + 1}" for i in range(len(names))]


def _common_dtype(dtypes, fallback) -> np.dtype:
    ds = {np.dtype(d) for d in dtypes if d is not None}
    if len(ds) == 1:
        return ds.pop()
    return np.dtype(fallback)


def _cast_nodata(nodata: float, dtype: np.dtype):
    """The nodata value as it appears in an array of ``dtype`` (None if it cannot appear)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not float(nodata).is_integer() or not info.min <= nodata <= info.max:
            return None
        return dtype.type(int(nodata))
    return dtype.type(nodata)


def _nodata_value(nodata, dtype: np.dtype) -> float:
    """A tile's nodata as :func:`~workbench.data.collate.finish_batch` compares it (NaN: no
    value of ``dtype`` is nodata; NaN pixels of float files are invalid anyway)."""
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        return math.nan
    v = _cast_nodata(nodata, dtype)
    return math.nan if v is None else float(v)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _nodata_pixels(raw: np.ndarray, nodatas: list, check_nan: bool, bad: np.ndarray,
                   eq: np.ndarray) -> np.ndarray | None:
    """True in ``bad`` (B, H, W) where any band of a sample equals its tile's nodata (or is
    NaN); None when no pixel is. ``eq`` is scratch shaped like ``raw`` (bool)."""
    found = False
    values: dict[float, list[int]] = {}
    for i, nd in enumerate(nodatas):
        if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
            values.setdefault(float(nd), []).append(i)
    for nd, members in values.items():
        v = _cast_nodata(nd, raw.dtype)
        if v is None:
            continue
        if len(members) == len(raw):  # the usual case: one nodata value for the whole batch
            np.equal(raw, v, out=eq)
            if found:
                bad |= np.logical_or.reduce(eq, axis=1)
            else:
                np.logical_or.reduce(eq, axis=1, out=bad)
        else:
            if not found:
                bad.fill(False)
            sel = np.asarray(members)
            bad[sel] |= np.logical_or.reduce(raw[sel] == v, axis=1)
        found = True
    if check_nan and np.issubdtype(raw.dtype, np.floating):
        nan = np.logical_or.reduce(~np.isfinite(raw), axis=1)
        if found:
            bad |= nan
        else:
            bad[...] = nan
        found = True
    if not found or not bad.any():
        return None
    return bad


def _outputs_nbytes(specs) -> int:
    total = 0
    for shape, dtype in specs:
        total = -(-total // 64) * 64 + math.prod(shape) * dtype.itemsize
    return max(total, 1)


def _new_outputs(specs: list[tuple[tuple[int, ...], torch.dtype]], storage=None) -> list[torch.Tensor]:
    """Uninitialised tensors for one batch, carved out of ONE storage (``storage`` if given).

    In a DataLoader worker that storage is in shared memory (as torch's default_collate
    does), so handing the batch to the main process costs one shared-memory segment
    per batch instead of one per tensor, and no extra copy.
    """
    offsets, total = [], 0
    for shape, dtype in specs:
        itemsize = dtype.itemsize
        total = -(-total // 64) * 64  # 64-byte alignment for every tensor
        offsets.append(total // itemsize)
        total += math.prod(shape) * itemsize
    total = max(total, 1)
    if storage is None:
        if torch.utils.data.get_worker_info() is not None:
            storage = fastpaths.shared_storage(total)
        else:
            storage = torch.UntypedStorage(total)
        fastpaths.prefault(storage.data_ptr(), total)
    out = []
    for (shape, dtype), off in zip(specs, offsets):
        strides, step = [], 1
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
        out.append(torch.empty(0, dtype=dtype).set_(storage, off, shape, tuple(strides)))
    return out
