"""Generation task: DiffusionSat-compatible text + metadata -> satellite image.

* ``metadata``: human units (lat, lon, GSD, cloud cover, date) -> the 7 normalised values.
* ``satunet``: ``SatUNet``, diffusers' UNet2DConditionModel + DiffusionSat's metadata embedding.
* ``pipeline``: ``DiffusionSatPipeline`` (tokenizer, CLIP text encoder, VAE, SatUNet, any scheduler).
* ``folder``: the model folder layout, checked without torch.
* ``build``: ``build_model(cfg, folder)``, a miniature DiffusionSat from a config (tests, ``--init``).
* ``jobs`` / ``generate`` / ``cli``: ``workbench generate``.
* ``config`` (+ ``presets/*.yaml``), ``captions`` (``prompts/captions/*.yaml``), ``data``, ``train``,
  ``train_cli``: ``workbench generate train`` (fine-tuning; the default model's recipe).
* ``evaluate`` / ``eval_cli``: ``workbench generate eval`` (location fidelity, water-fraction correlation).

Nothing heavy is imported here: the CLI registry imports ``tasks.generation.cli`` for --help.
This package imports ``workbench`` and never another task.
"""
