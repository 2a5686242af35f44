"""SatUNet and DiffusionSatPipeline on a tiny random model in DiffusionSat's folder layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tasks.generation.metadata import validate
from tasks.generation.models import PRESETS, build_model, build_pipeline, count_parameters
from tasks.generation.pipeline import SCHEDULERS, DiffusionSatPipeline, seeded_generators
from tasks.generation.run import inspect_folder
from tasks.generation.satunet import SatUNet, metadata_state_keys
from workbench.errors import WorkbenchError

MD = validate(lat=21.01, lon=105.81, gsd=0.5, cloud_cover=0.1, when="2015-06-15").normalised()
PROMPT = "a satellite image of a river delta"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    p = DiffusionSatPipeline.from_pretrained(tiny_dir, scheduler="ddim")
    p.set_progress_bar_config(disable=True)
    return p


def _images(pipe, prompt=PROMPT, metadata=MD, seeds=(0,), steps=2, guidance=7.5, size=32, **kw):
    """The pipeline's uint8 images (one prompt, or a list), image k seeded ``seeds[k]``."""
    per_prompt = len(seeds) if isinstance(prompt, str) else len(seeds) // len(prompt)
    return pipe(prompt, metadata, num_images_per_prompt=per_prompt, generator=seeded_generators(seeds),
                num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                output_type=kw.pop("output_type", "uint8"), **kw).images


def _unet(**kw) -> SatUNet:
    torch.manual_seed(0)
    cfg = dict(PRESETS["tiny"]["unet"], cross_attention_dim=32, **kw)
    return SatUNet(**cfg).eval()


def _inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.tensor(500),
            torch.randn(batch, 5, 32, generator=g))


def test_state_dict_has_the_released_metadata_keys():
    keys = set(_unet().state_dict())
    assert set(metadata_state_keys(7)) <= keys
    assert "metadata_embedding.0.linear_1.weight" in keys and "metadata_embedding.6.linear_2.bias" in keys
    assert not any(k.startswith("metadata_embedding") for k in _unet(use_metadata=False).state_dict())


def test_metadata_changes_the_output_and_plain_unet_ignores_it(one_torch_thread):
    x, t, text = _inputs()
    unet = _unet()
    md = torch.tensor([MD, MD])
    with torch.no_grad():
        with_md = unet(x, t, text, metadata=md).sample
        zero_md = unet(x, t, text, metadata=torch.zeros(2, 7)).sample
        other_md = unet(x, t, text, metadata=md * 0.5).sample
        plain = _unet(use_metadata=False)
        assert torch.equal(plain(x, t, text, metadata=md).sample, plain(x, t, text).sample)
    assert not torch.allclose(with_md, zero_md) and not torch.allclose(with_md, other_md)
    with pytest.raises(ValueError, match="metadata"):
        unet(x, t, text)
    with pytest.raises(ValueError, match="shape"):
        unet(x, t, text, metadata=torch.zeros(2, 6))


def test_metadata_is_summed_into_the_time_embedding():
    """Zero metadata still adds each MLP's response to sin/cos(0): not the same as no metadata."""
    unet = _unet()
    emb = torch.zeros(1, unet.time_embedding.linear_1.out_features)
    aug = unet.get_aug_embed(emb, None, {"metadata": torch.zeros(1, 7)})
    assert aug.shape == emb.shape and torch.allclose(aug, unet.embed_metadata(torch.zeros(1, 7), emb.dtype))


def test_config_round_trip(tmp_path, one_torch_thread):
    unet = _unet()
    unet.save_pretrained(tmp_path / "unet")
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["_class_name"] == "SatUNet"
    assert config["use_metadata"] is True and config["num_metadata"] == 7
    loaded = SatUNet.from_pretrained(tmp_path / "unet").eval()
    x, t, text = _inputs()
    md = torch.tensor([MD, MD])
    with torch.no_grad():
        assert torch.equal(unet(x, t, text, metadata=md).sample, loaded(x, t, text, metadata=md).sample)


