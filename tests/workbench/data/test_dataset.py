"""WindowDataset: pixel correctness, nodata, augmentation alignment, batching, workers, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.augment import Augment, dihedral, dihedral_batch, inverse_transform
from workbench.data.catalog import Tile
from workbench.data.dataset import WindowDataset, passthrough_collate
from workbench.data.samplers import EpochSampler, GridWindows, RandomWindows
from workbench.data.stats import BandStats
from workbench.errors import WorkbenchError


def make_tiles(folder, n=3, size=64, bands=3, **kw) -> list[Tile]:
    tiles = []
    for i in range(n):
        img, mask = write_pair(folder, f"t{i}", size=size, bands=bands, seed=i,
                               origin=(500_000.0 + 10_000 * i, 4_650_000.0), **kw)
        tiles.append(Tile(path=str(img), mask_path=str(mask), source="folder", split="train"))
    return tiles


def read_window(path, r, c, size):
    with rasterio.open(path) as src:
        return src.read(window=Window(c, r, size, size))


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pixels_equal_direct_windowed_read(tmp_path):
    """Before augmentation, a window's pixels are exactly a rasterio read of that window,
    whatever the georeferencing (two CRSs, different origins)."""
    tiles = make_tiles(tmp_path, n=2, size=80, bands=4)
    img, mask = write_pair(tmp_path, "geo", size=80, bands=4, crs="EPSG:4326", origin=(105.0, 21.0), res=0.001,
                           seed=9)
    tiles.append(Tile(path=str(img), mask_path=str(mask), source="folder"))
    ds = WindowDataset(tiles, RandomWindows(24, per_tile=4), seed=3, radiometry=False)
    batch = ds.__getitems__(list(range(len(ds))))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (12, 4, 24, 24)
    assert batch["mask"].dtype == torch.int64 and batch["valid"].dtype == torch.bool
    for i in range(len(ds)):
        t = int(batch["tile"][i])
        r, c, size = batch["window"][i].tolist()
        assert size == 24
        ref = read_window(tiles[t].path, r, c, size).astype(np.float32)
        assert np.array_equal(batch["image"][i].numpy(), ref)
        assert np.array_equal(batch["mask"][i].numpy(), read_window(tiles[t].mask_path, r, c, size)[0])
    assert batch["valid"].all()


def test_band_selection_by_index_and_name(tmp_path):
    tiles = make_tiles(tmp_path, n=1, size=48, bands=4)
    a = WindowDataset(tiles, GridWindows(48), bands=[3, 0], radiometry=False)
    b = WindowDataset(tiles, GridWindows(48), bands=["nir", "red"], radiometry=False)
    ref = read_window(tiles[0].path, 0, 0, 48)[[3, 0]].astype(np.float32)
    assert np.array_equal(a[0]["image"].numpy(), ref)
    assert np.array_equal(b[0]["image"].numpy(), ref)


def test_normalisation_uses_stats(tmp_path):
    tiles = make_tiles(tmp_path, n=1, size=32)
    stats = BandStats([1000.0, 1500.0, 2000.0], [100.0, 200.0, 400.0], ["red", "green", "blue"])
    ds = WindowDataset(tiles, GridWindows(32), stats=stats, radiometry=False)
    ref = read_window(tiles[0].path, 0, 0, 32).astype(np.float64)
    want = (ref - np.array([1000, 1500, 2000])[:, None, None]) / np.array([100, 200, 400])[:, None, None]
    np.testing.assert_allclose(ds[0]["image"].numpy(), want, rtol=1e-5, atol=1e-4)
    # stats of all file bands are subset along with the bands
    ds2 = WindowDataset(tiles, GridWindows(32), stats=stats, bands=[2], radiometry=False)
    np.testing.assert_allclose(ds2[0]["image"].numpy()[0], want[2], rtol=1e-5, atol=1e-4)
    with pytest.raises(WorkbenchError, match="statistics"):
        WindowDataset(tiles, GridWindows(32), stats=BandStats([0.0] * 2, [1.0] * 2), bands=[0, 1, 2], radiometry=False)


def test_getitem_and_getitems_agree(tmp_path):
    tiles = make_tiles(tmp_path, n=3, size=64)
    stats = BandStats([1500.0] * 3, [300.0] * 3)
    ds = WindowDataset(tiles, RandomWindows(32, per_tile=4), stats=stats,
                       augment=Augment(brightness=0.2, contrast=0.2), seed=11)
    ds.set_epoch(2)
    order = [5, 0, 11, 3, 7]
    batch = ds.__getitems__(order)
    for j, i in enumerate(order):
        one = ds[i]
        for k in batch:
            assert torch.equal(batch[k][j], one[k]), k
    # (epoch, index) pairs select the epoch explicitly
    pairs = ds.__getitems__([(2, i) for i in order])
    assert_batches_equal(batch, pairs)
    other = ds.__getitems__([(3, i) for i in order])
    assert not torch.equal(other["window"], batch["window"])


def test_epochs_give_different_windows(tmp_path):
    ds = WindowDataset(make_tiles(tmp_path, n=2, size=64), RandomWindows(16, per_tile=8))
    a = ds.__getitems__(range(len(ds)))["window"]
    ds.set_epoch(1)
    b = ds.__getitems__(range(len(ds)))["window"]
    ds.set_epoch(0)
    c = ds.__getitems__(range(len(ds)))["window"]
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_augmentation_keeps_image_and_mask_aligned(tmp_path):
    """Band 0 of the image *is* the mask: after any flip/turn they must still match."""
    size = 40
    rng = np.random.default_rng(0)
    mask = (rng.random((size, size)) > 0.5).astype("uint8")
    img = np.stack([mask.astype("uint16"), rng.integers(0, 1000, (size, size)).astype("uint16")])
    tr = from_origin(0, size, 1, 1)
    p = geotiff.write(tmp_path / "a.tif", img, tr, "EPSG:32633")
    m = geotiff.write(tmp_path / "a_mask.tif", mask, tr, "EPSG:32633")
    tiles = [Tile(path=str(p), mask_path=str(m), source="folder")]
    ds = WindowDataset(tiles, RandomWindows(16, per_tile=64), augment=Augment(brightness=0, contrast=0), seed=1,
                       radiometry=False)
    batch = ds.__getitems__(range(len(ds)))
    assert torch.equal(batch["image"][:, 0].long(), batch["mask"])
    # all 8 transforms were used, and each is the dihedral transform of the raw window
    params = ds.augment.params(ds.seed, 0, np.arange(len(ds)))
    assert set(params.transform.tolist()) == set(range(8))
    for i in range(len(ds)):
        r, c, s = batch["window"][i].tolist()
        raw = img[:, r:r + s, c:c + s].astype(np.float32)
        assert np.array_equal(batch["image"][i].numpy(), dihedral(raw, params.transform[i]))
        undone = dihedral(batch["image"][i].numpy(), inverse_transform(params.transform[i]))
        assert np.array_equal(undone, raw)


def test_augment_per_sample_and_batch_agree():
    aug = Augment(brightness=0.5, contrast=0.3)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 3, 8, 8)).astype(np.float32)
    mask = rng.integers(0, 2, (6, 8, 8))
    valid = rng.random((6, 8, 8)) > 0.1
    bi, bm, bv = aug(image, mask, valid, seed=2, epoch=1, index=np.arange(10, 16))
    for j in range(6):
        si, sm, sv = aug(torch.from_numpy(image[j]), torch.from_numpy(mask[j]), torch.from_numpy(valid[j]),
                         seed=2, epoch=1, index=10 + j)
        assert isinstance(si, torch.Tensor)
        np.testing.assert_allclose(si.numpy(), bi[j], rtol=1e-6)
        assert np.array_equal(sm.numpy(), bm[j]) and np.array_equal(sv.numpy(), bv[j])
    # jitter never touches invalid pixels; geometry moves them with the image
    t = aug.params(2, 1, np.arange(10, 16)).transform
    moved = dihedral_batch(image, t)
    assert np.array_equal(bi[~bv[:, None].repeat(3, 1)], moved[~bv[:, None].repeat(3, 1)])


def test_nodata_marked_invalid_and_zeroed(tmp_path):
    size = 32
    rng = np.random.default_rng(0)
    img = rng.integers(100, 1000, (3, size, size)).astype("int16")
    img[1, 5:10, 5:10] = -9999  # nodata in one band only
    mask = (rng.random((size, size)) > 0.5).astype("uint8")
    mask[20:25, 0:4] = 255  # mask nodata
    tr = from_origin(0, size, 1, 1)
    p = geotiff.write(tmp_path / "n.tif", img, tr, "EPSG:32633", nodata=-9999)
    m = geotiff.write(tmp_path / "n_mask.tif", mask, tr, "EPSG:32633", nodata=255)
    tiles = [Tile(path=str(p), mask_path=str(m), source="folder")]
    stats = BandStats([500.0] * 3, [100.0] * 3)
    ds = WindowDataset(tiles, GridWindows(size), stats=stats, ignore_index=-1, radiometry=False)
    s = ds[0]
    bad = np.zeros((size, size), bool)
    bad[5:10, 5:10] = True
    bad[20:25, 0:4] = True
    assert np.array_equal(~s["valid"].numpy(), bad)
    assert (s["image"].numpy()[:, bad] == 0).all()
    assert (s["mask"].numpy()[bad] == -1).all()
    assert np.array_equal(s["mask"].numpy()[~bad], mask[~bad])
    ref = (img.astype(np.float64) - 500) / 100
    np.testing.assert_allclose(s["image"].numpy()[:, ~bad], ref[:, ~bad], rtol=1e-5, atol=1e-5)
    # augmentation moves the invalid pixels along with everything else
    ds_aug = WindowDataset(tiles, GridWindows(size), stats=stats, augment=Augment(), ignore_index=-1, seed=4,
                           radiometry=False)
    for e in range(4):
        ds_aug.set_epoch(e)
        a = ds_aug[0]
        t = ds_aug.augment.params(4, e, 0).transform[0]
        assert np.array_equal(a["valid"].numpy(), ~dihedral(bad, t))
        assert np.array_equal(a["mask"].numpy() == -1, dihedral(bad, t))


def test_float_nan_pixels_invalid(tmp_path):
    img = np.ones((2, 16, 16), np.float32)
    img[0, 3, 4] = np.nan
    tr = from_origin(0, 16, 1, 1)
    p = geotiff.write(tmp_path / "f.tif", img, tr, "EPSG:32633")
    ds = WindowDataset([Tile(path=str(p), source="folder")], GridWindows(16), with_mask=False)
    s = ds[0]
    assert "mask" not in s
    assert not s["valid"][3, 4] and s["valid"].sum() == 255
    assert s["image"][:, 3, 4].eq(0).all()


def _loader(ds, workers, sampler=None):
    return torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers, sampler=sampler,
                                       collate_fn=passthrough_collate, persistent_workers=workers > 0)


def test_dataloader_workers_match_single_process(tmp_path):
    tiles = make_tiles(tmp_path, n=3, size=64)
    ds = WindowDataset(tiles, RandomWindows(16, per_tile=6), stats=BandStats([1500.0] * 3, [300.0] * 3),
                       augment=Augment(contrast=0.1), seed=2)
    sampler0 = EpochSampler(ds, seed=7)
    sampler2 = EpochSampler(ds, seed=7)
    l0, l2 = _loader(ds, 0, sampler0), _loader(ds, 2, sampler2)
    for epoch in range(2):  # persistent workers still see the new epoch through (epoch, index) pairs
        sampler0.set_epoch(epoch)
        sampler2.set_epoch(epoch)
        b0, b2 = list(l0), list(l2)
        assert len(b0) == len(b2) == 4
        for x, y in zip(b0, b2):
            assert_batches_equal(x, y)
        if epoch == 0:
            first = b0
    assert not torch.equal(first[0]["window"], b0[0]["window"])


def test_pickle_and_handles_reset(tmp_path):
    ds = WindowDataset(make_tiles(tmp_path, n=1), GridWindows(32))
    a = ds[1]
    assert len(ds._readers) == 1
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._readers) == 0
    assert_batches_equal(a, clone[1])
    ds._pid = -1  # as if forked: the parent's handles are not used
    ds[0]
    assert ds._pid > 0
    ds.close()
    assert len(ds._readers) == 0


def test_open_files_bounded(tmp_path):
    ds = WindowDataset(make_tiles(tmp_path, n=4, size=32), GridWindows(32), max_open=2)
    batch = ds.__getitems__([0, 1, 2, 3])
    assert len(ds._readers) <= 4 and batch["image"].shape[0] == 4
    ds[0], ds[1], ds[2]
    assert len(ds._readers) == 2


def test_errors_name_the_file(tmp_path):
    tiles = make_tiles(tmp_path, n=2, size=32, bands=3)
    img, mask = write_pair(tmp_path, "four", size=32, bands=4)
    odd = Tile(path=str(img), mask_path=str(mask), source="folder")
    with pytest.raises(WorkbenchError, match=r"four\.tif.*4 bands"):
        WindowDataset(tiles + [odd], GridWindows(16))
    with pytest.raises(WorkbenchError, match=r"t0\.tif.*band index 3 out of range"):
        WindowDataset(tiles, GridWindows(16), bands=[0, 3])
    with pytest.raises(WorkbenchError, match=r"t0\.tif.*64x64.*larger.*32x32"):
        WindowDataset(tiles, RandomWindows(64))
    with pytest.raises(WorkbenchError, match="empty tile list"):
        WindowDataset([], RandomWindows(16))
    with pytest.raises(WorkbenchError, match=r"t0\.tif.*no mask"):
        WindowDataset([Tile(path=tiles[0].path, source="folder")], GridWindows(16))
    with pytest.raises(WorkbenchError, match=r"missing\.tif: no such file"):
        WindowDataset([Tile(path=str(tmp_path / "missing.tif"), mask_path=str(mask), source="folder")],
                      GridWindows(16))
    # a catalog row that lies about the band count is caught when the file is opened
    liar = Tile(path=str(img), mask_path=str(mask), source="folder", width=32, height=32,
                bands=["red", "green", "blue"])
    ds = WindowDataset([liar], GridWindows(16))
    with pytest.raises(WorkbenchError, match=r"four\.tif.*4 bands"):
        ds[0]


@pytest.mark.parametrize("size", [8, 64, 160])
def test_dihedral_batch_matches_numpy(size):
    """Large transposed patches are copied block by block: same result as numpy's views."""
    rng = np.random.default_rng(size)
    src = rng.integers(0, 60000, (9, 3, size, size)).astype(np.uint16)
    t = np.array([0, 1, 2, 3, 4, 5, 6, 7, 5])
    out = dihedral_batch(src, t, out=np.empty(src.shape, np.float32))
    for i in range(len(src)):
        assert np.array_equal(out[i], dihedral(src[i], t[i]).astype(np.float32))
    k = np.rot90(src[1], 1, axes=(1, 2))
    assert np.array_equal(dihedral(src[1], 1), k)
    same = dihedral_batch(src, np.full(9, 3))
    assert np.array_equal(same, np.rot90(src, 3, axes=(2, 3)))


