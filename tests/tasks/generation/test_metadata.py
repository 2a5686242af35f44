"""DiffusionSat metadata: human units -> shifted -> normalised, checked against worked examples,
and prompt-set YAML parsing. No torch here."""

from __future__ import annotations

from datetime import date

import pytest

from tasks.generation import metadata as M
from tasks.generation.jobs import load_prompt_set, single_job
from workbench.errors import WorkbenchError


def test_worked_example_red_river_delta():
    md = M.validate(lat=21.01, lon=105.81, gsd=0.5, cloud_cover=0.1, when="2015-06-15")
    # shift: lon + 180, lat + 90, gsd, cloud, year - 1980, month, day
    assert md.shifted() == pytest.approx([285.81, 111.01, 0.5, 0.1, 35.0, 6.0, 15.0])
    # normalise: / [360, 180, 1, 1, 120, 12, 31] * 1000, worked by hand:
    #   285.81 / 360 * 1000 = 793.91667   111.01 / 180 * 1000 = 616.72222   0.5 * 1000 = 500
    #   0.1 * 1000 = 100   35 / 120 * 1000 = 291.66667   6 / 12 * 1000 = 500   15 / 31 * 1000 = 483.87097
    assert md.normalised() == pytest.approx([793.91667, 616.72222, 500.0, 100.0, 291.66667, 500.0, 483.87097],
                                            abs=1e-4)


def test_extremes_map_to_0_and_1000():
    low = M.validate(lat=-90, lon=-180, gsd=1.0, cloud_cover=0.0, when="1980-01-01").normalised()
    high = M.validate(lat=90, lon=180, gsd=1.0, cloud_cover=1.0, when="2100-12-31").normalised()
    assert low[:2] == [0.0, 0.0] and low[3:5] == [0.0, 0.0]
    assert high[:2] == [1000.0, 1000.0] and high[3:6] == [1000.0, 1000.0, 1000.0] and high[6] == 1000.0


def test_released_notebook_vector_round_trips():
    # DiffusionSat's notebook feeds [925.8798, 345.2111, 411.4541, 0, 308.3333, 166.6667, 354.8387]:
    # lon 925.8798 * 0.36 - 180 = 153.3167, lat 345.2111 * 0.18 - 90 = -27.862, year 308.3333 * 0.12 + 1980 = 2017
    raw = M.denormalise([925.8798, 345.2111, 411.4541, 0.0, 308.3333, 166.6667, 354.8387])
    assert raw == pytest.approx([153.3167, -27.862, 0.4115, 0.0, 2017.0, 2.0, 11.0], abs=1e-3)
    md = M.validate(lat=-27.862, lon=153.3167, gsd=0.4114541, cloud_cover=0.0, when="2017-02-11")
    assert md.normalised() == pytest.approx([925.8798, 345.2111, 411.4541, 0.0, 308.3333, 166.6667, 354.8387],
                                            abs=2e-3)


def test_unconditional_is_all_zero():
    assert M.unconditional() == [0.0] * 7 and M.NUM_METADATA == 7


def test_date_defaults_to_today_and_accepts_date_objects():
    assert M.validate(0, 0).date == date.today()
    assert M.validate(0, 0, when=date(2020, 2, 29)).date == date(2020, 2, 29)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(lat=90.5, lon=0), "--lat 90.5"),
    (dict(lat=0, lon=-180.01), "--lon -180.01"),
    (dict(lat=0, lon=0, gsd=0), "--gsd 0"),
    (dict(lat=0, lon=0, gsd=-3), "--gsd -3"),
    (dict(lat=0, lon=0, cloud_cover=1.2), "--cloud-cover 1.2"),
    (dict(lat=0, lon=0, cloud_cover=-0.1), "--cloud-cover -0.1"),
    (dict(lat=0, lon=0, when="2015-02-30"), "--date 2015-02-30"),
    (dict(lat=0, lon=0, when="15/06/2015"), "--date 15/06/2015"),
    (dict(lat=0, lon=0, when="1975-01-01"), "--date 1975-01-01"),
    (dict(lat=float("nan"), lon=0), "--lat nan"),
])
def test_bad_values_are_named(kwargs, needle):
    with pytest.raises(WorkbenchError) as exc:
        M.validate(**kwargs)
    assert str(exc.value).startswith(needle) and "\n" not in str(exc.value)