def test_gradient_checkpointing_still_trains_the_metadata_mlps(one_torch_thread):
    unet = _unet().train()
    unet.enable_gradient_checkpointing()
    x, t, text = _inputs()
    unet(x, t, text, metadata=torch.tensor([MD, MD])).sample.square().mean().backward()
    grad = unet.metadata_embedding[3].linear_1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_folder_has_the_released_layout(tiny_dir):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_dir / sub).is_dir()
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "DiffusionSatPipeline" and index["unet"][1] == "SatUNet"
    assert (tiny_dir / "tokenizer" / "vocab.json").is_file() and (tiny_dir / "tokenizer" / "merges.txt").is_file()
    sched = json.loads((tiny_dir / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["num_train_timesteps"],
            sched["prediction_type"]) == ("scaled_linear", 0.00085, 0.012, 1000, "epsilon")
    size = sum(p.stat().st_size for p in tiny_dir.rglob("*") if p.is_file())
    assert size < 2_000_000


def test_batched_guidance_equals_two_calls(pipe, one_torch_thread):
    kw = dict(seeds=[3, 4], steps=3, guidance=5.0, size=32, output_type="latent")
    batched = _images(pipe, batched_guidance=True, **kw)
    two_calls = _images(pipe, batched_guidance=False, **kw)
    assert torch.allclose(batched, two_calls, atol=1e-5)
    assert not torch.allclose(batched, _images(pipe, **{**kw, "guidance": 1.0}), atol=1e-3)


def test_image_k_depends_on_its_seed_only(pipe, one_torch_thread):
    a = _images(pipe, seeds=[7, 8])
    b = _images(pipe, seeds=[8])
    c = _images(pipe, [PROMPT, PROMPT], seeds=[7, 8])      # two prompts, one image each: the same batch
    assert a.dtype == np.uint8 and a.shape == (2, 32, 32, 3)
    assert np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1  # same noise, another batch size
    assert np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])


def test_output_object_and_output_types(pipe, one_torch_thread):
    """diffusers' conventions: an output object with ``.images`` (a tuple with return_dict=False), PIL by
    default; np / pt are floats in [0, 1] and agree with the uint8 images PIL holds."""
    from diffusers.utils import BaseOutput
    from PIL import Image

    kw = dict(num_inference_steps=2, height=32, width=32)
    out = pipe(PROMPT, MD, generator=torch.Generator().manual_seed(1), **kw)
    assert isinstance(out, BaseOutput) and isinstance(out.images[0], Image.Image) and out.images[0].size == (32, 32)
    as_uint8 = pipe(PROMPT, MD, generator=torch.Generator().manual_seed(1), output_type="uint8", **kw).images
    assert np.array_equal(np.asarray(out.images[0]), as_uint8[0])
    as_np = pipe(PROMPT, MD, generator=torch.Generator().manual_seed(1), output_type="np", **kw).images
    as_pt = pipe(PROMPT, MD, generator=torch.Generator().manual_seed(1), output_type="pt", **kw).images
    assert as_np.dtype == np.float32 and as_np.shape == (1, 32, 32, 3) and 0 <= as_np.min() <= as_np.max() <= 1
    assert as_pt.shape == (1, 3, 32, 32) and torch.equal(as_pt.permute(0, 2, 3, 1), torch.from_numpy(as_np))
    assert np.array_equal((as_np * 255).round().astype(np.uint8), as_uint8)
    (images,) = pipe(PROMPT, MD, generator=torch.Generator().manual_seed(1), output_type="uint8",
                     return_dict=False, **kw)
    assert np.array_equal(images, as_uint8)


