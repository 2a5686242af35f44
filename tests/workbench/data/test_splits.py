"""Splits of imported tiles: a function of where a tile is, the same in every import, chip grid and UTM
zone; and the warnings when a split is too small or lacks water to choose a checkpoint on."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
from rasterio.warp import transform

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile
from workbench.data.splits import DEFAULT_BLOCK_M, ground_block, ground_splits, split_warnings

# Chips of 64 px at 40 m: the ground of 256 px Sentinel-2 chips (2.56 km) in a sixteenth of the pixels.
CHIP, RES = 64, 40.0
ORIGIN = (740_000.0, 4_650_000.0)         # UTM 33N near 17.9 E, 42 N: beside zone 34


def chips(folder: Path, n: int, chip: int = CHIP, origin=ORIGIN, crs: str = "EPSG:32633",
          seed0: int = 0) -> list[Path]:
    """``n`` x ``n`` image/mask pairs edge to edge, like chips cut from one scene."""
    folder.mkdir(parents=True, exist_ok=True)
    step = chip * RES
    return [write_pair(folder, f"chip_{r}_{c}", size=chip, res=RES, crs=crs, seed=seed0 + r * n + c,
                       origin=(origin[0] + step * c, origin[1] - step * r))[0]
            for r in range(n) for c in range(n)]


def import_dir(cli, folder: Path, *extra: str) -> tuple[str, str]:
    code, out, err = cli("data", "import", folder, "--no-progress", *extra)
    assert code == 0, err
    return out, err


def by_file(cat: Catalog, folder: Path) -> dict[str, Tile]:
    return {Path(t.path).name: t for t in cat.imported_from(folder)}


def test_blocks_are_squares_on_the_ground_at_every_latitude():
    for lat in (0.3, 42.2, 69.9):
        col, row = ground_block(10.0, lat)
        height = DEFAULT_BLOCK_M / 111_320.0
        width = height / math.cos(math.radians((row + 0.5) * height))
        assert row == math.floor(lat / height) and col == math.floor(10.0 / width)
        east, _ = ground_block(10.0 + width, lat)       # one block width further east: the next column
        assert east == col + 1
        # the width in metres at the row's middle latitude is the height in metres
        assert abs(width * 111_320.0 * math.cos(math.radians((row + 0.5) * height)) - DEFAULT_BLOCK_M) < 1e-6


def test_a_tiles_split_depends_on_its_place_only():
    rng = np.random.default_rng(0)
    points = [(float(x), float(y)) for x, y in zip(rng.uniform(17, 18, 400), rng.uniform(42, 43, 400))]
    whole, blocks, size = ground_splits(points)
    half, _, _ = ground_splits(points[:37])               # another import: a part of the ground
    assert half == whole[:37]
    assert size == DEFAULT_BLOCK_M / 111_320.0
    shares = Counter(whole)
    assert set(shares) == {"train", "val", "test"} and 0.55 < shares["train"] / 400 < 0.85
    by_block: dict = {}
    for b, s in zip(blocks, whole):
        by_block.setdefault(b, set()).add(s)
    assert all(len(s) == 1 for s in by_block.values()) and len(by_block) > 100
    # --block-size (degrees) is an override with its own blocks, again independent of the import
    deg, _, _ = ground_splits(points, block_deg=0.25)
    assert ground_splits(points[200:], block_deg=0.25)[0] == deg[200:] and deg != whole
    # no position: split by the file name alone
    assert ground_splits([None], fallback_keys=["a.tif"])[0] == ground_splits([None, None],
                                                                              fallback_keys=["b", "a.tif"])[0][1:]


def test_same_ground_imported_twice_gets_the_same_split(home, cli):
    """Another chip grid (half-size chips shifted by a quarter chip) and the same chips in the next
    UTM zone: every tile gets the split of the ground block its centre is in, as the first import."""
    chips(home / "a", 8)                                   # 64 chips, 20 km square
    out, _ = import_dir(cli, home / "a")
    cat = Catalog()
    first = by_file(cat, home / "a")
    assert set(Counter(t.split for t in first.values())) == {"train", "val", "test"}, out  # a 64-chip import
    split_of_block = {tuple(t.extra["block"]): t.split for t in first.values()}

    quarter = CHIP * RES / 4
    chips(home / "b", 12, chip=CHIP // 2, origin=(ORIGIN[0] + quarter, ORIGIN[1] - quarter), seed0=500)
    import_dir(cli, home / "b")
    second = by_file(cat, home / "b")
    shared = [t for t in second.values() if tuple(t.extra["block"]) in split_of_block]
    assert len(shared) > 100 and len({t.split for t in shared}) == 3
    assert all(t.split == split_of_block[tuple(t.extra["block"])] for t in shared)

    # the same chips written in UTM 34N (their centres mapped there), another date's pixels
    zone34 = home / "c"
    zone34.mkdir()
    step = CHIP * RES
    for name in first:
        r, c = (int(v) for v in Path(name).stem.split("_")[1:])
        cx, cy = ORIGIN[0] + step * (c + 0.5), ORIGIN[1] - step * (r + 0.5)
        (x,), (y,) = transform("EPSG:32633", "EPSG:32634", [cx], [cy])
        write_pair(zone34, Path(name).stem, size=CHIP, res=RES, crs="EPSG:32634", seed=900 + r * 8 + c,
                   origin=(x - step / 2, y + step / 2))
    import_dir(cli, zone34)
    third = by_file(cat, zone34)
    assert {n: t.split for n, t in third.items()} == {n: t.split for n, t in first.items()}
    assert {t.crs for t in third.values()} != {t.crs for t in first.values()}


def _tile(split: str, wf: float | None, label: str | None = None) -> Tile:
    return Tile(path=f"/x/{split}{wf}{label}.tif", source="folder", split=split, water_fraction=wf, label=label)


def test_split_warnings_name_each_problem():
    good = [_tile(s, wf) for s in ("train", "val", "test") for wf in (0.0, 0.2, 1.0)]
    assert split_warnings(good) == []
    dry_val = [t for t in good if t.split != "val"] + [_tile("val", 0.0) for _ in range(3)]
    (line,) = split_warnings(dry_val)
    assert line.startswith("warning: split val has no tile with water: a run cannot choose a checkpoint or threshold")
    assert "--block-size" in line
    wet_test = [t for t in good if t.split != "test"] + [_tile("test", 1.0) for _ in range(3)]
    (line,) = split_warnings(wet_test)
    assert line.startswith("warning: split test has no tile with land")
    small = [t for t in good if t.split != "train" or t.water_fraction != 1.0]
    (line,) = split_warnings(small)
    assert line.startswith("warning: split train has 2 tile(s) (fewer than 3)")
    labels = [_tile(s, None, lab) for s in ("train", "val", "test") for lab in ("a", "b", "c")]
    assert split_warnings(labels) == []
    no_c = [t for t in labels if not (t.split == "test" and t.label == "c")] + [_tile("test", None, "a")]
    (line,) = split_warnings(no_c)
    assert line.startswith("warning: split test has no tile labelled c")
    # a run's own split names
    assert "split holdout has 0 tile(s)" in split_warnings(good, splits=("train", "holdout", "test"))[0]


def test_an_import_warns_when_a_split_is_of_no_use(home, cli):
    paths = chips(home / "dry", 4)                        # 10 km square, masks all land
    for p in paths:
        info = geotiff.read_info(p)
        geotiff.write(p.with_name(p.stem + "_mask.tif"), np.zeros((CHIP, CHIP), "uint8"), info.affine, info.crs)
    out, err = import_dir(cli, home / "dry")
    lines = err.strip().splitlines()
    splits = Counter(t.split for t in Catalog().query())
    assert all(line.startswith("warning: split ") for line in lines)
    for s in ("train", "val", "test"):
        expected = (f"warning: split {s} has no tile with water" if splits[s] else
                    f"warning: split {s} has 0 tile(s)")
        assert sum(line.startswith(expected) for line in lines) == 1, (s, lines)
    assert import_dir(cli, home / "dry", "--split", "test")[1] == ""   # nothing new, nothing to say
    # given splits are the user's choice: no warning
    chips(home / "given", 1, origin=(100_000.0, 5_000_000.0))
    assert import_dir(cli, home / "given", "--split", "test")[1] == ""
