"""The preview PNG: its size, true colour by band name, nodata shown apart, decimated reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rasterio.transform import from_origin

from tests.support import sentinel2 as s2
from workbench.data import geotiff
from workbench.preview import (
    LEGEND_PX,
    PANEL_PX,
    TITLE_PX,
    WIDTH_PX,
    preview_path,
    read_decimated,
    true_colour_bands,
    write_preview,
)

T = from_origin(500_000, 4_650_000, 10, 10)


def scene_and_mask(folder: Path, width: int = 300, height: int = 200) -> tuple[Path, Path]:
    """A 3-band uint16 scene whose bands are named blue, green, red (the file's order), nodata
    in its left columns; reddish land on the left half, bluish water (mask 1) on the right half."""
    img = np.empty((3, height, width), np.uint16)
    img[:, :, :width // 2] = np.array([500, 1000, 2000], np.uint16)[:, None, None]
    img[:, :, width // 2:] = np.array([2000, 1000, 500], np.uint16)[:, None, None]
    img += np.random.default_rng(0).integers(0, 50, img.shape, dtype=np.uint16)
    img[:, :, :min(60, width // 4)] = 0
    scene = geotiff.write(folder / "scene.tif", img, T, "EPSG:32633", nodata=0, band_names=["blue", "green", "red"])
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2:] = 1
    mask[:, :min(60, width // 4)] = 255
    return scene, geotiff.write(folder / "scene_mask.tif", mask, T, "EPSG:32633", nodata=255)


def test_true_colour_bands_by_name():
    assert true_colour_bands(["B02", "B03", "B04", "B08"]) == ["B04", "B03", "B02"]
    assert true_colour_bands(["blue", "green", "red"]) == ["red", "green", "blue"]
    assert true_colour_bands(["B08", "B11", "B12", "B8A"]) == ["B08", "B11", "B12"]   # no RGB: the first three
    assert true_colour_bands(["b1"]) == ["b1"]


def test_preview_size_and_what_it_shows(tmp_path):
    scene, mask = scene_and_mask(tmp_path)
    out = write_preview(scene, mask, preview_path(mask))
    assert out == tmp_path / "scene_mask_preview.png"
    ph = round(200 * PANEL_PX / 300)
    png = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert png.shape == (TITLE_PX + ph + LEGEND_PX, WIDTH_PX, 3)
    gap = (WIDTH_PX - 2 * PANEL_PX) / 3
    y = TITLE_PX + ph // 2

    def at(panel: int, fx: float) -> np.ndarray:
        return png[y, int(gap + panel * (PANEL_PX + gap) + fx * PANEL_PX)]

    nod_left, nod_right = at(0, 0.05), at(1, 0.05)           # the nodata columns: grey in both panels
    for px in (nod_left, nod_right):                         # the checkerboard's light or dark grey
        assert px[0] == px[1] == px[2] and 150 <= px[0] <= 205, px
    land, water = at(0, 0.35), at(0, 0.85)
    assert land[0] > land[2] + 100 and water[2] > water[0] + 100   # true colour: red, green, blue read by name
    over = at(1, 0.85)
    assert (over != water).any() and over[2] > over[0] and (at(1, 0.35) == land).all()  # water tinted, land not
    assert not list(tmp_path.glob(".*"))                     # no temporary file left


def test_reads_are_decimated_and_follow_the_mask_grid(tmp_path):
    scene, mask = scene_and_mask(tmp_path, width=1300, height=900)
    raw, valid, labels, nodata = read_decimated(scene, mask)
    assert raw.shape == (3, 900 // 3, 1300 // 3) and labels.shape == valid.shape == raw.shape[1:]
    assert nodata == 255 and not valid[:, :15].any() and valid[:, 25:].all()
    # a mask on a coarser grid: the scene is warped onto it
    coarse = np.asarray(Image.fromarray(geotiff.read(mask)[0]).resize((650, 450), Image.NEAREST))
    mask2 = geotiff.write(tmp_path / "coarse_mask.tif", coarse, from_origin(500_000, 4_650_000, 20, 20),
                          "EPSG:32633", nodata=255)
    raw2, valid2, labels2, _ = read_decimated(scene, mask2)
    assert raw2.shape == (3, 450 // 2, 650 // 2)
    assert not valid2[:, :10].any() and valid2[:, 20:].all()
    assert abs(float(raw2[0, :, 20:].mean()) - float(raw[0, :, 30:].mean())) < 30


def test_a_sentinel2_scene_shows_its_area(tmp_path):
    g = s2.ground(128)
    scene = s2.write_dn_geotiff(tmp_path / "s2.tif", g)
    labels = np.where(g.valid(), g.water.astype(np.uint8), 255).astype(np.uint8)
    info = geotiff.read_info(scene)
    mask = geotiff.write(tmp_path / "s2_mask.tif", labels, info.affine, info.crs, nodata=255)
    out = write_preview(scene, mask, tmp_path / "p.png", areas_m2={1: 2.5e6})
    assert Image.open(out).size[0] == WIDTH_PX


@pytest.mark.parametrize("shape", [(40, 1000), (1000, 40)])
def test_long_scenes_fit(tmp_path, shape):
    h, w = shape
    scene, mask = scene_and_mask(tmp_path, width=w, height=h)
    size = Image.open(write_preview(scene, mask, tmp_path / "p.png")).size
    assert size[0] == WIDTH_PX and size[1] <= TITLE_PX + PANEL_PX + LEGEND_PX
