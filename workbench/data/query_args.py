"""The catalog filter options, shared by every command that selects tiles.

``add_query_args(parser)`` adds ``--source --split --label --pred-label --bbox
--water-min --water-max --date-from --date-to --where [--limit]`` and
``query_from_args(args)`` turns them into keyword arguments for ``Catalog.query``,
``Catalog.count`` and ``Catalog.stats``. ``data list``, ``data stats`` and the task
commands (``segment train --where ...``) all use these two, so a filter means the
same thing everywhere. ``filters_as_sql(query)`` writes the keyword filters as the SQL
condition the catalog runs for them, which is how a train run records them in its
config's ``data.where``. Stdlib only: importing it must not slow ``--help`` down.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from workbench.errors import WorkbenchError

QUERY_HELP = """tile filters (all optional, combined with AND; lists are comma-separated):
  --source bluemarble,folder   --split test   --label coast   --pred-label water
  --bbox W S E N (degrees, on tile centres)   --water-min 0.3 --water-max 0.7
  --date-from 2023-01-01 --date-to 2023-12-31
  --where "SQL over catalog columns" (read-only), e.g. "lat > 60 AND label = 'coast'"
"""

_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _real_date(value: str) -> bool:
    """2023-02-30 matches the pattern but names no day: it would silently select nothing."""
    import datetime

    parts = [int(p) for p in value.split("-")] + [1, 1]
    try:
        datetime.date(*parts[:3])
    except ValueError:
        return False
    return True


def add_query_args(parser: argparse.ArgumentParser, limit: bool = True, prefix: str = "") -> argparse._ArgumentGroup:
    """Add the tile filter options to ``parser`` (in their own help group).

    ``prefix`` (e.g. ``"val-"``) gives a second set of options for commands that
    select two sets of tiles; ``query_from_args(args, prefix)`` reads them back.
    """
    dest = prefix.replace("-", "_")
    g = parser.add_argument_group(f"{prefix}tile filters" if prefix else "tile filters")
    g.add_argument(f"--{prefix}source", dest=f"{dest}source", metavar="S",
                   help="source(s): bluemarble, earthengine, folder, generated")
    g.add_argument(f"--{prefix}split", dest=f"{dest}split", metavar="S", help="split(s): train, val, test")
    g.add_argument(f"--{prefix}label", dest=f"{dest}label", metavar="L", help="label(s), e.g. water,coast")
    g.add_argument(f"--{prefix}pred-label", dest=f"{dest}pred_label", metavar="L", help="predicted label(s)")
    g.add_argument(f"--{prefix}bbox", dest=f"{dest}bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                   help="tile centre inside this lon/lat box (degrees)")
    g.add_argument(f"--{prefix}water-min", dest=f"{dest}water_min", type=float, metavar="X",
                   help="water fraction at least X (0..1)")
    g.add_argument(f"--{prefix}water-max", dest=f"{dest}water_max", type=float, metavar="X",
                   help="water fraction at most X (0..1)")
    g.add_argument(f"--{prefix}date-from", dest=f"{dest}date_from", metavar="D", help="date on or after D (YYYY-MM-DD)")
    g.add_argument(f"--{prefix}date-to", dest=f"{dest}date_to", metavar="D", help="date on or before D (YYYY-MM-DD)")
    g.add_argument(f"--{prefix}where", dest=f"{dest}where", metavar="EXPR",
                   help="raw read-only SQL condition over catalog columns")
    if limit:
        g.add_argument(f"--{prefix}limit", dest=f"{dest}limit", type=int, metavar="N", help="at most N tiles")
    return g


def _list(value: str | None) -> str | list[str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts


def query_from_args(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The filters given on the command line as ``Catalog.query`` keywords (unset ones left out)."""
    p = prefix.replace("-", "_")
    opt = lambda name: f"--{prefix}{name.replace('_', '-')}"  # noqa: E731
    get = lambda name: getattr(args, p + name, None)  # noqa: E731
    q: dict[str, Any] = {}
    for key in ("source", "split", "label", "pred_label"):
        value = _list(get(key))
        if value is not None:
            q[key] = value
    bbox = get("bbox")
    if bbox is not None:
        w, s, e, n = bbox
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise WorkbenchError(f"{opt('bbox')} {w:g} {s:g} {e:g} {n:g}: expected W < E in [-180, 180] "
                                 "and S < N in [-90, 90]")
        q["bbox"] = (w, s, e, n)
    for key in ("water_min", "water_max"):
        value = get(key)
        if value is not None:
            if not 0 <= value <= 1:
                raise WorkbenchError(f"{opt(key)} {value:g}: a water fraction is between 0 and 1")
            q[key] = value
    if "water_min" in q and "water_max" in q and q["water_min"] > q["water_max"]:
        raise WorkbenchError(f"{opt('water_min')} {q['water_min']:g} is above {opt('water_max')} {q['water_max']:g}")
    for key in ("date_from", "date_to"):
        value = get(key)
        if value is not None:
            if not _DATE.match(value) or not _real_date(value):
                raise WorkbenchError(f"{opt(key)} {value!r}: expected a date YYYY-MM-DD (or YYYY-MM, YYYY) "
                                     "that exists")
            q[key] = value
    if "date_to" in q:          # "2023" or "2023-06" means through its end (dates compare as text)
        q["date_to"] += {4: "-12-31", 7: "-31"}.get(len(q["date_to"]), "")
    where = get("where")
    if where is not None and where.strip():
        q["where"] = where.strip()
    limit = get("limit")
    if limit is not None:
        if not 0 <= limit < 2**63:
            raise WorkbenchError(f"{opt('limit')} {limit}: must be between 0 and {2**63 - 1}")
        q["limit"] = limit
    return q


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError(f"not a filter value: {value!r}")
    if isinstance(value, (int, float)):
        return repr(float(value))
    return "'" + str(value).replace("'", "''") + "'"


def _sql_in(column: str, value: str | list[str]) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if len(values) == 1:
        return f"{column} = {_sql_literal(values[0])}"
    return f"{column} IN ({', '.join(_sql_literal(v) for v in values)})"


def filters_as_sql(query: dict[str, Any]) -> str | None:
    """The keyword filters of ``query`` (``label pred_label bbox water_min water_max date_from
    date_to``) as one SQL condition over the catalog's columns, the same condition
    ``Catalog.query`` builds for them with bound parameters; None when there are none.

    A run records it in ``data.where`` (see ``workbench.commands.train_verb.fold_query``), so its
    ``config.yaml`` selects the tiles the command line selected without the command line."""
    parts: list[str] = []
    for key, value in query.items():
        if value is None:
            continue
        if key in ("label", "pred_label"):
            parts.append(_sql_in(key, value))
        elif key == "bbox":
            w, s, e, n = (_sql_literal(v) for v in value)
            parts.append(f"lon BETWEEN {w} AND {e} AND lat BETWEEN {s} AND {n}")
        elif key in ("water_min", "water_max"):
            parts.append(f"water_fraction {'>=' if key == 'water_min' else '<='} {_sql_literal(value)}")
        elif key in ("date_from", "date_to"):
            parts.append(f"date {'>=' if key == 'date_from' else '<='} {_sql_literal(str(value))}")
        else:
            raise ValueError(f"filters_as_sql: {key!r} is not a keyword filter it can write as SQL")
    return " AND ".join(parts) or None
