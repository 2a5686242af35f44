"""``make bench``: run the registered benchmarks and print their tables.

A benchmark is a function ``fn(quick: bool = False) -> BenchResult | list[dict]``
named in :data:`BENCHMARKS` as ``"module:function"`` (an explicit list, like the
task registry: a task adds its line here). Each one measures its baselines in the
same run, so the ratios it prints compare like with like on whatever machine runs
it. Timings are printed, never asserted.

    python -m workbench.bench                 # everything
    python -m workbench.bench --only data     # names containing "data"
    python -m workbench.bench --quick         # shorter measurements (smoke run)
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.tasks_registry import TASK_BENCHMARKS

# The platform's own benchmarks, then each task's (listed in the task registry).
BENCHMARKS: list[str] = ["workbench.bench_data:bench_data", "workbench.bench_catalog:bench_catalog",
                         "workbench.bench_stac:bench_stac",
                         "workbench.bench_inference:bench_precision", "workbench.bench_checkpoint:bench_checkpoint",
                         *TASK_BENCHMARKS]


@dataclass
class BenchResult:
    title: str
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def load(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"benchmark {spec!r}: expected 'module:function'")
    return getattr(importlib.import_module(module), name)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned text table (columns in first-seen order; numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def run(specs: list[str], quick: bool = False, out=sys.stdout) -> int:
    failures = 0
    print(f"# workbench bench  python {platform.python_version()}  {platform.machine()}  "
          f"{_cpus()} CPU(s)  {time.strftime('%Y-%m-%d %H:%M:%S')}", file=out)
    for spec in specs:
        t0 = time.perf_counter()
        print(f"\n## {spec}", file=out, flush=True)
        try:
            result = load(spec)(quick=quick)
        except Exception:  # a broken benchmark must not hide the others
            failures += 1
            traceback.print_exc()
            continue
        if isinstance(result, list):
            result = BenchResult(spec, result)
        print(result.title, file=out)
        print(format_table(result.rows), file=out)
        for note in result.notes:
            print(f"  - {note}", file=out)
        print(f"  ({time.perf_counter() - t0:.0f} s)", file=out, flush=True)
    return 1 if failures else 0


def _cpus() -> int:
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run benchmarks whose name contains this")
    ap.add_argument("--quick", action="store_true", help="short measurements (a smoke run, noisy numbers)")
    ap.add_argument("--list", action="store_true", help="list the registered benchmarks")
    args = ap.parse_args(argv)
    specs = [s for s in BENCHMARKS if not args.only or any(o in s for o in args.only)]
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    if not specs:
        print(f"no benchmark matches {args.only}; registered: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return run(specs, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
