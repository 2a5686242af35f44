"""DiffusionSat-shaped folders (built here from the tiny model) and what ``generate`` says about them:
which UNet loads when the folder holds several, a UNet without its metadata tensors, a pickled text
encoder, DiffusionSat's own ``model_index.json``, where the size comes from, ``--date unknown``, and
the warnings for prompt words and GSDs the model never saw."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tasks.generation.models import build_model
from tasks.generation.run import inspect_folder
from workbench.data.catalog import Catalog

PROMPT = "a satellite image"
PLAIN_CAPTIONS = 'name: plain\nrules:\n  - text: "a satellite image"\n'


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"md": build_model("tiny", root / "md"),
            "plain": build_model({"preset": "tiny", "use_metadata": False}, root / "plain")}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def generate(cli, folder: Path, out: Path, *extra):
    return cli("generate", "--model", folder, "--prompt", PROMPT, "--lat", 21.0, "--lon", 105.8, "--steps", 1,
               "--size", 32, "--seed", 0, "--no-progress", "--out", out, *extra)


def one_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def with_checkpoint(tmp_path: Path, root_unet: Path, checkpoint_unet: Path) -> Path:
    """A released-style folder: a root unet/ and checkpoint-N/unet (the newest one counts)."""
    folder = copy(root_unet.parent, tmp_path / "released")
    for n, unet in ((100, root_unet), (2000, checkpoint_unet)):
        shutil.copytree(unet, folder / f"checkpoint-{n}" / "unet")
    return folder


def test_the_metadata_unet_of_a_checkpoint_wins_over_a_plain_root_unet(home, cli, models, tmp_path,
                                                                      one_torch_thread):
    folder = with_checkpoint(tmp_path, models["plain"] / "unet", models["md"] / "unet")
    info = inspect_folder(folder)
    assert info.paths["unet"] == folder / "checkpoint-2000" / "unet" and info.uses_metadata
    code, _, err = generate(cli, folder, tmp_path / "out")
    assert code == 0, err
    assert "UNet checkpoint-2000/unet (it has the metadata embedding" in err
    assert "use_metadata false" in err and "warning" not in err


def test_a_root_unet_with_metadata_is_used_and_the_checkpoint_named(models, tmp_path):
    folder = with_checkpoint(tmp_path, models["md"] / "unet", models["plain"] / "unet")
    info = inspect_folder(folder)
    assert info.paths["unet"] == folder / "unet"
    assert info.unet_note == "UNet unet/ (also there: checkpoint-2000/unet, not used)"


def test_a_unet_without_metadata_warns_that_the_place_is_not_a_condition(home, cli, models, tmp_path,
                                                                         one_torch_thread):
    code, _, err = generate(cli, models["plain"], tmp_path / "out")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "use_metadata false" in warnings[0] and "ignores the place, date" in warnings[0]


def test_a_unet_file_without_the_metadata_tensors_is_one_line_naming_them(home, cli, models, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = copy(models["md"], tmp_path / "stripped")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("metadata_embedding.")}, weights)
    before = weights.read_bytes()
    line = one_line(*generate(cli, folder, tmp_path / "out")[::2])
    assert str(weights) in line and "metadata_embedding.0.linear_1.bias" in line and "28 in all" in line
    assert "meta tensor" not in line and weights.read_bytes() == before and not (tmp_path / "out").exists()


class _Runs:
    """Unpickling this runs a command: the workbench must refuse it without executing it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_text_encoder_is_refused_unexecuted_in_one_line(home, cli, models, tmp_path):
    folder = copy(models["md"], tmp_path / "pickled")
    marker = tmp_path / "executed"
    for f in (folder / "text_encoder").glob("*.safetensors"):
        f.unlink()
    weights = folder / "text_encoder" / "pytorch_model.bin"
    weights.write_bytes(pickle.dumps({"text_model.embeddings.position_ids": _Runs(marker)}, protocol=4))
    code, _, err = generate(cli, folder, tmp_path / "out")
    line = one_line(code, err)
    assert str(weights) in line and "refused, not executed" in line
    assert not marker.exists() and "UserWarning" not in err


@pytest.mark.parametrize("index, ok", [
    ({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.17.0", "unet": [None, "SatUNet"],
      "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
      "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}, True),
    ({"_class_name": "StableDiffusionXLPipeline"}, False),
])
def test_diffusionsat_model_index_is_accepted_and_another_pipeline_refused(home, cli, models, tmp_path, index, ok,
                                                                          one_torch_thread):
    folder = copy(models["md"], tmp_path / "indexed")
    (folder / "model_index.json").write_text(json.dumps(index))
    code, _, err = generate(cli, folder, tmp_path / "out")
    if ok:
        assert code == 0, err
    else:
        line = one_line(code, err)
        assert "model_index.json" in line and "StableDiffusionXLPipeline" in line


def test_the_size_comes_from_the_recorded_training_size_else_the_unet_says_which(models, tmp_path):
    from tasks.generation.predict import Options, loading_notes

    folder = copy(models["md"], tmp_path / "sd21")
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 96}))
    size, source = inspect_folder(folder).size_source()
    assert size == 96 * 2 and "sample_size 96" in source and "inherited from SD 2.1" in source
    notes = loading_notes(inspect_folder(folder), Options())
    assert len(notes) == 1 and notes[0].startswith("size 192 px:") and "--size" in notes[0]
    assert loading_notes(inspect_folder(folder), Options(size=64)) == []      # --size given: nothing to say
    (folder / "workbench.json").write_text(json.dumps({"size": 64}))
    assert inspect_folder(folder).size_source()[0] == 64
    assert loading_notes(inspect_folder(folder), Options()) == []


def test_date_unknown_is_the_zero_date(home, cli, models, tmp_path, one_torch_thread):
    from tasks.generation.metadata import validate

    known, unknown = validate(21.0, 105.8, 10, 0.1, "2015-06-15"), validate(21.0, 105.8, 10, 0.1, "unknown")
    assert unknown.normalised()[:4] == known.normalised()[:4] and unknown.normalised()[4:] == [0.0, 0.0, 0.0]
    code, out, err = generate(cli, models["md"], tmp_path / "out", "--date", "unknown")
    assert code == 0, err
    (tif,) = (tmp_path / "out").glob("*.tif")
    assert "_unknown_" in tif.name and "unknown" in out
    with Catalog() as cat:
        (row,) = cat.query(source="generated")
    assert row.date is None and row.extra["metadata_normalised"][4:] == [0.0, 0.0, 0.0]
    assert "unknown" in cli("generate", "--help")[1]


def test_words_and_gsds_the_model_never_saw_are_warned_once(home, cli, models, tmp_path, one_torch_thread):
    folder = copy(models["md"], tmp_path / "plain-captions")
    (folder / "workbench.json").write_text(json.dumps({"gsd": 7421.0, "training": {
        "caption_template": PLAIN_CAPTIONS}}))
    code, _, err = generate(cli, folder, tmp_path / "a")
    assert code == 0, err
    assert "warning" not in err                                   # the training caption, at the model's GSD
    code, _, err = cli("generate", "--model", folder, "--prompt", "a satellite image of a river delta", "--lat", 21,
                       "--lon", 105, "--gsd", 10, "--steps", 1, "--size", 32, "--seed", 0, "--no-progress", "--out",
                       tmp_path / "b")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err
    assert "delta, of, river never occur" in warnings[0] and '"a satellite image"' in warnings[0]
    assert "GSD 10 m" in warnings[1] and "7421 m" in warnings[1]
