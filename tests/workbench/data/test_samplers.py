"""Window samplers: determinism, coverage, the water-ratio filter, index order."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from tests.support.rasters import write_pair
from workbench.data.catalog import Tile
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import (
    EpochSampler,
    GridWindows,
    RandomWindows,
    epoch_permutation,
    grid_offsets,
    hash_keys,
    splitmix64,
)
from workbench.errors import WorkbenchError

SHAPES = [(100, 120), (64, 64), (257, 90)]


def test_splitmix64_known_values():
    # Reference outputs of splitmix64 seeded with 0 (state += golden gamma, then mix).
    state = np.array([0], dtype=np.uint64)
    first = splitmix64(state)
    assert int(first[0]) == 0xE220A8397B1DCDAF
    # scalar (pure Python) and array paths agree
    assert np.array_equal(hash_keys(7, 3, np.array([1, 2, 3]), 9),
                          hash_keys(7, np.array([3, 3, 3]), np.array([1, 2, 3]), np.array([9, 9, 9])))


def test_random_windows_deterministic_and_epoch_dependent():
    s = RandomWindows(32, per_tile=5).bind(SHAPES)
    assert len(s) == 15
    a = s.all_windows(seed=1, epoch=0)
    b = s.all_windows(seed=1, epoch=0)
    c = s.all_windows(seed=1, epoch=1)
    d = s.all_windows(seed=2, epoch=0)
    assert np.array_equal(a.row, b.row) and np.array_equal(a.col, b.col)
    assert not (np.array_equal(a.row, c.row) and np.array_equal(a.col, c.col))
    assert not (np.array_equal(a.row, d.row) and np.array_equal(a.col, d.col))
    assert np.array_equal(a.tile, np.repeat(np.arange(3), 5))
    # every window inside its tile
    shapes = np.asarray(SHAPES)
    assert np.all(a.row + 32 <= shapes[a.tile, 0]) and np.all(a.col + 32 <= shapes[a.tile, 1])
    assert np.all(a.row >= 0) and np.all(a.col >= 0)


def test_random_windows_pure_function_of_index():
    """Any subset, in any order (as a worker would see it), gives the same windows."""
    s = RandomWindows(16, per_tile=50).bind(SHAPES)
    full = s.all_windows(seed=3, epoch=4)
    order = np.random.default_rng(0).permutation(len(s))[:37]
    part = s.windows(order, seed=3, epoch=4)
    assert np.array_equal(part.row, full.row[order]) and np.array_equal(part.col, full.col[order])
    # one index at a time, too
    for i in order[:5]:
        w = s.windows([i], seed=3, epoch=4)
        assert w[0] == full[int(i)]


def test_random_windows_cover_the_tile_range():
    s = RandomWindows(8, per_tile=4000).bind([(40, 40)])
    w = s.all_windows()
    assert w.row.min() == 0 and w.row.max() == 32 and w.col.min() == 0 and w.col.max() == 32


@pytest.mark.parametrize("size,stride,shape", [(32, None, (100, 120)), (32, 20, (64, 64)), (16, 7, (33, 50)),
                                               (64, None, (64, 64))])
def test_grid_covers_every_pixel(size, stride, shape):
    g = GridWindows(size, stride=stride).bind([shape, (size, size + 3)])
    cover = [np.zeros(shape, int), np.zeros((size, size + 3), int)]
    for t, r, c, sz in g.all_windows():
        assert r + sz <= cover[t].shape[0] and c + sz <= cover[t].shape[1]
        cover[t][r:r + sz, c:c + sz] += 1
    assert all((c > 0).all() for c in cover)
    # windows start on the stride grid, except the last one, snapped to the edge
    assert list(grid_offsets(100, 32, 32)) == [0, 32, 64, 68]
    assert list(grid_offsets(64, 32, 32)) == [0, 32]


def test_grid_overlap_and_order():
    g = GridWindows(32, overlap=8).bind([(64, 64)])
    assert g.stride == 24
    w = g.all_windows()
    assert [(r, c) for _, r, c, _ in w] == [(0, 0), (0, 24), (0, 32), (24, 0), (24, 24), (24, 32),
                                            (32, 0), (32, 24), (32, 32)]
    assert np.array_equal(g.windows([4]).row, [24])
    with pytest.raises(WorkbenchError):
        GridWindows(32, overlap=32)
    with pytest.raises(WorkbenchError):
        GridWindows(32, stride=10, overlap=8)


def test_window_larger_than_tile_names_the_tile():
    with pytest.raises(WorkbenchError, match=r"small\.tif.*64x64.*larger.*50x40"):
        RandomWindows(64).bind([(100, 100), (40, 50)], names=["big.tif", "small.tif"])
    with pytest.raises(WorkbenchError, match="empty"):
        GridWindows(8).bind([])


def test_water_filter_respected(tmp_path):
    tiles = []
    for i in range(3):
        img, mask = write_pair(tmp_path, f"t{i}", size=96, seed=i)
        tiles.append(Tile(path=str(img), mask_path=str(mask), source="folder"))
    sampler = RandomWindows(24, per_tile=12, water_min=0.3, water_max=0.7, max_tries=64)
    ds = WindowDataset(tiles, sampler, seed=5)
    w = ds.windows(np.arange(len(ds)))
    assert not w.fallback.any()
    for t, r, c, size in w:
        with rasterio.open(tiles[t].mask_path) as src:
            m = src.read(1, window=Window(c, r, size, size))
        assert 0.3 <= m.mean() <= 0.7
    # the batch's masks are those windows' masks
    batch = ds.__getitems__(list(range(len(ds))))
    frac = batch["mask"].float().mean(dim=(1, 2)).numpy()
    assert np.all((frac >= 0.3) & (frac <= 0.7))
    # deterministic
    w2 = ds.windows(np.arange(len(ds)))
    assert np.array_equal(w.row, w2.row) and np.array_equal(w.col, w2.col)


def test_water_filter_falls_back_to_best_candidate(tmp_path):
    img, mask = write_pair(tmp_path, "a", size=64, seed=0)
    tiles = [Tile(path=str(img), mask_path=str(mask), source="folder")]
    ds = WindowDataset(tiles, RandomWindows(16, per_tile=6, water_min=0.9999, water_max=1.0, max_tries=4))
    w = ds.windows(range(len(ds)))
    assert len(w) == 6  # never skipped
    # windows that cannot pass are flagged; those that pass are entirely water
    for (_t, r, c, size), fb in zip(w, w.fallback):
        with rasterio.open(mask) as src:
            m = src.read(1, window=Window(c, r, size, size))
        assert fb or m.mean() >= 0.9999
    with pytest.raises(WorkbenchError, match="masks"):
        RandomWindows(16, water_min=0.3).bind([(64, 64)]).windows([0])


def test_epoch_sampler_pure_sharded_resumable():
    a = EpochSampler(10, seed=1)
    a.set_epoch(3)
    order = [i for _, i in a]
    assert sorted(order) == list(range(10))
    assert order == epoch_permutation(10, 1, 3).tolist()
    a.set_epoch(4)
    assert [i for _, i in a] != order
    assert all(e == 4 for e, _ in a)
    # shards: disjoint, cover everything (padded to equal length)
    shards = [EpochSampler(10, seed=1, rank=r, world_size=3, with_epoch=False) for r in range(3)]
    for s in shards:
        s.set_epoch(3)
    got = [list(s) for s in shards]
    assert all(len(g) == 4 for g in got)
    assert set(sum(got, [])) == set(range(10))
    # resume mid-epoch: the rest of the same order
    r = EpochSampler(10, seed=1, with_epoch=False, start=6)
    r.set_epoch(3)
    assert list(r) == order[6:]
    assert list(r) == order  # start applies once


def test_water_fraction_counts_valid_mask_pixels_only(tmp_path):
    from rasterio.transform import from_origin

    from workbench.data import geotiff
    size = 64
    mask = np.zeros((size, size), np.uint8)
    mask[:, :32] = 255  # left half: mask nodata
    mask[:, 32:40] = 1  # a river in the valid half
    img = np.ones((1, size, size), np.uint16)
    tr = from_origin(0, size, 1, 1)
    p = geotiff.write(tmp_path / "i.tif", img, tr, "EPSG:32633")
    m = geotiff.write(tmp_path / "m.tif", mask, tr, "EPSG:32633", nodata=255)
    ds = WindowDataset([Tile(path=str(p), mask_path=str(m), source="folder")],
                       RandomWindows(16, per_tile=20, water_min=0.4, water_max=0.6, max_tries=200), seed=3)
    w = ds.windows(range(len(ds)))
    assert not w.fallback.any()
    for _, r, c, s in w:
        win = mask[r:r + s, c:c + s]
        ok = win != 255
        assert ok.any() and 0.4 <= (win[ok] == 1).mean() <= 0.6


def test_the_trainer_order_is_torch_randperm_of_seed_plus_epoch():
    """The trainer's loaders use the same EpochSampler with torch's permutation: the order runs
    have always been trained in (randperm from a generator seeded with seed + epoch)."""
    import torch

    from workbench.data.samplers import torch_permutation
    from workbench.train.data import make_loader

    data = list(range(23))
    loader, sampler = make_loader(data, 4, shuffle=True, seed=5)
    assert isinstance(sampler, EpochSampler) and not hasattr(sampler, "generator")
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        rng = torch.Generator()
        rng.manual_seed(5 + epoch)
        expected = torch.randperm(23, generator=rng).tolist()
        assert list(sampler) == expected and all(type(i) is int for i in sampler)
        assert torch.cat(list(loader)).tolist() == expected
        assert torch_permutation(23, 5, epoch).tolist() == expected
    assert len(sampler) == 23
