"""The one config system: dataclass schemas, YAML presets, ``--set key=value``.

A run's config is a tree of dataclasses. Presets are YAML files that override the
schema's defaults; ``--set`` overrides win over the preset. Every key is checked
against the schema so a typo is an error naming the key (with a suggestion), not
a silently ignored setting that would lose a whole run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from workbench.errors import WorkbenchError

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with user-facing errors for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise WorkbenchError(f"{path}: not valid YAML{where}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise WorkbenchError(f"{path}: not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(pairs: list[str] | None) -> dict:
    """Turn ``["train.lr=1e-3", "model.arch=Unet"]`` into a nested dict."""
    tree: dict = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise WorkbenchError(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise WorkbenchError(f"--set {key}: the value is nested too deeply") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise WorkbenchError(f"--set {pair!r}: {part!r} is set both as a value and as a section")
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build(schema: type[T], data: dict, where: str = "") -> T:
    """Instantiate ``schema`` from a nested dict, validating every key and type."""
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in data:
        if key not in fields:
            full = f"{where}{key}"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
            raise WorkbenchError(f"unknown config key '{full}'{hint}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}{name}")
        elif dataclasses.is_dataclass(hints[name]) and field.default is dataclasses.MISSING \
                and field.default_factory is dataclasses.MISSING:
            kwargs[name] = build(hints[name], {}, f"{where}{name}.")
    try:
        obj = schema(**kwargs)
    except TypeError as exc:
        raise WorkbenchError(f"config section '{where.rstrip('.') or 'root'}': {exc}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except WorkbenchError as exc:
                errors.append(str(exc))
        names = " or ".join(_type_name(a) for a in args)
        raise WorkbenchError(f"config key '{key}': expected {names}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise WorkbenchError(f"config key '{key}': {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise WorkbenchError(f"config key '{key}': expected a section of keys, got {value!r}")
        return build(tp, value, f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise WorkbenchError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise WorkbenchError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorkbenchError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):     # lr=.inf passes "> 0" and turns every weight into NaN
            raise WorkbenchError(f"config key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise WorkbenchError(f"config key '{key}': expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise WorkbenchError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise WorkbenchError(f"config key '{key}': expected text, got {value!r}")
        return str(value)
    return value


def load(schema: type[T], preset: str | Path | None = None, overrides: list[str] | None = None,
         presets_dir: Path | None = None) -> T:
    """Defaults, then the preset (a name in ``presets_dir`` or a YAML path), then ``--set``."""
    data: dict = {}
    if preset:
        data = read_yaml(resolve_preset(preset, presets_dir))
    data = deep_merge(data, parse_overrides(overrides))
    return build(schema, data)


def resolve_preset(preset: str | Path, presets_dir: Path | None) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    if presets_dir is not None:
        candidate = presets_dir / f"{preset}.yaml"
        if candidate.is_file():
            return candidate
        names = sorted(p.stem for p in presets_dir.glob("*.yaml"))
        raise WorkbenchError(f"unknown preset '{preset}' (known: {', '.join(names) or 'none'})")
    raise WorkbenchError(f"{preset}: no such config file")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``: what ``runs compare`` diffs."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def dump_yaml(cfg: Any, path: Path) -> None:
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    path.write_text(yaml.safe_dump(data, sort_keys=False))




def check(ok: bool, message: str) -> None:
    """A schema's ``validate`` step: ``message`` names the key and what a valid value is."""
    if not ok:
        raise WorkbenchError(message)


class Presets:
    """A task's config schema and its folder of YAML presets: the one way a task loads a config.

        PRESETS = Presets(ClassificationConfig, Path(__file__).parent / "presets", "water-coast-land")
        cfg = PRESETS.load("vit-scratch", ["train.epochs=5"])
    """

    def __init__(self, schema: type, folder: Path, default: str):
        self.schema, self.folder, self.default = schema, Path(folder), default

    def load(self, preset: str | Path | None = None, overrides: list[str] | None = None) -> Any:
        """Schema defaults, then the preset (a name here or a YAML path; default: ``self.default``),
        then ``--set`` overrides."""
        return load(self.schema, preset or self.default, overrides, presets_dir=self.folder)

    def from_dict(self, data: dict) -> Any:
        """Rebuild a config from a run's ``config.yaml`` (a plain dict)."""
        return build(self.schema, data or {})

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.yaml"))
