"""Segmentation's catalog -> tiles step: splits read as TileTables, the per-tile work on columns."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tasks.segmentation.config import config_from_dict
from tasks.segmentation.data import eval_dataset, query_split, scan_masks
from tests.support.rasters import write_pair
from workbench.data.catalog import Catalog, Tile
from workbench.data.tile_table import TileTable
from workbench.errors import WorkbenchError


@pytest.fixture
def cat(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    tiles = []
    for i in range(5):
        image, mask = write_pair(root, f"t{i}", size=40 if i == 3 else 48, seed=i)
        tiles.append(Tile(path=str(image), mask_path=None if i == 1 else str(mask), source="folder",
                          split="val" if i == 4 else "train", width=40 if i == 3 else 48,
                          height=40 if i == 3 else 48, bands=["red", "green", "blue"], water_fraction=0.3))
    with Catalog(root / "catalog.sqlite") as c:
        c.add_tiles(tiles)
        yield c


def test_a_split_is_a_table_of_its_tiles_with_masks(cat, caplog):
    with caplog.at_level(logging.WARNING):
        table = query_split(cat, {"source": "folder"}, "train")
    assert isinstance(table, TileTable) and table["id"].tolist() == [1, 3, 4]
    assert [t.path for t in table] == [t.path for t in cat.query(split="train") if t.mask_path]
    assert "1 train tiles have no mask" in caplog.text
    assert len(query_split(cat, {}, "test", required=False)) == 0
    with pytest.raises(WorkbenchError, match="no test tiles match the query"):
        query_split(cat, {}, "test")


def test_masks_and_window_sizes_from_a_table_as_from_tiles(cat):
    table = query_split(cat, {}, "train")
    rows = [t for t in cat.query(split="train") if t.mask_path]
    for max_tiles in (None, 2):
        assert np.array_equal(scan_masks(table, 2, max_tiles), scan_masks(rows, 2, max_tiles))
    cfg = config_from_dict({"name": "t", "data": {"window": 64}})
    a, b = eval_dataset(table, cfg, None), eval_dataset(rows, cfg, None)
    assert a.size == b.size == 40 and len(a) == len(b)
