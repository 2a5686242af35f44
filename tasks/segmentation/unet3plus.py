"""UNet 3+ (Huang et al., 2020, "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation").

Three ideas on top of U-Net:

* **Full-scale skip connections.** With encoder levels ``E1..EL`` (shallow to deep) the
  decoder level ``Di`` (i = L-1 .. 1, ``DL = EL``) gathers *every* scale:
  shallower encoder maps ``Ej`` (j < i) max-pooled down to level i's grid, ``Ei`` itself,
  and deeper decoder maps ``Dj`` (j > i) bilinearly upsampled to it. Each of the L inputs goes
  through a 3x3 conv-BN-ReLU to ``cat_channels`` maps; the ``L * cat_channels`` concatenation
  is fused by one more 3x3 conv-BN-ReLU. Paper widths: ``cat_channels=64``, five levels, 320
  fused channels (the ``unet3plus`` preset uses 32 and 160).
* **Full-scale deep supervision.** A 3x3 conv head turns each of ``D1..D(L-1)`` and ``EL``
  into class logits, upsampled bilinearly to the input size. ``D1``'s is the main output.
* **Classification-guided module (CGM).** On the deepest encoder features: dropout, 1x1 conv
  to one channel, global max-pool -> one logit per tile, "does this tile contain any
  foreground". Trained with BCE against "the tile's valid target has a non-background pixel"
  (see ``losses.SegmentationLoss``). At inference the segmentation is gated with it: when
  ``sigmoid(cls) <= cgm_threshold`` every foreground channel is set to ``CGM_SUPPRESSED_LOGIT``
  (-1e4), so the tile comes out as all background (sigmoid -> 0 for a binary model, softmax
  -> background for a multi-class one). Multiplying logits by 0/1, as in the paper's
  probability-space formulation, would give p = 0.5 instead, hence the masked fill.

Output convention:

* ``model.train()``: ``forward`` returns ``{"out": main logits (N, C, H, W), not gated,
  "aux": [logits from D2, ..., D(L-1), EL] (shallow to deep, each (N, C, H, W)), "cls": CGM
  logits (N, 1)}``. ``aux`` is ``[]`` with ``deep_supervision=False``; ``cls`` is ``None``
  with ``cgm=False``.
* ``model.eval()``: ``forward`` returns only the main logits tensor (N, C, H, W), CGM-gated
  (unless ``cgm=False`` or ``gate_eval=False``).
* ``forward_all(x)`` returns the training dict in either mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError

from .attention_unet import (
    DEFAULT_PLAIN_FILTERS,
    ConvBNReLU,
    check_input,
    encoder_features,
    feature_channels,
    input_multiple,
    make_encoder,
    resize_to,
)

CGM_SUPPRESSED_LOGIT = -1.0e4


def pool_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Max-pool ``x`` down to ``size`` (kernel = stride = the integer ratio when it divides)."""
    h, w = x.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return x
    if h % th == 0 and w % tw == 0 and h // th == w // tw:
        k = h // th
        return F.max_pool2d(x, kernel_size=k, stride=k)
    return F.adaptive_max_pool2d(x, (th, tw))


class FullScaleStage(nn.Module):
    """Decoder level i of UNet 3+: L branches (pool / same / upsample) + fusion conv."""

    def __init__(self, level: int, enc_channels: Sequence[int], dec_channels: Sequence[int],
                 cat_channels: int):
        super().__init__()
        self.level = level  # 0-based
        n = len(enc_channels)
        branches = []
        for j in range(n):
            src = enc_channels[j] if j <= level or j == n - 1 else dec_channels[j]
            branches.append(ConvBNReLU(src, cat_channels))
        self.branches = nn.ModuleList(branches)
        self.fuse = ConvBNReLU(cat_channels * n, cat_channels * n)

    def forward(self, enc: list[torch.Tensor], dec: dict[int, torch.Tensor]) -> torch.Tensor:
        size = enc[self.level].shape[-2:]
        parts = []
        n = len(enc)
        for j, branch in enumerate(self.branches):
            if j < self.level:
                parts.append(branch(pool_to(enc[j], size)))
            elif j == self.level:
                parts.append(branch(enc[j]))
            else:
                src = enc[j] if j == n - 1 else dec[j]
                parts.append(branch(resize_to(src, size)))
        return self.fuse(torch.cat(parts, dim=1))


