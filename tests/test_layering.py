"""The layering rules, read from the imports of every module under workbench/, tasks/ and experiments/.

``workbench`` (the platform) imports no task and no experiment; a task imports ``workbench`` and
never another task, nor an experiment; ``experiments`` may import several tasks. And there is no
import circle between modules. Every ``import`` counts, also one inside a function: a circle that
only closes at run time is still a circle a reader has to untangle. The CLI registry
(``workbench/tasks_registry.py``) names task and experiment command modules as strings that
``importlib`` loads: that list is the one explicit way the platform reaches them, not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "tasks", "experiments")


def module_names(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` is, or the nearest package above it that is one of ours (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that module ``name`` imports anywhere in its file (top level, functions, branches)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".") if is_package else name.split(".")[:-1]
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub when there is one, else names of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != name:
                found.add(known)
    return found


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def task_of(module: str) -> str | None:
    """``tasks.segmentation.train`` -> ``segmentation``; None outside a task package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 1 else None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that breaks a layering rule, as 'importer -> imported: rule'."""
    found = []
    for module, targets in sorted(graph.items()):
        top, task = module.split(".")[0], task_of(module)
        for target in sorted(targets):
            target_top, target_task = target.split(".")[0], task_of(target)
            if top == "workbench" and target_top in ("tasks", "experiments"):
                found.append(f"{module} -> {target}: workbench imports no task and no experiment")
            elif top == "tasks" and target_top == "experiments":
                found.append(f"{module} -> {target}: a task imports no experiment")
            elif task is not None and target_task is not None and target_task != task:
                found.append(f"{module} -> {target}: a task never imports another task")
    return found


# ------------------------------------------------------------------------------ the checker itself

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_relative_and_function_level_imports_and_circles(tmp_path):
    _write(tmp_path, {
        "workbench/__init__.py": "",
        "workbench/cli.py": "def main():\n    import experiments.e\n",
        "workbench/data/__init__.py": "",
        "workbench/data/catalog.py": "from . import paths\n",
        "workbench/data/paths.py": "",
        "tasks/__init__.py": "",
        "tasks/a/__init__.py": "from .x import f\n",
        "tasks/a/x.py": "from workbench.data.catalog import Catalog\n\ndef f():\n    from tasks.b.y import g\n",
        "tasks/b/__init__.py": "",
        "tasks/b/y.py": "from . import z\n",
        "tasks/b/z.py": "def h():\n    from .y import g\n",
        "experiments/__init__.py": "",
        "experiments/e.py": "import tasks.a.x\nfrom tasks.b import y\n",
    })
    graph = import_graph(tmp_path)
    assert graph["workbench.data.catalog"] == {"workbench.data.paths"}
    assert graph["tasks.a"] == {"tasks.a.x"}
    assert graph["tasks.a.x"] == {"workbench.data.catalog", "tasks.b.y"}
    assert graph["experiments.e"] == {"tasks.a.x", "tasks.b.y"}
    assert cycles(graph) == [["tasks.b.y", "tasks.b.z"]]
    assert violations(graph) == ["tasks.a.x -> tasks.b.y: a task never imports another task",
                                 "workbench.cli -> experiments.e: workbench imports no task and no experiment"]


# ------------------------------------------------------------------------------ the rules on this tree

def test_the_tree_is_read():
    graph = import_graph()
    assert {"workbench.cli", "tasks.segmentation.train", "tasks.generation.evaluate",
            "experiments.generated_tiles"} <= set(graph)
    assert "tasks.segmentation.train" in graph["experiments.generated_tiles"]


def test_layering_rules():
    assert violations(import_graph()) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


# One task shape: a reader who knows one task knows where everything of the others is.
TASK_MODULES = ("cli", "config", "data", "models", "losses", "task", "train", "evaluate", "predict", "run")
# What every task's run does and the platform does once (workbench.train.run_steps).
SHARED_STEPS = ("compute_band_stats", "write_latest", "deep_merge", "parse_overrides")


def task_packages() -> list[Path]:
    return sorted(p for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").is_file())


def test_every_task_has_the_same_modules_for_the_same_jobs():
    packages = task_packages()
    assert [p.name for p in packages] == ["classification", "generation", "segmentation"]
    for package in packages:
        missing = [m for m in TASK_MODULES if not (package / f"{m}.py").is_file()]
        assert not missing, f"tasks/{package.name} lacks {missing}"
        assert list((package / "presets").glob("*.yaml")), f"tasks/{package.name} has no presets"
        tree = ast.parse((package / "task.py").read_text())
        bases = {getattr(b, "id", getattr(b, "attr", None)) for node in ast.walk(tree)
                 if isinstance(node, ast.ClassDef) for b in node.bases}
        assert "TaskModule" in bases, f"tasks/{package.name}/task.py defines no TaskModule"


def test_the_shared_run_steps_are_called_not_rewritten():
    """A task's train() goes through workbench.train.run_steps; no task does those steps itself."""
    for package in task_packages():
        train = (package / "train.py").read_text()
        assert "workbench.train.run_steps" in train, f"tasks/{package.name}/train.py skips the shared run steps"
        for path in sorted(package.rglob("*.py")):
            called = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                      for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)}
            assert not called & set(SHARED_STEPS), f"{path.relative_to(ROOT)} calls {called & set(SHARED_STEPS)}"
