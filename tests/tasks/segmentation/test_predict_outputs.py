"""``segment predict`` outputs beside the mask: --polygons (GPKG / GeoJSON) and the preview PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import torch
from PIL import Image

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.stats import BandStats
from workbench.data.vectors import class_areas_m2


def make_run(home: Path, scene: Path, classes: int = 1, name: str = "segmentation-tiny-20240101-000000") -> Path:
    """A run folder (what load_run reads) holding an untrained two-level AttentionUNet over 3 bands
    whose last bias is shifted so that every class wins on part of ``scene``: a mask with shapes."""
    from tasks.segmentation.config import config_from_dict
    from tasks.segmentation.models import build_model
    from workbench.config import dump_yaml
    from workbench.train.checkpoint import save_checkpoint, with_prefix

    run = home / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    kwargs = {"filters": [8, 16]}
    dump_yaml(config_from_dict({"name": "tiny", "model": {"arch": "AttentionUNet", "encoder": None,
                                                          "classes": classes, "kwargs": kwargs},
                                "predict": {"window": 64, "overlap": 16, "batch_size": 4}}), run / "config.yaml")
    torch.manual_seed(0)
    model = build_model("AttentionUNet", None, in_channels=3, classes=classes, **kwargs).eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    x = torch.from_numpy((geotiff.read(scene).astype(np.float32) - 1500) / 300)[None]
    with torch.no_grad():
        logits = model(x)[0].flatten(1)
        last.bias -= logits.median(dim=1).values if classes == 1 else logits.mean(dim=1)
    save_checkpoint(run / "checkpoints" / "best.safetensors", with_prefix("model", model.state_dict()), {"step": 1})
    BandStats([1500.0] * 3, [300.0] * 3).save(run / "band_stats.json")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "select": "iou"}))
    return run


@pytest.fixture
def scene(home) -> Path:
    image, _ = write_pair(home, "scene", size=96, seed=3)
    return image


def one_line(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def predict(cli, scene: Path, *extra: str) -> tuple[int, str, str]:
    return cli("segment", "predict", "--run", "latest", "--input", scene, "--out", scene.parent / "mask.tif",
               "--no-progress", *extra)


def test_polygons_and_preview_beside_the_mask(home, cli, scene):
    make_run(home, scene)
    code, out, err = predict(cli, scene, "--polygons", home / "lakes.gpkg")
    assert code == 0, err
    mask = home / "mask.tif"
    water = class_areas_m2(mask).get(1, 0.0)
    info = pyogrio.read_info(home / "lakes.gpkg")
    assert info["crs"] == "EPSG:32633" and info["features"] > 0
    _, _, _, (classes, areas) = pyogrio.raw.read(home / "lakes.gpkg")
    assert set(classes) == {1} and float(areas.sum()) == water        # the polygons are the mask's water
    line = next(x for x in out.splitlines() if x.startswith("polygons"))
    assert str(home / "lakes.gpkg") in line and f"{info['features']} polygon(s)" in line
    preview = home / "mask_preview.png"
    assert f"preview      {preview}" in out
    assert Image.open(preview).size[0] == 1024

    code, out, err = predict(cli, scene, "--polygons", home / "lakes.geojson", "--no-preview", "--min-area", "1000",
                             "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["polygons"]["crs"] == "EPSG:4326" and "preview" not in res
    kept, dropped = res["polygons"]["features"], res["polygons"]["dropped"]
    assert kept > 0 and dropped > 0 and kept + dropped == info["features"]     # 10 px and more kept
    assert pyogrio.raw.read(home / "lakes.geojson")[3][1].min() >= 1000
    assert pyogrio.read_info(home / "lakes.geojson")["crs"] == "EPSG:4326"


def test_multi_class_polygons_carry_their_class(home, cli, scene):
    make_run(home, scene, classes=3)
    code, out, err = predict(cli, scene, "--polygons", home / "classes.gpkg", "--no-preview")
    assert code == 0, err
    labels = geotiff.read(home / "mask.tif")[0]
    _, _, _, (classes, areas) = pyogrio.raw.read(home / "classes.gpkg")
    present = {int(v) for v in np.unique(labels)} - {0, 255}
    assert present == {1, 2} and set(classes) == present           # every class but the background
    truth = class_areas_m2(home / "mask.tif")
    for c in present:
        assert float(areas[classes == c].sum()) == truth[c]
    code, out, err = predict(cli, scene, "--polygons", home / "two.gpkg", "--polygon-classes", "2", "--no-preview")
    assert code == 0, err
    assert set(pyogrio.raw.read(home / "two.gpkg")[3][0]) == {2}
    code, out, err = predict(cli, scene, "--polygons", home / "x.gpkg", "--polygon-classes", "3")
    assert "--polygon-classes 3" in one_line(code, err)


@pytest.mark.parametrize("args, says", [
    (["--polygons", "lakes.shp"], "lakes.shp: unknown extension '.shp'"),
    (["--polygons", "lakes"], "unknown extension"),
    (["--min-area", "100"], "--min-area applies to --polygons"),
    (["--polygons", "l.gpkg", "--simplify", "-1"], "--simplify -1"),
    (["--polygons", "l.gpkg", "--polygon-classes", "a"], "--polygon-classes"),
])
def test_bad_polygon_flags_stop_before_anything_runs(home, cli, scene, args, says):
    # no run exists: the flags are refused before the run is even looked for
    code, out, err = predict(cli, scene, *args)
    if "--polygon-classes" in args and "a" in args:      # argparse's own message (exit 2, usage + one line)
        assert code == 2 and says in err
    else:
        assert says in one_line(code, err)
    assert not (home / "mask.tif").exists()


def test_polygons_never_replace_an_input(home, cli, scene):
    make_run(home, scene)
    code, out, err = cli("segment", "predict", "--run", "latest", "--input", scene, "--out", home / "m.tif",
                         "--polygons", home / "m.gpkg", "--truth", home / "m.gpkg")
    assert "same file as --truth" in one_line(code, err)
    code, out, err = cli("segment", "predict", "--run", "latest", "--input", home / "m_preview.png",
                         "--out", home / "m.tif")
    assert "the preview" in one_line(code, err)
    code, out, err = cli("segment", "predict", "--run", "latest", "--input", home, "--out", home / "o",
                         "--polygons", home / "p.gpkg")
    assert "--polygons apply to one scene" in one_line(code, err)
