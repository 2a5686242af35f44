"""Platform CLI commands. Each module exposes ``register(subparsers, common_parent)``
and imports nothing heavy at module level."""

import argparse


def add_command(sub, name: str, **kwargs) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A ``workbench NAME`` command whose verbs come next; bare ``workbench NAME`` prints its help."""
    parser = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.set_defaults(subparser=parser)
    return parser, parser.add_subparsers(dest="verb", metavar="VERB")


def add_verb(verbs, name: str, common: argparse.ArgumentParser, **kwargs) -> argparse.ArgumentParser:
    """A verb with the options every verb takes and an examples epilog kept as written."""
    return verbs.add_parser(name, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
