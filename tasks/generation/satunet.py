"""SatUNet: Stable Diffusion's UNet plus DiffusionSat's metadata embedding.

DiffusionSat adds ``metadata_embedding``, one ``TimestepEmbedding`` MLP per metadata
value (``linear_1``, ``linear_2``), fed by the same sinusoidal ``time_proj`` as the
timestep. Their outputs are summed into the timestep embedding, so metadata reaches
every ResNet block exactly as time does. The state-dict keys
(``metadata_embedding.{i}.linear_{1,2}.{weight,bias}``) and the config keys
(``_class_name: SatUNet``, ``use_metadata``, ``num_metadata``) are those of the
released checkpoints, so their ``unet/`` folder loads with ``SatUNet.from_pretrained``.

Rather than copying diffusers' forward, the metadata goes in through the one hook
diffusers already sums into the time embedding: ``get_aug_embed`` (called after the
class embedding and before ``time_embed_act``, the same place DiffusionSat adds it).
Everything else -- blocks, attention processors, gradient checkpointing, LoRA
loaders -- is diffusers' own.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import TimestepEmbedding
from torch import nn

_METADATA_KEY = "metadata"


class SatUNet(UNet2DConditionModel):
    """``UNet2DConditionModel`` that also takes ``metadata`` of shape (batch, num_metadata).

    With ``use_metadata=False`` it is a plain text-to-image UNet and ``metadata`` is ignored.
    Defaults follow the released SatUNet (``use_metadata=True``, ``num_metadata=7``).
    """

    def __init__(self, use_metadata: bool = True, num_metadata: int = 7, **kwargs: Any):
        super().__init__(**kwargs)  # diffusers' decorated __init__ registers the UNet's own config
        self.register_to_config(use_metadata=bool(use_metadata), num_metadata=int(num_metadata))
        self.metadata_embedding = self._build_metadata_embedding() if use_metadata else None

    def _build_metadata_embedding(self) -> nn.ModuleList:
        width_in = self.time_embedding.linear_1.in_features    # the time_proj width
        width_out = self.time_embedding.linear_1.out_features  # the time-embedding width
        return nn.ModuleList(TimestepEmbedding(width_in, width_out) for _ in range(self.config.num_metadata))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, class_labels: torch.Tensor | None = None,
                timestep_cond: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                metadata: torch.Tensor | None = None, **kwargs: Any):
        """diffusers' forward; ``metadata`` (B, num_metadata) rides in ``added_cond_kwargs``
        (DiffusionSat's positional order: ``metadata`` comes right after ``attention_mask``)."""
        added = dict(kwargs.pop("added_cond_kwargs", None) or {})
        if self.metadata_embedding is not None:
            added[_METADATA_KEY] = self._check_metadata(metadata, sample.shape[0])
        return super().forward(sample, timestep, encoder_hidden_states, class_labels=class_labels,
                               timestep_cond=timestep_cond, attention_mask=attention_mask,
                               added_cond_kwargs=added, **kwargs)

    def get_aug_embed(self, emb: torch.Tensor, encoder_hidden_states: torch.Tensor,
                      added_cond_kwargs: dict[str, Any]) -> torch.Tensor | None:
        aug = super().get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                                    added_cond_kwargs=added_cond_kwargs)
        metadata = (added_cond_kwargs or {}).get(_METADATA_KEY)
        if self.metadata_embedding is None or metadata is None:
            return aug
        md = self.embed_metadata(metadata, emb.dtype)
        return md if aug is None else aug + md

    def embed_metadata(self, metadata: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Sum over i of ``metadata_embedding[i](time_proj(metadata[:, i]))``: (B, time_embed_dim)."""
        batch, n = metadata.shape
        # The sinusoid is taken in float32: values reach 1000, where fp16 steps by 0.5.
        proj = self.time_proj(metadata.reshape(-1).float()).reshape(batch, n, -1).to(dtype)
        return sum(mlp(proj[:, i]) for i, mlp in enumerate(self.metadata_embedding))

    def _check_metadata(self, metadata: torch.Tensor | None, batch: int) -> torch.Tensor:
        n = self.config.num_metadata
        if metadata is None:
            raise ValueError(f"this SatUNet has use_metadata=True: pass metadata of shape ({batch}, {n}) "
                             "(all zeros is the unconditional input)")
        metadata = torch.as_tensor(metadata, device=self.device)
        if metadata.ndim == 1:
            metadata = metadata[None]
        if metadata.ndim != 2 or metadata.shape[1] != n or metadata.shape[0] not in (1, batch):
            raise ValueError(f"metadata has shape {tuple(metadata.shape)}, expected ({batch}, {n})")
        return metadata.expand(batch, n)


def _init_signature() -> inspect.Signature:
    """UNet2DConditionModel's keyword arguments plus ours: diffusers reads a model's config keys
    from its ``__init__`` signature, so ``from_config``/``from_pretrained`` see every key."""
    base = inspect.signature(UNet2DConditionModel.__init__)
    params = [p for p in base.parameters.values() if p.kind is not p.VAR_KEYWORD]
    ours = [inspect.Parameter("use_metadata", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool),
            inspect.Parameter("num_metadata", inspect.Parameter.KEYWORD_ONLY, default=7, annotation=int)]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name != "self" else p for p in params]
    return base.replace(parameters=params + ours)


SatUNet.__init__.__signature__ = _init_signature()  # type: ignore[attr-defined]


def metadata_state_keys(num_metadata: int = 7) -> list[str]:
    """The state-dict keys DiffusionSat's checkpoints hold for the metadata MLPs."""
    return [f"metadata_embedding.{i}.{layer}.{kind}" for i in range(num_metadata)
            for layer in ("linear_1", "linear_2") for kind in ("weight", "bias")]
