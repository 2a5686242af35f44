"""Caption templates: a catalog row -> the text a DiffusionSat model is trained on.

Templates are YAML files in ``prompts/captions/`` (``bluemarble``, ``fmow``) or any path::

    name: fmow
    rules:                                  # tried in order; the first that fits gives the caption
      - when: {label: [airport, port]}      # optional: field values the row must have
        text: "a fmow satellite image of a {class} in {country}"
      - text: "a fmow satellite image"      # {fields} must all be known for a rule to fit

Fields are the catalog columns of the row (label, lat, lon, date, gsd, cloud_cover,
water_fraction, caption, ...), every key of its ``extra``, and ``class`` (the label with
underscores as spaces, as DiffusionSat's fMoW captions write it). Format specs work:
``{lat:.1f}``. Stdlib + PyYAML only.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
CAPTIONS_DIR = PROMPTS_DIR / "captions"


@dataclass(frozen=True)
class Rule:
    text: str
    when: Mapping[str, tuple] = None  # type: ignore[assignment]
    names: tuple[str, ...] = ()


@dataclass
class CaptionTemplate:
    name: str
    path: Path
    source: str          # the YAML text, recorded with every run that uses it
    rules: list[Rule]

    def render(self, tile: Any) -> str:
        """The caption of one catalog row (``Tile``) or mapping of fields."""
        values = tile_fields(tile)
        for rule in self.rules:
            if rule.when and any(values.get(k) not in allowed for k, allowed in rule.when.items()):
                continue
            if any(values.get(n) is None or values.get(n) == "" for n in rule.names):
                continue
            return " ".join(rule.text.format_map(values).split())
        ident = getattr(tile, "id", None) or getattr(tile, "path", None) or "?"
        raise WorkbenchError(f"caption template {self.path}: no rule fits tile {ident} (add a last rule "
                             "without fields, e.g. text: \"a satellite image\")")


    def closed_vocabulary(self) -> set[str] | None:
        """Every word a caption of this template can hold, when its rules have no ``{fields}``
        (the captions are fixed texts); None when fields make the captions open-ended."""
        from .vocab import split_words

        if any(rule.names for rule in self.rules):
            return None
        return {w for rule in self.rules for w in split_words(rule.text)}


def tile_fields(tile: Any) -> dict[str, Any]:
    if isinstance(tile, Mapping):
        values = dict(tile)
        extra = values.pop("extra", None) or {}
    else:
        values = {f.name: getattr(tile, f.name) for f in fields(tile) if f.name != "extra"}
        extra = getattr(tile, "extra", None) or {}
    merged = {**{k: v for k, v in extra.items() if not isinstance(v, (dict, list))}, **values}
    label = merged.get("label")
    if label is not None and "class" not in merged:
        merged["class"] = str(label).replace("_", " ")
    return merged


def resolve_path(ref: str | Path) -> Path:
    """A template name in ``prompts/captions/`` or a path to a YAML file."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise WorkbenchError(f"{path}: no such caption template")
        return path
    candidate = CAPTIONS_DIR / f"{ref}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in CAPTIONS_DIR.glob("*.yaml"))) or "none"
    raise WorkbenchError(f"caption template {ref!r}: unknown (known: {known}; or give a YAML path)")


def load_template(ref: str | Path) -> CaptionTemplate:
    """A template by name (``prompts/captions/NAME.yaml``) or path."""
    from workbench.config import read_yaml

    path = resolve_path(ref)
    return parse_template(read_yaml(path), path, path.read_text(encoding="utf-8"))


def template_from_text(text: str, name: str = "recorded") -> CaptionTemplate:
    """A template from its YAML text (what a run or a model folder recorded)."""
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise WorkbenchError(f"caption template {name!r}: recorded text is not valid YAML") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"caption template {name!r}: expected a mapping with 'rules'")
    return parse_template(data, Path(f"<{name}>"), text)


def parse_template(data: dict, path: Path, source: str) -> CaptionTemplate:
    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        raise WorkbenchError(f"{path}: 'rules' must be a non-empty list of templates")
    rules = [_rule(path, i, r) for i, r in enumerate(rules_data)]
    return CaptionTemplate(name=str(data.get("name") or path.stem), path=path, source=source, rules=rules)


def _rule(path: Path, i: int, item: Any) -> Rule:
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
        raise WorkbenchError(f"{path}: rules[{i}] needs a 'text' template (a string)")
    unknown = sorted(set(item) - {"text", "when"})
    if unknown:
        raise WorkbenchError(f"{path}: rules[{i}]: unknown key(s) {', '.join(unknown)} (known: text, when)")
    when = item.get("when") or {}
    if not isinstance(when, dict):
        raise WorkbenchError(f"{path}: rules[{i}].when must map fields to values, e.g. {{label: water}}")
    try:
        names = tuple(n for _, n, _, _ in string.Formatter().parse(item["text"]) if n)
    except ValueError as exc:
        raise WorkbenchError(f"{path}: rules[{i}].text: {exc}") from None
    bad = [n for n in names if not n.isidentifier() and n != "class"]
    if bad:
        raise WorkbenchError(f"{path}: rules[{i}].text: {{{bad[0]}}} is not a plain field name")
    allowed = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}
    return Rule(text=item["text"], when=allowed, names=names)
