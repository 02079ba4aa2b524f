"""DDPMSchedule: closed-form forward process, DDIM determinism, respacing, x0 recovery, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from realsr_cli.diffusion.ddpm import DDPMSchedule, make_betas


def _pair(seed: int = 0, shape=(3, 2, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_add_noise_matches_closed_form(kind):
    sched = DDPMSchedule(50, beta_schedule=kind, beta_start=1e-4, beta_end=0.02)
    x0, eps = _pair()
    t = torch.tensor([0, 17, 49])
    out = sched.add_noise(x0, eps, t)
    for i, ti in enumerate(t.tolist()):
        ab = math.prod(1 - b for b in sched.betas[: ti + 1].tolist())
        ref = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i]
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-6)
    # an int timestep broadcasts
    torch.testing.assert_close(sched.add_noise(x0, eps, 17)[1], out[1])


def test_betas():
    lin = make_betas(10, "linear", beta_start=1e-4, beta_end=0.02)
    assert lin.dtype == torch.float64 and lin[0] == 1e-4 and abs(float(lin[-1]) - 0.02) < 1e-12
    cos = make_betas(1000, "cosine", beta_start=0, beta_end=0)
    assert float(cos.max()) <= 0.999 and float(torch.cumprod(1 - cos, 0)[-1]) < 1e-4
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas(10, "square", beta_start=1e-4, beta_end=0.02)


def test_x0_recovery_from_true_eps_is_exact():
    sched = DDPMSchedule(100)
    x0, eps = _pair(1)
    x0, eps = x0.double(), eps.double()
    for t in (0, 10, 99):
        x_t = sched.add_noise(x0, eps, t)
        torch.testing.assert_close(sched.predict_x0(eps, t, x_t), x0, rtol=0, atol=1e-10)
    # a DDIM step with the true eps lands on the forward marginal of the next chain timestep
    sched.set_timesteps(5)
    t, s = int(sched.timesteps[1]), int(sched.timesteps[2])
    stepped = sched.step(eps, t, sched.add_noise(x0, eps, t))
    torch.testing.assert_close(stepped, sched.add_noise(x0, eps, s), rtol=0, atol=1e-10)
    # the last step returns x0 itself
    last = int(sched.timesteps[-1])
    out = sched.step(eps, last, sched.add_noise(x0, eps, last), eta=1.0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)


def test_v_target_and_eps_from_v_invert_each_other():
    sched = DDPMSchedule(100, beta_schedule="cosine")
    x0, eps = _pair(2)
    x0, eps = x0.double(), eps.double()
    for t in (0, 37, 99):
        x_t = sched.add_noise(x0, eps, t)
        v = sched.v_target(x0, eps, t)
        ab = float(sched.alphas_cumprod[t])
        torch.testing.assert_close(v, math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0)
        torch.testing.assert_close(sched.eps_from_v(v, t, x_t), eps, rtol=0, atol=1e-10)
    # at the terminal step (alpha_bar ~ 0) v is -x0: a v-network must predict the image there
    torch.testing.assert_close(sched.v_target(x0, eps, 99), -x0, rtol=0, atol=1e-2)


@pytest.mark.parametrize("steps", [1, 4, 7, 1000])
def test_steps_are_honoured(steps):
    sched = DDPMSchedule(1000)
    sched.set_timesteps(steps)
    ts = sched.timesteps.tolist()
    assert len(ts) == steps and ts[0] == 999 and ts == sorted(ts, reverse=True)
    assert len(set(ts)) == steps and min(ts) >= 0
    assert int(sched.prev_timesteps[ts[-1]]) == -1
    for t, s in zip(ts, ts[1:], strict=False):
        assert int(sched.prev_timesteps[t]) == s
    with pytest.raises(ValueError):
        sched.set_timesteps(0)
    with pytest.raises(ValueError):
        sched.set_timesteps(1001)


def test_timestep_outside_the_chain_is_an_error():
    sched = DDPMSchedule(100)
    sched.set_timesteps(4)
    x0, eps = _pair()
    free = next(t for t in range(100) if t not in sched.timesteps.tolist())
    with pytest.raises(ValueError, match="not in the sampling chain"):
        sched.step(eps, free, x0)


def _sample(sched: DDPMSchedule, eta: float, seed: int) -> tuple[torch.Tensor, int]:
    """Sample with a toy eps model, counting its calls."""
    g = torch.Generator().manual_seed(seed)
    x = sched.prior_sample((1, 3, 4, 4), generator=g)
    calls = 0
    for t in sched.timesteps.tolist():
        calls += 1
        eps = 0.5 * x  # any deterministic function of x_t
        x = sched.step(eps, t, x, eta=eta, generator=g)
    return x, calls


def test_ddim_eta0_is_deterministic_and_eta1_depends_on_the_seed():
    sched = DDPMSchedule(200, clip_x0=1.0)
    sched.set_timesteps(6)
    a, calls = _sample(sched, 0.0, 1)
    b, _ = _sample(sched, 0.0, 1)
    assert calls == 6 and torch.equal(a, b) and float(a.abs().max()) <= 1.0
    # eta=0 draws nothing beyond x_T: a generator that is reused gives the same result
    c, _ = _sample(sched, 1.0, 1)
    d, _ = _sample(sched, 1.0, 1)
    e, _ = _sample(sched, 1.0, 2)
    assert torch.equal(c, d) and not torch.equal(c, e) and not torch.equal(a, c)


def test_noise_is_drawn_on_cpu_in_fp32():
    sched = DDPMSchedule(10)
    a = sched.prior_sample((2, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = torch.randn((2, 3), generator=torch.Generator().manual_seed(5)).double()
    assert torch.equal(a, b)


def test_sigma_eta1_full_chain_is_the_ddpm_posterior_std():
    sched = DDPMSchedule(30)
    like = torch.zeros(1, 1)
    ab = sched.alphas_cumprod
    for t in (1, 15, 29):
        var = sched.betas[t] * (1 - ab[t - 1]) / (1 - ab[t])  # beta tilde (Ho et al. Eq. 7)
        assert abs(float(sched.sigma(t, 1.0, like)) ** 2 - float(var)) < 1e-7
