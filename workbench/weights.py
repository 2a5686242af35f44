"""Pretrained weights from local files, their input bands matched to a run's bands by name.

    from workbench.weights import file_bands, adapt_first_layer, read_state_dict
    names, layout = file_bands(layout="ssl4eo-s12-resnet18")           # the file's band order
    sd = read_state_dict("resnet18_sentinel2_all_moco.pth")
    sd["conv1.weight"], report = adapt_first_layer(sd["conv1.weight"], names, ["B02", "B03", "B04", "B08"],
                                                   where="resnet18_sentinel2_all_moco.pth")

Why by name: an Earth-observation checkpoint's first layer was trained on bands in one order
(SSL4EO-S12: the 13 Sentinel-2 L1C bands B01..B12 with B8A; Prithvi: 6 HLS bands). Keeping its
first ``n`` input channels for a run of ``n`` bands (what timm and smp do for photographs, where
channel order is always RGB) feeds the filters trained on B01 coastal aerosol with blue, and so
on: the model trains, but the pretrained first layer sees the wrong bands, silently. Here each
of the run's bands (``workbench.data.bands`` canonical names, so ``B8`` ~ ``B08`` and ``red``
reads ``B04``) takes the pretrained channel of the same band.

The registry :data:`LAYOUTS` records, for the files users actually have, the band order, the key
of the first layer and the normalisation the weights were trained with (in reflectance units,
the run's units for Sentinel-2-like data). A file outside it is described by its band order
(``model.weight_bands``). Only first layers and pretrained normalisation are handled here: the
rest of a state dict is the task's model's business. torch is imported only by the functions
that handle tensors, so the tasks' configs can validate layouts without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data import bands as band_names
from workbench.errors import WorkbenchError

if TYPE_CHECKING:  # torch is imported where tensors are handled: configs validate without it
    import torch

SSL4EO_S12_BANDS = band_names.SENTINEL2          # B01 .. B12 with B8A after B08, as SSL4EO-S12 stacks L1C
PRITHVI_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")   # HLS blue green red narrow-NIR swir16 swir22
RGB_BANDS = ("B04", "B03", "B02")                 # red green blue: the channel order of photographs
# For a first layer only: a band the file lacks takes its spectral neighbour's filters rather than the
# mean of all (Sentinel-2's broad NIR B08, 842 nm, and narrow NIR B8A, 865 nm: Prithvi's HLS NIR is B8A).
NEAREST = {"B08": "B8A", "B8A": "B08"}


@dataclass(frozen=True)
class WeightLayout:
    """What a known pretrained file is: its input bands in channel order, the state-dict key of its
    first layer (None: the first 4-D weight of the file, for families whose stem is named
    differently), the per-band mean/std its inputs were normalised with, in reflectance units
    (x_norm = (reflectance - mean) / std), and where the numbers come from."""

    name: str
    bands: tuple[str, ...]
    first_layer: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model: str                     # the timm architecture the file fits
    source: str

    def normalisation(self) -> dict:
        """The layout's normalisation as the run records it (summary / weights report)."""
        return {"layout": self.name, "bands": list(self.bands), "mean": list(self.mean), "std": list(self.std),
                "units": "reflectance", "source": self.source}


def _ssl4eo(name: str, model: str, key: str) -> WeightLayout:
    # TorchGeo's SENTINEL2_ALL_MOCO weights divide DN by 10000 (mean 0, std 10000 in DN): in reflectance
    # that is mean 0, std 1, i.e. the reflectance itself.
    n = len(SSL4EO_S12_BANDS)
    return WeightLayout(name, SSL4EO_S12_BANDS, key, (0.0,) * n, (1.0,) * n, model,
                        "SSL4EO-S12 MoCo as TorchGeo distributes it (SENTINEL2_ALL_MOCO): 13 L1C bands, DN / 10000")


# Prithvi-100M's config.yaml: per-band mean/std of HLS DN (reflectance x 10000)
_PRITHVI_MEAN_DN = (775.2290211032589, 1080.992780391705, 1228.5855250417867, 2497.2022620507532,
                    2204.2139147975554, 1610.8324823273745)
