"""The pieces of the diffusion training loss, as the DiffusionSat recipe uses them.

* ``training_scheduler``: the forward (noising) process the loss samples timesteps from,
  refused when its prediction type cannot be trained on.
* ``prediction_target``: what the UNet learns to predict, the noise (epsilon) or the
  velocity (v), as the model's scheduler says.
* ``min_snr_weights``: min-SNR-gamma loss weights over ``diffusers.training_utils.compute_snr``.
* ``drop_metadata`` / ``drop_captions``: the dropout that teaches the unconditional input
  (all-zero metadata, the empty prompt) used by classifier-free guidance.
* ``flip_batch`` / ``FLIPS``: a per-sample flip (the cached latents hold one posterior per flip).

Every random draw takes the global torch RNG unless a ``generator`` is given: the trainer's
checkpoints save and restore that RNG, which is what makes a resumed run exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from workbench.errors import WorkbenchError

FLIPS = ((), (-1,), (-2,), (-2, -1))   # none, left-right, up-down, both


def training_scheduler(scheduler_config: Mapping[str, Any]) -> Any:
    """A ``DDPMScheduler`` on the model scheduler's config: its ``alphas_cumprod`` noise the latents
    (``add_noise``) and give the SNR of each timestep, whichever scheduler samples later."""
    from diffusers import DDPMScheduler

    noise = DDPMScheduler.from_config(dict(scheduler_config))
    prediction_type = noise.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise WorkbenchError(f"scheduler prediction_type {prediction_type!r}: training supports "
                             "epsilon and v_prediction")
    if prediction_type == "epsilon" and float(noise.alphas_cumprod[-1]) == 0.0:
        # At zero terminal SNR the last step's noise is the input itself: nothing to learn, and
        # min-SNR's 1 / snr is infinite there. Lin et al. (2023) pair the schedule with v.
        raise WorkbenchError("scheduler rescale_betas_zero_snr: true needs prediction_type v_prediction")
    return noise


def prediction_target(noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
    """The regression target at ``timesteps``: ``noise`` for epsilon prediction, the velocity
    ``sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * latents`` for v prediction."""
    if noise_scheduler.config.prediction_type == "epsilon":
        return noise
    return noise_scheduler.get_velocity(latents, noise, timesteps)


def min_snr_weights(snr: torch.Tensor, gamma: float | None, prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): ``min(snr, gamma) / snr`` for epsilon
    prediction, ``min(snr, gamma) / (snr + 1)`` for v prediction; ones when ``gamma`` is None.
    ``snr``: ``diffusers.training_utils.compute_snr(scheduler, timesteps)``."""
    if gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=float(gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


def drop_metadata(metadata: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each value independently set to 0 with probability ``p`` (0 = unknown / unconditional)."""
    if p <= 0:
        return metadata
    keep = torch.rand(metadata.shape, generator=generator, device=metadata.device) >= p
    return metadata * keep


def drop_captions(ids: torch.Tensor, empty_id: int, p: float, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Caption ids with a share ``p`` replaced by the empty prompt's id."""
    if p <= 0:
        return ids
    drop = torch.rand(ids.shape, generator=generator, device=ids.device) < p
    return torch.where(drop, torch.full_like(ids, empty_id), ids)


def flip_batch(x: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """Apply ``FLIPS[variant[i]]`` to sample i."""
    out = x.clone()
    for v, dims in enumerate(FLIPS):
        if dims:
            sel = variant == v
            if sel.any():
                out[sel] = x[sel].flip(dims)
    return out
