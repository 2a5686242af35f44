"""The explicit list of task command modules the CLI knows.

A task joins the CLI by adding one line here; ``workbench`` never imports a task
any other way. Each module exposes ``register(subparsers, common_parent)``.
"""

TASK_COMMANDS: dict[str, str] = {
    "segment": "tasks.segmentation.cli",
}
