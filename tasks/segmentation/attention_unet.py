"""Attention U-Net (Oktay et al., 2018, "Attention U-Net: Learning Where to Look for the Pancreas").

A U-Net whose skip connections pass through *additive attention gates*: before a skip
feature map ``x`` is concatenated with the upsampled decoder features, it is multiplied by
attention coefficients ``alpha`` in [0, 1] computed from ``x`` and a coarser *gating signal*
``g`` (the decoder features one level deeper)::

    q     = relu(theta_x(x) + phi_g(g))   theta_x: 2x2 conv, stride 2 (x brought to g's grid)
                                          phi_g:   1x1 conv
    alpha = sigmoid(psi(q))               psi:     1x1 conv to one channel
    x_hat = W(upsample(alpha) * x)        W:       1x1 conv + BatchNorm, alpha upsampled bilinearly

The encoder is either this module's own plain conv blocks (``encoder=None``/``"plain"``,
classic U-Net widths ``filters=(64, 128, 256, 512, 1024)``, first level at full resolution)
or any segmentation-models-pytorch encoder by name (``"resnet50"`` as in the preset,
``"efficientnet-b0"``, ``"tu-convnext_tiny"``...), always built with random weights here:
pretrained weights come from a local file through ``models.build_model``.

This file also holds the encoder plumbing shared with ``unet3plus.py`` (plain encoder,
smp-encoder factory, feature selection, conv block). Everything is channels_last friendly:
convolutions, batch norm, ``torch.cat`` on dim 1, ``F.interpolate`` and max-pooling only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError

PLAIN_ENCODER_NAMES = {"plain", "none", "own", "vanilla"}
DEFAULT_PLAIN_FILTERS = (64, 128, 256, 512, 1024)
DEFAULT_SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def is_plain_encoder(encoder: str | None) -> bool:
    return encoder is None or str(encoder).strip().lower() in PLAIN_ENCODER_NAMES


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> BatchNorm -> ReLU) layers, the U-Net building block."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ConvBNReLU(nn.Sequential):
    """One 3x3 conv -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class PlainEncoder(nn.Module):
    """The classic U-Net encoder: ConvBlock at full resolution, then (2x2 max-pool, ConvBlock).

    Mirrors the smp encoder interface so the decoders treat both alike: ``forward`` returns
    ``[x, e1, ..., eL]`` (the input first, shallow to deep) and ``out_channels`` lists the
    channel count of each entry. Level k has stride ``2**(k-1)``.
    """

    def __init__(self, in_channels: int = 3, filters: Sequence[int] = DEFAULT_PLAIN_FILTERS):
        super().__init__()
        filters = [int(f) for f in filters]
        if len(filters) < 2 or any(f < 1 for f in filters):
            raise WorkbenchError(f"filters must list at least two positive widths, got {list(filters)}")
        self.filters = filters
        blocks = [ConvBlock(in_channels, filters[0])]
        blocks += [ConvBlock(filters[i - 1], filters[i]) for i in range(1, len(filters))]
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [in_channels, *filters]
        self.output_stride = 2 ** (len(filters) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        h = x
        for i, block in enumerate(self.blocks):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = block(h)
            feats.append(h)
        return feats


def make_encoder(encoder: str | None, in_channels: int, encoder_depth: int = 5,
                 filters: Sequence[int] = DEFAULT_PLAIN_FILTERS, **encoder_kwargs) -> nn.Module:
    """The plain encoder, or an smp encoder by name with random weights (never downloads)."""
    if is_plain_encoder(encoder):
        return PlainEncoder(in_channels, filters)
    import segmentation_models_pytorch as smp

    try:
        return smp.encoders.get_encoder(str(encoder), in_channels=in_channels, depth=encoder_depth,
                                        weights=None, **encoder_kwargs)
    except (KeyError, ValueError, TypeError, AssertionError, RuntimeError) as exc:
        raise WorkbenchError(f"cannot build encoder {encoder!r}: {exc}") from exc


def feature_channels(encoder: nn.Module) -> list[int]:
    """Channels of the feature maps the decoders use: the encoder outputs minus the raw input
    (entry 0) and minus the empty placeholder stages some smp encoders emit (mit_b*)."""
    return [int(c) for c in list(encoder.out_channels)[1:] if int(c) > 0]


def encoder_features(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps shallow -> deep, matching ``feature_channels``."""
    feats = encoder(x)
    chans = list(encoder.out_channels)
    return [f for f, c in zip(feats[1:], chans[1:]) if int(c) > 0]


def input_multiple(encoder: nn.Module) -> int:
    """Height and width of the input must be multiples of this."""
    stride = getattr(encoder, "output_stride", None)
    if stride is None:
        stride = 2 ** (len(feature_channels(encoder)))
    return int(stride)


def check_input(x: torch.Tensor, multiple: int, in_channels: int, name: str) -> None:
    if x.ndim != 4:
        raise WorkbenchError(f"{name} expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise WorkbenchError(f"{name} was built for {in_channels} input bands, got {x.shape[1]}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise WorkbenchError(f"{name}: input height and width must be multiples of {multiple}, got {h}x{w}")


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class AttentionGate(nn.Module):
    """Additive attention gate of Oktay et al. (2018); see the module docstring."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        self.theta_x = nn.Conv2d(skip_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1, bias=True)
        self.out = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1, bias=False),
                                 nn.BatchNorm2d(skip_channels))

    def attention(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients (N, 1, H, W) on the grid of ``x``."""
        tx = self.theta_x(x)
        pg = resize_to(self.phi_g(g), tx.shape[-2:])
        alpha = torch.sigmoid(self.psi(F.relu(tx + pg)))
        return resize_to(alpha, x.shape[-2:])

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(self.attention(x, g) * x)


class AttentionDecoderBlock(nn.Module):
    """Upsample the deeper features to the skip's grid, gate the skip, concatenate, ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 inter_channels: int | None = None):
        super().__init__()
        self.gate = AttentionGate(skip_channels, in_channels, inter_channels)
        self.conv = ConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gated = self.gate(skip, x)
        up = resize_to(x, skip.shape[-2:])
        return self.conv(torch.cat([up, gated], dim=1))


class AttentionUNet(nn.Module):
    """U-Net with additive attention gates on every skip connection. Returns logits (N, classes, H, W).

    Args:
        in_channels: input bands.
        classes: output channels (1 = binary with a sigmoid, >1 = softmax classes).
        encoder: ``None``/``"plain"`` for the own conv-block encoder, else an smp encoder name.
        encoder_depth: stages of an smp encoder (3 to 5).
        filters: widths of the plain encoder (ignored for smp encoders).
        decoder_channels: output width of each decoder stage, deepest first. Defaults: the
            plain encoder's widths mirrored ((512, 256, 128, 64) for the classic filters);
            smp's U-Net widths (256, 128, 64, 32, 16) for smp encoders, whose shallowest
            feature is at stride 2, so one more stage (no skip) brings the features back to
            full resolution.
        attention_channels: inner width of the gates (default: half the skip's channels).
        encoder_kwargs: extra keyword arguments for ``smp.encoders.get_encoder``.
    """

    def __init__(self, in_channels: int = 3, classes: int = 1, encoder: str | None = "resnet34",
                 encoder_depth: int = 5, filters: Sequence[int] = DEFAULT_PLAIN_FILTERS,
                 decoder_channels: Sequence[int] | None = None, attention_channels: int | None = None,
                 encoder_kwargs: dict | None = None):
        super().__init__()
        self.in_channels = int(in_channels)
        self.classes = int(classes)
        self.encoder = make_encoder(encoder, self.in_channels, encoder_depth, filters, **(encoder_kwargs or {}))
        chans = feature_channels(self.encoder)
        plain = isinstance(self.encoder, PlainEncoder)
        n_skips = len(chans) - 1
        # A final stage without skip when the shallowest feature is not at full resolution.
        self.needs_final = not plain
        n_stages = n_skips + (1 if self.needs_final else 0)
        if decoder_channels is None:
            decoder_channels = chans[::-1][1:] if plain else DEFAULT_SMP_DECODER_CHANNELS[:n_stages]
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) < n_stages:
            raise WorkbenchError(f"decoder_channels needs {n_stages} widths for this encoder, "
                                 f"got {len(decoder_channels)}: {decoder_channels}")
        decoder_channels = decoder_channels[:n_stages]
        self.decoder_channels = decoder_channels

        blocks = []
        prev = chans[-1]
        for i, skip_ch in enumerate(reversed(chans[:-1])):
            blocks.append(AttentionDecoderBlock(prev, skip_ch, decoder_channels[i], attention_channels))
            prev = decoder_channels[i]
        self.decoder = nn.ModuleList(blocks)
        self.final = ConvBlock(prev, decoder_channels[-1]) if self.needs_final else None
        if self.needs_final:
            prev = decoder_channels[-1]
        self.head = nn.Conv2d(prev, self.classes, kernel_size=1)
        self.input_multiple = input_multiple(self.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_multiple, self.in_channels, "AttentionUNet")
        feats = encoder_features(self.encoder, x)
        h = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            h = block(h, skip)
        if self.final is not None:
            h = self.final(resize_to(h, x.shape[-2:]))
        return resize_to(self.head(h), x.shape[-2:])
