"""Block mosaics (``data.context: block``): the tiles of one split block stitched into one GeoTIFF
on their common pixel grid, windows larger than a tile drawn from them, and never from
another split's blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.blocks import MASK_NODATA, block_mosaics
from workbench.data.catalog import Catalog, Tile
from workbench.errors import WorkbenchError

SIZE, RES, X0, Y0 = 32, 10.0, 500_000.0, 4_650_000.0
# Blocks of 2 x 2 tiles: (split, block row, block col).
BLOCKS = [("train", 0, 0), ("train", 0, 1), ("val", 1, 0), ("test", 1, 1)]


def add_grid(cat: Catalog, folder: Path, blocks=BLOCKS, skip=()) -> list[Tile]:
    """2 x 2 tiles of SIZE px per block on one grid (tile (r, c) at X0 + c * SIZE * RES, Y0 - r * ...)."""
    tiles = []
    for split, br, bc in blocks:
        for i in range(2):
            for j in range(2):
                r, c = br * 2 + i, bc * 2 + j
                if (r, c) in skip:
                    continue
                img, msk = write_pair(folder, f"t{r}_{c}", size=SIZE, seed=r * 10 + c,
                                      origin=(X0 + c * SIZE * RES, Y0 - r * SIZE * RES), res=RES)
                tiles.append(Tile(path=str(img), mask_path=str(msk), source="folder", split=split,
                                  width=SIZE, height=SIZE, bands=["red", "green", "blue"],
                                  extra={"block": [br, bc], "tile_row": r, "tile_col": c}))
    cat.add_tiles(tiles)
    return cat.query()


@pytest.fixture
def cat(tmp_path):
    with Catalog(tmp_path / "data" / "catalog.sqlite") as c:
        add_grid(c, tmp_path / "tiles")
        yield c


def test_mosaic_has_the_tiles_pixels_and_georeference(cat):
    one = [t for t in cat.query(split="train") if t.extra["tile_row"] == 1 and t.extra["tile_col"] == 3]
    blocks = block_mosaics(cat, one)
    assert len(blocks) == 1
    b = blocks[0]
    assert Path(b.path).parent == cat.root / ".blocks"
    assert b.block == (0, 1) and b.split == "train" and (b.height, b.width) == (2 * SIZE, 2 * SIZE)
    assert len(b.tiles) == 4 and b.picked == (one[0].id,) and b.picked_pixels == SIZE * SIZE
    info, minfo = geotiff.read_info(b.path), geotiff.read_info(b.mask_path)
    assert geotiff.same_grid(info, minfo) is None
    assert info.affine.c == X0 + 2 * SIZE * RES and info.affine.f == Y0 and info.affine.a == RES
    img, msk = geotiff.read(b.path), geotiff.read(b.mask_path)[0]
    for t in cat.query(ids=list(b.tiles)):
        r, c = t.extra["tile_row"] * SIZE, (t.extra["tile_col"] - 2) * SIZE
        assert np.array_equal(img[:, r:r + SIZE, c:c + SIZE], geotiff.read(t.path))
        assert np.array_equal(msk[r:r + SIZE, c:c + SIZE], geotiff.read(t.mask_path)[0])
    # An unchanged block is reused, not rewritten.
    mtime = Path(b.path).stat().st_mtime_ns
    again = block_mosaics(cat, cat.query(split="train"))
    assert [x.block for x in again] == [(0, 0), (0, 1)]
    assert again[1].path == b.path and Path(b.path).stat().st_mtime_ns == mtime
    assert again[1].picked_pixels == 4 * SIZE * SIZE


def test_holes_and_padding_are_mask_nodata(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as c:
        tiles = add_grid(c, tmp_path / "tiles", blocks=[("train", 0, 0)], skip={(1, 1)})
        (b,) = block_mosaics(c, tiles, min_size=80)
    assert (b.height, b.width) == (80, 80) and len(b.tiles) == 3
    msk = geotiff.read(b.mask_path)[0]
    assert (msk[SIZE:, SIZE:] == MASK_NODATA).all() and (msk[:, 2 * SIZE:] == MASK_NODATA).all()
    assert (msk[:SIZE, :2 * SIZE] != MASK_NODATA).all()
    assert geotiff.read_info(b.mask_path).nodata == MASK_NODATA


def test_tiles_off_the_grid_are_a_user_error(tmp_path):
    folder = tmp_path / "tiles"
    a = write_pair(folder, "a", size=SIZE, origin=(X0, Y0), res=RES)
    b = write_pair(folder, "b", size=SIZE, origin=(X0 + SIZE * RES + 3.0, Y0), res=RES)  # 0.3 px off
    with Catalog(tmp_path / "catalog.sqlite") as c:
        c.add_tiles([Tile(path=str(p), mask_path=str(m), source="folder", split="train", width=SIZE, height=SIZE,
                          extra={"block": [0, 0]}) for p, m in (a, b)])
        with pytest.raises(WorkbenchError, match="not whole pixels"):
            block_mosaics(c, c.query())


def test_a_tile_without_a_block_is_its_own_block(tmp_path):
    img, msk = write_pair(tmp_path / "tiles", "solo", size=SIZE)
    with Catalog(tmp_path / "catalog.sqlite") as c:
        c.add_tiles([Tile(path=str(img), mask_path=str(msk), source="folder", split="train",
                          width=SIZE, height=SIZE)])
        (b,) = block_mosaics(c, c.query(), min_size=SIZE)
    assert b.block is None and (b.height, b.width) == (SIZE, SIZE)
    assert np.array_equal(geotiff.read(b.path), geotiff.read(img))


def test_random_windows_with_counts_per_tile():
    from workbench.data.samplers import RandomWindows

    s = RandomWindows(16, per_tile=[1, 3, 2]).bind([(32, 32), (64, 64), (16, 16)])
    assert len(s) == 6
    assert s.tiles_of(np.arange(6)).tolist() == [0, 1, 1, 1, 2, 2]
    w = s.all_windows(seed=1)
    assert w.tile.tolist() == [0, 1, 1, 1, 2, 2]
    assert (w.row[w.tile == 2] == 0).all() and (w.row + 16 <= np.array([32, 64, 64, 64, 16, 16])).all()
    with pytest.raises(WorkbenchError):
        RandomWindows(16, per_tile=[1, 2]).bind([(32, 32)] * 3)
    with pytest.raises(WorkbenchError):
        RandomWindows(16, per_tile=[1, 0])


def test_training_windows_come_from_train_blocks_only(cat):
    from tasks.segmentation.config import load_config
    from tasks.segmentation.data import context_of, eval_dataset, train_dataset

    cfg = load_config("water", ["data.context=block", "data.window=48", "data.per_tile=2", "data.where=null",
                                "data.source=folder"])
    train_ids = {t.id for t in cat.query(split="train")}
    sources = context_of(cat, cat.query(split="train"), cfg)
    assert {i for b in sources for i in b.tiles} == train_ids
    ds = train_dataset(sources, cfg, None)
    # Each block: its picked tiles' pixels (4 x 32 x 32) twice over, in 48 px windows -> 4 windows.
    assert len(ds) == 8 and ds.size == 48
    batch = ds.__getitems__(list(range(len(ds))))
    assert batch["image"].shape == (8, 3, 48, 48)
    assert set(ds.paths) == {b.path for b in sources}
    for t in batch["tile"].tolist():
        assert set(sources[t].tiles) <= train_ids
    val = eval_dataset(context_of(cat, cat.query(split="val"), cfg), cfg, None)
    assert val.size == 48 and len(val) == 4  # a 64 px block: 2 x 2 grid windows of 48 px (edge-snapped)


def test_a_split_read_as_a_table_picks_the_same_blocks(cat):
    """What the trainer passes (query_split's TileTable) groups into the blocks Tile rows give."""
    from tasks.segmentation.config import load_config
    from tasks.segmentation.data import context_of, query_split

    cfg = load_config("water", ["data.context=block", "data.window=48", "data.where=null", "data.source=folder"])
    rows = [t for t in cat.query(split="train") if t.mask_path]
    from_rows, from_table = context_of(cat, rows, cfg), context_of(cat, query_split(cat, {}, "train"), cfg)
    assert [(b.path, b.block, list(b.tiles)) for b in from_table] == [(b.path, b.block, list(b.tiles))
                                                                       for b in from_rows]
    assert len(from_table) >= 2


@pytest.mark.slow
def test_train_on_blocks_end_to_end(home, cli, one_torch_thread):
    with Catalog(home / "data" / "catalog.sqlite") as c:
        add_grid(c, home / "in")
    code, out, err = cli("segment", "train", "--source", "folder", "--set", "data.where=null",
                         "--set", "data.context=block", "--set", "data.window=48", "--set", "train.max_steps=2",
                         "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.eval_batch_size=8")
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    blocks = json.loads((run / "blocks.json").read_text())
    assert [len(blocks[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tiles"] == 4 and 0.0 <= metrics["mean_iou"] <= 1.0


def test_a_mosaic_keeps_its_tiles_radiometry(tmp_path):
    """Chips of an offset product declare scale 0.0001 / offset -0.1: their mosaic must too, or
    it would be read 0.1 too bright."""
    from tests.support import sentinel2 as s2
    from workbench.data.catalog import Catalog, Tile
    from workbench.data.radiometry import of_tile

    g = s2.ground(64, seed=1)
    dn = g.dn(s2.TEN_M, 1000)
    cat = Catalog(tmp_path / "catalog.sqlite")
    tiles = []
    for i, c in enumerate((0, 32)):
        t = g.transform * g.transform.translation(c, 0)
        img = geotiff.write(tmp_path / f"c{i}.tif", dn[:, :, c:c + 32], t, g.crs, nodata=0,
                            band_names=list(s2.TEN_M), scales=[1e-4] * 4, offsets=[-0.1] * 4)
        m = geotiff.write(tmp_path / f"c{i}_mask.tif", g.water[:, c:c + 32], t, g.crs)
        tiles.append(Tile(path=str(img), mask_path=str(m), source="folder", split="train",
                          extra={"block": [0, 0]}))
    cat.add_tiles(tiles)
    (block,) = block_mosaics(cat, cat.query())
    assert [r.affine() for r in of_tile(block)] == [(pytest.approx(1e-4), pytest.approx(-0.1))] * 4
    cat.close()


def test_a_catalog_in_a_read_only_folder_gets_its_mosaics_in_the_user_cache(cat, tmp_path, monkeypatch):
    """A copy of the data on read-only shared storage: mosaics already in its .blocks are read
    from there, a new one goes to the user's cache folder (never into the catalog's folder)."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    first = [t for t in cat.query(split="train") if t.extra["tile_row"] == 1 and t.extra["tile_col"] == 3]
    (built,) = block_mosaics(cat, first)               # written while the folder was writable
    others = [t for t in cat.query(split="train") if t.extra["tile_col"] < 2][:1]
    folder = cat.root / ".blocks"
    listing = sorted(p.name for p in folder.iterdir())
    for p in (folder, cat.root):
        p.chmod(0o555)
    try:
        (again,) = block_mosaics(cat, first)
        (new,) = block_mosaics(cat, others)
    finally:
        for p in (cat.root, folder):
            p.chmod(0o755)
    assert again.path == built.path and sorted(p.name for p in folder.iterdir()) == listing
    assert Path(new.path).parent.parent == tmp_path / "cache" / "blocks" and Path(new.mask_path).is_file()
    assert geotiff.read_info(new.path).height == new.height
