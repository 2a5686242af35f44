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


def add_catalog_immutable(v: argparse.ArgumentParser) -> None:
    """``--catalog-immutable``: the one flag of the verbs that only read the catalog (they open it
    read-only anyway: no write lock, so a writer elsewhere is never held up)."""
    v.add_argument("--catalog-immutable", action="store_true",
                   help="promise that nothing writes the catalog while this command runs (a frozen copy on "
                        "shared storage, read from several machines): SQLite then opens it immutable, with no "
                        "lock and no -wal/-shm file; a change made meanwhile can give wrong rows")


def refuse_immutable_writer(args: argparse.Namespace, writes: str) -> None:
    """``--catalog-immutable`` is a reader's promise: a command that is about to write the catalog
    (``writes`` names what does, e.g. ``--to-catalog``) refuses it before any work, in one line."""
    if getattr(args, "catalog_immutable", False):
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"--catalog-immutable: {writes} writes the catalog; drop --catalog-immutable")


def catalog_from_args(args: argparse.Namespace, read_only: bool = False, writes: str = "this command"):
    """The catalog ``--catalog`` names (default: the workbench home's): read-only for a verb that
    only reads (immutable with ``--catalog-immutable``), else a writer, which refuses that flag."""
    from workbench import paths
    from workbench.data.catalog import Catalog

    if not read_only:
        refuse_immutable_writer(args, writes)
    return Catalog(getattr(args, "catalog", None) or paths.default_catalog(), read_only=read_only,
                   immutable=read_only and bool(getattr(args, "catalog_immutable", False)))


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


def add_input_options(v: argparse.ArgumentParser) -> None:
    """``--bands --scale --offset``: what an input that does not say so itself is (every verb
    that reads a user's scene takes the same three)."""
    v.add_argument("--bands", metavar="NAMES", type=_band_list,
                   help="names of the input's bands in order when the file carries none, e.g. B02,B03,B04,B08")
    v.add_argument("--scale", type=float, metavar="S",
                   help="reflectance = value x S + OFFSET, when the input does not declare it "
                        "(default: 0.0001 for integers, 1 for floats)")
    v.add_argument("--offset", type=float, metavar="O",
                   help="see --scale; -0.1 for Sentinel-2 DN with the +1000 offset (baseline 04.00+)")
    v.add_argument("--scl-nodata", metavar="CLASSES", type=_class_list, default=None,
                   help="Sentinel-2 SCL classes that are no ground (default 0,1,3,8,9,10: no data, saturated, "
                        "cloud shadow, clouds, cirrus); 'none' keeps every pixel")


def _class_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SCL class numbers like 0,1,3,8,9,10 or 'none'") from None


def _band_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated band names, e.g. B02,B03,B04,B08")
    return names