_PRITHVI_STD_DN = (1281.526139861424, 1270.0297974547493, 1399.4802505642526, 1368.3446143747644,
                   1291.6764008585435, 1154.505683480695)

LAYOUTS: dict[str, WeightLayout] = {layout.name: layout for layout in (
    _ssl4eo("ssl4eo-s12-resnet18", "resnet18", "conv1.weight"),
    _ssl4eo("ssl4eo-s12-resnet50", "resnet50", "conv1.weight"),
    _ssl4eo("ssl4eo-s12-vit-small", "vit_small_patch16_224", "patch_embed.proj.weight"),
    WeightLayout("prithvi-100m", PRITHVI_BANDS, "patch_embed.proj.weight",
                 tuple(v / 10000 for v in _PRITHVI_MEAN_DN), tuple(v / 10000 for v in _PRITHVI_STD_DN),
                 "vit_base_patch16_224", "Prithvi-100M (HLS, 3-D patch embedding of 1 x 16 x 16 tubelets): "
                 "config.yaml mean/std of DN / 10000"),
    WeightLayout("imagenet-rgb", RGB_BANDS, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "any",
                 "ImageNet photographs (RGB in 0..1), timm/torchvision constants; read as reflectance"),
)}


def layout(name: str) -> WeightLayout:
    """The registered layout ``name`` (``model.weight_layout``), or a one-line error listing them."""
    key = str(name).strip().lower()
    if key not in LAYOUTS:
        raise WorkbenchError(f"model.weight_layout: unknown layout {name!r}; known: {', '.join(LAYOUTS)} "
                             "(or give the file's band order as model.weight_bands)")
    return LAYOUTS[key]


def file_bands(layout_name: str | None = None, weight_bands: Sequence[str] | None = None
               ) -> tuple[list[str] | None, WeightLayout | None]:
    """The weights file's input bands in channel order (canonical names) and its layout: from
    ``model.weight_layout`` or ``model.weight_bands``; (None, None) when neither is given (the
    file's bands are unknown: the models' historic adaptation applies)."""
    if layout_name and weight_bands:
        raise WorkbenchError("give model.weight_layout or model.weight_bands, not both (a layout knows its bands)")
    if layout_name:
        lay = layout(layout_name)
        return list(lay.bands), lay
    if weight_bands:
        names = [band_names.canonical(b) or str(b) for b in weight_bands]
        if len(set(names)) != len(names):
            raise WorkbenchError(f"model.weight_bands: a band is named twice in {list(weight_bands)}")
        return names, None
    return None, None


def check_config(layout_name: str | None, weight_bands: Sequence[str] | None, weights: str | None,
                 field: str) -> None:
    """Config-time checks shared by the tasks' ``ModelConfig.validate``: a known layout, not both
    ways at once, and a weights file (``field``) to apply them to."""
    file_bands(layout_name, weight_bands)
    if (layout_name or weight_bands) and not weights:
        which = "model.weight_layout" if layout_name else "model.weight_bands"
        raise WorkbenchError(f"{which} describes a weights file: set {field} too")


def run_band_names(names: Sequence[str] | None) -> list[str] | None:
    """The run's band names when they are names (canonical), None for unnamed bands (rasterio's
    ``b1, b2 ...``: Blue Marble RGB), which can only be matched by position."""
    if not names or band_names.all_default(names):
        return None
    return [band_names.canonical(n) or str(n) for n in names]


