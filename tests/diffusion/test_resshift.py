"""ResShiftSchedule: the official UPSR schedule values, forward/reverse consistency, seeding, respacing."""

from __future__ import annotations

import pytest
import torch

from realsr_cli.diffusion.resshift import (
    ResShiftSchedule,
    exponential_sqrt_etas,
    uncertainty_weight,
)
from tests.parity import load_fixture


def _tensors(seed: int = 0, shape=(2, 48, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    y = torch.rand(shape, generator=g) * 2 - 1
    un = 0.4 + 0.6 * torch.rand(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    return x0, y, un, noise


def test_schedule_matches_official_upsr_release():
    meta = load_fixture("upsr_sampler_reduced").meta
    cfg, official = meta["diffusion_config"], meta["diffusion_schedule"]
    sched = ResShiftSchedule(
        cfg["steps"],
        kappa=cfg["kappa"],
        min_noise_level=cfg["min_noise_level"],
        etas_end=cfg["etas_end"],
        power=cfg["schedule_kwargs"]["power"],
    )
    assert sched.num_timesteps == official["num_timesteps"] == 5
    torch.testing.assert_close(
        sched.sqrt_etas, torch.tensor(official["sqrt_etas"], dtype=torch.float64)
    )
    torch.testing.assert_close(sched.etas, torch.tensor(official["etas"], dtype=torch.float64))
    torch.testing.assert_close(
        sched.etas_prev, torch.tensor(official["etas_prev"], dtype=torch.float64)
    )
    assert sched.timesteps.tolist() == official["timestep_map"][::-1]
    assert sched.kappa == official["kappa"]


def test_timesteps_and_respacing():
    sched = ResShiftSchedule()
    assert sched.timesteps.tolist() == [4, 3, 2, 1, 0]
    sched.set_timesteps(3)  # {int(5/3 * i)} = {0, 1, 3}
    assert sched.timesteps.tolist() == [3, 1, 0]
    assert (
        sched.etas_prev[3] == sched.etas[1]
        and sched.etas_prev[1] == sched.etas[0]
        and sched.etas_prev[0] == 0
    )
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [0]
    for bad in (0, 6):
        with pytest.raises(ValueError):
            sched.set_timesteps(bad)
    sched.set_timesteps(2)
    x0, y, _, _ = _tensors()
    with pytest.raises(ValueError, match="not in the sampling chain"):
        sched.ddim_step(x0, 1, x0, y)


def test_sample_timesteps_seeded():
    sched = ResShiftSchedule()
    a = sched.sample_timesteps(64, generator=torch.Generator().manual_seed(3))
    b = sched.sample_timesteps(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < 5


def test_add_noise_at_T_matches_prior():
    sched = ResShiftSchedule()
    x0, y, un, noise = _tensors()
    t_last = torch.full((2,), 4)
    x_t = sched.add_noise(x0, y, t_last, noise, un)
    prior = sched.prior_sample(y, noise, un)
    # eta_T = 0.98 (not 1): x_T keeps 2% of x0 - y, the prior drops it
    expected_gap = float(1 - sched.etas[4]) * (x0 - y).abs().max()
    assert (x_t - prior).abs().max() <= expected_gap * 1.0001
    # with x0 == y both are exactly the same distribution
    torch.testing.assert_close(sched.add_noise(y, y, 4, noise, un), prior)
    # the uncertainty weight scales the noise per pixel (UPSR Eq. 12)
    torch.testing.assert_close(
        sched.add_noise(x0, y, 4, noise, un)
        - sched.add_noise(x0, y, 4, torch.zeros_like(noise), un),
        float(sched.kappa * sched.sqrt_etas[4]) * un * noise,
    )


def test_ddim_with_oracle_x0_stays_on_forward_marginal():
    """With the true x0, each deterministic step lands exactly on q(x_{t-1}|x0,y) with the same noise."""
    sched = ResShiftSchedule()
    x0, y, un, noise = _tensors(1)
    x = sched.add_noise(x0, y, 4, noise, un)
    for t in sched.timesteps.tolist():
        x = sched.ddim_step(x0, t, x, y)
        if t > 0:
            torch.testing.assert_close(
                x, sched.add_noise(x0, y, t - 1, noise, un), rtol=1e-5, atol=1e-5
            )
    torch.testing.assert_close(x, x0, rtol=1e-5, atol=1e-5)


def test_step_determinism_and_variance():
    sched = ResShiftSchedule()
    x0, y, un, _ = _tensors(2)
    x_t = sched.add_noise(x0, y, 3, torch.randn_like(x0), un)
    a = sched.step(x0, 3, x_t, y, un=un, generator=torch.Generator().manual_seed(11))
    b = sched.step(x0, 3, x_t, y, un=un, generator=torch.Generator().manual_seed(11))
    c = sched.step(x0, 3, x_t, y, un=un, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, sched.step(x0, 3, x_t, y, un=un, noise=noise))
    mean, var = sched.posterior_mean_variance(x0, x_t, 3, un)
    torch.testing.assert_close(a, mean + var.sqrt() * noise)
    # UPSR Eq. 8: var = kappa^2 w_u^2 eta_{t-1}/eta_t alpha_t
    e, ep = sched.etas[3], sched.etas[2]
    torch.testing.assert_close(var, float(sched.kappa**2 * ep / e * (e - ep)) * un**2)
    # the first timestep of the chain is deterministic: x_{-1} = x0
    torch.testing.assert_close(sched.step(x0, 0, x_t, y, un=un, generator=torch.Generator()), x0)


def test_ddim_eta_adds_seeded_noise():
    sched = ResShiftSchedule()
    x0, y, _, _ = _tensors(3)
    x_t = sched.prior_sample(y, torch.randn_like(y))
    det = sched.ddim_step(x0, 4, x_t, y)
    s1 = sched.ddim_step(x0, 4, x_t, y, eta=1.0, generator=torch.Generator().manual_seed(5))
    s2 = sched.ddim_step(x0, 4, x_t, y, eta=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2) and not torch.equal(s1, det)


def test_scale_input_and_uncertainty_weight():
    sched = ResShiftSchedule()
    x = torch.ones(1, 3, 2, 2)
    std = (sched.etas[2] * 2.5**2 * 0.3 + 0.25) ** 0.5
    torch.testing.assert_close(sched.scale_input(x, 2), x / float(std))
    y = torch.zeros(1, 1, 1, 4)
    y_hat = torch.tensor([0.0, 0.1, 0.2, 1.0]).view(1, 1, 1, 4)  # psi = 0, 0.05, 0.1, 0.5
    torch.testing.assert_close(
        uncertainty_weight(y_hat, y), torch.tensor([0.4, 0.7, 1.0, 1.0]).view(1, 1, 1, 4)
    )


def test_custom_sqrt_etas_and_validation():
    base = exponential_sqrt_etas(5, kappa=2.5, min_noise_level=0.2, etas_end=0.99, power=0.2)
    sched = ResShiftSchedule.from_sqrt_etas(base, kappa=2.5)
    torch.testing.assert_close(sched.etas, ResShiftSchedule().etas)
    with pytest.raises(ValueError):
        ResShiftSchedule.from_sqrt_etas(torch.tensor([0.5, 1.5]), kappa=1.0)
    with pytest.raises(ValueError):
        ResShiftSchedule(1)
