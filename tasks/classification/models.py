"""Tile classifiers: any timm model by name, or a ViT built from a config, behind one wrapper.

    from tasks.classification.models import build_classifier
    model = build_classifier(cfg.model, in_chans=4, num_classes=3, data_size=64)

Nothing is downloaded. ``weights_path`` hands a local checkpoint to timm's own loader
(``pretrained_cfg_overlay={"file": ...}``), which is what adapts it: the first conv is
re-made for any band count (timm's ``adapt_input_conv``), a ViT's position embedding is
resampled to the input size, and a classifier of another class count is dropped. When the
file's bands are known (``model.weight_layout``: SSL4EO-S12, Prithvi, ImageNet RGB; or
``model.weight_bands``) and the run's bands are named, :func:`load_band_aware` loads it
instead, building the first layer for the run's bands by name (``workbench.weights``).

``Classifier`` resizes a crop to the model's input size when they differ (64-px tiles
fed to a 224-px ViT-Tiny/16), exposes timm's coarse layer groups for staged
unfreezing, and keeps BatchNorm layers whose weights are frozen in eval mode so a
linear probe does not drift the statistics of a frozen backbone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError
from workbench.weights import run_band_names

from .config import SCRATCH_VIT, ModelConfig, ViTConfig


class Classifier(nn.Module):
    """(N, C, H, W) normalised bands -> (N, classes) logits."""

    def __init__(self, net: nn.Module, input_size: int | None = None, freeze_norm: bool = True):
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.freeze_norm = freeze_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net(x)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if mode:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None \
                        and not m.weight.requires_grad and self.freeze_norm:
                    m.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.net.get_classifier().parameters())

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The backbone as timm's coarse groups, bottom (stem) to top, head excluded."""
        from timm.models import group_parameters

        head = {id(p) for p in self.head_parameters()}
        by_name = dict(self.net.named_parameters())
        groups = group_parameters(self.net, self.net.group_matcher(coarse=True))
        out = []
        for _, names in sorted(groups.items(), key=lambda kv: kv[0]):
            params = [by_name[n] for n in names if id(by_name[n]) not in head]
            if params:
                out.append(params)
        return out


def build_classifier(cfg: ModelConfig, in_chans: int, num_classes: int, data_size: int,
                     bands: Sequence[str] | None = None) -> Classifier:
    """The model ``cfg`` names for ``in_chans`` bands and ``num_classes`` classes (2 = binary).
    ``bands``: the run's band names (its input contract), for band-aware pretrained weights
    (``model.weight_layout`` / ``model.weight_bands``); see :func:`load_band_aware`."""
    if num_classes < 2:
        raise WorkbenchError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = cfg.input_size or data_size
    if cfg.name == SCRATCH_VIT:
        if cfg.weights_path:
            raise WorkbenchError("model.weights_path: scratch_vit trains from scratch; use a timm ViT name "
                                 "(e.g. vit_tiny_patch16_224) for pretrained weights")
        net = scratch_vit(cfg.vit, in_chans, num_classes, size, cfg.drop_rate, cfg.drop_path_rate)
    else:
        net = _timm_model(cfg, in_chans, num_classes, size, bands)
    return Classifier(net, cfg.input_size)


