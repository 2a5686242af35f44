"""Polygons of a class mask: block-wise polygonising equals the whole-mask result, areas add up to
the mask's, holes survive, the written files open in the CRS users expect."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from rasterio.transform import from_origin

from workbench.data import geotiff
from workbench.data.vectors import (
    class_areas_m2,
    ground_areas_m2,
    polygon_format,
    polygonize,
    row_pixel_areas_m2,
    write_mask_polygons,
    write_polygons,
)
from workbench.errors import WorkbenchError

H, W = 200, 300
EDGE = 100                  # the lake at row 100 crosses this block edge with block_rows=50 or 100
PIXEL_M2 = 10.0 * 10.0


def lakes_mask() -> np.ndarray:
    """Two lakes (one with an island, one crossing row EDGE, which has an island too), a 6 px pond,
    a U-shaped lake whose arms meet only in the lowest rows, and a nodata corner."""
    yy, xx = np.mgrid[0:H, 0:W]
    m = np.zeros((H, W), np.uint8)
    d1 = (yy - 50) ** 2 + (xx - 60) ** 2
    m[d1 < 40 ** 2] = 1
    m[d1 < 10 ** 2] = 0                                    # the island
    d2 = (yy - EDGE) ** 2 + (xx - 200) ** 2
    m[d2 < 30 ** 2] = 1
    m[d2 < 8 ** 2] = 0
    m[180:183, 100:102] = 1                                # a 6-pixel pond
    m[120:190, 20:30] = 1                                  # U: two arms ...
    m[120:190, 60:70] = 1
    m[180:190, 20:70] = 1                                  # ... joined at the bottom
    m[:5, :5] = 255
    return m


def write_mask(path: Path, m: np.ndarray, crs: str = "EPSG:32633", transform=None) -> Path:
    return geotiff.write(path, m, transform or from_origin(500_000, 4_650_000, 10, 10), crs, nodata=255)


@pytest.fixture
def mask(tmp_path) -> Path:
    return write_mask(tmp_path / "mask.tif", lakes_mask())


def by_place(geoms) -> list:
    return sorted(geoms, key=lambda g: (round(g.centroid.x, 6), round(g.centroid.y, 6)))


def test_block_edges_do_not_cut_polygons(mask):
    whole = polygonize(mask, block_rows=H)
    assert len(whole) == 4                                   # two lakes, the pond, the U
    for rows in (1, 7, 50, EDGE):
        blocks = polygonize(mask, block_rows=rows)
        assert len(blocks) == len(whole), rows
        for a, b in zip(by_place(whole.geometries()), by_place(blocks.geometries())):
            assert shapely.equals(a, b), rows
        assert sorted(blocks.areas_m2) == sorted(whole.areas_m2)
    # simplified too: the outline does not depend on where the block edges fell
    whole = polygonize(mask, block_rows=H, simplify_m=25.0)
    for rows in (1, 7, 50, EDGE):
        blocks = polygonize(mask, block_rows=rows, simplify_m=25.0)
        for a, b in zip(by_place(whole.geometries()), by_place(blocks.geometries())):
            assert shapely.equals(a, b), rows


def test_areas_add_up_to_the_mask_water_area_and_islands_stay_holes(mask):
    m = lakes_mask()
    polys = polygonize(mask, block_rows=EDGE)
    water = int((m == 1).sum()) * PIXEL_M2
    assert sum(polys.areas_m2) == water                      # exact: a projected CRS, no simplify
    assert class_areas_m2(mask) == {0: float((m == 0).sum()) * PIXEL_M2, 1: water}
    geoms = polys.geometries()
    holes = sorted(len(g.interiors) for g in geoms)
    assert holes == [0, 0, 1, 1]
    crossing = [g for g in geoms if g.bounds[1] < 4_650_000 - 10 * EDGE < g.bounds[3]]
    assert len(crossing) == 1 and len(crossing[0].interiors) == 1
    island = shapely.Polygon(crossing[0].interiors[0])
    assert island.area == int(((np.mgrid[0:H, 0:W][0] - EDGE) ** 2 + (np.mgrid[0:H, 0:W][1] - 200) ** 2 < 64).sum()) \
        * PIXEL_M2


def test_simplify_stays_within_its_tolerance_of_the_pixel_area(mask):
    exact = polygonize(mask)
    simple = polygonize(mask, simplify_m=15.0)
    assert len(simple) == len(exact)
    vertices = lambda p: int(shapely.get_num_coordinates(p.geometries()).sum())  # noqa: E731
    assert vertices(simple) < vertices(exact) / 2
    perimeter = float(shapely.length(exact.geometries()).sum())
    change = abs(sum(simple.areas_m2) - sum(exact.areas_m2))
    assert 0 < change <= perimeter * 15.0
    assert sorted(len(g.interiors) for g in simple.geometries()) == [0, 0, 1, 1]
    assert all(g.is_valid for g in simple.geometries())


def test_min_area_drops_small_lakes(mask):
    polys = polygonize(mask, min_area_m2=1000.0)             # the pond is 600 m^2
    assert len(polys) == 3 and polys.dropped == 1
    assert min(polys.areas_m2) > 1000.0


def test_classes_are_outlined_apart(tmp_path):
    m = np.zeros((40, 60), np.uint8)
    m[5:20, 5:30] = 1
    m[5:20, 30:50] = 2                                       # touches class 1 along a whole side
    m[25:35, 10:20] = 2
    path = write_mask(tmp_path / "classes.tif", m)
    polys = polygonize(path, [1, 2], block_rows=9)
    assert sorted(polys.classes) == [1, 2, 2]
    got = {c: 0.0 for c in (1, 2)}
    for c, a in zip(polys.classes, polys.areas_m2):
        got[c] += a
    assert got == {1: 15 * 25 * PIXEL_M2, 2: (15 * 20 + 100) * PIXEL_M2}
    assert polygonize(path, [2]).classes == [2, 2]


def test_geographic_areas_are_on_the_ellipsoid(tmp_path):
    # the whole WGS 84 ellipsoid: 510,065,621.7 km^2
    assert ground_areas_m2([shapely.box(-180, -90, 180, 90)], "EPSG:4326")[0] == pytest.approx(5.100656217e14,
                                                                                                rel=1e-9)
    # a small cell at 45 N: meridian radius x prime-vertical radius x cos(lat) x dlat x dlon
    a, f = 6_378_137.0, 1 / 298.257223563
    e2, phi, d = f * (2 - f), math.radians(45), math.radians(0.001)
    m_r = a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5
    n_r = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    cell = shapely.box(10, 45 - 0.0005, 10.001, 45 + 0.0005)
    assert ground_areas_m2([cell], "EPSG:4326")[0] == pytest.approx(m_r * n_r * math.cos(phi) * d * d, rel=1e-8)
    # a mask in lon/lat: the polygons add up to the per-row pixel areas
    m = np.zeros((60, 80), np.uint8)
    m[10:50, 10:70] = 1
    m[20:30, 20:30] = 0
    t = from_origin(10.0, 46.0, 0.01, 0.01)
    path = write_mask(tmp_path / "lonlat.tif", m, "EPSG:4326", t)
    polys = polygonize(path, block_rows=7)
    rows = row_pixel_areas_m2(t, "EPSG:4326", 0, 60)
    assert rows[0] < rows[-1]                                # pixels grow towards the equator
    assert sum(polys.areas_m2) == pytest.approx(float(((m == 1).sum(axis=1) * rows).sum()), rel=1e-9)
    assert class_areas_m2(path)[1] == pytest.approx(sum(polys.areas_m2), rel=1e-9)


def test_gpkg_keeps_the_scene_crs_and_geojson_is_lonlat(mask, tmp_path):
    res = write_mask_polygons(mask, tmp_path / "lakes.gpkg", min_area_m2=1000.0)
    assert res["features"] == 3 and res["crs"] == "EPSG:32633" and res["dropped"] == 1
    info = pyogrio.read_info(tmp_path / "lakes.gpkg")
    assert info["crs"] == "EPSG:32633" and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class", "area_m2"]
    _, _, geoms, fields = pyogrio.raw.read(tmp_path / "lakes.gpkg")
    assert sorted(fields[1]) == sorted(res_areas := polygonize(mask, min_area_m2=1000.0).areas_m2)
    assert sum(res_areas) == res["area_m2"][1]
    assert sorted(len(g.interiors) for g in shapely.from_wkb(geoms)) == [0, 1, 1]

    res = write_mask_polygons(mask, tmp_path / "lakes.geojson")
    assert res["crs"] == "EPSG:4326" and res["features"] == 4
    assert pyogrio.read_info(tmp_path / "lakes.geojson")["crs"] == "EPSG:4326"
    _, _, geoms, fields = pyogrio.raw.read(tmp_path / "lakes.geojson")
    w, s, e, n = geotiff.read_info(mask).lonlat_bounds()
    for g in shapely.from_wkb(geoms):
        x0, y0, x1, y1 = g.bounds
        assert w - 1e-6 <= x0 < x1 <= e + 1e-6 and s - 1e-6 <= y0 < y1 <= n + 1e-6   # lon, lat in that order
        assert g.exterior.is_ccw                                                      # RFC 7946
    assert sorted(fields[1]) == sorted(polygonize(mask).areas_m2)      # areas from the scene's CRS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lakes.geojson", "lakes.gpkg", "mask.tif"]


def test_empty_mask_writes_an_empty_layer(tmp_path):
    path = write_mask(tmp_path / "dry.tif", np.zeros((20, 30), np.uint8))
    res = write_mask_polygons(path, tmp_path / "dry.gpkg")
    assert res["features"] == 0 and pyogrio.read_info(tmp_path / "dry.gpkg")["features"] == 0


@pytest.mark.parametrize("name", ["lakes.shp", "lakes", "lakes.json", "lakes.gpkg.zip"])
def test_unknown_extension_is_one_line(name):
    with pytest.raises(WorkbenchError) as e:
        polygon_format(name)
    assert name in str(e.value) and ".gpkg" in str(e.value) and "\n" not in str(e.value)


def test_bad_masks_and_values_are_one_line(tmp_path, mask):
    no_crs = geotiff.write(tmp_path / "nocrs.tif", np.ones((8, 8), np.uint8), from_origin(0, 8, 1, 1), None)
    with pytest.raises(WorkbenchError, match="no CRS"):
        polygonize(no_crs)
    probs = geotiff.write(tmp_path / "p.tif", np.ones((8, 8), np.float32), from_origin(0, 8, 1, 1), "EPSG:32633")
    with pytest.raises(WorkbenchError, match="not a class mask"):
        polygonize(probs)
    with pytest.raises(WorkbenchError, match="--min-area"):
        polygonize(mask, min_area_m2=-1)
    with pytest.raises(WorkbenchError, match="--simplify"):
        polygonize(mask, simplify_m=float("nan"))
    with pytest.raises(WorkbenchError, match="no such file"):
        polygonize(tmp_path / "missing.tif")


def test_a_failed_write_is_one_line(tmp_path, mask):
    polys = polygonize(mask)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(WorkbenchError, match="could not be written") as e:
        write_polygons(polys, tmp_path / "afile" / "lakes.gpkg")
    assert "\n" not in str(e.value)
