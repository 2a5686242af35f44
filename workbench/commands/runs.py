"""``workbench runs list|compare``: what has been trained, and how runs differ.

Reads only what every run folder holds (``summary.json``, ``config.yaml``), so it
works for any task and never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.commands import add_command, add_verb

EXAMPLES = """examples:
  workbench runs list                               every run under runs/, in the order they started
  workbench runs list --task segmentation --json    one task's runs, machine-readable
  workbench runs compare water-lr3e-4 water-lr1e-3  runs by their --name: metrics + config keys that differ
  workbench runs compare segmentation-water segmentation-unet3plus  unique prefixes of run folders work too
  workbench runs compare runs/segmentation-water-20261121-101500 runs/segmentation-unet3plus-20261121-113000
"""

LIST_EXAMPLES = """examples:
  workbench runs list
  workbench runs list --task classification
  workbench runs list --json
"""

COMPARE_EXAMPLES = """examples:
  workbench runs compare segmentation-water-20261121-101500 segmentation-water-20261121-113000
  workbench runs compare segmentation-water segmentation-unet3  (unique prefixes of run names are enough)
  workbench runs compare RUN_A RUN_B --json
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    _, verbs = add_command(sub, "runs", help="list and compare training runs",
                           description="Training runs under $WORKBENCH_HOME/runs: status, steps, best metric, "
                                       "and what differs between runs.",
                           epilog=EXAMPLES)

    v = add_verb(verbs, "list", common, help="one line per run",
                 description="One line per run, oldest start first (the start time summary.json "
                             "records): folder, task, status, steps, best monitored metric, the first "
                             "metric of the run's test block (segmentation: mean IoU; classification: "
                             "macro F1), start time.",
                 epilog=LIST_EXAMPLES)
    v.add_argument("--task", metavar="TASK", help="only runs of this task")
    v.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    v.set_defaults(func=run_list)

    v = add_verb(verbs, "compare", common, help="metrics side by side and the config keys that differ",
                 description="Best and final metrics of each run side by side, then only the config "
                             "keys whose values differ (the tile query is data.source / data.where). "
                             "RUN is a run folder, a folder name under runs/, the name a run was given "
                             "(--name), a unique prefix of a folder name, or latest.",
                 epilog=COMPARE_EXAMPLES)
    v.add_argument("runs", nargs="+", metavar="RUN", help="run folder, run name, unique prefix, or latest")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.set_defaults(func=run_compare)


# ---------------------------------------------------------------------- verbs
def run_list(args: argparse.Namespace) -> int:
    from workbench.train.run_dir import RunDir, list_runs, run_task

    rows = []
    for path in list_runs():               # oldest start first
        run = RunDir(path)
        summary = run.read_summary()
        task = run_task(path, summary)
        if args.task and task != args.task:
            continue
        best = summary.get("best") or {}
        test = _test_block(summary)
        problem = run.summary_problem()
        rows.append({"run": run.name, "task": task,
                     "status": "unreadable summary.json" if problem else summary.get("status", "unknown"),
                     "steps": summary.get("steps"), "monitor": summary.get("monitor"),
                     "best": best.get("value"), "best_step": best.get("step"),
                     "test": test or None, "started": summary.get("started"), "path": str(run.path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs" + (f" of task {args.task}" if args.task else "") + " under runs/", file=sys.stderr)
        return 0
    table = [["RUN", "TASK", "STATUS", "STEPS", "BEST", "TEST", "STARTED (oldest first)"]]
    for r in rows:
        best = "-" if r["best"] is None else f"{r['monitor']}={_fmt(r['best'])}"
        table.append([r["run"], r["task"], r["status"], _fmt(r["steps"]), best, _headline(r["test"]),
                      r["started"] or "-"])
    print(_table(table))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from workbench.config import flatten
    from workbench.errors import WorkbenchError
    from workbench.train.run_dir import RunDir, find_run

    runs = []
    for ref in args.runs:
        run = RunDir(find_run(ref))
        problem = run.summary_problem()
        if problem:
            raise WorkbenchError(problem)
        runs.append((run, run.read_summary(), flatten(run.read_config(missing_ok=True))))
    names = [run.name for run, _, _ in runs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise WorkbenchError(f"{dupes[0]}: the same run was given twice")

    metrics = _metric_rows(runs)
    keys = sorted(set().union(*(cfg for _, _, cfg in runs)))
    differing = [k for k in keys if len({_config_value_key(cfg, k) for _, _, cfg in runs}) > 1]
    if args.json:
        print(json.dumps({"runs": names, "metrics": metrics,
                          "config": {k: [cfg.get(k) for _, _, cfg in runs] for k in differing}}, indent=2))
        return 0
    table = [["", *names]]
    table += [[label, *(_fmt(v) for v in values)] for label, values in metrics.items()]
    print(_table(table))
    print()
    if len(runs) == 1:
        return 0
    if not differing:
        print("config: identical")
        return 0
    config_table = [["config (differing keys)", *names]]
    config_table += [[k, *(_fmt_config(cfg[k]) if k in cfg else "-" for _, _, cfg in runs)] for k in differing]
    print(_table(config_table))
    return 0


# ---------------------------------------------------------------------- helpers
def _config_value_key(cfg: dict, key: str) -> str:
    """Comparable form of a config value; a key one run lacks differs from any value."""
    return json.dumps(cfg[key], sort_keys=True, default=str) if key in cfg else "\0absent"


def _test_block(summary: dict) -> dict:
    """The test metrics a task put in ``summary.json`` (``test``, else ``test_short``), numbers only.

    Read generically: a task declares nothing, the block's first number is its headline (the
    tasks put their main figure first: segmentation mean IoU, classification macro F1)."""
    block = summary.get("test") or summary.get("test_short") or {}
    if not isinstance(block, dict):
        return {}
    return {k: v for k, v in block.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _headline(test: dict | None) -> str:
    """``key=value`` of the first float of a test block (a count such as ``tiles`` is skipped)."""
    for key, value in (test or {}).items():
        if isinstance(value, float):
            return f"{key}={_fmt(value)}"
    return "-"


def _metric_rows(runs: list) -> dict[str, list]:
    """Rows of the compare table: run facts, then best and final value of every metric."""
    rows: dict[str, list] = {}
    facts = (("task", lambda s: s.get("task")), ("status", lambda s: s.get("status")),
             ("steps", lambda s: s.get("steps")), ("epochs", lambda s: s.get("epochs")),
             ("wall time (s)", lambda s: s.get("wall_time_s")), ("monitor", lambda s: s.get("monitor")),
             ("best at step", lambda s: (s.get("best") or {}).get("step")))
    for label, get in facts:
        rows[label] = [get(summary) for _, summary, _ in runs]
    names = sorted({k for _, s, _ in runs for k in ((s.get("best") or {}).get("metrics") or {})}
                   | {k for _, s, _ in runs for k in (s.get("final") or {})})
    for metric in names:
        rows[f"best {metric}"] = [((s.get("best") or {}).get("metrics") or {}).get(metric) for _, s, _ in runs]
    for metric in names:
        rows[f"final {metric}"] = [(s.get("final") or {}).get(metric) for _, s, _ in runs]
    tests = [_test_block(s) for _, s, _ in runs]
    for metric in dict.fromkeys(k for t in tests for k in t):
        rows[f"test {metric}"] = [t.get(metric) for t in tests]
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_config(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
