"""``workbench generate`` end to end on a tiny random DiffusionSat folder: files, georeference,
catalog rows, seeds, prompt sets, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tasks.generation.config import load_config
from tasks.generation.models import build_model
from tests.support.runner import run_workbench
from workbench.config import to_dict
from workbench.data import geotiff
from workbench.data.catalog import Catalog

PROMPT = "a satellite image of a river delta"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


def _generate(cli, model_dir, *extra):
    return cli("generate", "--model", model_dir, "--prompt", PROMPT, "--steps", 2, "--size", 32,
               "--no-progress", *extra)


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_generate_writes_georeferenced_tiles_into_the_catalog(home, cli, model_dir, one_torch_thread):
    out = home / "out"
    code, stdout, err = _generate(cli, model_dir, "--lat", 21.01, "--lon", 105.81, "--date", "2015-06-15",
                                  "--gsd", 10, "--cloud-cover", 0.1, "--seed", 5, "--num-images", 2,
                                  "--out", out)
    assert code == 0, err
    pngs, tifs = sorted(out.glob("*.png")), sorted(out.glob("*.tif"))
    assert len(pngs) == len(tifs) == 2
    assert str(out) in stdout and "seed" in stdout

    info = geotiff.read_info(tifs[0])
    assert (info.width, info.height, info.count, info.dtype) == (32, 32, 3, "uint8")
    assert info.band_names == ("red", "green", "blue")
    lon, lat = info.centre_lonlat()
    assert lon == pytest.approx(105.81, abs=1e-9) and lat == pytest.approx(21.01, abs=1e-9)
    assert info.gsd_metres() == pytest.approx(10.0, rel=1e-9)
    # square pixels on the ground: the degree width is stretched by 1 / cos(lat)
    assert info.affine.a == pytest.approx(-info.affine.e / math.cos(math.radians(21.01)))
    assert np.array_equal(geotiff.read(tifs[0]).transpose(1, 2, 0), _png(pngs[0]))
    import rasterio
    with rasterio.open(tifs[0]) as ds:
        tags = ds.tags()
    assert tags["prompt"] == PROMPT and tags["seed"] == "5" and tags["source"] == "generated"
    assert json.loads(tags["metadata"])["date"] == "2015-06-15"

    with Catalog() as cat:
        rows = cat.query(source="generated")
    assert len(rows) == 2
    row = rows[0]
    assert row.caption == PROMPT and row.extra["seed"] == 5 and rows[1].extra["seed"] == 6
    assert (row.lon, row.lat, row.gsd, row.cloud_cover, row.date) == (105.81, 21.01, 10.0, 0.1, "2015-06-15")
    assert row.model_id.startswith("diffusionsat:tiny@") and row.crs == "EPSG:4326"
    assert row.west < 105.81 < row.east and row.south < 21.01 < row.north
    assert row.extra["png"] == str(pngs[0]) and len(row.extra["metadata_normalised"]) == 7


def test_same_seed_same_image_other_seed_other_image(home, cli, model_dir, one_torch_thread):
    place = ("--lat", 10, "--lon", 106.3, "--date", "2020-01-10")
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        code, _, err = _generate(cli, model_dir, *place, "--seed", seed, "--out", home / name)
        assert code == 0, err
    a, b, c = (_png(next((home / n).glob("*.png"))) for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_default_output_folder_is_under_the_home(home, cli, model_dir, one_torch_thread):
    code, _, err = _generate(cli, model_dir, "--lat", 0, "--lon", 0, "--seed", 1)
    assert code == 0, err
    assert len(list((home / "generated").glob("*/*.tif"))) == 1


def test_prompt_set_generates_prompts_x_places_x_dates(home, cli, model_dir, one_torch_thread):
    spec = home / "set.yaml"
    spec.write_text("prompts: [a satellite image of a river delta, a satellite image of farmland]\n"
                    "places:\n  - {name: red-river, lat: 21.01, lon: 105.81}\n  - {name: mekong, lat: 10, lon: 106.3}\n"
                    "dates: [2015-06-15, 2020-01-10]\nseed: 3\nsteps: 1\nsize: 32\ngsd: 30\n")
    code, stdout, err = cli("generate", "--model", model_dir, "--prompts", spec, "--out", home / "set",
                            "--no-progress")
    assert code == 0, err
    with Catalog() as cat:
        rows = cat.query(source="generated")
    assert len(rows) == 2 * 2 * 2 == len(list((home / "set").glob("*.tif")))
    combos = {(r.caption, r.extra["place"], r.date) for r in rows}
    assert len(combos) == 8 and {r.gsd for r in rows} == {30.0} and {r.extra["seed"] for r in rows} == {3}


@pytest.mark.parametrize("args, needle", [
    (("--lat", 91, "--lon", 0), "--lat 91"),
    (("--lat", -90.5, "--lon", 0), "--lat -90.5"),
    (("--lat", 0, "--lon", 180.5), "--lon 180.5"),
    (("--lat", 0, "--lon", -181), "--lon -181"),
    (("--lat", 0, "--lon", 0, "--date", "2015-02-30"), "--date 2015-02-30"),
    (("--lat", 0, "--lon", 0, "--date", "yesterday"), "--date yesterday"),
    (("--lat", 0, "--lon", 0, "--gsd", 0), "--gsd 0"),
    (("--lat", 0, "--lon", 0, "--gsd", -1), "--gsd -1"),
    (("--lat", 0, "--lon", 0, "--cloud-cover", 1.5), "--cloud-cover 1.5"),
    (("--lat", 0, "--lon", 0, "--cloud-cover", -0.2), "--cloud-cover -0.2"),
    (("--lat", 0, "--lon", 0, "--size", 30), "--size 30"),
    (("--lat", 0, "--lon", 0, "--steps", 0), "--steps 0"),
    (("--lat", 0, "--lon", 0, "--num-images", 0), "--num-images 0"),
    (("--lat", 0, "--lon", 0, "--guidance", -2), "--guidance -2"),
    (("--lat", 0, "--lon", 0, "--scheduler", "heun"), "--scheduler"),
    (("--lon", 0), "--lat is required"),
    (("--lat", 0, "--lon", 0, "--device", "nonsense"), "--device nonsense"),
    (("--lat", 0, "--lon", 0, "--batch-size", 0), "--batch-size 0"),
    (("--lat", 0, "--lon", 0, "--num-images", 2, "--out", "one.png"), "names one image file"),
    (("--lat", 0, "--lon", 0, "--out", "afile/x"), "is a file, not a folder"),
    (("--lat", 0, "--lon", 0, "--catalog", "corrupt.sqlite"), "not a workbench catalog"),
])
def test_bad_input_is_one_line_exit_2(home, cli, model_dir, args, needle, monkeypatch):
    (home / "afile").write_text("x")
    (home / "corrupt.sqlite").write_bytes(b"garbage" * 500)
    monkeypatch.chdir(home)
    code, _, err = _generate(cli, model_dir, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (home / "generated").exists()


def test_many_images_are_made_in_batches_and_one_image_can_be_a_file(home, cli, model_dir, one_torch_thread,
                                                                      monkeypatch):
    from tasks.generation import pipeline

    sizes = []
    real = pipeline.load_pipeline

    class Counted:  # the real pipeline, noting how many images each call makes
        def __init__(self, pipe):
            self.pipe = pipe

        def __call__(self, *args, **kwargs):
            sizes.append(kwargs["num_images_per_prompt"])
            return self.pipe(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.pipe, name)

    def counting(*args, **kwargs):
        return Counted(real(*args, **kwargs))

    monkeypatch.setattr(pipeline, "load_pipeline", counting)
    code, out, err = _generate(cli, model_dir, "--lat", 0, "--lon", 0, "--num-images", 5, "--batch-size", 2,
                               "--seed", 1, "--out", home / "many")
    assert code == 0, err
    assert sizes == [2, 2, 1] and len(list((home / "many").glob("*.png"))) == 5
    code, out, err = _generate(cli, model_dir, "--lat", 0, "--lon", 0, "--seed", 1, "--out", home / "tile.png")
    assert code == 0, err
    assert (home / "tile.png").is_file() and (home / "tile.tif").is_file()
    assert np.array_equal(_png(home / "tile.png"), _png(sorted((home / "many").glob("*seed1.png"))[0]))


def test_prompt_set_errors_exit_2(home, cli, model_dir):
    spec = home / "set.yaml"
    spec.write_text("prompts: [x]\nplaces: [{name: a, lat: 0, lon: 0}]\nguidance: lots\n")
    code, _, err = cli("generate", "--model", model_dir, "--prompts", spec)
    assert code == 2 and "guidance 'lots'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("generate", "--model", model_dir, "--prompts", spec, "--lat", 3)
    assert code == 2 and "--prompts FILE.yaml replaces" in err


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder", "tokenizer", "scheduler"])
def test_missing_component_is_named(home, cli, model_dir, component):
    broken = home / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / component)
    code, _, err = _generate(cli, broken, "--lat", 0, "--lon", 0)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{broken / component}: missing model component '{component}'" in err


def test_no_default_model_yet(home, cli, monkeypatch):
    from tasks.generation import run

    monkeypatch.setattr(run, "DEFAULT_MODEL_DIR", home / "nowhere")
    code, _, err = cli("generate", "--lat", 0, "--lon", 0, "--prompt", PROMPT)
    assert code == 2 and "no default model yet: pass --model DIR" in err


def test_help_shows_examples_and_imports_nothing_heavy():
    code = ("import sys; from workbench.cli import main\n"
            "try:\n    main(['generate', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'rasterio', 'numpy', 'diffusers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "workbench generate --lat 21.01 --lon 105.81" in out.stdout and "--prompts FILE.yaml" in out.stdout


def test_bare_generate_prints_help(cli):
    code, out, _ = cli("generate")
    assert code == 2 and "examples:" in out


def test_real_entry_point_rejects_bad_latitude_before_loading_torch(home, model_dir):
    proc = run_workbench("generate", "--model", model_dir, "--lat", 100, "--lon", 0, "--prompt", PROMPT, cwd=home)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "workbench: error: --lat 100: latitude must be within [-90, 90]"


@pytest.mark.slow
def test_real_entry_point_generates(home, model_dir):
    proc = run_workbench("generate", "--model", model_dir, "--lat", 21.01, "--lon", 105.81, "--prompt", PROMPT,
                         "--steps", 2, "--seed", 0, "--out", home / "cli", env={"HF_HUB_OFFLINE": "1"}, cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and len(list((home / "cli").glob("*.tif"))) == 1
    assert "100%" in proc.stderr  # the progress bar over the denoising steps


def test_the_model_date_is_the_default_date(home, cli, tmp_path, model_dir, one_torch_thread):
    """A model trained on one date (Blue Marble 2004) generates at that date unless --date says."""
    import shutil

    dated = tmp_path / "dated"
    shutil.copytree(model_dir, dated)
    wb_json = dated / "workbench.json"
    wb = json.loads(wb_json.read_text()) if wb_json.is_file() else {}
    wb_json.write_text(json.dumps({**wb, "date": "2004-06-15"}))
    code, _, err = _generate(cli, dated, "--lat", 10, "--lon", 20, "--seed", 1, "--out", tmp_path / "a")
    assert code == 0, err
    code, _, err = _generate(cli, dated, "--lat", 10, "--lon", 20, "--seed", 1, "--date", "2019-03-01",
                             "--out", tmp_path / "b")
    assert code == 0, err
    with Catalog() as cat:
        assert sorted(r.date for r in cat.query(source="generated")) == ["2004-06-15", "2019-03-01"]


def test_the_committed_default_model(home, cli, one_torch_thread):
    """The default model is a complete DiffusionSat folder within the 25 MB budget, says how it was
    made, and `workbench generate` uses it when no --model is given (at its own gsd and date)."""
    from safetensors import safe_open

    from tasks.generation.run import DEFAULT_MODEL_DIR

    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2 ** 20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt")]      # safetensors only
    unet = json.loads((DEFAULT_MODEL_DIR / "unet" / "config.json").read_text())
    assert unet["_class_name"] == "SatUNet" and unet["use_metadata"] and unet["num_metadata"] == 7
    with safe_open(DEFAULT_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert {f"metadata_embedding.{i}.linear_{j}.weight" for i in range(7) for j in (1, 2)} <= keys
    wb = json.loads((DEFAULT_MODEL_DIR / "workbench.json").read_text())
    assert wb["training"]["command"].startswith("workbench generate train --preset bluemarble-small")
    recorded = {**wb["training"]["config"], "name": "bluemarble-small"}   # --name only names the run
    assert recorded == to_dict(load_config("bluemarble-small")), "the preset no longer retrains the default"
    assert wb["date"] == "2004-06-15" and wb["size"] == 64

    out = home / "default"
    code, stdout, err = cli("generate", "--lat", 21.01, "--lon", 105.81, "--prompt", "a satellite image",
                            "--steps", 2, "--seed", 3, "--out", out, "--no-progress")
    assert code == 0, err
    (tif,) = out.glob("*.tif")
    info = geotiff.read_info(tif)
    assert (info.width, info.height, info.count) == (64, 64, 3)
    assert info.gsd_metres() == pytest.approx(wb["gsd"], rel=1e-6)
    with Catalog() as cat:
        (row,) = cat.query(source="generated")
    assert row.date == "2004-06-15" and row.model_id.startswith("diffusionsat:default_model@")


def _fake_run(home, model_dir, name="generation-demo-20250101-120000"):
    """A finished generation run as `generate train` leaves it: config.yaml, model/, runs/latest-generation."""
    run = home / "runs" / name
    shutil.copytree(model_dir, run / "model")
    (run / "config.yaml").write_text("name: demo\n")
    (home / "runs" / "latest-generation").write_text(f"{run.resolve()}\n")
    return run


def test_run_names_a_trained_run_and_model_still_takes_one(home, cli, model_dir, one_torch_thread):
    """--run RUN (name, unique prefix, latest) uses the run's model/; the older --model RUN still works."""
    run = _fake_run(home, model_dir)
    place = ("--lat", 10, "--lon", 106.3, "--date", "2020-01-10", "--seed", 4)
    outs = {}
    for label, how in (("folder", ("--model", run / "model")), ("name", ("--run", run.name)),
                       ("prefix", ("--run", "generation-de")), ("latest", ("--run", "latest")),
                       ("old", ("--model", "latest"))):
        code, _, err = cli("generate", *how, "--prompt", PROMPT, "--steps", 1, "--size", 32, "--no-progress",
                           *place, "--out", home / "out" / label)
        assert code == 0, (label, err)
        outs[label] = _png(next((home / "out" / label).glob("*.png")))
    assert all(np.array_equal(outs["folder"], image) for image in outs.values())


@pytest.mark.parametrize("args, needle", [
    (("--run", "generation-nothing"), "generation-nothing: no such run"),
    (("--run", "latest"), "latest: no generation run"),
    (("--model", "x", "--run", "y"), "not allowed with argument"),
])
def test_bad_run_is_one_line_exit_2(home, cli, args, needle):
    code, _, err = cli("generate", *args, "--lat", 0, "--lon", 0, "--prompt", PROMPT)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_without_a_model_folder_says_so(home, cli, model_dir):
    run = _fake_run(home, model_dir)
    shutil.rmtree(run / "model")
    code, _, err = cli("generate", "--run", run.name, "--lat", 0, "--lon", 0, "--prompt", PROMPT)
    assert code == 2 and f"run {run.name} has no model/ folder" in err
