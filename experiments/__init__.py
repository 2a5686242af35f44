"""Experiments: the only code that uses several tasks, by plain Python calls.

A task (``tasks/<task>``) never imports another task; a question that needs two of them is
asked here, calling their functions directly (real return values, real exceptions):

* ``generated_tiles``: ``workbench generate seg-experiment``, does a segmentation model gain
  from generated tiles? (real vs real + generated, pseudo-masks by the real-only model).
* ``water_scoring``: the generator's water-fraction correlation in ``workbench generate eval``,
  its generated tiles scored by a segmentation run.
* ``cli``: those two verbs, hung on ``workbench generate`` by the CLI registry
  (``workbench/tasks_registry.py``); stdlib only at import time.
"""