def test_recycled_batches_never_overwrite_held_data(tmp_path):
    ds = WindowDataset(make_tiles(tmp_path, n=2, size=64), RandomWindows(32, per_tile=8), augment=Augment())
    first = ds.__getitems__(range(8))
    view = first["image"][:, :1]  # a view keeps the batch's memory alive
    keep = view.clone()
    del first
    for e in range(6):
        ds.set_epoch(e + 1)
        ds.__getitems__(range(8))
    assert torch.equal(view, keep)
    del view
    a = ds.__getitems__(range(8))["image"].clone()
    b = ds.__getitems__(range(8))["image"]
    assert torch.equal(a, b)


def test_truncated_file_is_a_one_line_error(tmp_path):
    img = np.random.default_rng(0).integers(0, 60000, (2, 512, 512)).astype("uint16")
    p = geotiff.write(tmp_path / "cut.tif", img, from_origin(0, 512, 1, 1), "EPSG:32633")
    data = p.read_bytes()
    ds = WindowDataset([Tile(path=str(p), source="folder")], GridWindows(256), with_mask=False)
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match=r"cut\.tif.*(truncated|corrupt)"):
        ds.__getitems__(range(len(ds)))


def test_uint16_offset_and_float_tiles_of_one_ground_give_the_same_tensors(tmp_path):
    """Each tile is brought to reflectance by its own radiometry before the shared normalisation,
    so the forms of one ground can be mixed in one run and pooled into one set of statistics."""
    from tests.support import sentinel2 as s2
    from workbench.data.stats import compute_band_stats

    g = s2.ground(64, seed=4)
    paths = [s2.write_dn_geotiff(tmp_path / "dn.tif", g),
             s2.write_dn_geotiff(tmp_path / "off.tif", g, dn_offset=1000, declare_offset=True),
             s2.write_float_geotiff(tmp_path / "f.tif", g, edge_value=float("nan"))]
    mask = s2.write_mask(tmp_path / "m.tif", g)
    tiles = [Tile(path=str(p), mask_path=str(mask), source="folder", split="train") for p in paths]
    stats = compute_band_stats(tiles, split=None)
    assert 0 < stats.mean[0] < 1                                  # reflectance, not DN
    ds = WindowDataset(tiles, GridWindows(64), stats=stats)
    batch = ds.__getitems__(list(range(len(ds))))
    ok = batch["valid"].all(dim=0)
    assert ok.float().mean() > 0.7
    for i in (1, 2):
        np.testing.assert_allclose(batch["image"][i][:, ok].numpy(), batch["image"][0][:, ok].numpy(), atol=1e-4)
    single = compute_band_stats(tiles[:1], split=None)
    np.testing.assert_allclose(stats.mean, single.mean, atol=1e-6)   # the three forms pool to one ground's stats


