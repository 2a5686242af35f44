"""``GenerationConfig``: the schema of a DiffusionSat training run (presets in ``presets/*.yaml``).

    from tasks.generation.config import load_config
    cfg = load_config("bluemarble-small", ["train.max_steps=200"])

A run fine-tunes the SatUNet of a DiffusionSat folder (``model.path``), or of a freshly
built miniature one (``model.init: tiny | small``), on catalog tiles. The VAE and the text
encoder stay frozen, as in DiffusionSat. A fresh miniature model's VAE is random, so with
``vae.enabled`` the run first fits it to the same tiles (a run of its own, the *VAE stage*,
``runs/generation-<name>-vae-<time>``) and then trains the UNet on its latents.
This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.config import Presets
from workbench.config import check as _check
from workbench.train.config import TrainConfig

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "bluemarble-small"
INIT_CHOICES = ("tiny", "small")


@dataclass
class DataConfig:
    """Which tiles, how they become (image, caption, metadata) examples, and what is dropped."""

    catalog: str | None = None            # catalog path (None = the workbench home's catalog)
    source: str | None = "bluemarble"     # catalog source filter (None = any source)
    where: str | None = None              # extra SQL filter on the catalog
    train_split: str = "train"               # a split, or several: "train,val"
    val_split: str | None = "val"         # None: no validation loss
    val_tiles: int = 256                     # at most this many val tiles (evenly spread) for val/loss
    max_tiles: int | None = None          # at most this many train tiles (evenly spread); None = all
    size: int = 64                           # image side in pixels (centre crop of larger tiles)
    bands: list[int] | None = None        # 1-based RGB band indexes; None = the first three
    value_max: float | None = None        # pixel value shown as white; None = 255 (uint8 tiles only)
    captions: str = "bluemarble-plain"       # caption template: a name in prompts/captions/ or a YAML path
    metadata_in_caption: bool = False        # append DiffusionSat's metadata sentence to each caption
    caption_dropout: float = 0.1             # share of examples trained with the empty prompt
    metadata_dropout: float = 0.1            # each metadata value set to 0 with this probability
    flips: bool = True                       # random horizontal / vertical flips
    cache: bool = True                       # encode every tile (and flip) and caption once per run

    def validate(self) -> None:
        _check(self.size >= 8, "data.size: must be >= 8 pixels")
        _check(bool(self.splits(self.train_split)), "data.train_split: a split name, or several: train,val")
        _check(self.val_tiles >= 1, "data.val_tiles: must be >= 1")
        _check(self.max_tiles is None or self.max_tiles >= 1, "data.max_tiles: must be >= 1 or null")
        _check(0.0 <= self.caption_dropout <= 1.0, "data.caption_dropout: must be in [0, 1]")
        _check(0.0 <= self.metadata_dropout <= 1.0, "data.metadata_dropout: must be in [0, 1]")
        _check(bool(self.captions.strip()), "data.captions: a template name (bluemarble, fmow) or a YAML path")
        _check(self.value_max is None or self.value_max > 0, "data.value_max: must be > 0 or null")
        if self.bands is not None:
            _check(len(self.bands) == 3 and all(b >= 1 for b in self.bands),
                   "data.bands: three 1-based band indexes (red, green, blue), e.g. [4, 3, 2]")


    @staticmethod
    def splits(value: str | None) -> list[str]:
        return [p.strip() for p in str(value or "").split(",") if p.strip()]


@dataclass
class SampleConfig:
    """How the trained model samples by default (``workbench.json`` of its folder: ``workbench
    generate`` and ``generate eval`` use these unless told otherwise)."""

    steps: int = 20
    guidance: float = 3.0
    scheduler: Literal["ddim", "dpm", "euler", "pndm", "ddpm"] = "ddim"

    def validate(self) -> None:
        _check(self.steps >= 1, "sample.steps: must be >= 1")
        _check(self.guidance >= 0, "sample.guidance: must be >= 0 (1 = no guidance)")


@dataclass
class ModelConfig:
    """What to train: an existing DiffusionSat folder, or a fresh miniature one."""

    path: str | None = None               # a DiffusionSat folder (or a generation run) to fine-tune
    init: str | None = None               # tiny | small: build a fresh miniature model instead
    build: dict = field(default_factory=dict)  # overrides of the init preset, e.g. {unet: {layers_per_block: 2}}
    gradient_checkpointing: bool | None = None  # None = on a GPU only
    min_snr_gamma: float | None = 5.0     # min-SNR loss weight min(snr, gamma) / snr; None = plain MSE
    noise_offset: float = 0.0                # extra per-channel noise (0 = off)

    def validate(self) -> None:
        _check((self.path is None) != (self.init is None),
               "model: give exactly one of model.path (a DiffusionSat folder, --model DIR) or "
               f"model.init ({' | '.join(INIT_CHOICES)}, --init NAME)")
        _check(self.init is None or self.init in INIT_CHOICES,
               f"model.init {self.init!r}: choose {' or '.join(INIT_CHOICES)}")
        _check(self.min_snr_gamma is None or self.min_snr_gamma > 0, "model.min_snr_gamma: must be > 0 or null")
        _check(self.noise_offset >= 0, "model.noise_offset: must be >= 0")


@dataclass
class VaeConfig:
    """The VAE stage: fit a fresh miniature model's AutoencoderKL to the tiles before the UNet
    trains on its latents (only with ``model.init``). L1 + MSE reconstruction plus a small KL;
    afterwards ``scaling_factor`` is set to 1 / std of the train latents, as in Stable Diffusion."""

    enabled: bool = False
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 1e-6
    train: TrainConfig = field(default_factory=TrainConfig)  # the stage's own loop (the presets set it)

    def validate(self) -> None:
        _check(self.l1_weight >= 0 and self.mse_weight >= 0 and self.l1_weight + self.mse_weight > 0,
               "vae.l1_weight / vae.mse_weight: >= 0, not both 0")
        _check(self.kl_weight >= 0, "vae.kl_weight: must be >= 0")


@dataclass
class GenerationConfig:
    name: str = "generate"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(init="small"))
    vae: VaeConfig = field(default_factory=VaeConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        _check(not self.vae.enabled or self.model.init is not None,
               "vae.enabled: only a fresh model (model.init) trains its VAE; a DiffusionSat folder's VAE "
               "stays frozen (set vae.enabled=false)")


PRESETS = Presets(GenerationConfig, PRESETS_DIR, DEFAULT_PRESET)
load_config = PRESETS.load
config_from_dict = PRESETS.from_dict
list_presets = PRESETS.names
