"""``ClassificationConfig``: the schema of a tile-classification run (presets in ``presets/*.yaml``).

    from tasks.classification.config import load_config
    cfg = load_config("water-coast-land", ["model.name=resnet18", "train.epochs=5"])

A tile gets one label. Labels come from the catalog's ``label`` column (class-per-folder
imports, Blue Marble's stored labels) or are derived from each tile's water fraction with
thresholds the run records (``data.labels: water_fraction``), so "coast" can be redefined
without rebuilding the catalog. ``data.labels: auto`` (the presets') picks one of the two for
the tiles a run selects (``data.resolve_labels``), so a preset works on Blue Marble and on a
class-per-folder import alike. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.config import Presets
from workbench.config import check as _check
from workbench.data.catalog import TileSelection
from workbench.train.config import TrainConfig

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "water-coast-land"
PRECISIONS = ("auto", "bf16", "fp32")          # predict.precision (workbench.inference.resolve_precision)
SCRATCH_VIT = "scratch_vit"              # model.name that builds the ViT of ``model.vit`` (no timm name)


@dataclass
class DataConfig(TileSelection):
    """Which tiles (a catalog query per split), where their labels come from, and the crop read."""

    bands: list[int] | None = None        # 1-based band indexes; None = all bands
    # spectral indices appended as channels after the bands, from their reflectance (workbench/data/indices.py:
    # ndwi mndwi ndvi ndmi ndbi nbr); their bands must be among data.bands
    indices: list[str] = field(default_factory=list)
    size: int = 64                           # pixels read per tile (random crop in training, grid at eval)
    labels: Literal["auto", "label", "water_fraction"] = "label"   # auto: see data.resolve_labels
    land_max: float = 0.05                   # water_fraction labels: land below this ...
    water_min: float = 0.95                  # ... water above this, coast between
    classes: list[str] | None = None      # class order (None = sorted labels of the train tiles)
    augment: bool = True                     # flips / quarter turns (a tile's class does not depend on them)
    stats_max_tiles: int = 2000

    def validate(self) -> None:
        _check(self.size >= 8, "data.size: must be >= 8 pixels")
        _check(0.0 <= self.land_max < self.water_min <= 1.0,
               "data.land_max / data.water_min: need 0 <= land_max < water_min <= 1")
        _check(self.stats_max_tiles >= 1, "data.stats_max_tiles: must be >= 1")
        if self.classes is not None:
            _check(len(self.classes) >= 2, "data.classes: at least two classes (a binary task has two)")
            _check(len(set(self.classes)) == len(self.classes), "data.classes: each class once")
        if self.bands is not None:
            _check(len(self.bands) >= 1 and all(b >= 1 for b in self.bands),
                   "data.bands: 1-based band indexes, e.g. [1, 2, 3]")
        from workbench.data.indices import check_names

        self.indices = check_names(self.indices)


@dataclass
class ViTConfig:
    """A ViT trained from scratch (``model.name: scratch_vit``), timm's VisionTransformer underneath.

    ``head_dim`` is the width of each attention head; ``null`` = embed_dim / num_heads (timm's
    usual). ``head_dim: 100`` with 8 heads is Keras' MultiHeadAttention with key_dim = projection
    (100). ``head_hidden`` adds an MLP head on the pooled token (pooling one token keeps the head
    small; flattening all tokens into it would not)."""

    patch_size: int = 8
    embed_dim: int = 100
    depth: int = 8
    num_heads: int = 8
    head_dim: int | None = 100
    mlp_ratio: float = 2.0
    pool: Literal["token", "avg"] = "token"
    head_hidden: list[int] = field(default_factory=list)
    head_dropout: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0

    def validate(self) -> None:
        _check(self.patch_size >= 1, "model.vit.patch_size: must be >= 1")
        _check(self.depth >= 1 and self.num_heads >= 1, "model.vit.depth / num_heads: must be >= 1")
        _check(self.head_dim is not None or self.embed_dim % self.num_heads == 0,
               f"model.vit.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}: "
               "set model.vit.head_dim")
        _check(0.0 <= self.head_dropout < 1.0, "model.vit.head_dropout: must be in [0, 1)")


@dataclass
class ModelConfig:
    name: str = "resnet18"                   # any timm model name, or scratch_vit
    weights_path: str | None = None       # local pretrained weights (timm checkpoint file); nothing is downloaded
    # which bands that file was trained on: a known layout (workbench.weights.LAYOUTS, e.g.
    # ssl4eo-s12-resnet18) or its channel order; the first layer is then built by band name
    weight_layout: str | None = None
    weight_bands: list[str] | None = None
    input_size: int | None = None         # resize crops before the model (e.g. 224 for ViT/16); None = data.size
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    kwargs: dict = field(default_factory=dict)   # passed to timm.create_model
    vit: ViTConfig = field(default_factory=ViTConfig)

    def validate(self) -> None:
        _check(bool(self.name.strip()), "model.name: a timm model name (e.g. resnet18) or scratch_vit")
        _check(self.input_size is None or self.input_size >= 8, "model.input_size: must be >= 8 or null")
        _check(0.0 <= self.drop_rate < 1.0, "model.drop_rate: must be in [0, 1)")
        from workbench.weights import check_config

        check_config(self.weight_layout, self.weight_bands, self.weights_path, "model.weights_path")


@dataclass
class PredictConfig:
    """How ``classify predict`` runs the model (``--precision`` overrides it for one call)."""

    # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), fp32 elsewhere
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def validate(self) -> None:
        _check(self.precision in PRECISIONS, f"predict.precision: one of {', '.join(PRECISIONS)}")


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe: a linear probe with the backbone frozen, then staged unfreezing from the
    top, the backbone at a lower learning rate that warms up after each stage opens.

    ``linear_probe_epochs: 0`` and ``stage_epochs: 0`` (the defaults) train everything from
    the first step. Stages are timm's coarse layer groups (stem, stage 1, ..., head), opened
    one every ``stage_epochs`` epochs from the top; ``stages`` caps how many open (null = all)."""

    linear_probe_epochs: int = 0
    stage_epochs: int = 0
    stages: int | None = None
    backbone_lr_scale: float = 1.0
    warmup_epochs: int = 0
    freeze_norm: bool = True                 # keep frozen layers' BatchNorm statistics fixed

    def validate(self) -> None:
        _check(self.linear_probe_epochs >= 0, "finetune.linear_probe_epochs: must be >= 0")
        _check(self.stage_epochs >= 0, "finetune.stage_epochs: must be >= 0")
        _check(self.stages is None or self.stages >= 1, "finetune.stages: must be >= 1 or null")
        _check(self.backbone_lr_scale > 0, "finetune.backbone_lr_scale: must be > 0")
        _check(self.warmup_epochs >= 0, "finetune.warmup_epochs: must be >= 0")

    @property
    def staged(self) -> bool:
        return self.linear_probe_epochs > 0 or self.stage_epochs > 0


@dataclass
class LossConfig:
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0                 # > 0: mix pairs of tiles with Beta(alpha, alpha) weights
    mixup_prob: float = 1.0                  # share of batches mixed when mixup_alpha > 0
    class_weights: Literal["none", "balanced"] = "none"

    def validate(self) -> None:
        _check(0.0 <= self.label_smoothing < 1.0, "loss.label_smoothing: must be in [0, 1)")
        _check(self.mixup_alpha >= 0.0, "loss.mixup_alpha: must be >= 0")
        _check(0.0 <= self.mixup_prob <= 1.0, "loss.mixup_prob: must be in [0, 1]")


@dataclass
class ClassificationConfig:
    name: str = "classify"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def input_size(self) -> int:
        return self.model.input_size or self.data.size


PRESETS = Presets(ClassificationConfig, PRESETS_DIR, DEFAULT_PRESET)
load_config = PRESETS.load
config_from_dict = PRESETS.from_dict
list_presets = PRESETS.names