class UNet3Plus(nn.Module):
    """UNet 3+ with full-scale skips, deep supervision and the CGM (see module docstring).

    Args:
        in_channels: input bands.
        classes: output channels (1 = binary, >1 = softmax classes).
        encoder: ``None``/``"plain"`` for the own conv-block encoder (first level at full
            resolution, ``filters`` widths as in the paper), else an smp encoder name
            (features from stride 2 to 32 for depth 5).
        encoder_depth: stages of an smp encoder (3 to 5).
        filters: widths of the plain encoder (ignored for smp encoders).
        cat_channels: width of each full-scale branch; a decoder level has
            ``cat_channels * levels`` channels.
        deep_supervision: build the auxiliary heads and return ``aux`` in training.
        cgm: build the classification-guided module.
        cgm_dropout: dropout before the CGM's 1x1 conv.
        cgm_threshold: at inference a tile keeps its foreground when ``sigmoid(cls) > cgm_threshold``.
        gate_eval: apply the CGM gate to the eval-mode output.
        background_index: the class the CGM gate keeps when a tile is judged empty
            (multi-class only; for ``classes=1`` the single channel is the foreground).
        encoder_kwargs: extra keyword arguments for ``smp.encoders.get_encoder``.
    """

    def __init__(self, in_channels: int = 3, classes: int = 1, encoder: str | None = "resnet34",
                 encoder_depth: int = 5, filters: Sequence[int] = DEFAULT_PLAIN_FILTERS,
                 cat_channels: int = 64, deep_supervision: bool = True, cgm: bool = True,
                 cgm_dropout: float = 0.5, cgm_threshold: float = 0.5, gate_eval: bool = True,
                 background_index: int = 0, encoder_kwargs: dict | None = None):
        super().__init__()
        self.in_channels = int(in_channels)
        self.classes = int(classes)
        if int(cat_channels) < 1:
            raise WorkbenchError(f"cat_channels must be positive, got {cat_channels}")
        if not 0.0 <= float(cgm_dropout) < 1.0:
            raise WorkbenchError(f"cgm_dropout must be in [0, 1), got {cgm_dropout}")
        if not 0.0 <= float(cgm_threshold) <= 1.0:
            raise WorkbenchError(f"cgm_threshold must be in [0, 1], got {cgm_threshold}")
        if self.classes > 1 and not 0 <= int(background_index) < self.classes:
            raise WorkbenchError(f"background_index {background_index} is not a class of {self.classes}")
        self.cat_channels = int(cat_channels)
        self.deep_supervision = bool(deep_supervision)
        self.use_cgm = bool(cgm)
        self.cgm_threshold = float(cgm_threshold)
        self.gate_eval = bool(gate_eval)
        self.background_index = int(background_index)

        self.encoder = make_encoder(encoder, self.in_channels, encoder_depth, filters, **(encoder_kwargs or {}))
        enc_ch = feature_channels(self.encoder)
        n = len(enc_ch)
        if n < 2:
            raise WorkbenchError("UNet3Plus needs an encoder with at least two feature levels")
        self.levels = n
        fused = self.cat_channels * n
        dec_ch = [fused] * (n - 1) + [enc_ch[-1]]
        # Built deepest-first: stage for level n-2 first, down to level 0.
        self.decoder = nn.ModuleList(FullScaleStage(i, enc_ch, dec_ch, self.cat_channels)
                                     for i in range(n - 2, -1, -1))
        self.head = nn.Conv2d(fused, self.classes, 3, padding=1)
        if self.deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv2d(dec_ch[i], self.classes, 3, padding=1) for i in range(1, n))
        else:
            self.aux_heads = nn.ModuleList()
        if self.use_cgm:
            self.cgm = nn.Sequential(nn.Dropout(float(cgm_dropout)), nn.Conv2d(enc_ch[-1], 1, kernel_size=1))
        else:
            self.cgm = None
        self.input_multiple = input_multiple(self.encoder)

    def _decode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        check_input(x, self.input_multiple, self.in_channels, "UNet3Plus")
        enc = encoder_features(self.encoder, x)
        dec: dict[int, torch.Tensor] = {}
        for stage in self.decoder:
            dec[stage.level] = stage(enc, dec)
        return enc, dec

    def _cls(self, enc: list[torch.Tensor]) -> torch.Tensor | None:
        if self.cgm is None:
            return None
        return self.cgm(enc[-1]).amax(dim=(2, 3))  # (N, 1)

    def forward_all(self, x: torch.Tensor) -> dict:
        """``{"out", "aux", "cls"}`` whatever the mode; ``out`` is not gated."""
        enc, dec = self._decode(x)
        size = x.shape[-2:]
        out = resize_to(self.head(dec[0]), size)
        aux = []
        for k, head in enumerate(self.aux_heads, start=1):
            src = enc[-1] if k == self.levels - 1 else dec[k]
            aux.append(resize_to(head(src), size))
        return {"out": out, "aux": aux, "cls": self._cls(enc)}

    def gate(self, logits: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        """Suppress the foreground channels of tiles the CGM judges empty."""
        if cls is None:
            return logits
        empty = (torch.sigmoid(cls.float()) <= self.cgm_threshold).reshape(-1, 1, 1, 1)
        if self.classes == 1:
            suppress = empty
        else:
            fg = torch.ones(self.classes, dtype=torch.bool, device=logits.device)
            fg[self.background_index] = False
            suppress = empty & fg.reshape(1, -1, 1, 1)
        return logits.masked_fill(suppress, CGM_SUPPRESSED_LOGIT)

    def forward(self, x: torch.Tensor):
        if self.training:
            return self.forward_all(x)
        enc, dec = self._decode(x)
        out = resize_to(self.head(dec[0]), x.shape[-2:])
        if self.gate_eval:
            out = self.gate(out, self._cls(enc))
        return out
