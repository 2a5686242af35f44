"""The explicit list of task command modules the CLI knows.

A task joins the CLI by adding one line here; ``workbench`` never imports a task
any other way. Each module exposes ``register(subparsers, common_parent)``.
A task's benchmarks (``make bench``) are listed the same way, as "module:function".
"""

TASK_COMMANDS: dict[str, str] = {
    "segment": "tasks.segmentation.cli",
    "generate": "tasks.generation.cli",
    "classify": "tasks.classification.cli",
}

TASK_BENCHMARKS: list[str] = [
    "tasks.segmentation.bench:bench_scene",
    "tasks.generation.bench:bench_generation",
]
