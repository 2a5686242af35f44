"""``workbench generate eval``: the measures on constructed inputs, and the one-line input errors (the
whole evaluation, with a segmentation run scoring water, is in tests/experiments/test_water_scoring.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.generation.evaluate import (
    by_distance,
    location_fidelity,
    nearest,
    nearest_reference,
    other_places,
    pearson,
    r_interval,
    share_se,
)
from tasks.generation.run import inspect_folder
from tests.support.generation import make_catalog
from workbench.data.catalog import Catalog

# ------------------------------------------------------------------------------ the measures

def test_location_fidelity_known_answers():
    real = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], float)
    others = np.array([1, 2, 3, 0])
    assert location_fidelity(real, real, others) == 1.0              # every tile is its own place's colour
    assert location_fidelity(real[others], real, others) == 0.0      # every tile is the other place's colour
    # place 0 near its own, place 1 exactly between (tie: 1/2), places 2 and 3 nearer the other place
    gen = np.array([[10, 0, 0], [50, 50, 0], [0, 10, 90], [5, 0, 0]], float)
    assert location_fidelity(gen, real, others) == pytest.approx((1 + 0.5 + 0 + 0) / 4)


def test_other_places_are_never_the_place_itself_and_repeatable():
    a, b = other_places(500, seed=3), other_places(500, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, other_places(500, seed=4))
    assert (a != np.arange(500)).all() and a.min() >= 0 and a.max() <= 499
    assert len(np.unique(a)) > 250                                      # spread, not one fixed partner
    assert (other_places(2, 0) == [1, 0]).all()


def test_pearson():
    assert pearson([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(1.0)
    assert pearson([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert pearson([0, 1, None, 3, 4], [0, 1, 5, 3, 4]) == pytest.approx(1.0)   # unknown pairs skipped
    assert pearson([1, 1, 1], [0, 1, 2]) is None and pearson([0, 1], [0, 1]) is None


def test_spread_of_a_share_and_of_r():
    assert share_se(0.5, 100) == pytest.approx(0.05) and share_se(0.8, 128) == pytest.approx(0.0354, abs=1e-4)
    assert share_se(1.0, 50) == 0.0
    lo, hi = r_interval(0.0, 103)                       # Fisher z: atanh(0) +- 1.96 / sqrt(100)
    assert lo == pytest.approx(-np.tanh(0.196)) and hi == pytest.approx(np.tanh(0.196))
    lo, hi = r_interval(0.9, 28)                        # asymmetric near 1: tanh(atanh(0.9) +- 0.392)
    assert lo == pytest.approx(0.7933, abs=1e-4) and hi == pytest.approx(0.9531, abs=1e-4)
    assert hi - 0.9 < 0.9 - lo and hi < 1.0
    assert r_interval(None, 100) is None and r_interval(0.5, 3) is None
    assert r_interval(1.0, 10)[1] == pytest.approx(1.0)


def test_nearest_is_on_the_sphere():
    points = [[170.0, 0.0], [-100.0, 0.0], [0.0, 80.0], [0.0, 60.0]]
    # 179 W is 11 degrees from 170 E across the dateline, 79 from 100 W
    idx, km = nearest([[179.0, 0.0], [-179.0, 0.0]], points)
    assert idx.tolist() == [0, 0]
    degree = 2 * np.pi * 6371.0 / 360                                  # km per degree of a great circle
    assert km == pytest.approx([9 * degree, 11 * degree])
    # (180, 85) is 15 degrees from (0, 80) over the pole (on a lon/lat plane it would be 180 away)
    idx, km = nearest([[180.0, 85.0], [0.0, 65.0], [-99.0, 1.0]], points)
    assert idx.tolist() == [2, 3, 1] and km[0] == pytest.approx(15 * degree)
    assert nearest([[0.0, 60.0]], points)[1] == pytest.approx([0.0])


def test_by_distance_bins_places_by_their_distance_to_training_data():
    km = [900.0, 10.0, 500.0, 20.0, 800.0, 30.0]
    hits = {"model": np.array([0, 1, 0.5, 1, 0, 1]), "lookup": np.ones(6)}
    water = {"model": [0.9, 0.1, 0.5, 0.3, 0.2, 0.6], "lookup": [None] * 6}
    real = [0.1, 0.1, 0.5, 0.3, 0.9, 0.6]
    near, far = by_distance(km, hits, water, real, bins=2)
    assert near["km"] == [10.0, 30.0] and near["places"] == 3 and far["km"] == [500.0, 900.0]
    assert near["model"]["location_fidelity"] == 1.0 and far["model"]["location_fidelity"] == pytest.approx(0.5 / 3)
    assert near["model"]["water_fraction_correlation"] == pytest.approx(1.0)     # 0.1, 0.3, 0.6 exactly
    assert far["model"]["water_fraction_correlation"] == pytest.approx(pearson([0.9, 0.5, 0.2], [0.1, 0.5, 0.9]))
    assert far["model"]["water_fraction_correlation"] < 0 and near["lookup"]["water_fraction_correlation"] is None
    assert len(by_distance(km[:2], hits, water, real, bins=4)) == 2               # never an empty bin


def test_nearest_reference_answers_each_place_with_its_nearest_training_tile(home, model_dir):
    make_catalog(home)
    with Catalog() as cat:
        test = cat.query(source="bluemarble", split="test")
        train = cat.query(source="bluemarble", split=["train", "val"])
    folder = inspect_folder(model_dir)
    folder.defaults["training"] = {"data": {"source": "bluemarble", "train_split": "train,val"}}
    real = np.array([[float(i), 0.0, 0.0] for i in range(len(test))])
    ref = nearest_reference(folder, test, None, 32, real, other_places(len(test), 0))
    assert ref["training_places"] == len(train)
    near = ref["per_place"]                                            # what eval.json's per_place rows take
    by_id = {t.id: t for t in train}

    def unit(t):                                                       # nearest = largest dot product
        lon, lat = np.radians([t.lon, t.lat])
        return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])

    for place, picked in zip(test, near["tile_ids"]):
        dots = {t.id: float(unit(t) @ unit(place)) for t in train}
        assert picked in by_id and dots[picked] == pytest.approx(max(dots.values()))
    water = [by_id[i].water_fraction for i in near["tile_ids"]]
    assert ref["water_fraction_correlation"] == pytest.approx(pearson(water, [t.water_fraction for t in test]))
    assert 0.0 <= ref["location_fidelity"] <= 1.0 and ref["location_fidelity"] == np.mean(near["hits"])
    assert len(near["km"]) == len(test) and ref["median_km"] == pytest.approx(np.median(near["km"]))
    folder.defaults["training"] = {}                                   # no record (an official checkpoint)
    assert nearest_reference(folder, test, None, 32, real, other_places(len(test), 0)) is None


# ------------------------------------------------------------------------------ the eval verb's input checks

@pytest.mark.parametrize("args, needle", [
    (("--n", 1), "--n 1: must be at least 2"),
    (("--steps", 0), "--steps 0"),
    (("--batch-size", 0), "--batch-size 0"),
    (("--guidance", -1), "--guidance -1"),
    (("--split", "nowhere"), "no tiles match"),
    (("--scheduler", "heun"), "--scheduler"),
])
def test_eval_bad_input_is_one_line_exit_2(home, cli, model_dir, args, needle):
    make_catalog(home, n=10)
    code, _, err = cli("generate", "eval", "--model", model_dir, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (home / "generated").exists()


def test_eval_unknown_model_is_one_line(home, cli):
    code, _, err = cli("generate", "eval", "--model", home / "nowhere")
    assert code == 2 and "no such model folder" in err and len(err.strip().splitlines()) == 1
