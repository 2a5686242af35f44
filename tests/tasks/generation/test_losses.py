"""The pieces of the diffusion loss (``tasks.generation.losses``): min-SNR weights over diffusers'
compute_snr, the epsilon / v target, the training schedule's refusals, metadata and caption
dropout, per-sample flips."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.training_utils import compute_snr

from tasks.generation.losses import (
    drop_captions,
    drop_metadata,
    flip_batch,
    min_snr_weights,
    prediction_target,
    training_scheduler,
)
from tasks.generation.models import SCHEDULER
from workbench.errors import WorkbenchError


def test_min_snr_weights_worked_example():
    # alpha_bar 0.5, 0.9, 0.99, 1/6 -> snr 1, 9, 99, 0.2; the SNR is diffusers' compute_snr, as the loss uses it
    alphas = torch.tensor([0.5, 0.9, 0.99, 1 / 6], dtype=torch.float64)
    snr = compute_snr(SimpleNamespace(alphas_cumprod=alphas), torch.arange(4))
    assert torch.allclose(snr.double(), torch.tensor([1.0, 9.0, 99.0, 0.2], dtype=torch.float64), rtol=1e-5)
    eps = min_snr_weights(snr, 5.0)
    assert torch.allclose(eps, torch.tensor([1.0, 5 / 9, 5 / 99, 1.0]), rtol=1e-5)
    v = min_snr_weights(snr, 5.0, "v_prediction")
    assert torch.allclose(v, torch.tensor([0.5, 0.5, 5 / 100, 0.2 / 1.2]), rtol=1e-5)
    assert torch.equal(min_snr_weights(snr, None), torch.ones(4))


def test_compute_snr_is_alpha_bar_over_one_minus_alpha_bar_on_the_training_schedule():
    """diffusers' compute_snr (what the loss weights use) on the schedule our models train with: the
    closed form alpha_bar / (1 - alpha_bar) at every timestep, and so the same min-SNR weights."""
    from diffusers import DDPMScheduler

    noise = DDPMScheduler.from_config(SCHEDULER)
    t = torch.arange(noise.config.num_train_timesteps)
    a = noise.alphas_cumprod[t].float()
    snr = compute_snr(noise, t)
    assert snr.shape == t.shape and snr.dtype == torch.float32
    assert torch.allclose(snr, a / (1 - a), rtol=1e-5)
    for prediction in ("epsilon", "v_prediction"):
        assert torch.allclose(min_snr_weights(snr, 5.0, prediction), min_snr_weights(a / (1 - a), 5.0, prediction),
                              rtol=1e-5)


def test_metadata_and_caption_dropout_rates():
    g = torch.Generator().manual_seed(0)
    md = torch.arange(1, 8, dtype=torch.float32).repeat(40_000, 1)
    dropped = drop_metadata(md, 0.1, generator=g)
    zero = dropped == 0
    assert torch.equal(dropped[~zero], md[~zero])                          # kept values untouched
    per_value = zero.float().mean(0)
    assert torch.allclose(per_value, torch.full((7,), 0.1), atol=0.006)   # each value ~ 10 %
    all_zero = zero.all(1).float().mean().item()
    assert all_zero < 1e-4                                                 # independent: 1e-7, not 0.1
    assert abs(zero[:, 0].float().mean() * zero[:, 1].float().mean() - (zero[:, 0] & zero[:, 1]).float().mean()) < 0.003
    ids = torch.zeros(100_000, dtype=torch.long)
    dropped_ids = drop_captions(ids, empty_id=9, p=0.1, generator=g)
    assert set(dropped_ids.unique().tolist()) == {0, 9}
    assert abs((dropped_ids == 9).float().mean().item() - 0.1) < 0.005
    assert torch.equal(drop_metadata(md[:5], 0.0), md[:5]) and torch.equal(drop_captions(ids[:5], 9, 0.0), ids[:5])


def test_flip_batch_applies_each_samples_own_flip():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3).repeat(4, 1, 1, 1)
    out = flip_batch(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    assert torch.equal(out[2], x[2].flip(-2)) and torch.equal(out[3], x[3].flip((-2, -1)))


ZERO_SNR = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


def test_the_target_is_the_noise_for_epsilon_and_the_velocity_for_v():
    z, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    eps = training_scheduler(SCHEDULER)
    assert prediction_target(eps, z, noise, t) is noise
    v_sched = training_scheduler({**SCHEDULER, "prediction_type": "v_prediction"})
    a = v_sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(prediction_target(v_sched, z, noise, t), a.sqrt() * noise - (1 - a).sqrt() * z, atol=1e-6)


def test_at_zero_terminal_snr_the_last_step_keeps_nothing_of_the_image_and_v_is_minus_the_image():
    noise_sched = training_scheduler({**SCHEDULER, **ZERO_SNR})
    assert float(noise_sched.alphas_cumprod[-1]) == 0.0
    z, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([999, 999])
    assert torch.allclose(noise_sched.add_noise(z, noise, t), noise)
    assert torch.allclose(prediction_target(noise_sched, z, noise, t), -z, atol=1e-6)


@pytest.mark.parametrize("scheduler, needle", [
    ({"rescale_betas_zero_snr": True}, "needs prediction_type v_prediction"),
    ({"prediction_type": "sample"}, "training supports epsilon and v_prediction"),
])
def test_schedules_that_cannot_be_trained_are_refused(scheduler, needle):
    with pytest.raises(WorkbenchError, match=needle):
        training_scheduler({**SCHEDULER, **scheduler})
