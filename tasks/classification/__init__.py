"""Classification task: timm CNNs and ViTs that label whole tiles, and write their predictions back
to the catalog so other tasks can select tiles by predicted class.

* ``config``: ``ClassificationConfig`` and presets (``presets/*.yaml``).
* ``models``: ``build_classifier`` (any timm model, local weights, the from-scratch ViT).
* ``finetune``: linear probe and staged unfreezing.
* ``data`` / ``train`` / ``evaluate`` / ``predict``: tiles and labels, the run, scoring, catalog writes.

This package imports ``workbench`` and never another task; importing it is cheap.
"""
