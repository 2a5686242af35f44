"""The explicit list of task command modules the CLI knows.

A task joins the CLI by adding one line here; ``workbench`` never imports a task
any other way. Each module exposes ``register(subparsers, common_parent)``.
A task's benchmarks (``make bench``) are listed the same way, as "module:function".

Verbs that use several tasks live in ``experiments/`` (a task never imports another);
they are listed under the command they belong to, so users find them where they look
(``workbench generate eval``). The task's ``register`` returns its verbs' subparsers and
each listed module's ``register(verbs, common_parent)`` adds its verbs there.
"""

TASK_COMMANDS: dict[str, str] = {
    "segment": "tasks.segmentation.cli",
    "generate": "tasks.generation.cli",
    "classify": "tasks.classification.cli",
}

EXPERIMENT_VERBS: dict[str, tuple[str, ...]] = {
    "generate": ("experiments.cli",),          # generate eval, generate seg-experiment
}

TASK_BENCHMARKS: list[str] = [
    "tasks.segmentation.bench:bench_scene",
    "tasks.generation.bench:bench_generation",
]
