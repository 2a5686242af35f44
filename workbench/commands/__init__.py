"""Platform CLI commands. Each module exposes ``register(subparsers, common_parent)``
and imports nothing heavy at module level."""