def test_human_units_give_the_same_latents_as_the_normalised_vector(pipe, one_torch_thread):
    """lat/lon/date/gsd/cloud_cover (scalars, or one per prompt) are shifted and normalised exactly as
    ``Metadata.normalised()``: the same seed gives bit-identical latents either way."""
    kw = dict(num_inference_steps=2, guidance_scale=4.0, height=32, width=32, output_type="latent")
    units = dict(lat=21.01, lon=105.81, gsd=0.5, cloud_cover=0.1, date="2015-06-15")
    by_units = pipe(PROMPT, generator=seeded_generators([5]), **units, **kw).images
    by_vector = pipe(PROMPT, metadata=MD, generator=seeded_generators([5]), **kw).images
    assert torch.equal(by_units, by_vector)
    other = validate(lat=-33.9, lon=18.4, gsd=10.0, cloud_cover=0.0, when="2021-01-02").normalised()
    prompts = [PROMPT, "a satellite image of farmland"]
    per_prompt = pipe(prompts, lat=[21.01, -33.9], lon=[105.81, 18.4], gsd=[0.5, 10.0], cloud_cover=[0.1, 0.0],
                      date=["2015-06-15", "2021-01-02"], generator=seeded_generators([5, 6]), **kw).images
    vectors = pipe(prompts, metadata=[MD, other], generator=seeded_generators([5, 6]), **kw).images
    tensor = pipe(prompts, metadata=torch.tensor([MD, other], dtype=torch.float64),
                  generator=seeded_generators([5, 6]), **kw).images
    assert torch.equal(per_prompt, vectors) and torch.equal(vectors, tensor)
    # image k depends on its own inputs only: equal up to float32 rounding (a batch of two may take
    # other CPU kernels than a batch of one, e.g. on AVX2 where AVX-512 machines agree bit for bit)
    torch.testing.assert_close(per_prompt[0], by_units[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(lat=95, lon=0), "lat 95: latitude must be within [-90, 90]"),
    (dict(lat=0, lon=0, date="2015-02-30"), "date 2015-02-30: not a real date"),
    (dict(lat=0, lon=0, cloud_cover=2), "cloud_cover 2: cloud cover is a fraction"),
    (dict(lat=0), "lon is required with lat"),
    (dict(lat=0, lon=0, metadata=MD), "metadata and lat, lon: give the normalised metadata vector or"),
    (dict(metadata=None), "this model takes metadata: pass metadata="),
    (dict(lat=[0, 1], lon=0), "lat: 2 values for 1 prompt(s)"),
    (dict(metadata=MD, num_inference_steps=0), "num_inference_steps 0: need at least 1"),
    (dict(metadata=MD, guidance_scale=-1.0), "guidance_scale -1.0: must be a number >= 0"),
    (dict(metadata=MD, output_type="uint16"), "output_type 'uint16': choose from pil, np, pt, uint8, latent"),
    (dict(metadata=MD, generator=[torch.Generator()] * 2), "generator: 2 generators for 1 images"),
    (dict(metadata=[MD, MD]), "metadata: 2 vectors for 1 prompt(s)"),
])
def test_bad_arguments_name_the_argument_not_a_flag(pipe, kwargs, needle):
    with pytest.raises(WorkbenchError) as exc:
        pipe(PROMPT, **{"num_inference_steps": 1, "height": 32, "width": 32, **kwargs})
    assert needle in str(exc.value) and "--" not in str(exc.value)


def test_from_pretrained_takes_diffusers_arguments(tiny_dir, pipe):
    from diffusers import EulerDiscreteScheduler

    half = DiffusionSatPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float16, local_files_only=True)
    assert half.unet.dtype == half.vae.dtype == half.text_encoder.dtype == torch.float16
    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    swapped = DiffusionSatPipeline.from_pretrained(tiny_dir, scheduler=sched, unet=pipe.unet)
    assert swapped.scheduler is sched and swapped.unet is pipe.unet
    with pytest.raises(TypeError, match="unexpected argument.*dtype"):
        DiffusionSatPipeline.from_pretrained(tiny_dir, dtype=torch.float16)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_samples(tiny_dir, name, one_torch_thread):
    p = DiffusionSatPipeline.from_pretrained(tiny_dir, scheduler=name)
    out = _images(p, seeds=[1], steps=3)
    assert out.shape == (1, 32, 32, 3)
    assert p.scheduler.config.prediction_type == "epsilon"


