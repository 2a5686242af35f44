"""``SegmentationConfig``: the schema of a segmentation run (presets in ``presets/*.yaml``).

    from tasks.segmentation.config import load_config
    cfg = load_config("water", ["train.lr=3e-4", "data.window=64"])

The resolved config is written to ``<run>/config.yaml`` by the trainer; prediction and
evaluation read it back with ``config_from_dict``. This module imports no torch.
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
PRECISIONS = ("auto", "bf16", "fp32")          # predict.precision (workbench.inference.resolve_precision)
DEFAULT_PRESET = "water"


@dataclass
class DataConfig(TileSelection):
    """Which tiles (a catalog query per split) and how they are cut into windows."""

    bands: list[int] | None = None        # 1-based band indexes; None = all bands
    # spectral indices appended as channels after the bands, from their reflectance (workbench/data/indices.py:
    # ndwi mndwi ndvi ndmi ndbi nbr); their bands must be among data.bands
    indices: list[str] = field(default_factory=list)
    window: int = 64                         # training window size (pixels)
    per_tile: int = 4                        # random windows per tile per epoch
    # tile: windows from each tile on its own; block: from mosaics of whole split blocks (tiles
    # sharing extra.block), so a window can be larger than a tile (workbench/data/blocks.py)
    context: Literal["tile", "block"] = "tile"
    water_min: float | None = None        # keep windows with at least this water fraction
    water_max: float | None = None        # ... and at most this one
    augment: bool = True                     # flips / rot90 on the train split
    stats_max_tiles: int = 2000              # band statistics from at most this many train tiles
    eval_stride: int | None = None        # grid stride for val/test (None = window)

    def validate(self) -> None:
        _check(self.window >= 8, "data.window: must be >= 8 pixels")
        _check(self.per_tile >= 1, "data.per_tile: must be >= 1")
        _check(self.context in ("tile", "block"), "data.context: 'tile' or 'block'")
        _check(self.stats_max_tiles >= 1, "data.stats_max_tiles: must be >= 1")
        _check(self.eval_stride is None or self.eval_stride >= 1, "data.eval_stride: must be >= 1 or null")
        for key in ("water_min", "water_max"):
            v = getattr(self, key)
            _check(v is None or 0.0 <= v <= 1.0, f"data.{key}: must be between 0 and 1 or null")
        if self.water_min is not None and self.water_max is not None:
            _check(self.water_min <= self.water_max, "data.water_min: must be <= data.water_max")
        if self.bands is not None:
            _check(len(self.bands) >= 1 and all(b >= 1 for b in self.bands),
                   "data.bands: 1-based band indexes, e.g. [1, 2, 3]")
        from workbench.data.indices import check_names

        self.indices = check_names(self.indices)


@dataclass
class ModelConfig:
    arch: str = "Unet"
    encoder: str | None = "resnet18"
    classes: int = 1                          # 1 = binary (sigmoid); >= 2 = softmax over classes
    encoder_weights_path: str | None = None   # local pretrained encoder weights (nothing is downloaded)
    # which bands that file was trained on: a known layout (workbench.weights.LAYOUTS, e.g.
    # ssl4eo-s12-resnet18) or its channel order; the first conv is then built by band name
    weight_layout: str | None = None
    weight_bands: list[str] | None = None
    kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        from workbench.weights import check_config

        _check(self.classes >= 1, "model.classes: must be >= 1 (1 = binary water mask)")
        check_config(self.weight_layout, self.weight_bands, self.encoder_weights_path, "model.encoder_weights_path")


@dataclass
class LossConfig:
    terms: list[dict] = field(default_factory=lambda: [{"name": "bce", "weight": 1.0},
                                                       {"name": "dice", "weight": 1.0}])
    deep_supervision_weights: list[float] | None = None
    cgm_weight: float = 1.0

    def validate(self) -> None:
        _check(len(self.terms) >= 1, "loss.terms: at least one term, e.g. [{name: bce}]")
        for i, term in enumerate(self.terms):
            _check(isinstance(term, dict) and "name" in term,
                   f"loss.terms[{i}]: expected a mapping with a 'name', e.g. {{name: dice, weight: 1.0}}")
        _check(self.cgm_weight >= 0, "loss.cgm_weight: must be >= 0")


@dataclass
class EvalConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    select: str = "iou"                       # metric the threshold scan maximises
    skip_empty_tiles: bool = False

    def validate(self) -> None:
        _check(len(self.thresholds) >= 1, "eval.thresholds: at least one threshold")
        _check(all(0.0 < t < 1.0 for t in self.thresholds), "eval.thresholds: each must be in (0, 1)")


@dataclass
class PredictConfig:
    window: int = 256
    overlap: int = 32
    batch_size: int = 16
    blend: Literal["gaussian", "mean"] = "gaussian"
    # test-time augmentation: average the probabilities of each window under these symmetries
    # (flips: 4 passes, d4: all 8 of the square); valid for models trained with dihedral augment
    tta: Literal["none", "flips", "d4"] = "none"
    # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), fp32 elsewhere
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def validate(self) -> None:
        _check(self.precision in PRECISIONS, f"predict.precision: one of {', '.join(PRECISIONS)}")
        _check(self.window >= 8, "predict.window: must be >= 8 pixels")
        _check(0 <= self.overlap < self.window, "predict.overlap: must be >= 0 and < predict.window")
        _check(self.batch_size >= 1, "predict.batch_size: must be >= 1")


@dataclass
class SegmentationConfig:
    name: str = "water"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def binary(self) -> bool:
        return self.model.classes == 1

    @property
    def class_names(self) -> list[str]:
        if self.model.classes <= 2:
            return ["land", "water"]
        return [f"class{i}" for i in range(self.model.classes)]


PRESETS = Presets(SegmentationConfig, PRESETS_DIR, DEFAULT_PRESET)
load_config = PRESETS.load
config_from_dict = PRESETS.from_dict
list_presets = PRESETS.names
