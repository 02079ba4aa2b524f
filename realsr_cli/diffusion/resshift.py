"""Residual-shifting diffusion (ResShift) with UPSR's uncertainty-guided noise weighting.

ResShift (Yue et al., NeurIPS 2023) moves the *residual* between the low-quality image ``y`` and the
target ``x0`` instead of diffusing towards pure noise. UPSR (Zhang et al., "Uncertainty-guided
Perturbation for Image Super-Resolution Diffusion Model", CVPR 2025) scales the noise per pixel with a
weight ``w_u(y)`` derived from an auxiliary SR estimate. With ``eta_t`` increasing from ~0 to ~1:

    q(x_t | x0, y)        = N(x0 + eta_t (y - x0), kappa^2 w_u^2 eta_t I)               (UPSR Eq. 12)
    q(x_{t-1} | x_t, x0, y) = N(eta_{t-1}/eta_t x_t + alpha_t/eta_t x0,
                               kappa^2 w_u^2 eta_{t-1}/eta_t alpha_t I)                   (UPSR Eq. 8)
    x_T ~ N(y, kappa^2 w_u^2 eta_T I)                                                     (prior)

with ``alpha_t = eta_t - eta_{t-1}`` and ``eta_{-1} = 0``. ``w_u = 1`` gives plain ResShift.

The official UPSR sampler is ResShift's deterministic DDIM-style update (``ddim_step`` with eta=0):

    x_{t-1} = k_t x0 + m_t x_t + (eta_{t-1} - sqrt(eta_t eta_{t-1})) y,
    m_t = sqrt(eta_{t-1}/eta_t),  k_t = 1 - eta_{t-1} - (1 - eta_t) m_t.

Tensors are in whatever layout the caller diffuses in (UPSR: the PixelUnshuffle(4) layout
(B,48,h,w), values on the [-1,1] scale). Timesteps are integers in ``[0, num_timesteps)``; sampling
walks ``self.timesteps`` (descending). Coefficients are kept in float64 and cast to the tensor dtype
when applied, as the official code does. Random draws use an explicit CPU ``torch.Generator`` and are
moved to the tensor's device, so a seed reproduces on any device.

This is a small pure class (no parameters): the same object serves training (``sample_timesteps``,
``add_noise``) and sampling (``set_timesteps``, ``prior_sample``, ``scale_input``, ``step``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from realsr_cli._noise import randn_like as _randn_like
from realsr_cli.diffusion._common import UniformTimesteps, per_sample, timestep_index

__all__ = ["ResShiftSchedule", "exponential_sqrt_etas", "uncertainty_weight"]


def exponential_sqrt_etas(
    num_timesteps: int, *, kappa: float, min_noise_level: float, etas_end: float, power: float
) -> Tensor:
    """ResShift's "exponential" schedule of ``sqrt(eta_t)``, float64 of shape (T,).

    ``sqrt_eta_0 = min(min_noise_level / kappa, min_noise_level, sqrt(0.001))``, the last value is
    ``etas_end``, and the exponent grows like ``(t / (T-1)) ** power``. For the UPSR release
    (T=5, kappa=2.5, min_noise_level=0.2, etas_end=0.99, power=0.2) this is
    ``[0.0316, 0.4300, 0.6339, 0.8166, 0.99]``.
    """
    if num_timesteps < 2:
        raise ValueError(f"the exponential schedule needs num_timesteps >= 2, got {num_timesteps}")
    start = min(min_noise_level / kappa, min_noise_level, math.sqrt(0.001))
    growth = math.exp(math.log(etas_end / start) / (num_timesteps - 1))
    exponent = torch.linspace(0.0, 1.0, num_timesteps, dtype=torch.float64) ** power
    return growth ** (exponent * (num_timesteps - 1)) * start


def uncertainty_weight(
    y_hat: Tensor, y: Tensor, *, psi_max: float = 0.1, min_weight: float = 0.4
) -> Tensor:
    """UPSR's uncertainty-guided noise weight ``w_u`` (Eqs. 5-6 and the supplementary ``u(.)``).

    ``psi = |g(y) - y| / 2`` estimates the per-pixel uncertainty (Eq. 5); the weight is
    ``min_weight + (1 - min_weight) * min(psi, psi_max) / psi_max`` (official ``un``/``min_noise``
    options 0.1 and 0.4). ``y_hat = g(y)`` and ``y`` (bicubic LR) have the same shape and the [-1,1]
    scale; the result has that shape too, values in ``[min_weight, 1]``.
    """
    psi = ((y_hat - y) / 2).abs()
    return min_weight + (1 - min_weight) * (psi.clamp(0.0, psi_max) / psi_max)


class ResShiftSchedule(UniformTimesteps):
    """The residual-shifting noise schedule (ResShift Eqs. 1-7; UPSR Eqs. 7-8, 10-12).

    Args:
        num_timesteps: length T of the training chain (UPSR: 5).
        kappa: noise scale (UPSR: 2.5).
        min_noise_level: sets ``sqrt(eta_0)`` (UPSR: 0.2, giving ``sqrt(0.001)``).
        etas_end: ``sqrt(eta_{T-1})`` (UPSR: 0.99).
        power: exponent of the exponential schedule (UPSR: 0.2).
        input_var: ``var`` of the network-input normalisation
            ``x_t / sqrt(eta_t kappa^2 var + 0.25)``; the official code hard-codes 0.3.
        normalize_input: apply that normalisation in :meth:`scale_input` (official: True).

    Attributes (float64, indexed by the training timestep t): ``sqrt_etas``, ``etas``. After
    :meth:`set_timesteps`, ``timesteps`` (int64, descending) is the chain that sampling walks and
    ``etas_prev[t]`` is eta of the chain's previous (smaller) timestep, 0 for its first.
    """

    def __init__(
        self,
        num_timesteps: int = 5,
        *,
        kappa: float = 2.5,
        min_noise_level: float = 0.2,
        etas_end: float = 0.99,
        power: float = 0.2,
        input_var: float = 0.3,
        normalize_input: bool = True,
    ) -> None:
        sqrt_etas = exponential_sqrt_etas(
            num_timesteps,
            kappa=kappa,
            min_noise_level=min_noise_level,
            etas_end=etas_end,
            power=power,
        )
        self._init(sqrt_etas, kappa=kappa, input_var=input_var, normalize_input=normalize_input)

    @classmethod
    def from_sqrt_etas(
        cls,
        sqrt_etas: Tensor,
        *,
        kappa: float,
        input_var: float = 0.3,
        normalize_input: bool = True,
    ) -> ResShiftSchedule:
        """A schedule from explicit ``sqrt(eta_t)`` values (increasing, in (0, 1])."""
        self = cls.__new__(cls)
        self._init(
            torch.as_tensor(sqrt_etas, dtype=torch.float64).flatten(),
            kappa=kappa,
            input_var=input_var,
            normalize_input=normalize_input,
        )
        return self

    def _init(
        self, sqrt_etas: Tensor, *, kappa: float, input_var: float, normalize_input: bool
    ) -> None:
        etas = sqrt_etas**2
        if not bool(((etas > 0) & (etas <= 1)).all()):
            raise ValueError("every eta_t must lie in (0, 1]")
        self.kappa = float(kappa)
        self.input_var = float(input_var)
        self.normalize_input = bool(normalize_input)
        self.sqrt_etas = sqrt_etas
        self.etas = etas
        self.num_timesteps = int(etas.numel())
        self.set_timesteps(self.num_timesteps)

    # ------------------------------------------------------------------ chain / timesteps
    def set_timesteps(self, steps: int) -> None:
        """Choose the sampling chain: ``steps`` timesteps out of T, official respacing.

        The kept timesteps are ``{int(T / steps * i) for i in range(steps)}`` (ResShift
        ``space_timesteps``); the network keeps receiving the original timestep values. With
        ``steps == T`` (the UPSR default) the chain is ``T-1, ..., 0``.
        """
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        kept = sorted({int(self.num_timesteps / steps * i) for i in range(steps)})
        self.timesteps = torch.tensor(kept[::-1], dtype=torch.long)
        prev = torch.full((self.num_timesteps,), float("nan"), dtype=torch.float64)
        prev[kept[0]] = 0.0
        for before, t in zip(kept[:-1], kept[1:], strict=True):
            prev[t] = self.etas[before]
        self.etas_prev = prev

    def _coef(self, table: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        """``table[t]`` as a (B,1,...,1) tensor in ``like``'s dtype/device (t: int or (B,))."""
        t = timestep_index(t)
        vals = table[t]
        if bool(torch.isnan(vals).any()):
            raise ValueError(
                f"timestep(s) {t.tolist()} are not in the sampling chain {self.timesteps.tolist()}"
            )
        return per_sample(vals, like)

    # ------------------------------------------------------------------ forward process
    def add_noise(
        self, x0: Tensor, y: Tensor, t: Tensor | int, noise: Tensor, un: Tensor | None = None
    ) -> Tensor:
        """Sample ``x_t ~ q(x_t | x0, y)`` (UPSR Eq. 11-12): ``x0 + eta_t (y - x0) + kappa sqrt(eta_t) w_u noise``.

        ``x0`` (target), ``y`` (degraded input, e.g. bicubic LR), ``noise`` and ``un`` (the weight
        ``w_u``, None = 1) share one shape (B,C,H,W); ``t`` is an int or int64 (B,).
        """
        eta = self._coef(self.etas, t, x0)
        scale = self._coef(self.sqrt_etas * self.kappa, t, x0)
        weighted = noise if un is None else un * noise
        return x0 + eta * (y - x0) + scale * weighted

    def prior_sample(self, y: Tensor, noise: Tensor, un: Tensor | None = None) -> Tensor:
        """``x_T = y + kappa sqrt(eta_T) w_u noise`` for the chain's first (largest) timestep."""
        scale = self._coef(self.sqrt_etas * self.kappa, self.timesteps[0], y)
        weighted = noise if un is None else un * noise
        return y + scale * weighted

    def scale_input(self, x_t: Tensor, t: Tensor | int) -> Tensor:
        """The network input: ``x_t / sqrt(eta_t kappa^2 var + 0.25)`` (official ``_scale_input``)."""
        if not self.normalize_input:
            return x_t
        std = (self.etas * self.kappa**2 * self.input_var + 0.25).sqrt()
        return x_t / self._coef(std, t, x_t)

    # ------------------------------------------------------------------ reverse process
    def posterior_mean_variance(
        self, x0: Tensor, x_t: Tensor, t: Tensor | int, un: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x0, y)`` (UPSR Eq. 8), both shaped like ``x_t``."""
        etas_prev = self._coef(self.etas_prev, t, x_t)
        etas = self._coef(self.etas, t, x_t)
        table_prev = torch.nan_to_num(self.etas_prev)
        coef_xt = self._coef(table_prev / self.etas, t, x_t)
        coef_x0 = self._coef((self.etas - table_prev) / self.etas, t, x_t)
        mean = coef_xt * x_t + coef_x0 * x0
        var = self.kappa**2 * etas_prev / etas * (etas - etas_prev)
        var = var.expand_as(x_t) if un is None else var * un**2
        return mean, var

    def step(
        self,
        x0_pred: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        y: Tensor,
        *,
        un: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Ancestral step ``x_{t-1} ~ q(x_{t-1} | x_t, x0_pred, y)`` (UPSR Eq. 8; ResShift ``p_sample``).

        Adds ``sqrt(var) * noise`` except where ``t`` is the chain's first timestep (variance 0).
        ``noise`` (shaped like ``x_t``) is drawn from ``generator`` on the CPU when None. ``y`` is
        accepted for interface symmetry with :meth:`ddim_step`; the posterior mean does not use it.
        """
        del y
        mean, var = self.posterior_mean_variance(x0_pred, x_t, t, un)
        if noise is None:
            noise = _randn_like(x_t, generator)
        return mean + var.sqrt() * noise

    def ddim_step(
        self,
        x0_pred: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        y: Tensor,
        *,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """ResShift's DDIM-style step, the official UPSR sampler (``ddim_sample``, default eta=0).

        ``x_{t-1} = k_t x0 + m_t x_t + (eta_{t-1} - sqrt(eta_t eta_{t-1})) y [+ sigma_t noise]`` with
        ``sigma_t = eta * kappa * sqrt(eta_{t-1}/eta_t * alpha_t)``, no noise on the chain's first
        timestep. With ``eta == 0`` the step is deterministic and draws nothing. As in the official
        code, the uncertainty weight does not enter this update.
        """
        etas = self._coef(self.etas, t, x_t)
        etas_prev = self._coef(self.etas_prev, t, x_t)
        m_t = torch.sqrt(etas_prev / etas)
        k_t = 1 - etas_prev - (1 - etas) * m_t
        out = x0_pred * k_t + x_t * m_t + (etas_prev - torch.sqrt(etas * etas_prev)) * y
        if eta == 0.0:
            return out
        sigma = eta * self.kappa * m_t * torch.sqrt(etas - etas_prev)
        if noise is None:
            noise = _randn_like(x_t, generator)
        return out + sigma * noise

    def __repr__(self) -> str:
        etas = ", ".join(f"{v:.4f}" for v in self.sqrt_etas.tolist())
        return (
            f"ResShiftSchedule(T={self.num_timesteps}, kappa={self.kappa}, sqrt_etas=[{etas}], "
            f"timesteps={self.timesteps.tolist()})"
        )