def test_a_table_gives_the_batches_of_its_tile_rows(tmp_path):
    """A WindowDataset over ``Catalog.table`` columns serves the very batches the same rows give
    as Tile objects: random windows with augmentation and the water filter, grid windows, the
    raw (finish-on-device) batch; rows without a size read their headers either way."""
    from workbench.data.catalog import Catalog
    from workbench.data.tile_table import DATASET_COLUMNS

    root = tmp_path / "data"
    root.mkdir()
    tiles = make_tiles(root, n=3, size=48, bands=4)
    for i, t in enumerate(tiles):
        t.width, t.height = (None, None) if i == 2 else (48, 48)   # one row without its size
        t.bands = ["red", "green", "blue", "nir"]
        t.extra = {"radiometry": [{"scale": 1e-4, "offset": 0.0, "source": "test"}] * 4}
    with Catalog(root / "catalog.sqlite") as cat:
        cat.add_tiles(tiles)
        rows, table = cat.query(), cat.table(columns=DATASET_COLUMNS)
    stats = BandStats([0.1] * 4, [0.05] * 4)
    cases = [
        (RandomWindows(24, per_tile=2, water_min=0.1, water_max=0.9),
         dict(augment=Augment(flips=True, rotations=True, brightness=0.1, contrast=0.1), stats=stats)),
        (GridWindows(24, stride=20), dict(bands=["nir", "red"])),
        (RandomWindows(16, per_tile=2), dict(finish_on_device=True)),
    ]
    for sampler, kw in cases:
        a, b = WindowDataset(rows, sampler, seed=5, **kw), WindowDataset(table, sampler, seed=5, **kw)
        assert b.tiles is table and a.paths == b.paths and a.mask_paths == b.mask_paths
        assert np.array_equal(a.shapes, b.shapes) and a.band_names == b.band_names == ["red", "green", "blue", "nir"]
        for ep in (1,):
            order = list(range(len(a)))[::-1]
            x, y = a.__getitems__([(ep, i) for i in order]), b.__getitems__([(ep, i) for i in order])
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], torch.Tensor):     # bit for bit (NaN: "no nodata" in a raw batch)
                    torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, equal_nan=True, msg=k)
                else:
                    assert x[k] == y[k], k
    loader = torch.utils.data.DataLoader(WindowDataset(table, RandomWindows(32), seed=1), batch_size=3,
                                         collate_fn=passthrough_collate)
    assert next(iter(loader))["image"].shape == (3, 4, 32, 32)
    with pytest.raises(WorkbenchError, match="tile has no mask"):
        WindowDataset(_without_masks(table), GridWindows(32))


def _without_masks(table):
    from workbench.data.tile_table import TileTable

    cols = {n: table[n] for n in table.names}
    cols["mask_path"] = [None] * len(table)
    return TileTable(cols)
