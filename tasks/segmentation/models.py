"""Segmentation models by name: every segmentation-models-pytorch architecture plus
``AttentionUNet`` and ``UNet3Plus`` (written here, smp lacks them).

    model = build_model("unet", encoder="resnet34", in_channels=4, classes=1)
    model = build_model("unet3plus", encoder="resnet50", in_channels=13, classes=2,
                        encoder_weights_path="weights/resnet50.safetensors")

Output convention: every model returns logits (N, classes, H, W) -- except ``UNet3Plus`` in
training mode, which returns ``{"out", "aux", "cls"}`` (see ``unet3plus.py``); in eval mode
it returns the CGM-gated logits tensor like the others. ``classes=1`` means binary (sigmoid),
``classes>1`` means softmax over classes.

Weights. Nothing is downloaded: encoders are built with random weights
(``encoder_weights=None``) and ``encoder_weights_path`` loads a local state dict (``.pth``,
``.pt``, ``.bin`` via ``torch.load(weights_only=True)``, or ``.safetensors``) into
``model.encoder``. Accepted layouts: the encoder's own state dict; a whole-model checkpoint
(keys ``encoder.*`` are used); a DDP checkpoint (``module.`` stripped); a plain timm /
torchvision backbone state dict for ``tu-`` / smp encoders (``model.`` prefix added or
removed as needed). Keys of a classification head (``fc.``, ``classifier.``, ``head.``,
``last_linear.``) are ignored; any other unknown key, a missing key or a shape mismatch is a
``WorkbenchError`` naming the file.

Input bands. When the model has ``in_channels`` bands and the file's first convolution was
trained on ``c0`` bands (3 for ImageNet RGB), the first conv weight ``W`` (out, c0, kh, kw) is
adapted the way timm (``adapt_input_conv``) and smp (``patch_first_conv``) do:

* ``in_channels == 1``: ``W.sum(dim=1, keepdim=True)``;
* otherwise: channel ``i`` takes ``W[:, i % c0]`` (RGB repeated cyclically: bands 4, 5, 6
  reuse R, G, B...) and the whole tensor is scaled by ``c0 / in_channels`` so the expected
  activation for inputs of similar statistics is preserved.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError

from .attention_unet import AttentionUNet, is_plain_encoder
from .unet3plus import UNet3Plus

OWN_ARCHITECTURES: dict[str, type[nn.Module]] = {
    "attentionunet": AttentionUNet,
    "unet3plus": UNet3Plus,
}
_ALIASES = {
    "attunet": "attentionunet",
    "attnunet": "attentionunet",
    "unet3": "unet3plus",
    "unetppp": "unet3plus",
}
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "head_dist.", "pre_logits.")


def _key(name: str) -> str:
    key = re.sub(r"[\s_\-]", "", str(name).lower()).replace("+", "plus")
    return _ALIASES.get(key, key)


def _smp():
    import segmentation_models_pytorch as smp

    return smp


def list_architectures() -> list[str]:
    """Every architecture name ``build_model`` accepts (smp's, discovered at run time, plus ours)."""
    smp = _smp()
    names = [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    return names + ["AttentionUNet", "UNet3Plus"]


def list_encoders(include_timm: bool = False) -> list[str]:
    """smp's encoder names; with ``include_timm`` also every ``tu-<timm model>`` name."""
    names = list(_smp().encoders.get_encoder_names())
    if include_timm:
        import timm

        names += [f"tu-{m}" for m in timm.list_models()]
    return names


def _close(name: str, options: list[str], n: int = 5) -> str:
    matches = difflib.get_close_matches(str(name), options, n=n, cutoff=0.5)
    if not matches:
        matches = difflib.get_close_matches(str(name).lower(), [o.lower() for o in options], n=n, cutoff=0.5)
    return ", ".join(matches) if matches else "none"


def _arch_class(arch: str):
    smp = _smp()
    key = _key(arch)
    if key in OWN_ARCHITECTURES:
        return key, OWN_ARCHITECTURES[key]
    mapping = smp.MODEL_ARCHITECTURES_MAPPING
    if key in mapping:
        return key, mapping[key]
    raise WorkbenchError(f"unknown segmentation architecture {arch!r}; close matches: "
                         f"{_close(arch, list_architectures())}; all: {', '.join(list_architectures())}")


def check_encoder(encoder: str) -> None:
    """Raise ``WorkbenchError`` with close matches unless ``encoder`` names an smp or ``tu-`` timm encoder."""
    smp = _smp()
    name = str(encoder)
    if name in smp.encoders.encoders:
        return
    if name.startswith("tu-"):
        import timm

        base = name[3:].split(".")[0]
        if timm.is_model(base):
            return
        raise WorkbenchError(f"unknown timm encoder {name!r}; close matches: "
                             f"{_close(name, [f'tu-{m}' for m in timm.list_models()])}")
    raise WorkbenchError(f"unknown encoder {name!r}; close matches: "
                         f"{_close(name, list_encoders())} (timm models work as 'tu-<name>')")


def build_model(arch: str, encoder: str | None = "resnet34", in_channels: int = 3, classes: int = 1,
                encoder_weights_path: str | Path | None = None, *, weight_layout: str | None = None,
                weight_bands: Sequence[str] | None = None, bands: Sequence[str] | None = None,
                **kwargs) -> nn.Module:
    """Build a segmentation model by architecture name (case-insensitive, ``_``/``-`` ignored,
    ``+`` read as "plus": ``"Unet++"``, ``"deeplabv3+"``, ``"attention_unet"``, ``"UNet3+"``).

    ``encoder`` is an smp encoder name (``list_encoders()``) or ``tu-<timm model>``; for
    AttentionUNet / UNet3Plus also ``None``/``"plain"`` (their own conv blocks). ``kwargs`` go
    to the architecture's constructor (``encoder_depth``, ``decoder_channels``,
    ``cat_channels``...), except ``refine``: the width of a full-resolution refinement head
    (``refine.py``; 0 or absent: none). The model gets a ``workbench_spec`` dict (the
    arguments, enough to rebuild it) that ``describe`` reports.

    ``weight_layout`` / ``weight_bands`` say which bands the encoder weights file was trained on,
    ``bands`` the model's input bands by name: the first conv is then built by band name
    (``load_encoder_weights``).
    """
    for label, value in (("in_channels", in_channels), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkbenchError(f"{label} must be a positive integer, got {value!r}")
    key, cls = _arch_class(arch)
    refine = _refine_width(kwargs.pop("refine", 0), cls)
    weights = kwargs.pop("encoder_weights", None)
    if weights not in (None, False, "none", "None"):
        raise WorkbenchError(f"encoder_weights={weights!r} would download weights; runs are offline: "
                             "give a local state dict with encoder_weights_path")
    if kwargs.get("aux_params") is not None:
        raise WorkbenchError("aux_params is not supported: models return logits only "
                             "(UNet3Plus has a classification head, the CGM)")
    kwargs.pop("aux_params", None)

    if key in OWN_ARCHITECTURES:
        if not is_plain_encoder(encoder):
            check_encoder(encoder)
        try:
            model = cls(in_channels=in_channels, classes=classes, encoder=encoder, **kwargs)
        except TypeError as exc:
            raise WorkbenchError(f"bad option for {cls.__name__}: {exc}") from exc
    else:
        if is_plain_encoder(encoder):
            raise WorkbenchError(f"{cls.__name__} needs an smp encoder name (e.g. resnet34), got {encoder!r}")
        check_encoder(encoder)
        # smp forwards unknown keyword arguments to the encoder, where only timm ('tu-')
        # encoders use them: for any other encoder a typo would pass silently.
        import inspect

        known = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown and not str(encoder).startswith("tu-"):
            options = sorted(known - {"encoder_name", "encoder_weights", "in_channels", "classes"})
            raise WorkbenchError(f"bad option for {cls.__name__}: unknown {', '.join(map(repr, unknown))} "
                                 f"(options: {', '.join(options)})")
        try:
            model = cls(encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                        classes=classes, **kwargs)
        except TypeError as exc:
            raise WorkbenchError(f"bad option for {cls.__name__}: {exc}") from exc
        except (KeyError, ValueError, AssertionError) as exc:
            raise WorkbenchError(f"cannot build {cls.__name__} with encoder {encoder!r}: {exc}") from exc

    spec = {"arch": cls.__name__, "encoder": encoder, "in_channels": in_channels, "classes": classes,
            "encoder_weights_path": str(encoder_weights_path) if encoder_weights_path else None,
            **{k: v for k, v in kwargs.items()}}
    if weight_layout or weight_bands:
        spec.update(weight_layout=weight_layout, weight_bands=list(weight_bands) if weight_bands else None)
    if encoder_weights_path:
        spec["weights_report"] = load_encoder_weights(model, encoder_weights_path, weight_layout=weight_layout,
                                                      weight_bands=weight_bands, bands=bands)
    if refine:
        from .refine import Refined

        model = Refined(model, in_channels, classes, refine)
        spec["refine"] = refine
    model.workbench_spec = spec
    return model


def model_from_config(cfg: Any, in_channels: int, *, skip_missing_encoder_weights: bool = False,
                      bands: Sequence[str] | None = None) -> nn.Module:
    """``build_model`` from a run's config (``cfg.model``: arch, encoder, classes, kwargs,
    encoder_weights_path, weight_layout, weight_bands) for ``in_channels`` input bands -- the one
    place training and run loading turn a config into a model, so a loaded run is built exactly
    as it was trained. ``bands``: the run's band names (its input contract), for band-aware
    pretrained weights; None (or unnamed bands) adapts the file's first conv by position.

    ``skip_missing_encoder_weights``: build without the encoder weights file when it is gone
    (loading a finished run: its trained weights replace the encoder's anyway).
    """
    m = cfg.model
    weights = m.encoder_weights_path
    if weights and skip_missing_encoder_weights and not Path(weights).is_file():
        weights = None
    return build_model(m.arch, m.encoder, in_channels=in_channels, classes=m.classes,
                       encoder_weights_path=weights, weight_layout=getattr(m, "weight_layout", None),
                       weight_bands=getattr(m, "weight_bands", None), bands=bands, **dict(m.kwargs or {}))


def _refine_width(value, cls) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkbenchError(f"model.kwargs.refine must be a whole number of channels >= 0 (0: no head), "
                             f"got {value!r}")
    if value and cls is UNet3Plus:
        raise WorkbenchError("model.kwargs.refine is not available for UNet3Plus: its eval output is "
                             "CGM-gated, which a residual head would undo")
    return value


# --------------------------------------------------------------------------- weights


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a ``.safetensors`` or ``torch.save`` file (CPU):
    ``workbench.weights.read_state_dict``, its errors naming the encoder weights file."""
    from workbench.weights import read_state_dict as read

    return read(path, what="encoder weights file")


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-conv weight (out, c0, kh, kw) to ``in_channels`` bands (see module docstring)."""
    c0 = weight.shape[1]
    if in_channels == c0:
        return weight
    w = weight.float()
    if in_channels == 1:
        out = w.sum(dim=1, keepdim=True)
    else:
        idx = torch.arange(in_channels) % c0
        out = w[:, idx] * (c0 / in_channels)
    return out.to(weight.dtype)


def _rekey(sd: dict[str, torch.Tensor], target: set[str]) -> dict[str, torch.Tensor]:
    """Choose the key transform that best matches the encoder's own keys."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not any(k.startswith("encoder.") for k in target) and any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    candidates = [sd,
                  {f"model.{k}": v for k, v in sd.items()},
                  {k[len("model."):] if k.startswith("model.") else k: v for k, v in sd.items()}]
    return max(candidates, key=lambda c: len(target.intersection(c)))


def _is_head(key: str) -> bool:
    k = key[len("model."):] if key.startswith("model.") else key
    return k.startswith(HEAD_PREFIXES)


def _some(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_encoder_weights(model: nn.Module, path: str | Path, *, weight_layout: str | None = None,
                         weight_bands: Sequence[str] | None = None, bands: Sequence[str] | None = None) -> dict:
    """Load a local state dict into ``model.encoder`` (or ``model`` itself when it has no
    ``.encoder``), adapting the first conv to the model's input bands. Returns a report
    ``{"path", "loaded", "adapted", "ignored", "bands"}``; raises ``WorkbenchError`` naming the
    file for missing keys, unknown keys or shape mismatches.

    When the file's bands are known (``weight_layout``, a ``workbench.weights.LAYOUTS`` name, or
    ``weight_bands``, its channel order) and the run's ``bands`` are named, the first conv is built
    for the run's bands by name (``workbench.weights.adapt_first_layer``); otherwise the positional
    adaptation of the module docstring applies (and ``report["bands"]`` says why)."""
    from workbench.weights import band_aware

    encoder = getattr(model, "encoder", model)
    sd = read_state_dict(path)
    own = encoder.state_dict()
    sd = _rekey(sd, set(own))
    first_conv = next((k for k, v in own.items() if v.ndim == 4), None)
    sd, bands_report = band_aware(sd, path, weight_layout, weight_bands, bands,
                                  first_key=first_conv if first_conv in sd else None,
                                  channels=int(own[first_conv].shape[1]) if first_conv else None)
    ignored = sorted(k for k in sd if k not in own and _is_head(k))
    unexpected = sorted(k for k in sd if k not in own and not _is_head(k))
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder keys missing ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown keys ({_some(unexpected)})")
        raise WorkbenchError(f"encoder weights file {path} does not fit the {type(encoder).__name__} encoder: "
                             + "; ".join(parts))
    adapted, mismatched, result = [], [], {}
    for k, target in own.items():
        if k not in sd:
            continue
        v = sd[k]
        if tuple(v.shape) != tuple(target.shape):
            if (k == first_conv and v.ndim == 4 and v.shape[0] == target.shape[0]
                    and v.shape[2:] == target.shape[2:]):
                v = adapt_first_conv(v, target.shape[1])
                adapted.append(k)
            else:
                mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(target.shape)}")
                continue
        result[k] = v
    if mismatched:
        raise WorkbenchError(f"encoder weights file {path} has {len(mismatched)} tensors of the wrong shape "
                             f"(file vs model): {_some(mismatched, 3)}")
    encoder.load_state_dict(result, strict=False)
    if bands_report is not None and "matched" in bands_report:
        adapted = [bands_report["first_layer"]]
    return {"path": str(path), "loaded": len(result), "adapted": adapted, "ignored": ignored,
            "bands": bands_report}


# --------------------------------------------------------------------------- describe


def describe(model: nn.Module) -> dict:
    """Facts about a model for logs and run records: class, architecture, encoder, bands,
    classes, parameter counts (total, trainable, encoder), size in MiB (parameters + buffers),
    output convention."""
    spec = dict(getattr(model, "workbench_spec", {}) or {})
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder = getattr(model, "encoder", None)
    enc_params = sum(p.numel() for p in encoder.parameters()) if isinstance(encoder, nn.Module) else None
    nbytes = sum(t.numel() * t.element_size() for t in model.parameters())
    nbytes += sum(t.numel() * t.element_size() for t in model.buffers())
    in_channels = spec.get("in_channels", getattr(model, "in_channels", None))
    classes = spec.get("classes", getattr(model, "classes", None))
    if isinstance(model, UNet3Plus):
        outputs = "train: dict(out, aux, cls); eval: CGM-gated logits (N, classes, H, W)"
    else:
        outputs = "logits (N, classes, H, W)"
    return {
        "class": type(model).__name__,
        "arch": spec.get("arch", type(model).__name__),
        "encoder": spec.get("encoder"),
        "in_channels": in_channels,
        "classes": classes,
        "params": int(params),
        "trainable_params": int(trainable),
        "encoder_params": None if enc_params is None else int(enc_params),
        "size_mb": round(nbytes / 2**20, 3),
        "outputs": outputs,
        "encoder_weights_path": spec.get("encoder_weights_path"),
    }
