"""passthrough_collate: the one collate_fn of the trainer and of every WindowDataset loader; finish_batch:
raw batches completed on the training device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from tests.support import sentinel2 as s2
from workbench.data import dataset, geotiff
from workbench.data.augment import Augment
from workbench.data.catalog import Tile
from workbench.data.collate import finish_batch, is_raw_batch, passthrough_collate
from workbench.data.dataset import WindowDataset
from workbench.data.samplers import EpochSampler, RandomWindows
from workbench.data.stats import compute_band_stats
from workbench.train import data as train_data


def test_a_built_batch_passes_through_untouched():
    batch = {"image": torch.zeros(2, 3, 4, 4), "tile": torch.tensor([0, 1])}
    assert passthrough_collate(batch) is batch


def test_samples_are_collated_as_torch_does():
    pairs = [(torch.tensor([1.0, 2.0]), torch.tensor(0)), (torch.tensor([3.0, 4.0]), torch.tensor(1))]
    x, y = passthrough_collate(pairs)
    assert torch.equal(x, torch.tensor([[1.0, 2.0], [3.0, 4.0]])) and torch.equal(y, torch.tensor([0, 1]))
    dicts = [{"image": torch.ones(2, 2), "tile": 3}, {"image": torch.zeros(2, 2), "tile": 4}]
    out = passthrough_collate(dicts)
    assert out["image"].shape == (2, 2, 2) and torch.equal(out["tile"], torch.tensor([3, 4]))


def test_one_function_everywhere():
    assert dataset.passthrough_collate is passthrough_collate
    assert train_data.passthrough_collate is passthrough_collate
    loader, _ = train_data.make_loader([torch.zeros(1)] * 4, 2, shuffle=False, seed=0)
    assert loader.collate_fn is passthrough_collate


# ---- raw batches finished on the device --------------------------------------------------------

def _int16_tiles(folder):
    """Two int16 tiles with nodata in one band and a uint8 mask with nodata 255."""
    tiles = []
    for i in range(2):
        rng = np.random.default_rng(i)
        img = rng.integers(100, 1000, (3, 48, 48)).astype("int16")
        img[1, 5:10, 5 + i:12] = -9999
        mask = (rng.random((48, 48)) > 0.5).astype("uint8")
        mask[30:36, 0:7] = 255
        tr = from_origin(500_000 + 1000 * i, 4_650_000, 10, 10)
        p = geotiff.write(folder / f"n{i}.tif", img, tr, "EPSG:32633", nodata=-9999)
        m = geotiff.write(folder / f"n{i}_mask.tif", mask, tr, "EPSG:32633", nodata=255)
        tiles.append(Tile(path=str(p), mask_path=str(m), source="folder"))
    return tiles


def _sentinel2_tiles(folder):
    """One ground as uint16 DN, DN with the 04.00 offset and float reflectance with NaN edges."""
    g = s2.ground(48, seed=4)
    paths = [s2.write_dn_geotiff(folder / "dn.tif", g),
             s2.write_dn_geotiff(folder / "off.tif", g, dn_offset=1000, declare_offset=True),
             s2.write_float_geotiff(folder / "f.tif", g, edge_value=float("nan"))]
    mask = s2.write_mask(folder / "m.tif", g)
    return [Tile(path=str(p), mask_path=str(mask), source="folder", split="train") for p in paths]


def _datasets(tiles, finish_on_device, with_mask=True, water=False):
    stats = compute_band_stats(tiles, split=None) if with_mask else None
    sampler = RandomWindows(24, per_tile=12, water_min=0.2 if water else None, water_max=0.8 if water else None)
    return WindowDataset(tiles, sampler, stats=stats, augment=Augment(brightness=0.2, contrast=0.2), seed=5,
                         ignore_index=-1, with_mask=with_mask, finish_on_device=finish_on_device)


@pytest.mark.parametrize("case", ["int16-nodata", "sentinel2-forms", "water-filter", "no-mask"])
def test_a_raw_batch_finishes_to_exactly_the_loaders_batch(tmp_path, case):
    """What the loader ships raw (digital numbers, masks as read) and finish_batch completes is the
    batch the loader itself builds, bit for bit: nodata and NaN, mask nodata, each tile's own
    reflectance, statistics, jitter and all eight flips/turns."""
    tiles = _sentinel2_tiles(tmp_path) if case == "sentinel2-forms" else _int16_tiles(tmp_path)
    kw = dict(with_mask=case != "no-mask", water=case == "water-filter")
    cpu, raw = _datasets(tiles, False, **kw), _datasets(tiles, True, **kw)
    idx = list(range(len(cpu)))
    want, shipped = cpu.__getitems__(idx), raw.__getitems__(idx)
    assert not is_raw_batch(want) and is_raw_batch(shipped)
    dn = {"int16-nodata": torch.int16, "water-filter": torch.int16, "no-mask": torch.int16,
          "sentinel2-forms": torch.float32}[case]   # mixed uint16 / float32 files: float32
    assert shipped["image"].dtype == dn
    if kw["with_mask"]:
        assert shipped["mask"].dtype == torch.uint8
    assert len(set(shipped["wire_transform"].tolist())) >= 6
    got = finish_batch(shipped)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert (~want["valid"]).any()          # the nodata paths were exercised
    if case != "no-mask":
        assert np.array_equal(raw[3]["mask"].numpy(), cpu[3]["mask"].numpy())   # items are finished


def test_raw_batches_through_worker_processes(tmp_path):
    tiles = _int16_tiles(tmp_path)
    cpu, raw = _datasets(tiles, False), _datasets(tiles, True)
    loaders = [torch.utils.data.DataLoader(ds, batch_size=5, num_workers=w, sampler=EpochSampler(ds, seed=3),
                                           collate_fn=passthrough_collate) for ds, w in ((cpu, 0), (raw, 2))]
    for a, b in zip(*loaders):
        b = finish_batch(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_finish_batch_leaves_other_batches_alone():
    batch = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.long)}
    assert finish_batch(batch) is batch
    pairs = (torch.zeros(2), torch.ones(2))
    assert finish_batch(pairs) is pairs


def test_only_an_accelerator_gets_raw_batches(tmp_path):
    tiles = _int16_tiles(tmp_path)
    ds = _datasets(tiles, False)
    train_data.finish_on(ds, torch.device("cpu"))
    assert not ds.finish_on_device
    train_data.finish_on(ds, torch.device("cuda"))
    assert ds.finish_on_device
    train_data.finish_on([torch.zeros(1)], torch.device("cuda"))   # any other dataset: untouched
