"""The model factory: a miniature DiffusionSat from a small config, in the released folder layout.

    from tasks.generation.models import build_model
    build_model("tiny", "models/tiny")                  # a few hundred KB: tests
    build_model({"preset": "small", "unet": {"layers_per_block": 1}}, "models/small")

The result is what a DiffusionSat checkpoint is -- AutoencoderKL, CLIP text encoder,
CLIP tokenizer, SatUNet (``use_metadata``, 7 metadata inputs) and an SD-style scheduler
(scaled-linear betas 0.00085..0.012 over 1000 steps; epsilon unless ``scheduler`` says v, which
the released checkpoints use) -- only with tiny widths
and random weights, and a tokenizer whose merges are learned locally from captions.
It loads through ``DiffusionSatPipeline.from_pretrained`` like the real thing, so every
code path (CLI, catalog, georeferencing, later fine-tuning from ``--init small``) runs
offline. "small" is sized for the default model the workbench will train and commit.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .metadata import NUM_METADATA
from .vocab import BOS, EOS, save_tokenizer

# Words of the captions the workbench writes (Blue Marble tiles, fMoW-style prompts): enough
# for a few hundred merges; pass ``corpus`` to learn from real captions instead.
CAPTIONS = (
    "a satellite image of a coast where desert land meets shallow water, in the subtropical northern hemisphere",
    "a satellite image of vegetated land in the tropical southern hemisphere",
    "a satellite image of deep water in the temperate northern hemisphere",
    "a satellite image of snow- or ice-covered land in the polar southern hemisphere",
    "a satellite image of a coast where sparsely vegetated land meets deep water",
    "a satellite image of a river delta", "a satellite image of a city", "a satellite image of farmland",
    "a fmow satellite image of a airport in India", "a fmow satellite image of a port in Vietnam",
    "a fmow satellite image of a amusement park in Australia", "a fmow satellite image of a dam in Brazil",
    "a fmow satellite image of a electric substation in United States",
    "a satellite image of a lake surrounded by forest", "a satellite image of mountains with glaciers",
    "at a resolution of 10 metres. The longitude, latitude is 105.81, 21.01.",
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vae": {"block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        "tokenizer": {"merges": 64, "max_length": 32},
        "unet": {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_head_dim": 2,
                 "norm_num_groups": 4, "sample_size": 16,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]},
    },
    "small": {
        # VAE [16, 32, 64]: at 64 px its full-resolution convolutions dominate a training step;
        # 16 channels there cost 0.9 s per batch of 32 on one CPU core instead of 2.3 s for 32.
        "vae": {"block_out_channels": [16, 32, 64], "layers_per_block": 1, "latent_channels": 4,
                "norm_num_groups": 8},
        "text": {"hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 3, "num_attention_heads": 4},
        "tokenizer": {"merges": 1000, "max_length": 77},
        "unet": {"block_out_channels": [32, 64, 128], "layers_per_block": 1, "attention_head_dim": 4,
                 "norm_num_groups": 16, "sample_size": 16,
                 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]},
    },
}

# SD's betas (those of the released checkpoints) with the epsilon objective of a fresh miniature.
# The released DiffusionSat checkpoints are v-prediction (SD 2.1's scheduler): their folder's own
# scheduler config says so and is what is read. ``model.build.scheduler`` overrides any key, e.g.
# {prediction_type: v_prediction, rescale_betas_zero_snr: true, timestep_spacing: trailing}.
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False,
             "set_alpha_to_one": False, "steps_offset": 1}


def resolve_config(cfg: str | Mapping[str, Any]) -> dict[str, Any]:
    """A preset name, or a mapping ``{"preset": NAME, section: {key: value}}`` laid over that preset."""
    from workbench.errors import WorkbenchError

    cfg = {"preset": cfg} if isinstance(cfg, str) else dict(cfg)
    name = cfg.get("preset", "tiny")
    if name not in PRESETS:
        raise WorkbenchError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
    out = copy.deepcopy(PRESETS[name])
    out.update(preset=name, use_metadata=True, num_metadata=NUM_METADATA, seed=0, defaults={},
               scheduler=dict(SCHEDULER))
    for key, value in cfg.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_pipeline(cfg: str | Mapping[str, Any] = "tiny", folder: str | Path | None = None,
                   corpus: Iterable[str] | None = None):
    """The pipeline in memory (random weights, seeded). The tokenizer is written to
    ``folder/tokenizer`` (a temporary folder if none) because CLIPTokenizer loads from files."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .pipeline import DiffusionSatPipeline
    from .satunet import SatUNet

    c = resolve_config(cfg)
    tok_dir = Path(folder) / "tokenizer" if folder else Path(tempfile.mkdtemp(prefix="wb-tokenizer-"))
    vocab = save_tokenizer(tok_dir, corpus or CAPTIONS, c["tokenizer"]["merges"], c["tokenizer"]["max_length"])
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(c["seed"]))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), max_position_embeddings=c["tokenizer"]["max_length"],
            bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
            projection_dim=c["text"]["hidden_size"], **c["text"]))
        vae = AutoencoderKL(in_channels=3, out_channels=3, sample_size=c["unet"]["sample_size"] * 2 ** (
            len(c["vae"]["block_out_channels"]) - 1),
            down_block_types=["DownEncoderBlock2D"] * len(c["vae"]["block_out_channels"]),
            up_block_types=["UpDecoderBlock2D"] * len(c["vae"]["block_out_channels"]), **c["vae"])
        unet = SatUNet(use_metadata=c["use_metadata"], num_metadata=c["num_metadata"],
                       in_channels=c["vae"]["latent_channels"], out_channels=c["vae"]["latent_channels"],
                       cross_attention_dim=c["text"]["hidden_size"], use_linear_projection=True, **c["unet"])
    scheduler = DDIMScheduler(**c["scheduler"])
    return DiffusionSatPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                unet=unet.eval(), scheduler=scheduler), c


def build_model(cfg: str | Mapping[str, Any], folder: str | Path, corpus: Iterable[str] | None = None,
                dtype: str = "float32") -> Path:
    """Build and save a miniature DiffusionSat in the released layout (safetensors); return the folder."""
    folder = Path(folder)
    pipe, resolved = build_pipeline(cfg, folder, corpus)
    if dtype != "float32":
        pipe.to(getattr(torch, dtype))
    save_model(pipe, folder, defaults=resolved.get("defaults") or None, build_config=resolved)
    return folder


def save_model(pipe, folder: str | Path, defaults: Mapping[str, Any] | None = None,
               build_config: Mapping[str, Any] | None = None) -> Path:
    """Save every component in the released layout, keeping our locally made tokenizer files as written.

    ``defaults`` (gsd, cloud_cover, size) go to ``workbench.json`` for ``workbench generate``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)  # model_index.json: component classes
    pipe.unet.save_pretrained(folder / "unet", safe_serialization=True)
    pipe.vae.save_pretrained(folder / "vae", safe_serialization=True)
    pipe.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    pipe.scheduler.save_pretrained(folder / "scheduler")
    if not (folder / "tokenizer" / "vocab.json").is_file():
        pipe.tokenizer.save_pretrained(folder / "tokenizer")
    if defaults or build_config:
        extra = {**({"build": dict(build_config)} if build_config else {}), **dict(defaults or {})}
        (folder / "workbench.json").write_text(json.dumps(extra, indent=2, default=list) + "\n")
    return folder


def count_parameters(pipe) -> dict[str, int]:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "vae", "text_encoder")}