def _timm_model(cfg: ModelConfig, in_chans: int, num_classes: int, size: int,
                bands: Sequence[str] | None = None) -> nn.Module:
    import timm

    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('_')[0]}*")[:5]
        hint = f" (e.g. {', '.join(close)})" if close else ""
        raise WorkbenchError(f"model.name: {cfg.name!r} is not a timm model{hint}")
    kwargs = dict(cfg.kwargs)
    kwargs.update(num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if _takes_img_size(cfg.name):
        kwargs.setdefault("img_size", size)
    try:
        if not cfg.weights_path:
            return timm.create_model(cfg.name, pretrained=False, **kwargs)
        path = Path(cfg.weights_path)
        net = timm.create_model(cfg.name, pretrained=False, **kwargs)
        if (cfg.weight_layout or cfg.weight_bands) and run_band_names(bands) is not None:
            load_band_aware(net, path, cfg.weight_layout, cfg.weight_bands, bands)
            return net
        _check_weights(path, net, cfg.name)
        if cfg.weight_layout or cfg.weight_bands:
            print(f"note: {path}: the run's bands carry no names, so the weights' first layer is adapted by "
                  "position (timm), not by band", file=sys.stderr)
        return timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    except WorkbenchError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise WorkbenchError(f"model {cfg.name!r}: cannot build it for {in_chans} bands, {num_classes} classes, "
                             f"{size} px: {str(exc).splitlines()[0][:200]}") from None


def load_band_aware(net: nn.Module, path: str | Path, weight_layout: str | None,
                    weight_bands: Sequence[str] | None, bands: Sequence[str]) -> dict:
    """Load a local checkpoint into the timm model ``net``, its first layer built for ``bands`` by
    name (``workbench.weights``: the matching pretrained channels copied, the others from their
    mean). timm's own loader cannot do this: it keeps a file's first channels (or refuses a file
    that is not RGB). A 3-D patch embedding (Prithvi) is flattened for a 2-D ViT; the position
    embedding is resampled to the model's token grid (timm's ``resample_abs_pos_embed``); a head
    of another class count is dropped. Any other missing, unknown or misshapen tensor is a
    one-line error naming the file. Returns the report (also kept as ``net.weights_report``)."""
    from workbench.weights import band_aware, read_state_dict

    sd = read_state_dict(path)
    own = net.state_dict()
    shared = len(set(own) & set(sd))
    if shared < 0.5 * len(own):
        raise WorkbenchError(f"{path}: not weights of this model ({shared} of its {len(own)} tensors found in it)")
    channels = next((int(v.shape[1]) for v in own.values() if v.ndim == 4), None)
    sd, report = band_aware(sd, path, weight_layout, weight_bands, bands, channels=channels)
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(net.patch_embed.grid_size),
                                                 num_prefix_tokens=getattr(net, "num_prefix_tokens", 1))
    head = {f"{n}.{k}" for n, m in net.named_modules() if m is net.get_classifier() for k in m.state_dict()}
    bad = sorted(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
                 if k in own and k not in head and v.shape != own[k].shape)
    unknown = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd and k not in head and not k.endswith("num_batches_tracked"))
    if bad or unknown or missing:
        parts = [f"{len(bad)} tensors of another shape ({', '.join(bad[:3])})"] if bad else []
        parts += [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []
        parts += [f"{len(unknown)} unknown ({', '.join(unknown[:3])})"] if unknown else []
        raise WorkbenchError(f"{path}: does not fit {type(net).__name__}: " + "; ".join(parts))
    keep = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(keep, strict=False)
    report = {**(report or {}), "path": str(path), "loaded": len(keep),
              "head_dropped": sorted(k for k in head if k in sd and k not in keep)}
    net.weights_report = report
    return report


def _takes_img_size(name: str) -> bool:
    """ViT-like timm models fix their token grid at build time; CNNs take any size."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    arch = getattr(cfg, "architecture", name) if cfg is not None else name
    return any(k in arch for k in ("vit", "deit", "beit", "eva", "swin", "cait", "xcit", "pit_", "levit"))


def _check_weights(path: Path, model: nn.Module, name: str) -> None:
    """Refuse a file that does not hold this architecture's weights before timm half-loads it."""
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such weights file (model.weights_path)")
    keys = _file_keys(path)
    own = set(model.state_dict())
    shared = len(own & keys)
    if shared < 0.5 * len(own):
        raise WorkbenchError(f"{path}: not {name} weights ({shared} of the model's {len(own)} tensors found in it)")


def _file_keys(path: Path) -> set[str]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return set(f.keys())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WorkbenchError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WorkbenchError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module.") for k in state}


def scratch_vit(v: ViTConfig, in_chans: int, num_classes: int, img_size: int, drop_rate: float = 0.0,
                drop_path_rate: float = 0.0) -> nn.Module:
    """timm's VisionTransformer in the shape ``v`` gives (``vit-scratch``: patch 8, width 100, 8 x 8 heads)."""
    from timm.layers import Attention
    from timm.models.vision_transformer import VisionTransformer

    if img_size % v.patch_size:
        raise WorkbenchError(f"model.vit.patch_size {v.patch_size} does not divide the input size {img_size}")
    attn = _attention_with_head_dim(v.head_dim) if v.head_dim else Attention
    net = VisionTransformer(img_size=img_size, patch_size=v.patch_size, in_chans=in_chans, num_classes=num_classes,
                            global_pool=v.pool, embed_dim=v.embed_dim, depth=v.depth, num_heads=v.num_heads,
                            mlp_ratio=v.mlp_ratio, drop_rate=drop_rate, attn_drop_rate=v.attn_drop_rate,
                            proj_drop_rate=v.proj_drop_rate, drop_path_rate=drop_path_rate, attn_layer=attn)
    if v.head_hidden:
        net.head = _mlp_head(v.embed_dim, v.head_hidden, num_classes, v.head_dropout)
    return net


def _attention_with_head_dim(head_dim: int) -> type:
    """timm's Attention with a fixed per-head width (timm's blocks want a class, not a partial)."""
    from timm.layers import Attention

    def __init__(self, dim, num_heads=8, **kwargs):
        kwargs["attn_head_dim"] = head_dim
        Attention.__init__(self, dim, num_heads=num_heads, **kwargs)

    return type(f"AttentionHeadDim{head_dim}", (Attention,), {"__init__": __init__})


def _mlp_head(width: int, hidden: list[int], num_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.GELU()]
        width = h
    layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
