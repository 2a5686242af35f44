"""Earth Engine source, offline: the real ``ee`` client builds and serialises every graph
(initialised with the algorithm list earthengine-api ships, as its own tests do), and a
test double at the ``ee.data`` boundary (``tests/ee_fakes.py``) answers with real GeoTIFF
bytes and injects faults. No credentials, no network."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.ee_fakes import COLLECTION, FakeEarthEngine, constant, function_names, graph_tree, invocations
from tests.support.runner import help_in_a_fresh_process
from workbench.data import geotiff
from workbench.data.catalog import Catalog
from workbench.data.sources import earthengine as eng
from workbench.data.sources.earthengine import Area, ExportSpec, RetryPolicy, build_export, export_direct
from workbench.data.splits import SPLITS
from workbench.errors import WorkbenchError

HERE = Path(__file__).resolve().parent
SCENE = "20230106T032111_20230106T032930_T48QWJ"
POINT = ("--point", "105.80", "21.03", "--radius", "1000")
DATES = ("--start", "2023-01-01", "--end", "2023-01-31")


@pytest.fixture
def fake(monkeypatch):
    for name in ("WORKBENCH_EE_KEY_FILE", "WORKBENCH_EE_PROJECT", "EE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    f = FakeEarthEngine().install(monkeypatch.setattr)
    yield f
    import ee

    ee.Reset()


@pytest.fixture
def offline(fake):
    """The real client, initialised offline: graphs can be built and serialised."""
    fake.initialize_offline()
    return fake


def spec_of(**kw) -> ExportSpec:
    kw.setdefault("area", Area.from_point(105.80, 21.03, 1000))
    kw.setdefault("start", "2023-01-01")
    kw.setdefault("end", "2023-01-31")
    kw.setdefault("chip_size", 64)
    return ExportSpec(**kw)


def export_args(out: Path, *extra: str) -> list[str]:
    return ["ee", "export", *POINT, *DATES, "--out", str(out), "--chip-size", "64", "--project", "test-project",
            "--no-progress", *extra]


def no_sleep(policy_sleeps: list) -> RetryPolicy:
    return RetryPolicy(sleep=policy_sleeps.append, rng=random.Random(0))


# ---- the serialised graphs --------------------------------------------------------------------------

def test_collection_filters_bands_and_region(offline):
    spec = spec_of(max_cloud=15)
    g = build_export(spec, SCENE)
    col = graph_tree(g.collection)
    assert constant(invocations(col, "ImageCollection.load")[0]["arguments"]["id"]) == COLLECTION
    # area: the point buffered by the radius
    (inter,) = invocations(col, "Filter.intersects")
    assert constant(invocations(inter, "Geometry.buffer")[0]["arguments"]["distance"]) == 1000
    assert constant(invocations(inter, "GeometryConstructors.Point")[0]["arguments"]["coordinates"]) == [105.8, 21.03]
    # dates: inclusive end -> filterDate(start, end + 1 day)
    (dr,) = invocations(col, "DateRange")
    assert constant(dr["arguments"]["start"]) == "2023-01-01" and constant(dr["arguments"]["end"]) == "2023-02-01"
    assert constant(invocations(col, "Filter.dateRangeContains")[0]["arguments"]["rightField"]) == "system:time_start"
    # CLOUDY_PIXEL_PERCENTAGE <= 15 is not(greaterThan 15)
    (nt,) = invocations(col, "Filter.not")
    (gt,) = invocations(nt, "Filter.greaterThan")
    assert constant(gt["arguments"]["leftField"]) == "CLOUDY_PIXEL_PERCENTAGE"
    assert constant(gt["arguments"]["rightValue"]) == 15
    # the scene, its bands, no data -> 0, uint16
    img = graph_tree(g.image)
    assert img["functionInvocationValue"]["functionName"] == "Image.toUint16"
    assert [constant(i["arguments"]["id"]) for i in invocations(img, "Image.load")] == [f"{COLLECTION}/{SCENE}"]
    assert [constant(i["arguments"]["bandSelectors"]) for i in invocations(img, "Image.select")] == [
        ["B2", "B3", "B4", "B8"]]
    (unmask,) = invocations(img, "Image.unmask")
    assert constant(unmask["arguments"]["value"]) == 0 and constant(unmask["arguments"]["sameFootprint"]) is False
    assert "Image.remap" not in function_names(img)           # no cloud mask unless asked


def test_bbox_and_geojson_regions(offline, tmp_path):
    g = build_export(spec_of(area=Area.from_bbox(105.7, 20.9, 105.9, 21.1)), SCENE)
    (rect,) = invocations(graph_tree(g.region), "GeometryConstructors.Rectangle")
    assert constant(rect["arguments"]["coordinates"]) == [105.7, 20.9, 105.9, 21.1]
    assert constant(rect["arguments"]["geodesic"]) is False
    path = tmp_path / "aoi.geojson"
    ring = [[105.7, 20.9], [105.9, 20.9], [105.8, 21.1], [105.7, 20.9]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    g = build_export(spec_of(area=Area.from_geojson(path), composite="median"))
    (poly,) = invocations(graph_tree(g.region), "GeometryConstructors.Polygon")
    assert constant(poly["arguments"]["coordinates"]) == [ring]
    assert Area.from_geojson(path).crs == "EPSG:32648"


def test_cloud_mask_masks_the_scl_classes(offline):
    img = graph_tree(build_export(spec_of(cloud_mask=True), SCENE).image)
    (remap,) = invocations(img, "Image.remap")
    assert constant(remap["arguments"]["from"]) == [3, 8, 9, 10]
    assert constant(remap["arguments"]["to"]) == [0, 0, 0, 0]
    assert constant(remap["arguments"]["defaultValue"]) == 1
    assert constant(invocations(remap, "Image.select")[0]["arguments"]["bandSelectors"]) == ["SCL"]
    assert invocations(img, "Image.updateMask")
    # the median composite maps the same mask over the collection, then reduces
    med = graph_tree(build_export(spec_of(cloud_mask=True, composite="median", cloud_classes=(8, 9))).image)
    assert {"Collection.map", "reduce.median"} <= function_names(med)
    assert constant(invocations(med, "Image.remap")[0]["arguments"]["from"]) == [8, 9]


@pytest.mark.parametrize("water", ["hansen", "jrc", "dynamicworld"])
def test_water_mask_graph_of_each_source(offline, water):
    spec = spec_of(water=water, jrc_threshold=70)
    mask = graph_tree(build_export(spec, SCENE).mask)
    assert mask["functionInvocationValue"]["functionName"] == "Image.toUint8"
    assert constant(invocations(mask, "Image.rename")[0]["arguments"]["names"]) == ["water"]
    (where,) = invocations(mask, "Image.where")
    assert constant(where["arguments"]["value"]) == 255           # no valid image pixel -> unknown
    (test,) = invocations(where["arguments"]["test"], "Image.not")      # where the image is not valid
    assert invocations(test, "Reducer.min") and invocations(test, "Image.mask")
    loads = {constant(i["arguments"]["id"]) for i in invocations(mask, "Image.load")}
    if water == "hansen":
        assert loads >= {eng.HANSEN_ID}
        (eq,) = invocations(mask, "Image.eq")
        assert constant(eq["arguments"]["image2"]) == 2
        assert constant(invocations(eq, "Image.select")[0]["arguments"]["bandSelectors"]) == ["datamask"]
        assert constant(invocations(mask, "Image.neq")[0]["arguments"]["image2"]) == 0   # 0 = no data
    elif water == "jrc":
        assert loads >= {eng.JRC_ID}
        (gt,) = invocations(mask, "Image.gt")
        assert constant(gt["arguments"]["image2"]) == 70
        assert constant(invocations(gt, "Image.select")[0]["arguments"]["bandSelectors"]) == ["occurrence"]
    else:
        cols = [constant(i["arguments"]["id"]) for i in invocations(mask, "ImageCollection.load")]
        assert eng.DYNAMIC_WORLD_ID in cols
        (eq,) = invocations(mask, "Image.eq")
        assert constant(eq["arguments"]["image2"]) == 0
        (mode,) = invocations(eq, "reduce.mode")
        assert constant(invocations(mode, "Image.select")[0]["arguments"]["bandSelectors"]) == ["label"]
        (dr,) = invocations(mode, "DateRange")                   # the same dates as the scenes
        assert constant(dr["arguments"]["start"]) == "2023-01-01" and constant(dr["arguments"]["end"]) == "2023-02-01"
    others = {"hansen": eng.HANSEN_ID, "jrc": eng.JRC_ID} if water == "dynamicworld" else {}
    assert not loads & set(others.values())


def test_scene_list_query(offline):
    from workbench.data.sources.ee_graph import scenes_query

    tree = graph_tree(scenes_query(spec_of(max_scenes=7)))
    (rc,) = invocations(tree, "Collection.reduceColumns")
    assert constant(rc["arguments"]["selectors"]) == ["system:index", "system:time_start", "CLOUDY_PIXEL_PERCENTAGE",
                                                      "system:footprint"]
    limits = [i for i in invocations(tree, "Collection.limit") if "limit" in i["arguments"]]
    assert constant(limits[0]["arguments"]["limit"]) == 7
    assert constant(limits[0]["arguments"]["key"]) == "CLOUDY_PIXEL_PERCENTAGE"


# ---- areas, grids, validation ---------------------------------------------------------------------

def test_utm_zone_and_chip_grid():
    from workbench.data.sources.ee_area import plan_chips, utm_epsg

    assert utm_epsg(105.8, 21.03) == 32648 and utm_epsg(18.4, -33.9) == 32734 and utm_epsg(-0.1, 51.5) == 32630
    assert utm_epsg(180.0, 1.0) == 32660 and utm_epsg(-180.0, -1.0) == 32701
    plan = plan_chips(Area.from_point(18.42, -33.92, 900), 64)
    assert plan.crs == "EPSG:32734" and len({c.id for c in plan.chips}) == len(plan.chips)
    for c in plan.chips:
        g = c.grid()
        assert g["crsCode"] == "EPSG:32734" and g["dimensions"] == {"width": 64, "height": 64}
        assert g["affineTransform"]["scaleX"] == 10 and g["affineTransform"]["scaleY"] == -10
        assert g["affineTransform"]["translateX"] % 640 == 0 and g["affineTransform"]["translateY"] % 640 == 0
    # the chips cover the circle: its centre and four points on it lie in some chip
    from rasterio.warp import transform

    lon, lat = 18.42, -33.92
    xs, ys = transform("EPSG:4326", "EPSG:32734", [lon], [lat])
    for dx, dy in ((0, 0), (899, 0), (-899, 0), (0, 899), (0, -899)):
        x, y = xs[0] + dx, ys[0] + dy
        assert any(c.bounds[0] <= x < c.bounds[2] and c.bounds[1] <= y < c.bounds[3] for c in plan.chips)
    # the same ground gives the same chip ids in another export
    other = plan_chips(Area.from_point(18.4205, -33.9195, 300), 64)
    assert {c.id for c in other.chips} <= {c.id for c in plan.chips}


def _one_line_error(cli, *args) -> str:
    code, out, err = cli(*args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error:"), err
    return lines[0]


@pytest.mark.parametrize("case, expect", [
    ("notjson", "not valid JSON"), ("point", "--point"), ("projected", "lon/lat"), ("missing", "no such file"),
    ("bbox_we", "W < E"), ("bbox_range", "W < E"), ("start_after_end", "after --end"),
    ("impossible_date", "not a calendar date"), ("date_format", "YYYY-MM-DD"), ("band", "unknown Sentinel-2 band"),
    ("water", "unknown water source"), ("radius0", "--radius"), ("radius_neg", "--radius"),
    ("chip0", "--chip-size"), ("chip_neg", "--chip-size"), ("composite", "--composite"),
    ("cloud", "--max-cloud"), ("no_radius", "needs --radius"), ("workers", "--workers")])
def test_bad_input_is_one_line_exit_2(cli, home, case, expect):
    gj = home / "aoi.geojson"
    base = ["ee", "export", "--out", str(home / "out")]
    area = ["--geojson", str(gj)]
    dates = list(DATES)
    extra: list[str] = []
    if case == "notjson":
        gj.write_text("{not json")
    elif case == "point":
        gj.write_text(json.dumps({"type": "Point", "coordinates": [105.8, 21.0]}))
    elif case == "projected":
        gj.write_text(json.dumps({"type": "Polygon", "coordinates": [[[500000, 4e6], [501000, 4e6],
                                                                      [501000, 4.001e6], [500000, 4e6]]]}))
    elif case == "missing":
        area = ["--geojson", str(home / "nope.geojson")]
    elif case == "bbox_we":
        area = ["--bbox", "106", "20", "105", "21"]
    elif case == "bbox_range":
        area = ["--bbox", "-200", "20", "105", "21"]
    else:
        area = list(POINT)
        extra = {"start_after_end": ["--start", "2023-03-01", "--end", "2023-01-01"],
                 "impossible_date": ["--start", "2023-02-30", "--end", "2023-03-01"],
                 "date_format": ["--start", "2023/01/01", "--end", "2023-03-01"],
                 "band": ["--bands", "B2", "B13"], "water": ["--water", "osm"],
                 "radius0": [], "radius_neg": [], "chip0": ["--chip-size", "0"], "chip_neg": ["--chip-size", "-3"],
                 "composite": ["--composite", "mean"], "cloud": ["--max-cloud", "150"], "no_radius": [],
                 "workers": ["--workers", "0"]}[case]
        if case in ("start_after_end", "impossible_date", "date_format"):
            dates = []
        if case == "radius0":
            area = ["--point", "105.8", "21.0", "--radius", "0"]
        elif case == "radius_neg":
            area = ["--point", "105.8", "21.0", "--radius", "-5"]
        elif case == "no_radius":
            area = ["--point", "105.8", "21.0"]
    line = _one_line_error(cli, *base, *area, *dates, *extra)
    assert expect in line


def test_help_does_not_import_ee_rasterio_or_numpy():
    out = help_in_a_fresh_process([["--help"], ["ee", "--help"], ["ee", "export", "--help"],
                                   ["ee", "status", "--help"]], ("ee", "rasterio", "numpy", "torch"))
    assert out.returncode == 0, out.stderr
    assert "workbench ee export --point" in out.stdout


def test_dry_run_needs_no_credentials(cli, home):
    code, out, err = cli("ee", "export", "--bbox", "105.7", "20.9", "105.75", "20.95", *DATES, "--out",
                         str(home / "x"), "--dry-run")
    assert code == 0, err
    assert "EPSG:32648" in out and "chip(s) of 256 px at 10 m" in out
    assert not (home / "x").exists()


# ---- transport: retries, classification -----------------------------------------------------------

def test_transient_classification(offline):
    import ee

    from tests.support.ee_fakes import _raise_like_the_client
    from workbench.data.sources.ee_transport import TransientError, transient_reason

    def caught(status):
        try:
            _raise_like_the_client(status, "x")
        except ee.EEException as exc:
            return exc

    assert transient_reason(caught(429)) == "HTTP 429"
    assert transient_reason(caught(503)) == "HTTP 503"
    assert transient_reason(caught(400)) is None
    assert transient_reason(caught(403)) is None
    assert transient_reason(TimeoutError("The read operation timed out")) == "timeout"
    assert transient_reason(ConnectionResetError()) is not None
    assert transient_reason(TransientError("incomplete GeoTIFF")) is not None
    assert transient_reason(ee.EEException("Too many concurrent aggregations.")) is not None
    assert transient_reason(ee.EEException("Image.load: Image asset 'x' not found.")) is None


def test_retries_back_off_with_growing_delays(fake, home):
    fake.faults = ["429", "500", "timeout", "truncated"]       # the first request fails four times
    sleeps: list[float] = []
    with Catalog() as cat:
        r = export_direct(spec_of(), home / "out", cat, workers=1, policy=no_sleep(sleeps), project="p")
        assert not r.failed and r.planned == len(r.added) == cat.count()
    assert [c["fault"] for c in fake.pixel_calls[:5]] == ["429", "500", "timeout", "truncated", None]
    assert len(fake.pixel_calls) == 2 * r.planned + 4
    assert len(sleeps) == 4 and all(a < b for a, b in zip(sleeps, sleeps[1:]))
    for k, s in enumerate(sleeps):                             # base 2 s, doubling, jitter <= +50 %
        assert 2.0 * 2 ** k <= s < 1.5 * 2.0 * 2 ** k
    log = (home / "out" / "export.log").read_text()
    for reason in ("HTTP 429", "HTTP 500", "timeout", "incomplete GeoTIFF"):
        assert reason in log
    assert not list((home / "out").rglob(".*.download-*"))


def test_bounded_attempts_then_a_rerun_fetches_only_the_missing_chip(fake, home, cli, monkeypatch):
    import workbench.data.sources.ee_transport as transport

    sleeps: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", sleeps.append)
    victim = {}

    def always_503(req):
        if req["kind"] == "image":
            victim.setdefault("x", req["grid"]["affineTransform"]["translateX"])
            victim.setdefault("y", req["grid"]["affineTransform"]["translateY"])
            at = req["grid"]["affineTransform"]
            if (at["translateX"], at["translateY"]) == (victim["x"], victim["y"]):
                return "503"
        return None

    fake.fault_for = always_503
    code, out, err = cli(*export_args(home / "out", "--retries", "3", "--workers", "2", "--composite", "median"))
    assert code == 1, err
    assert "gave up after 3 attempts (HTTP 503)" in err and "run the same command again" in err
    failing = [c for c in fake.pixel_calls if c["fault"] == "503"]
    assert len(failing) == 3 and len(sleeps) == 2 and sleeps[0] < sleeps[1]
    with Catalog() as cat:
        before = cat.count()
    fake.fault_for = None
    n = len(fake.pixel_calls)
    code, out, err = cli(*export_args(home / "out", "--retries", "3", "--composite", "median"))
    assert code == 0, err
    assert len(fake.pixel_calls) - n == 2                       # one chip: its image and its mask
    with Catalog() as cat:
        assert cat.count() == before + 1


def test_permanent_errors_are_not_retried(fake, home):
    fake.faults = ["400", "fatal"]
    sleeps: list[float] = []
    with Catalog() as cat:
        r = export_direct(spec_of(composite="median"), home / "out", cat, workers=1, policy=no_sleep(sleeps),
                          project="p")
    assert sleeps == [] and len(r.failed) == 2 and len(r.added) == r.planned - 2
    errors = " | ".join(why for _, why in r.failed)
    assert "Pattern 'B99' did not match" in errors and "not found" in errors
    # every chip refused: stop after a few instead of hammering the server
    fake.fault_for = lambda req: "400"
    with Catalog(home / "other.sqlite") as cat, pytest.raises(WorkbenchError, match="in a row"):
        export_direct(spec_of(composite="median"), home / "out2", cat, workers=1, policy=no_sleep(sleeps), project="p")
    assert len(fake.pixel_calls) - (2 * (r.planned - 2) + 2) <= eng.ABORT_AFTER_FAILURES + 3   # + chips in flight


# ---- exports into the catalog ----------------------------------------------------------------------

def _check_consistent(cat: Catalog, out: Path, planned: int) -> list:
    """Every planned chip once, files and rows agree, nothing half-written left behind."""
    tiles = cat.query(source="earthengine")
    paths = [t.path for t in tiles]
    assert len(paths) == len(set(paths)) == planned
    for t in tiles:
        assert Path(t.path).is_file() and Path(t.mask_path).is_file()
        info = geotiff.read_info(t.path, verify=True)
        geotiff.require_same_grid(info, geotiff.read_info(t.mask_path, verify=True))
    on_disk = {str(p.resolve()) for p in out.rglob("*.tif") if not p.stem.endswith("_mask")}
    assert on_disk == {str(Path(p).resolve()) for p in paths}
    assert not list(out.rglob(".*.download-*"))
    return tiles


def test_per_scene_export_catalog_rows(fake, home, cli):
    code, out, err = cli(*export_args(home / "out", "--workers", "3"))
    assert code == 0, err
    scenes = {s.index: s for s in fake.scenes}
    with Catalog() as cat:
        tiles = _check_consistent(cat, home / "out", len(cat.query()))
    by_scene: dict[str, list] = {}
    for t in tiles:
        by_scene.setdefault(t.scene_id, []).append(t)
    assert set(by_scene) == set(scenes)
    full = len(by_scene[fake.scenes[0].index])
    assert len(by_scene[fake.scenes[2].index]) == full               # no footprint: every chip
    west = by_scene[fake.scenes[1].index]                             # footprint ends at 105.80 E
    assert 0 < len(west) < full and all(t.west < 105.80 for t in west)
    expected_dates = {fake.scenes[0].index: "2023-01-06", fake.scenes[1].index: "2023-01-16",
                      fake.scenes[2].index: "2023-01-26"}
    split_of: dict[str, str] = {}
    for t in tiles:
        assert t.source == "earthengine" and t.gsd == 10 and t.crs == "EPSG:32648"
        assert (t.width, t.height) == (64, 64) and t.bands == ["B2", "B3", "B4", "B8"]
        assert t.date == expected_dates[t.scene_id]
        assert t.cloud_cover == pytest.approx(scenes[t.scene_id].cloud / 100)
        assert t.west < t.lon < t.east and t.south < t.lat < t.north
        assert abs(t.lon - 105.80) < 0.02 and abs(t.lat - 21.03) < 0.02
        assert t.split in SPLITS
        assert split_of.setdefault(t.extra["chip"], t.split) == t.split    # a place has one split
        mask = geotiff.read(t.mask_path)[0]
        assert set(np.unique(mask)) <= {0, 1}
        assert t.water_fraction == pytest.approx(float((mask == 1).mean()))
        assert t.label == ("land" if t.water_fraction < 0.05 else "water" if t.water_fraction > 0.95 else "coast")
        assert t.extra["water_source"] == "hansen" and t.extra["valid_fraction"] == 1.0
        info = geotiff.read_info(t.path)
        assert info.band_names == ("B2", "B3", "B4", "B8") and info.nodata == 0 and info.dtype == "uint16"
        assert geotiff.read_info(t.mask_path).nodata == 255
    assert any(0 < t.water_fraction < 1 for t in tiles) and any(t.water_fraction == 0 for t in tiles)
    # what was asked of computePixels: GeoTIFF on a 10 m UTM grid of 64 px chips
    for call in fake.pixel_calls:
        g = call["grid"]
        assert g["crsCode"] == "EPSG:32648" and g["dimensions"] == {"width": 64, "height": 64}
        assert (g["affineTransform"]["scaleX"], g["affineTransform"]["scaleY"]) == (10.0, -10.0)
    assert {c["kind"] for c in fake.pixel_calls} == {"image", "mask"}
    # the files say what they are, so `data import` of the folder finds the same metadata
    from workbench.data.sources.folder import cloud_from_tags, date_from_tags

    with geotiff.open_raster(tiles[0].path) as ds:
        tags = {k.upper(): v for k, v in ds.tags().items()}
    assert date_from_tags(tags) == tiles[0].date and cloud_from_tags(tags) == pytest.approx(tiles[0].cloud_cover)
    # a second run does nothing
    n = len(fake.pixel_calls)
    code, out, err = cli(*export_args(home / "out"))
    assert code == 0 and len(fake.pixel_calls) == n and f"0 chip(s) added, {len(tiles)} done before" in out


def test_median_composite_rows(fake, home, cli):
    code, out, err = cli(*export_args(home / "out", "--composite", "median", "--water", "jrc", "--cloud-mask"))
    assert code == 0, err
    with Catalog() as cat:
        tiles = cat.query()
    plan = eng.plan_chips(Area.from_point(105.80, 21.03, 1000), 64)
    assert len(tiles) == len(plan)
    mean_cloud = sum(s.cloud for s in fake.scenes) / len(fake.scenes) / 100
    for t in tiles:
        assert t.date == "2023-01-16" and t.cloud_cover == pytest.approx(mean_cloud)
        assert t.scene_id is None and t.extra["n_scenes"] == 3 and t.extra["water_source"] == "jrc"
        assert Path(t.path).parent.name == "median_2023-01-01_2023-01-31"
    assert "median of 3 scene(s)" in out
    assert all("reduce.median" in function_names(c["tree"]) for c in fake.pixel_calls if c["kind"] == "image")


def test_empty_chips_are_skipped_and_remembered(fake, home):
    spec = spec_of(composite="median")
    plan = eng.plan_chips(spec.area, 64)
    fake.empty_chips = {plan.chips[0].bounds[0]}
    emptied = [c for c in plan.chips if c.bounds[0] == plan.chips[0].bounds[0]]
    with Catalog() as cat:
        r = export_direct(spec, home / "out", cat, workers=2, policy=no_sleep([]), project="p")
        assert r.empty == len(emptied) and len(r.added) == len(plan) - len(emptied)
        n = len(fake.pixel_calls)
        r2 = export_direct(spec, home / "out", cat, workers=2, policy=no_sleep([]), project="p")
        assert len(fake.pixel_calls) == n and r2.already == len(plan) and not r2.added


def _join_chip_threads() -> None:
    for t in threading.enumerate():
        if t.name.startswith("ee-chip"):
            t.join(timeout=30)


def test_killed_halfway_then_rerun_gives_every_chip_once(fake, home):
    spec = spec_of()
    fake.kill_after = 9
    with Catalog() as cat:
        with pytest.raises(KeyboardInterrupt):
            export_direct(spec, home / "out", cat, workers=3, policy=no_sleep([]), project="p")
        _join_chip_threads()                   # chips in flight at the kill finish their files (no row)
        after_kill = cat.count()
        assert 0 < after_kill <= 9
        fake.kill_after = None
        images_before = sum(c["kind"] == "image" for c in fake.pixel_calls)
        r = export_direct(spec, home / "out", cat, workers=3, policy=no_sleep([]), project="p")
        assert r.already == after_kill and len(r.added) == r.planned - after_kill
        images_after = sum(c["kind"] == "image" for c in fake.pixel_calls)
        assert images_after - images_before == r.planned - after_kill    # files without a row: fetched again
        _check_consistent(cat, home / "out", r.planned)


@pytest.mark.slow
def test_sigkill_of_a_real_process_then_rerun(fake, home):
    out = home / "out"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "EE_FAKE_DELAY": "0.1"}
    fakes = HERE.parents[2] / "support" / "ee_fakes.py"
    proc = subprocess.Popen([sys.executable, str(fakes), *export_args(out, "--workers", "2")],
                            env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = home / "data" / "catalog.sqlite"
    deadline = time.time() + 40
    rows = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=1) as conn:
                        rows = conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
                except sqlite3.Error:
                    rows = 0
                if rows >= 3:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Catalog() as cat:
        killed_at = cat.count()
        assert 3 <= killed_at
        r = export_direct(spec_of(), out, cat, workers=3, policy=no_sleep([]), project="p")
        assert r.already == killed_at and len(r.added) == r.planned - killed_at > 0
        _check_consistent(cat, out, r.planned)


def test_files_without_a_row_are_fetched_again(fake, home):
    spec = spec_of(composite="median")
    with Catalog() as cat:
        r = export_direct(spec, home / "out", cat, workers=2, policy=no_sleep([]), project="p")
        victim = cat.query()[3]
        cat.delete([victim.id])
        Path(victim.path).write_bytes(Path(victim.path).read_bytes()[:300])     # and a torn file
        n = len(fake.pixel_calls)
        r2 = export_direct(spec, home / "out", cat, workers=2, policy=no_sleep([]), project="p")
        assert len(r2.added) == 1 and len(fake.pixel_calls) - n == 2
        _check_consistent(cat, home / "out", r.planned)


def test_an_output_folder_holds_one_request(fake, home, cli):
    assert cli(*export_args(home / "out", "--composite", "median"))[0] == 0
    line = _one_line_error(cli, *export_args(home / "out", "--composite", "median", "--max-cloud", "5"))
    assert "another request" in line


# ---- credentials ---------------------------------------------------------------------------------------

def test_no_credentials_is_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "WORKBENCH_EE_", "EE_"))}
    env.update(HOME=str(tmp_path), NO_GCE_CHECK="true", WORKBENCH_HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / ".config"))
    out = subprocess.run([sys.executable, "-m", "workbench", "ee", "export", *POINT, *DATES,
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "earthengine authenticate" in lines[0] and "WORKBENCH_EE_KEY_FILE" in lines[0]


def _service_account_key(path: Path) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "sa-project-4711", "private_key_id": "c0ffee1234deadbeef5678",
            "private_key": pem, "client_email": "exporter@sa-project-4711.iam.gserviceaccount.com",
            "client_id": "109876543210987654321", "token_uri": "https://oauth2.googleapis.com/token"}
    path.write_text(json.dumps(info))
    return info


def test_service_account_key_never_reaches_logs_or_catalog(fake, home, cli, monkeypatch):
    import ee
    from google.oauth2 import service_account

    key_file = home / "secrets" / "key.json"
    key_file.parent.mkdir()
    info = _service_account_key(key_file)
    monkeypatch.setenv("WORKBENCH_EE_KEY_FILE", str(key_file))
    import workbench.data.sources.ee_transport as transport

    monkeypatch.setattr(transport.time, "sleep", lambda s: None)
    fake.faults = ["429", "truncated"]                                    # retry lines in the log too
    args = ["ee", "export", *POINT, *DATES, "--out", str(home / "out"), "--chip-size", "64", "--no-progress",
            "--composite", "median"]
    code, out, err = cli(*args)
    assert code == 0, err
    state = ee.data._get_state()
    assert isinstance(state.credentials, service_account.Credentials)
    assert state.cloud_api_user_project == "sa-project-4711"           # the key's project
    assert "HTTP 429" in (home / "out" / "export.log").read_text() and "HTTP 429" in err
    code2, out2, err2 = cli("ee", "status", "--out", str(home / "out"))   # not a batch export: an error
    assert code2 == 2
    secrets = [info["private_key_id"], info["client_email"], info["client_id"]]
    secrets += [line for line in info["private_key"].splitlines() if len(line) > 20][:5]
    texts = [out, err, out2, err2]
    for p in home.rglob("*"):
        if p.is_file() and "secrets" not in p.parts:
            texts.append(p.read_bytes().decode("latin-1"))
    assert any("catalog.sqlite" in str(p) for p in home.rglob("*"))
    for text in texts:
        for s in secrets:
            assert s not in text


def test_unreadable_key_file_is_one_line(fake, cli, home, monkeypatch):
    bad = home / "key.json"
    bad.write_text('{"private_key": "SECRET-MATERIAL-XYZ", "type": "service_account"}')
    monkeypatch.setenv("WORKBENCH_EE_KEY_FILE", str(bad))
    line = _one_line_error(cli, *export_args(home / "out"))
    assert "WORKBENCH_EE_KEY_FILE" in line and "SECRET-MATERIAL-XYZ" not in line
    bad.write_text(json.dumps({"client_email": "a@b.c", "private_key": "-----BEGIN PRIVATE KEY-----\nSECRETxyz\n"
                                                                        "-----END PRIVATE KEY-----\n"}))
    line = _one_line_error(cli, *export_args(home / "out"))
    assert "could not be read" in line and "SECRETxyz" not in line


# ---- batch mode ------------------------------------------------------------------------------------------

def test_batch_tasks_pair_and_share_the_grid(fake, home, cli):
    out = home / "out"
    code, stdout, err = cli(*export_args(out, "--mode", "batch", "--bucket", "my-bucket", "--max-scenes", "2"))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    tasks = manifest["tasks"]
    assert len(tasks) == len(fake.exports) == 2 * manifest["chips_planned"]
    by_desc = {rec["params"]["description"]: rec for rec in fake.exports.values()}
    for t in tasks:
        if t["kind"] != "image":
            continue
        img, msk = by_desc[t["description"]], by_desc[t["description"] + "_mask"]
        assert t["file"] == t["description"] + ".tif"
        for rec, nodata in ((img, 0), (msk, 255)):
            opts = rec["params"]["fileExportOptions"]
            assert opts["cloudStorageDestination"]["bucket"] == "my-bucket"
            assert opts["cloudStorageDestination"]["filenamePrefix"] == f"{manifest['spec']['name']}/" + \
                rec["params"]["description"]
            assert opts["fileFormat"] == "GEO_TIFF" and opts["geoTiffOptions"]["noData"]["floatValue"] == nodata
        grids = []
        for rec in (img, msk):
            clip = rec["tree"]["functionInvocationValue"]            # the exported image: clipped to
            assert clip["functionName"] == "Image.clipToBoundsAndScale"  # `dimensions` on the grid
            rp = clip["arguments"]["input"]["functionInvocationValue"]   # of crs + crsTransform
            assert rp["functionName"] == "Image.reproject"
            grids.append((constant(invocations(rp, "Projection")[0]["arguments"]["crs"]),
                          constant(rp["arguments"]["crsTransform"]),
                          constant(invocations(clip, "GeometryConstructors.Rectangle")[0]["arguments"]["coordinates"])))
        assert grids[0] == grids[1]
        assert grids[0][0] == "EPSG:32648" and grids[0][1][0] == 10 and grids[0][2] == [0, 0, 64, 64]
        assert grids[0][1] == t["crs_transform"]
        inner = [r["tree"]["functionInvocationValue"]["arguments"]["input"]["functionInvocationValue"]["arguments"]
                 ["image"]["functionInvocationValue"]["functionName"] for r in (img, msk)]
        assert inner == ["Image.toUint16", "Image.toUint8"]
    # a re-run starts nothing; a lost manifest re-submits with the same request ids (no second export)
    n = len(fake.exports)
    assert cli(*export_args(out, "--mode", "batch", "--bucket", "my-bucket", "--max-scenes", "2"))[0] == 0
    assert len(fake.exports) == n
    (out / "manifest.json").unlink()
    assert cli(*export_args(out, "--mode", "batch", "--bucket", "my-bucket", "--max-scenes", "2"))[0] == 0
    assert len(fake.exports) == n and len(json.loads((out / "manifest.json").read_text())["tasks"]) == n


def test_batch_status_then_import_of_the_downloaded_folder(fake, home, cli):
    out = home / "out"
    code, stdout, err = cli(*export_args(out, "--mode", "batch", "--composite", "median"))
    assert code == 0, err
    assert "Drive folder s2_median_20230101_20230131" in stdout
    ops = list(fake.exports.values())
    fake.op_states[ops[0]["id"]] = "FAILED"
    for rec in ops[1:]:
        fake.op_states[rec["id"]] = "RUNNING"
    fake.list_limit = 2                                 # the rest come from getTaskStatus
    code, stdout, err = cli("ee", "status", "--out", str(out), "--project", "p")
    assert code == 0, err
    assert f"{len(ops)} task(s): FAILED 1, RUNNING {len(ops) - 1}" in stdout and fake.status_calls
    for rec in ops:
        fake.op_states[rec["id"]] = "SUCCEEDED"
    code, stdout, err = cli("ee", "status", "--out", str(out), "--project", "p", "--json")
    report = json.loads(stdout)
    assert report["done"] and report["counts"] == {"COMPLETED": len(ops)}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {t["state"] for t in manifest["tasks"]} == {"COMPLETED"}
    fake.list_limit = None
    code, stdout, err = cli("ee", "status", "--project", "p")     # every task of the project
    assert code == 0 and f"{len(ops)} task(s)" in stdout
    # the Drive files arrive (written here by the fake's renderer on each task's grid)
    for t in manifest["tasks"]:
        a, b, c, d, e, f = t["crs_transform"]
        grid = {"dimensions": {"width": 64, "height": 64}, "crsCode": t["crs"],
                "affineTransform": {"scaleX": a, "shearX": b, "translateX": c, "shearY": d, "scaleY": e,
                                    "translateY": f}}
        rec = next(r for r in ops if r["params"]["description"] == t["description"])
        (out / t["file"]).write_bytes(fake.render(t["kind"], grid, rec["tree"]))
    # `workbench data import` pairs them as they are named ...
    code, stdout, err = cli("data", "import", str(out), "--catalog", str(home / "plain.sqlite"), "--no-progress")
    assert code == 0, err
    with Catalog(home / "plain.sqlite") as cat:
        plain = cat.query()
        assert len(plain) == manifest["chips_planned"] and all(t.mask_path for t in plain)
    # ... and `workbench ee import` adds what the files cannot carry, from the manifest
    code, stdout, err = cli("ee", "import", str(out))
    assert code == 0, err
    with Catalog() as cat:
        tiles = cat.query()
    assert len(tiles) == manifest["chips_planned"]
    mean_cloud = sum(s.cloud for s in fake.scenes) / len(fake.scenes) / 100
    splits = {t["chip"]: t["split"] for t in manifest["tasks"]}
    for t in tiles:
        assert t.source == "earthengine" and t.date == "2023-01-16" and t.cloud_cover == pytest.approx(mean_cloud)
        assert t.bands == ["B2", "B3", "B4", "B8"] and t.split == splits[t.extra["chip"]]
        assert t.crs == "EPSG:32648" and t.gsd == pytest.approx(10) and t.water_fraction is not None


def test_the_export_modules_import_no_circle_and_reexport_the_real_functions():
    """ee_batch and earthengine both build on ee_export; the scripting API's batch names are
    ee_batch's own functions (real signatures), not wrappers."""
    import ast
    import inspect

    from workbench.data.sources import ee_batch, ee_export

    def imports(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "workbench.data.sources.earthengine" not in imports(ee_batch) | imports(ee_export)
    assert "workbench.data.sources.ee_batch" not in imports(ee_export)
    for name in ("export_batch", "task_status", "import_exported"):
        assert getattr(eng, name) is getattr(ee_batch, name)
        assert "args" not in inspect.signature(getattr(eng, name)).parameters
    assert "spec" in inspect.signature(eng.export_batch).parameters
    for name in ("initialize", "list_scenes", "plan_jobs", "FolderLock", "ExportLog", "ExportResult", "MANIFEST"):
        assert getattr(eng, name) is getattr(ee_export, name)
