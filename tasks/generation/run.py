"""A generation model to use: a DiffusionSat folder, the committed default, or a trained run's.

* ``inspect_folder(path) -> ModelFolder``: the folder layout checked, configs read, without torch.
* ``load_run(ref) -> ModelFolder``: a generation run (path, name, unique prefix or ``latest``,
  resolved like every other run) stands for its ``model/`` folder.
* ``resolve_model(model, run)``: what ``--model DIR`` / ``--run RUN`` name (default: the
  committed model, ``tasks/generation/default_model``).

The pipeline itself (``pipeline.load_pipeline``) loads what these name.

The layout is diffusers' (and so that of DiffusionSat's released 256 and 512 px checkpoints)::

    MODEL/
      model_index.json                 {"_class_name": "StableDiffusionPipeline", "unet": [null, "SatUNet"], ...}
                                       (DiffusionSat's; ours say DiffusionSatPipeline; optional, checked)
      unet/config.json                 {"_class_name": "SatUNet", "use_metadata": true, "num_metadata": 7, ...}
      unet/diffusion_pytorch_model.safetensors   (or .bin)
      vae/config.json + weights        AutoencoderKL
      text_encoder/config.json + weights         CLIPTextModel (model.safetensors or pytorch_model.bin)
      tokenizer/vocab.json + merges.txt (or tokenizer.json)   CLIPTokenizer
      scheduler/scheduler_config.json  any diffusers scheduler (its betas / prediction type are kept)
      workbench.json                   optional: {"gsd": 7421.0, "cloud_cover": 0.0, "size": 64} defaults

DiffusionSat's training script saves the UNet under ``checkpoint-N/unet`` beside the
other components. The UNet used is ``MODEL/unet``, unless it has no metadata embedding
and the newest ``checkpoint-N/unet`` has one (a DiffusionSat UNet beside a plain SD one);
without ``MODEL/unet``, the newest ``checkpoint-N/unet``. ``ModelFolder.unet_note`` says
which, and why, for the one line ``generate`` prints.

The generation size is the folder's recorded one (``workbench.json`` ``size``); a released
DiffusionSat folder records none and its UNet config inherits SD 2.1's ``sample_size`` 96
(768 px) although it was trained at 256 or 512 px, so ``ModelFolder.size_source`` says where
the size came from and, in that case, that ``--size`` should be given.

Each component is loaded explicitly from its subfolder (never through diffusers' class
lookup of ``model_index.json``, which does not know ``SatUNet``; the file is optional, and
when present it must name a Stable Diffusion pipeline: DiffusionSat's
``StableDiffusionPipeline`` with ``"unet": [null, "SatUNet"]`` or ours, ``DiffusionSatPipeline``),
so a broken or partial folder is reported here as one line naming the missing path, before
any weights load.
Stdlib only at import time: the CLI checks a model before torch loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

TASK = "generation"
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LAYOUT_HINT = "a DiffusionSat model folder has unet/ vae/ text_encoder/ tokenizer/ scheduler/"
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                "text_encoder": ("model", "pytorch_model")}
CONFIG_FILES = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                "scheduler": "scheduler_config.json"}
# model_index.json classes a folder may name: DiffusionSat saves StableDiffusionPipeline, we DiffusionSatPipeline
PIPELINE_CLASSES = ("StableDiffusionPipeline", "DiffusionSatPipeline")
SD21_SAMPLE_SIZE = 96  # what DiffusionSat's UNet configs inherit from SD 2.1 (768 px), not their training size


@dataclass
class ModelFolder:
    """Where each component of a model lives, its configs, and the weight variant to ask for."""

    root: Path
    paths: dict[str, Path]
    configs: dict[str, dict[str, Any]]
    variants: dict[str, str | None] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    unet_note: str = ""  # which UNet is used when the folder holds more than one, and why

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.configs["vae"].get("block_out_channels", [0] * 4)) - 1)

    @property
    def size_multiple(self) -> int:
        return size_multiple(self.configs["vae"], self.configs["unet"])

    @property
    def default_size(self) -> int:
        return self.size_source()[0]

    def size_source(self) -> tuple[int, str]:
        """(the default generation size, where it comes from, in words for the user)."""
        if "size" in self.defaults:
            return int(self.defaults["size"]), f"the size recorded in {self.root / 'workbench.json'}"
        sample = self.configs["unet"].get("sample_size") or 64
        sample = int(sample[0] if isinstance(sample, (list, tuple)) else sample)
        size = sample * self.vae_scale_factor
        text = f"{self.paths['unet'].name}/config.json sample_size {sample} x VAE {self.vae_scale_factor}"
        if sample == SD21_SAMPLE_SIZE:
            text += (", inherited from SD 2.1; the folder records no training size (DiffusionSat's released "
                     "models were trained at 256 or 512 px: give --size)")
        return size, text

    @property
    def uses_metadata(self) -> bool:
        return unet_uses_metadata(self.configs["unet"])

    def model_id(self) -> str:
        """A short, stable name for the catalog: folder name + a hash of the UNet config and weight sizes."""
        import hashlib

        unet = self.paths["unet"]
        digest = hashlib.sha256((unet / "config.json").read_bytes())
        for f in sorted(unet.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".bin"):
                digest.update(f"{f.name}:{f.stat().st_size}".encode())
        return f"diffusionsat:{self.root.name}@{digest.hexdigest()[:10]}"


def load_run(ref: str | Path, root: str | Path | None = None) -> ModelFolder:
    """The model folder of a generation run: its path, its name, a unique prefix or ``latest``."""
    from workbench.train.run_dir import resolve_run

    path = Path(ref).expanduser()
    run = path if (path / "model").is_dir() else resolve_run(str(ref), TASK, root)
    if not (run / "model").is_dir():
        raise WorkbenchError(f"{ref}: run {run.name} has no model/ folder (not a finished generation run)")
    return inspect_folder(run / "model")


def resolve_model(model: str | Path | None = None, run: str | Path | None = None) -> ModelFolder:
    """What ``--model DIR`` or ``--run RUN`` names; neither: the workbench's default model.

    ``--model`` is a DiffusionSat folder. For the commands written before ``--run`` existed it also
    still takes a run (its folder, name, unique prefix or ``latest``) when no such folder exists."""
    if run is not None:
        if model is not None:
            raise WorkbenchError("--model DIR and --run RUN both name the model: give one")
        return load_run(run)
    if model is None:
        if not DEFAULT_MODEL_DIR.is_dir():
            raise WorkbenchError("no default model yet: pass --model DIR (a DiffusionSat folder) or --run RUN")
        model = DEFAULT_MODEL_DIR
    folder = Path(model).expanduser()
    if not (folder / "unet").is_dir() and (folder / "model" / "unet").is_dir():
        folder = folder / "model"              # a run folder given by its path
    elif not folder.exists():
        try:
            return load_run(model)
        except WorkbenchError:
            pass                               # neither: the folder's own error below names it
    return inspect_folder(folder)


def size_multiple(vae_config: dict, unet_config: dict) -> int:
    """Image sizes must divide by the VAE's downsampling times the UNet's (2 per down block but the last)."""
    vae_factor = 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)
    unet_factor = 2 ** (len(unet_config.get("down_block_types", [0] * 4)) - 1)
    return vae_factor * unet_factor


def unet_uses_metadata(config: dict) -> bool:
    """Released SatUNet configs say ``use_metadata``; a plain SD UNet config has no such key."""
    if "use_metadata" in config:
        return bool(config["use_metadata"])
    return config.get("_class_name") == "SatUNet"  # SatUNet's own default is True


def inspect_folder(path: str | Path) -> ModelFolder:
    """Check the layout and read every config; a missing piece is a WorkbenchError naming its path."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WorkbenchError(f"{root}: no such model folder ({LAYOUT_HINT})")
    _check_model_index(root / "model_index.json")
    paths = {name: root / name for name in COMPONENTS}
    paths["unet"], unet_note = _unet_dir(root)
    for name, sub in paths.items():
        if not sub.is_dir():
            raise WorkbenchError(f"{sub}: missing model component '{name}' ({LAYOUT_HINT})")
    configs = {name: _read_json(paths[name] / fname) for name, fname in CONFIG_FILES.items()}
    _check_tokenizer(paths["tokenizer"])
    variants = {name: _weights_variant(paths[name], name) for name in WEIGHT_STEMS}
    defaults = _read_defaults(root / "workbench.json")
    return ModelFolder(root=root, paths=paths, configs=configs, variants=variants, defaults=defaults,
                       unet_note=unet_note)


