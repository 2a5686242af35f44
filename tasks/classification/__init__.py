"""Classification task: timm CNNs and ViTs that label whole tiles, and write their predictions back
to the catalog so other tasks can select tiles by predicted class.

* ``cli``: every ``workbench classify`` verb (train, eval, predict).
* ``config``: ``ClassificationConfig`` and presets (``presets/*.yaml``).
* ``data``: tile selection per split, labels and class order, the crop datasets.
* ``models``: ``build_classifier`` (any timm model, local weights, the from-scratch ViT).
* ``losses``: cross-entropy with label smoothing, class weights and mixup.
* ``finetune``: linear probe and staged unfreezing (optimizer groups and a callback).
* ``task``: ``ClassificationTask``, the module the shared trainer drives.
* ``train``: ``train(cfg)``, one run from the catalog to a scored test split.
* ``evaluate``: scoring a model or a run on tiles, the report PNGs.
* ``predict``: predictions written into the catalog.
* ``run``: ``load_run``, a trained run ready to score or predict.

This package imports ``workbench`` and never another task; importing it is cheap.
"""
