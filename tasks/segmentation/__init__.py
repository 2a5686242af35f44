"""Segmentation task: models, losses and metrics as plain PyTorch building blocks.

    from tasks.segmentation import build_model, build_loss, ConfusionMatrix

* ``models``: ``build_model(arch, encoder, in_channels, classes, encoder_weights_path)`` for
  every segmentation-models-pytorch architecture plus ``AttentionUNet`` and ``UNet3Plus``;
  ``describe(model)``.
* ``losses``: ``build_loss([...terms...], num_classes)`` -- weighted BCE/CE, Dice, class-aware
  Jaccard, Focal, edge-aware; deep supervision and the UNet 3+ CGM term;
  ``class_weights_from_counts``.
* ``metrics``: ``ConfusionMatrix``, ``threshold_scan``, ``format_table``, ``plot_confusion``.

Imports are lazy so that importing the package (e.g. by the CLI registry) stays cheap.
This package imports ``workbench`` and never another task.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "models", "describe": "models", "list_architectures": "models", "list_encoders": "models",
    "load_encoder_weights": "models", "adapt_first_conv": "models",
    "AttentionUNet": "attention_unet", "UNet3Plus": "unet3plus",
    "build_loss": "losses", "SegmentationLoss": "losses", "class_weights_from_counts": "losses",
    "boundary_band": "losses",
    "ConfusionMatrix": "metrics", "ThresholdScan": "metrics", "threshold_scan": "metrics",
    "format_table": "metrics", "plot_confusion": "metrics", "flatten_metrics": "metrics",
    "logits_to_labels": "metrics", "metrics_from_matrix": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