def _unet_dir(root: Path) -> tuple[Path, str]:
    """The UNet folder to load and, when there was a choice, a note saying which and why.

    The root ``unet/`` wins unless it has no metadata embedding and the newest
    ``checkpoint-N/unet`` has one: a DiffusionSat folder's metadata UNet is the model."""
    checkpoints = [p for p in root.glob("checkpoint-*/unet") if p.is_dir() and p.parent.name[11:].isdigit()]
    newest = max(checkpoints, key=lambda p: int(p.parent.name[11:])) if checkpoints else None
    plain = root / "unet"
    if newest is None:
        return plain, ""
    if not plain.is_dir():
        return newest, f"UNet {newest.relative_to(root)} (the newest checkpoint; no unet/ at the root)"
    if not _has_metadata(plain) and _has_metadata(newest):
        return newest, (f"UNet {newest.relative_to(root)} (it has the metadata embedding; the root unet/ "
                        "has use_metadata false)")
    return plain, f"UNet unet/ (also there: {newest.relative_to(root)}, not used)"


def _has_metadata(unet: Path) -> bool:
    try:
        return unet_uses_metadata(json.loads((unet / "config.json").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False  # an unreadable config is reported when that UNet is read


def _check_model_index(path: Path) -> None:
    """Optional; when present it must name a Stable Diffusion pipeline (DiffusionSat's or ours)."""
    if not path.is_file():
        return
    index = _read_json(path)
    name = index.get("_class_name")
    if name not in PIPELINE_CLASSES:
        raise WorkbenchError(f"{path}: names the pipeline {name!r}; a DiffusionSat folder names "
                             f"{' or '.join(PIPELINE_CLASSES)}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WorkbenchError(f"{path}: missing config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"{path}: not readable JSON ({exc})") from None
    except RecursionError:
        raise WorkbenchError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a JSON object")
    return data


def _read_defaults(path: Path) -> dict:
    if not path.is_file():
        return {}
    defaults = _read_json(path)
    for key in ("gsd", "cloud_cover", "size"):
        value = defaults.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise WorkbenchError(f"{path}: '{key}' must be a number, got {value!r}")
    return defaults


def _check_tokenizer(folder: Path) -> None:
    if (folder / "tokenizer.json").is_file():
        return
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise WorkbenchError(f"{folder / name}: missing tokenizer file (need vocab.json + merges.txt "
                                 "or tokenizer.json)")


def _weights_variant(folder: Path, component: str) -> str | None:
    """None for the plain weight file, a variant name (``fp16``) when only that one is there."""
    stems = WEIGHT_STEMS[component]
    stems = (stems,) if isinstance(stems, str) else stems
    pattern = re.compile(rf"^({'|'.join(map(re.escape, stems))})(\.(\w+))?\.(safetensors|bin)(\.index\.json)?$")
    found = [m for m in (pattern.match(f.name) for f in folder.iterdir() if f.is_file()) if m]
    if not found:
        raise WorkbenchError(f"{folder}: no weights for '{component}' (expected {stems[0]}.safetensors or .bin)")
    plain = [m for m in found if m.group(3) is None]
    return None if plain else sorted(m.group(3) for m in found)[0]