def test_describe_in_words():
    md = M.validate(lat=21.01, lon=105.81, gsd=0.5, when="2015-06-15")
    assert M.describe(md) == (" at a resolution of 0.5. The longitude, latitude is 105.81, 21.01."
                              " The date is 2015, 6, 15")


def test_single_job_rejects_empty_prompt():
    with pytest.raises(WorkbenchError, match="--prompt"):
        single_job("  ", 0, 0, 1.0, 0.0, None)


def _write(tmp_path, text):
    path = tmp_path / "set.yaml"
    path.write_text(text)
    return path


def test_prompt_set_is_prompts_x_places_x_dates(tmp_path):
    path = _write(tmp_path, """
prompts: [a satellite image of a river delta, a satellite image of farmland]
places:
  - {name: red river, lat: 21.01, lon: 105.81}
  - {lat: -10, lon: -50, gsd: 10}
dates: [2015-06-15, 2020-01-10]
gsd: 2
seed: 5
steps: 3
""")
    jobs, opts = load_prompt_set(path, None, None, None, fallback_gsd=1.0, fallback_cloud=0.0)
    assert len(jobs) == 2 * 2 * 2
    assert opts == {"seed": 5, "steps": 3}
    assert {j.place for j in jobs} == {"red-river", "10.000S50.000W"}
    assert {j.metadata.gsd for j in jobs if j.place == "red-river"} == {2.0}
    assert {j.metadata.gsd for j in jobs if j.place != "red-river"} == {10.0}
    assert {j.metadata.date.isoformat() for j in jobs} == {"2015-06-15", "2020-01-10"}
    # a flag given on the command line wins over the file
    jobs, _ = load_prompt_set(path, 7.0, None, "2019-03-03", fallback_gsd=1.0, fallback_cloud=0.0)
    assert {j.metadata.gsd for j in jobs} == {7.0} and len(jobs) == 4


@pytest.mark.parametrize("text, needle", [
    ("places: [{lat: 0, lon: 0}]", "'prompts'"),
    ("prompts: [x]", "'places'"),
    ("prompts: [x]\nplaces: [{lat: 95, lon: 0}]", "places[0] lat 95"),
    ("prompts: [x]\nplaces: [{lat: 0}]", "places[0]: missing 'lon'"),
    ("prompts: [x]\nplaces: [{lat: 0, lon: 0, height: 3}]", "unknown key(s) height"),
    ("prompts: [x]\nplaces: [{lat: 0, lon: 0}]\ndates: [2015-02-30]", "impossible date"),
    ("prompts: [x]\nplaces: [{lat: 0, lon: 0}]\ndates: [1970-01-01]", "dates[0] 1970-01-01"),
    ("prompts: [x]\nplaces: [{lat: 0, lon: 0}]\nsteps_: 3", "unknown key(s) steps_"),
])
def test_prompt_set_errors_name_the_entry(tmp_path, text, needle):
    with pytest.raises(WorkbenchError) as exc:
        load_prompt_set(_write(tmp_path, text), None, None, None, 1.0, 0.0)
    assert needle in str(exc.value) and "set.yaml" in str(exc.value)


def test_committed_prompt_set_is_valid():
    from tests.support.runner import ROOT

    jobs, opts = load_prompt_set(ROOT / "prompts" / "river-deltas.yaml", None, None, None, 1.0, 0.0)
    assert len(jobs) == 2 * 3 * 2 and opts["scheduler"] == "ddim"


def test_places_set_takes_the_models_gsd_and_date():
    """`make generate`'s set names places only: gsd and date come from the model (the fallbacks)."""
    from tests.support.runner import ROOT

    jobs, opts = load_prompt_set(ROOT / "prompts" / "places.yaml", None, None, None, 7421.3, 0.0, "2004-06-15")
    assert len(jobs) == 8 and opts == {"seed": 0, "num_images": 1}
    assert {j.metadata.gsd for j in jobs} == {7421.3} and {j.metadata.date.isoformat() for j in jobs} == {"2004-06-15"}
    assert len({j.place for j in jobs}) == 8
    jobs, _ = load_prompt_set(ROOT / "prompts" / "places.yaml", None, None, "2010-01-01", 7421.3, 0.0, "2004-06-15")
    assert {j.metadata.date.isoformat() for j in jobs} == {"2010-01-01"}   # --date wins