def adapt_first_layer(weight: torch.Tensor, file_bands: Sequence[str], run_bands: Sequence[str],
                      where: str) -> tuple[torch.Tensor, dict]:
    """The first-layer weight (out, c0, ...) rebuilt for ``run_bands`` by name, and a report.

    Each run band found among ``file_bands`` (``bands.match``: canonical name, else common name)
    takes that pretrained channel (B08 and B8A stand in for each other, :data:`NEAREST`, noted in the
    report); a band the file lacks (an index, a band the sensor did not have) takes the mean of the
    pretrained channels, the neutral guess that responds to it as to an
    average band. Then every channel is scaled by ``c0 / n`` (file channels over run bands), as
    timm's ``adapt_input_conv`` does when it changes ``in_chans``: a filter's response is a sum over
    channels, so with inputs of similar statistics the scale keeps the first layer's activations at
    the magnitude the rest of the network was trained on (4 of 13 bands alone would give about 4/13
    of it). Copied and mean-initialised channels get the same factor, so their relative weights are
    the pretrained ones. No band in common is a one-line error naming ``where`` and both lists.
    """
    c0 = int(weight.shape[1])
    if c0 != len(file_bands):
        raise WorkbenchError(f"{where}: its first layer has {c0} input channels, but the weights are described "
                             f"with {len(file_bands)} bands ({', '.join(file_bands)})")
    positions, notes = band_names.match(list(run_bands), list(file_bands))
    for i, (b, p) in enumerate(zip(run_bands, positions)):
        near = NEAREST.get(band_names.canonical(b) or b)
        if p is None and near in file_bands:
            positions[i] = list(file_bands).index(near)
            notes.append(f"{b} took the pretrained {near} channel (the nearest band; the file has no {b})")
    if all(p is None for p in positions):
        raise WorkbenchError(f"{where}: none of the run's bands ({', '.join(run_bands)}) is among the weights' "
                             f"bands ({', '.join(file_bands)}); check model.weight_layout / model.weight_bands")
    import torch

    w = weight.float()
    mean = w.mean(dim=1)
    channels = [w[:, p] if p is not None else mean for p in positions]
    scale = c0 / len(positions)
    out = (torch.stack(channels, dim=1) * scale).to(weight.dtype)
    report = {"file_bands": list(file_bands), "run_bands": list(run_bands),
              "matched": {b: file_bands[p] for b, p in zip(run_bands, positions) if p is not None},
              "mean_initialised": [b for b, p in zip(run_bands, positions) if p is None],
              "scale": scale, "notes": notes}
    return out, report


def first_layer_key(sd: dict[str, torch.Tensor], lay: WeightLayout | None, channels: int | None = None) -> str:
    """The key of the file's first layer: the layout's, else the first 4-D (or 5-D) weight of the
    file (with ``channels`` input channels when given), in the file's own order."""
    if lay is not None and lay.first_layer:
        if lay.first_layer not in sd:
            raise KeyError(lay.first_layer)
        return lay.first_layer
    for k, v in sd.items():
        if k.endswith("weight") and v.ndim in (4, 5) and (channels is None or v.shape[1] == channels):
            return k
    raise KeyError("first layer")


