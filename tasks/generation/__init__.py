"""Generation task: DiffusionSat-compatible text + metadata -> satellite image.

* ``cli``: every verb of ``workbench generate`` (generate, ``train``); ``eval`` and
  ``seg-experiment`` also score with a segmentation model, so they live in ``experiments/``.
* ``config`` (+ ``presets/*.yaml``): the training config and its presets.
* ``data``: catalog tiles as training examples -- the run's tile selection (``select``),
  captions from a template, metadata vectors, tile crops, and the latent datasets (each
  caption and each tile encoded once by the frozen encoders).
* ``models``: the model factory, ``build_model(cfg, folder)``, a miniature DiffusionSat from a
  config (tests, ``--init``).
* ``losses``: the diffusion loss pieces (epsilon / v target, min-SNR weights, metadata and
  caption dropout, flips).
* ``task``: the task modules the shared trainer drives, ``VaeTask`` (a fresh model's VAE) and
  ``UnetTask`` (the SatUNet with the VAE and text encoder frozen).
* ``train``: ``train(cfg)``, both stages and the trained model folder (``workbench generate train``).
* ``evaluate``: location fidelity and water-fraction correlation of generated tiles.
* ``predict`` / ``jobs``: what to generate, and generating it into PNG + GeoTIFF + catalog rows.
* ``run``: the model to use -- a DiffusionSat folder (layout checked without torch), the
  default model, or a generation run's ``model/`` (``load_run``, ``resolve_model``).
* ``bench``: the sampler benchmark.
* Extra modules: ``satunet`` (``SatUNet``, diffusers' UNet2DConditionModel + DiffusionSat's
  metadata embedding), ``pipeline`` (``DiffusionSatPipeline``, called as diffusers' pipelines
  are; ``load_pipeline`` puts one on a device), ``metadata`` (human units -> the 7 normalised
  values), ``captions`` (``prompts/captions/*.yaml``), ``vocab`` (the miniature tokenizer).

Nothing heavy is imported here: the CLI registry imports ``tasks.generation.cli`` for --help.
This package imports ``workbench`` and never another task.
"""
