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


def add_run_option(v: argparse.ArgumentParser, *, older_positional: bool = False) -> None:
    """``--run RUN``: how every verb names a trained run. ``older_positional`` also accepts the
    positional ``VERB RUN`` of scripts written before ``--run`` (hidden from ``--help``)."""
    v.add_argument("--run", metavar="RUN", required=not older_positional,
                   help="trained run: its folder, name, a unique prefix, or 'latest'")
    if older_positional:
        v.add_argument("run_positional", nargs="?", metavar="RUN", help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace, verb: str) -> str:
    """The run ``--run`` (or the older positional form) names; one line when none or two differ."""
    from workbench.errors import WorkbenchError

    positional = getattr(args, "run_positional", None)
    if args.run and positional and args.run != positional:
        raise WorkbenchError(f"{verb}: two runs given ({positional!r} and --run {args.run!r}): give one --run RUN")
    ref = args.run or positional
    if not ref:
        raise WorkbenchError(f"{verb}: which run? give --run RUN (a run folder, name, unique prefix or 'latest')")
    return ref
