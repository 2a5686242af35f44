"""The config system: defaults < preset < --set, every key and type checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from workbench import config
from workbench.errors import WorkbenchError


@dataclass
class Opt:
    lr: float = 1e-3
    name: Literal["adamw", "sgd"] = "adamw"
    clip: float | None = None


@dataclass
class Cfg:
    name: str = "default"
    epochs: int = 2
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    opt: Opt = field(default_factory=Opt)
    model: dict = field(default_factory=dict)


def test_defaults_preset_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("epochs: 5\nopt:\n  lr: 0.01\nmodel: {arch: Unet}\n")
    cfg = config.load(Cfg, preset, ["opt.lr=3e-4", "opt.clip=1", "bands=[4,3,2]", "model.encoder=resnet18"])
    assert cfg.epochs == 5 and cfg.opt.lr == pytest.approx(3e-4) and cfg.opt.clip == 1.0
    assert cfg.bands == [4, 3, 2] and cfg.model == {"arch": "Unet", "encoder": "resnet18"}
    assert cfg.name == "default" and cfg.opt.name == "adamw"


def test_named_preset_lookup(tmp_path):
    (tmp_path / "water.yaml").write_text("epochs: 7\n")
    assert config.load(Cfg, "water", presets_dir=tmp_path).epochs == 7
    with pytest.raises(WorkbenchError, match="unknown preset 'lake' .*water"):
        config.load(Cfg, "lake", presets_dir=tmp_path)


@pytest.mark.parametrize("override, message", [
    (["opt.lrr=1"], "unknown config key 'opt.lrr' (did you mean 'opt.lr'?)"),
    (["epochs=two"], "config key 'epochs': expected an integer, got 'two'"),
    (["epochs=1.5"], "config key 'epochs': expected an integer"),
    (["opt.name=lion"], "config key 'opt.name': 'lion' is not one of adamw, sgd"),
    (["opt=3"], "config key 'opt': expected a section"),
    (["bands=3"], "config key 'bands': expected a list"),
    (["noequals"], "expected KEY=VALUE"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(WorkbenchError) as err:
        config.load(Cfg, None, override)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_broken_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(WorkbenchError, match="bad.yaml: not valid YAML at line"):
        config.load(Cfg, bad)
    with pytest.raises(WorkbenchError, match="missing.yaml: no such config file"):
        config.load(Cfg, tmp_path / "missing.yaml")


def test_round_trip_and_flatten(tmp_path):
    cfg = config.load(Cfg, None, ["opt.lr=0.5"])
    out = tmp_path / "config.yaml"
    config.dump_yaml(cfg, out)
    again = config.build(Cfg, config.read_yaml(out))
    assert again == cfg
    flat = config.flatten(config.to_dict(cfg))
    assert flat["opt.lr"] == 0.5 and flat["bands"] == [1, 2, 3] and flat["model"] == {}
