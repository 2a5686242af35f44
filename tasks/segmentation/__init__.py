"""Segmentation task: water (or any class) masks from catalog tiles with UNet-family models.

    from tasks.segmentation import build_model, build_loss, load_run, ConfusionMatrix

Which module holds what:

* ``cli``: every ``workbench segment`` verb (train, eval, predict); stdlib-only at import.
* ``config``: ``SegmentationConfig`` and preset loading (``presets/*.yaml``).
* ``data``: catalog query -> tiles -> datasets (``base_query``, ``query_split``, ``scan_masks``,
  ``train_dataset``, ``eval_dataset``, ``context_of``, ``batch_valid``).
* ``models``: ``build_model(arch, encoder, in_channels, classes, encoder_weights_path)`` for
  every segmentation-models-pytorch architecture plus ``AttentionUNet`` (``attention_unet``)
  and ``UNet3Plus`` (``unet3plus``), an optional refinement head (``refine``);
  ``model_from_config``; ``describe(model)``.
* ``losses``: ``build_loss([...terms...], num_classes)`` -- BCE/CE/Focal on smp.losses and torch,
  Dice, class-aware Jaccard, edge-aware; deep supervision and the UNet 3+ CGM term;
  ``loss_from_config``, ``class_weights_from_counts``.
* ``task``: ``SegmentationTask``, what the shared trainer drives: ``setup`` builds the model and
  the loss on the trainer's device; the loss of a batch; validation loss / IoU / mean IoU.
* ``train``: ``train(cfg)`` -- one run from a catalog query to a scored test split (the steps
  every task shares are ``workbench.train.run_steps``).
* ``evaluate``: scoring a model or a finished run on a split (``evaluate_run``).
* ``predict``: sliding-window prediction over a scene; pseudo-masks for catalog tiles.
* ``run``: ``load_run(ref) -> SegmentationRun`` (config, model with its best weights, band
  statistics, threshold).
* ``metrics``: threshold scans on top of ``workbench.metrics`` (``ConfusionMatrix``, tables).
* ``scene`` (scoring a predicted scene against a truth mask), ``report`` (plots), ``bench``.

Imports are lazy so that importing the package (e.g. by the CLI registry) stays cheap.
This package imports ``workbench`` and never another task.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "models", "describe": "models", "list_architectures": "models", "list_encoders": "models",
    "load_encoder_weights": "models", "adapt_first_conv": "models", "model_from_config": "models",
    "AttentionUNet": "attention_unet", "UNet3Plus": "unet3plus",
    "build_loss": "losses", "SegmentationLoss": "losses", "class_weights_from_counts": "losses",
    "boundary_band": "losses", "loss_from_config": "losses",
    "load_run": "run", "SegmentationRun": "run", "SegmentationTask": "task",
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