def test_size_must_suit_the_vae_and_unet(pipe):
    with pytest.raises(WorkbenchError, match=r"height 30: .*multiple of 4"):
        _images(pipe, size=30, steps=1)
    with pytest.raises(WorkbenchError, match=r"width 30: .*multiple of 4"):
        pipe(PROMPT, MD, height=32, width=30, num_inference_steps=1)


def test_checkpoint_without_metadata_loads_and_generates(tmp_path, one_torch_thread):
    folder = build_model({"preset": "tiny", "use_metadata": False}, tmp_path / "plain")
    assert json.loads((folder / "unet" / "config.json").read_text())["use_metadata"] is False
    p = DiffusionSatPipeline.from_pretrained(folder)
    assert not p.uses_metadata
    assert _images(p, metadata=None).shape == (1, 32, 32, 3)


def test_plain_stable_diffusion_unet_folder_loads_without_metadata(tmp_path, tiny_dir, one_torch_thread):
    """A UNet saved as diffusers' UNet2DConditionModel (no use_metadata key) is a plain text-to-image UNet."""
    from diffusers import UNet2DConditionModel

    folder = tmp_path / "sd"
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "unet")
    cfg = dict(PRESETS["tiny"]["unet"], cross_attention_dim=32, use_linear_projection=True)
    UNet2DConditionModel(**cfg).save_pretrained(folder / "unet")
    assert "use_metadata" not in json.loads((folder / "unet" / "config.json").read_text())
    p = DiffusionSatPipeline.from_pretrained(folder)
    assert not p.uses_metadata and p.unet.metadata_embedding is None
    assert _images(p, steps=1).shape == (1, 32, 32, 3)


def test_unet_in_a_training_checkpoint_folder_is_found(tmp_path, tiny_dir):
    folder = tmp_path / "released"
    shutil.copytree(tiny_dir, folder)
    (folder / "checkpoint-100").mkdir()
    (folder / "checkpoint-150000").mkdir()
    shutil.copytree(folder / "unet", folder / "checkpoint-100" / "unet")
    shutil.move(folder / "unet", folder / "checkpoint-150000" / "unet")
    assert inspect_folder(folder).paths["unet"] == folder / "checkpoint-150000" / "unet"


@pytest.mark.parametrize("remove, needle", [
    ("vae", "vae: missing model component 'vae'"),
    ("text_encoder/config.json", "text_encoder/config.json: missing config file"),
    ("unet/diffusion_pytorch_model.safetensors", "no weights for 'unet'"),
    ("tokenizer/merges.txt", "merges.txt: missing tokenizer file"),
    ("scheduler/scheduler_config.json", "scheduler_config.json: missing config file"),
])
def test_incomplete_folder_is_named(tmp_path, tiny_dir, remove, needle):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_dir, folder)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(WorkbenchError) as exc:
        DiffusionSatPipeline.from_pretrained(folder)
    assert needle in str(exc.value)


def test_corrupt_weights_are_a_user_error(tmp_path, tiny_dir):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WorkbenchError, match="vae: cannot load the vae"):
        DiffusionSatPipeline.from_pretrained(folder)


def test_small_preset_fits_the_budget(tmp_path):
    pipe, cfg = build_pipeline("small", tmp_path / "small")
    counts = count_parameters(pipe)
    assert sum(counts.values()) * 4 <= 20_000_000
    assert pipe.unet.config.num_metadata == 7 and pipe.unet.config.use_metadata
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim


def test_diffusers_save_pretrained_round_trips(tmp_path, pipe, one_torch_thread):
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "DiffusionSatPipeline"
    again = DiffusionSatPipeline.from_pretrained(tmp_path / "saved", scheduler="ddim")
    assert again.defaults == pipe.defaults                  # workbench.json travels with the folder
    assert np.array_equal(_images(pipe, seeds=[2]), _images(again, seeds=[2]))
