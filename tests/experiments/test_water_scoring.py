"""The generator's water scoring (``experiments/water_scoring.py``): a segmentation run pseudo-masks
generated tiles in this process and their water fractions come back through the catalog; and the
whole ``workbench generate eval`` on a tiny model, with and without a segmentation run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from experiments.water_scoring import find_seg_run, score_water
from tasks.generation.evaluate import r_interval, share_se
from tasks.generation.train import update_workbench_json
from tests.support.generation import make_catalog
from workbench.data.catalog import Catalog
from workbench.errors import WorkbenchError


def make_seg_run(home: Path) -> Path:
    """A tiny (untrained) segmentation run folder, the layout ``workbench segment predict`` reads."""
    from tasks.segmentation.config import config_from_dict
    from tasks.segmentation.models import build_model as build_seg
    from workbench.config import dump_yaml
    from workbench.data.stats import BandStats
    from workbench.train.checkpoint import save_checkpoint, with_prefix

    run = home / "runs" / "segmentation-tiny-20240101-000000"
    (run / "checkpoints").mkdir(parents=True)
    filters = [8, 16, 32]
    cfg = config_from_dict({"name": "tiny", "model": {"arch": "AttentionUNet", "encoder": None, "classes": 1,
                                                       "kwargs": {"filters": filters}},
                            "predict": {"window": 32, "overlap": 0, "batch_size": 4}})
    dump_yaml(cfg, run / "config.yaml")
    torch.manual_seed(0)
    model = build_seg("AttentionUNet", None, in_channels=3, classes=1, filters=filters)
    save_checkpoint(run / "checkpoints" / "best.safetensors", with_prefix("model", model.state_dict()), {"step": 1})
    BandStats([100.0] * 3, [50.0] * 3).save(run / "band_stats.json")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "select": "iou"}))
    return run


def test_a_segmentation_run_scores_tiles_in_process(home, one_torch_thread):
    catalog = make_catalog(home, n=10)
    seg = make_seg_run(home)
    with Catalog() as cat:
        tiles = cat.query(source="bluemarble", split="test")[:3]
    ids = [t.id for t in tiles]
    lines: list[str] = []
    found = score_water(seg, ids, catalog, lines.append)
    with Catalog() as cat:
        rows = {r.id: r for r in cat.query(ids=ids)}
    assert set(found) == set(ids) and all(found[i] == rows[i].water_fraction for i in ids)
    assert all(0.0 <= found[i] <= 1.0 for i in ids)                 # confidence 0: every pixel labelled
    assert all(rows[i].mask_path.endswith("_pseudo_mask.tif") for i in ids)
    assert lines and seg.name in lines[0] and "--min-confidence 0" in lines[0]


def test_water_scoring_errors_and_notes(home):
    catalog = make_catalog(home, n=10)
    broken = make_seg_run(home)
    (broken / "band_stats.json").unlink()
    with pytest.raises(WorkbenchError, match="^segment predict failed: .*no band_stats.json"):
        score_water(broken, [1], catalog)
    assert find_seg_run("none") == (None, "skipped (--seg-run none)")
    path, note = find_seg_run("no-such-run")
    assert path is None and note.startswith("unavailable: no segmentation run") and "--seg-run RUN" in note


@pytest.mark.slow
def test_eval_end_to_end_scores_water_through_the_catalog(home, cli, model_dir, one_torch_thread):
    make_catalog(home)
    seg = make_seg_run(home)
    out = home / "eval"
    model = home / "model"                                  # with a training record: the reference and by-distance
    shutil.copytree(model_dir, model)
    update_workbench_json(model, training={"data": {"source": "bluemarble", "train_split": "train,val"}})
    code, stdout, err = cli("generate", "eval", "--model", model, "--n", 5, "--steps", 2, "--batch-size", 3,
                            "--seg-run", seg.name, "--out", out, "--no-progress")
    assert code == 0, err
    assert "location fidelity" in stdout and "water-fraction r" in stdout and str(out) in stdout
    result = json.loads((out / "eval.json").read_text())
    se = result["location_fidelity_se"]["metadata"]
    assert se == pytest.approx(share_se(result["location_fidelity"]["metadata"], 5))
    water = result["water_fraction_correlation"]
    assert water["pairs"] == {"metadata": 5, "zeroed": 5}
    if water["metadata"] is not None:
        assert water["ci95"]["metadata"] == pytest.approx(list(r_interval(water["metadata"], 5)))
        assert "water r 95 % interval" in stdout
    assert f"fidelity 1 s.e. {se:.3f} (5 places)" in stdout
    assert result["places"] == 5 and result["query"] == {"source": "bluemarble", "split": "test"}
    for v in ("metadata", "zeroed"):
        assert 0.0 <= result["location_fidelity"][v] <= 1.0
    water = result["water_fraction_correlation"]
    assert water["available"] and water["seg_run"] == str(seg)
    assert "only 5 places" in result["note"]
    with Catalog() as cat:
        real = {t.id: t for t in cat.query(source="bluemarble", split="test")}
        rows = cat.query(source="generated")
    assert len(rows) == 10 and {r.parent_id for r in rows} == set(real)
    assert {r.extra["variant"] for r in rows} == {"metadata", "zeroed"}
    assert {r.extra["eval_batch"] for r in rows} == {"eval"}
    assert all(r.water_fraction is not None and r.mask_path for r in rows)      # scored by segment predict
    zeroed = [r for r in rows if r.extra["variant"] == "zeroed"]
    assert all(r.extra["metadata_normalised"] == [0.0] * 7 for r in zeroed)
    bins = result["by_distance"]
    assert sum(b["places"] for b in bins) == 5 and "by distance to the nearest training place" in stdout
    assert [b["km"][0] for b in bins] == sorted(b["km"][0] for b in bins)
    km = sorted(p["nearest_training_km"] for p in result["per_place"])
    assert bins[0]["km"][0] == pytest.approx(km[0], abs=0.1) and bins[-1]["km"][1] == pytest.approx(km[-1], abs=0.1)
    for place in result["per_place"]:
        assert place["generated_water_fraction"] is not None
        assert place["real_water_fraction"] == real[place["tile_id"]].water_fraction
        assert place["other_place"] != result["per_place"].index(place)
    from PIL import Image

    with Image.open(out / "mosaic.png") as im:
        assert im.size[0] > 3 * 64 and im.size[1] > 64


@pytest.mark.slow
def test_eval_without_a_segmentation_run_says_so(home, cli, model_dir, one_torch_thread):
    make_catalog(home, n=10)
    code, stdout, err = cli("generate", "eval", "--model", model_dir, "--n", 2, "--steps", 1, "--out", home / "e",
                            "--no-progress")
    assert code == 0, err
    assert "unavailable: no segmentation run" in stdout and "workbench segment train" in stdout
    result = json.loads((home / "e" / "eval.json").read_text())
    assert result["water_fraction_correlation"]["available"] is False
    assert result["location_fidelity"]["metadata"] is not None