def flatten_patch_embed(sd: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    """A 3-D patch embedding (Prithvi: ``Conv3d`` (D, C, T, p, p) over T-frame tubelets) as the
    2-D one of a timm ViT (D, C, p, p), and its position embedding cut to one frame.

    Summing the kernel over T is the response of the 3-D layer to the same image repeated in
    every frame of a tubelet (T = 1 for Prithvi-100M: a plain reshape). Prithvi's position
    embedding covers 1 + frames x tokens; one image is one frame, so the class token and the
    first frame's tokens are kept (its temporal encoding is the one of frame 0). The MAE decoder
    and mask token are dropped: they are no part of an encoder."""
    out = {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}
    w = out[key]
    if w.ndim == 5:
        out[key] = w.sum(dim=2)
    pos = out.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        grid = _square_tokens(int(pos.shape[1]) - 1)
        if grid is not None:
            out["pos_embed"] = pos[:, :1 + grid]
    return out


def _square_tokens(tokens: int) -> int | None:
    """Tokens of one frame when ``tokens`` is several frames of a square grid (Prithvi-100M: 3 x 14 x 14);
    None when ``tokens`` is one square grid already."""
    if round(tokens ** 0.5) ** 2 == tokens:
        return None
    for frames in range(2, 9):
        if tokens % frames == 0 and round((tokens // frames) ** 0.5) ** 2 == tokens // frames:
            return tokens // frames
    return None


def layout_stats(lay: WeightLayout, run_bands: Sequence[str], own: Any) -> tuple[Any, list[str]]:
    """Band statistics for the run's bands that normalise as the pretrained weights expect: the
    layout's mean/std (reflectance units) for the bands it has, the run's own (``own``, a
    ``BandStats``) for the others; and the bands that kept their own. Only meaningful for runs in
    reflectance units (a raw 8-bit run keeps its own statistics)."""
    from workbench.data.stats import BandStats

    positions, _ = band_names.match(list(run_bands), list(lay.bands))
    mean = [lay.mean[p] if p is not None else own.mean[i] for i, p in enumerate(positions)]
    std = [lay.std[p] if p is not None else own.std[i] for i, p in enumerate(positions)]
    kept = [b for b, p in zip(run_bands, positions) if p is None]
    return BandStats(mean, std, list(own.band_names), own.pixels, list(own.tiles)), kept


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a ``.safetensors`` or ``torch.save`` file (CPU,
    ``weights_only``: a pickle cannot run code), unwrapping ``{"state_dict": ...}``-style
    checkpoints and a DDP ``module.`` prefix; a one-line error naming the file otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{what} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle refused by weights_only, ...
        raise WorkbenchError(f"cannot read {what} {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                             ) from None
    for _ in range(3):  # unwrap {"state_dict": {...}} style checkpoints
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = None
        if isinstance(obj, dict):
            for wrapper in ("state_dict", "model_state_dict", "model", "encoder", "module", "params",
                            "state_dict_ema"):
                if isinstance(obj.get(wrapper), dict):
                    inner = obj[wrapper]
                    break
        if inner is None:
            break
        obj = inner
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise WorkbenchError(f"{what} {path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def band_aware(sd: dict[str, torch.Tensor], path: str | Path, layout_name: str | None,
               weight_bands: Sequence[str] | None, run_bands: Sequence[str] | None,
               first_key: str | None = None, channels: int | None = None
               ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``sd`` with its first layer rebuilt for ``run_bands`` by name (see :func:`adapt_first_layer`),
    3-D patch embeddings flattened; and a report (None when nothing band-aware applies: the file's
    bands are not described, or the run's bands carry no names -- then the caller's historic
    positional adaptation applies, and the report of the caller should say so).

    ``first_key``: the key of the first layer in ``sd`` when the caller renamed the file's keys
    (a ``model.`` prefix); else the layout's key, or the file's first 4-D/5-D weight. ``channels``:
    the model's input channels, which the run's band names must count."""
    names, lay = file_bands(layout_name, weight_bands)
    if names is None:
        return sd, None
    try:
        key = first_key or first_layer_key(sd, lay, None if lay and lay.first_layer else len(names))
    except KeyError:
        raise WorkbenchError(f"{path}: no first layer {lay.first_layer if lay and lay.first_layer else ''} "
                             f"with {len(names)} input channels in it: not {lay.name if lay else 'a file of '}"
                             f"{'' if lay else ', '.join(names)} weights") from None
    if sd[key].ndim == 5:
        sd = flatten_patch_embed(sd, key)
    report: dict = {"layout": lay.name if lay else None, "first_layer": key,
                    "normalisation": lay.normalisation() if lay else None}
    run = run_band_names(run_bands)
    if run is None:
        report["note"] = ("the run's bands carry no names: the file's first channels were adapted by "
                          "position, not by band")
        return sd, report
    if channels is not None and len(run) != channels:
        raise WorkbenchError(f"{path}: the model reads {channels} input channels but the run names {len(run)} "
                             f"bands ({', '.join(run)}): cannot match the weights' bands to its inputs")
    sd = dict(sd)
    sd[key], adapted = adapt_first_layer(sd[key], names, run, where=str(path))
    return sd, {**report, **adapted}
