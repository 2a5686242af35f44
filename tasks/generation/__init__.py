"""Generation task: DiffusionSat-compatible text + metadata -> satellite image.

* ``cli``: every verb of ``workbench generate`` (generate, ``train``; ``eval`` and
  ``seg-experiment`` come from ``eval_cli`` / ``seg_experiment_cli``).
* ``metadata``: human units (lat, lon, GSD, cloud cover, date) -> the 7 normalised values.
* ``satunet``: ``SatUNet``, diffusers' UNet2DConditionModel + DiffusionSat's metadata embedding.
* ``pipeline``: ``DiffusionSatPipeline`` (tokenizer, CLIP text encoder, VAE, SatUNet, any
  scheduler), called as diffusers' pipelines are; ``load_pipeline`` puts one on a device.
* ``run``: the model to use -- a DiffusionSat folder (layout checked without torch), the
  default model, or a generation run's ``model/`` (``load_run``, ``resolve_model``).
* ``models``: the model factory, ``build_model(cfg, folder)``, a miniature DiffusionSat from a
  config (tests, ``--init``).
* ``jobs`` / ``predict``: what to generate, and generating it into PNG + GeoTIFF + catalog rows.
* ``config`` (+ ``presets/*.yaml``), ``captions`` (``prompts/captions/*.yaml``), ``data``,
  ``train``: ``workbench generate train`` (fine-tuning; the default model's recipe).
* ``evaluate`` / ``eval_cli``: ``workbench generate eval`` (location fidelity, water-fraction
  correlation); ``bench``: the sampler benchmark.

Nothing heavy is imported here: the CLI registry imports ``tasks.generation.cli`` for --help.
This package imports ``workbench`` and never another task.
"""
