"""The DDPM noise schedule (Ho et al., NeurIPS 2020) with DDIM sampling (Song et al., ICLR 2021).

Forward process, with ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` and timesteps ``t in [0, T)``:

    q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps                       (add_noise)

The network predicts ``eps`` (SSR Eq. 5, the ``l`` term), or the velocity
``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0`` (``v_target``; ``eps_from_v`` turns it back
into eps, since ``eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v``). The clean-image estimate is

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)            (predict_x0)

and one DDIM step from ``t`` to the previous chain timestep ``s`` (``alpha_bar_s = 1`` past the
end of the chain) is

    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s).

``eta = 0`` is deterministic DDIM; ``eta = 1`` with every timestep is DDPM's ancestral sampler.

Coefficients are float64 and cast to the tensor's dtype when applied. Random draws use an explicit
CPU ``torch.Generator`` and are moved to the tensor's device, so one seed reproduces on any device.
A small pure class: the same object serves training (``sample_timesteps``, ``add_noise``) and
sampling (``set_timesteps``, ``prior_sample``, ``step``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from realsr_cli._noise import randn
from realsr_cli._noise import randn_like as _randn_like
from realsr_cli.diffusion._common import UniformTimesteps, per_sample, timestep_index

__all__ = ["BETA_SCHEDULES", "DDPMSchedule", "make_betas"]

#: names accepted by :func:`make_betas`
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")


def make_betas(
    num_timesteps: int, schedule: str = "linear", *, beta_start: float, beta_end: float
) -> Tensor:
    """The betas of a DDPM schedule, float64 of shape (T,).

    ``linear``: ``linspace(beta_start, beta_end)`` (Ho et al.); ``scaled_linear``: linear in
    ``sqrt(beta)`` (Stable Diffusion); ``cosine``: Nichol & Dhariwal 2021 (``s = 0.008``, betas
    clipped to 0.999; ``beta_start``/``beta_end`` unused).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if schedule == "scaled_linear":
        root = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64)
        return root**2
    if schedule == "cosine":
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {schedule!r}; use one of {', '.join(BETA_SCHEDULES)}")


class DDPMSchedule(UniformTimesteps):
    """DDPM forward process + DDIM sampler over a respaced chain of ``steps`` timesteps.

    Args:
        num_timesteps: length T of the training chain.
        beta_schedule: ``linear`` | ``scaled_linear`` | ``cosine`` (:func:`make_betas`).
        beta_start, beta_end: end points of the (scaled) linear schedules.
        clip_x0: clamp ``x0_hat`` to ``[-clip_x0, clip_x0]`` inside :meth:`step` (None: never).

    Attributes (float64, indexed by the training timestep): ``betas``, ``alphas_cumprod``.
    After :meth:`set_timesteps`: ``timesteps`` (int64, descending, starts at T-1) and
    ``prev_timesteps[t]`` the next (smaller) chain timestep, -1 at the chain's end.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        *,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        clip_x0: float | None = None,
    ) -> None:
        betas = make_betas(num_timesteps, beta_schedule, beta_start=beta_start, beta_end=beta_end)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.num_timesteps = int(num_timesteps)
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        self.set_timesteps(self.num_timesteps)

    # ------------------------------------------------------------------ chain / timesteps
    def set_timesteps(self, steps: int) -> None:
        """Choose the sampling chain: ``steps`` timesteps out of T, evenly spaced and *trailing*.

        The chain is ``round(T - i T / steps) - 1`` for ``i = 0 .. steps-1``: it always starts at
        ``T - 1`` (where ``x_T ~ N(0, I)`` holds) and, with ``steps == T``, is ``T-1, ..., 0``.
        """
        if isinstance(steps, bool) or not 1 <= int(steps) <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        steps = int(steps)
        t_max = self.num_timesteps
        kept = sorted({round(t_max - i * t_max / steps) - 1 for i in range(steps)}, reverse=True)
        self.timesteps = torch.tensor(kept, dtype=torch.long)
        prev = torch.full((t_max,), -2, dtype=torch.long)  # -2: not in the chain
        for t, s in zip(kept, [*kept[1:], -1], strict=True):
            prev[t] = s
        self.prev_timesteps = prev

    def _coef(self, table: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        """``table[t]`` as a (B,1,...,1) tensor in ``like``'s dtype/device (t: int or (B,))."""
        return per_sample(table[timestep_index(t)], like)

    def _alpha_bar_prev(self, t: Tensor | int) -> Tensor:
        """alpha_bar of the chain's next timestep (1.0 past its end), float64 (B,)."""
        t = timestep_index(t)
        prev = self.prev_timesteps[t]
        if bool((prev == -2).any()):
            raise ValueError(
                f"timestep(s) {t.tolist()} are not in the sampling chain {self.timesteps.tolist()}"
            )
        ones = torch.ones_like(prev, dtype=torch.float64)
        return torch.where(prev >= 0, self.alphas_cumprod[prev.clamp(min=0)], ones)

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``; x0, noise (B,...), t (B,)."""
        ab = self.alphas_cumprod
        return self._coef(ab.sqrt(), t, x0) * x0 + self._coef((1 - ab).sqrt(), t, x0) * noise

    def predict_x0(self, eps: Tensor, t: Tensor | int, x_t: Tensor) -> Tensor:
        """``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)`` (no clipping)."""
        ab = self.alphas_cumprod
        return (x_t - self._coef((1 - ab).sqrt(), t, x_t) * eps) / self._coef(ab.sqrt(), t, x_t)

    def v_target(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """The velocity ``v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0`` (Salimans & Ho,
        ICLR 2022): the regression target of a v-prediction network."""
        ab = self.alphas_cumprod
        return self._coef(ab.sqrt(), t, x0) * noise - self._coef((1 - ab).sqrt(), t, x0) * x0

    def eps_from_v(self, v: Tensor, t: Tensor | int, x_t: Tensor) -> Tensor:
        """``eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v`` (exact, no division): a
        v-prediction network drives the eps-based :meth:`step` unchanged."""
        ab = self.alphas_cumprod
        return self._coef((1 - ab).sqrt(), t, x_t) * x_t + self._coef(ab.sqrt(), t, x_t) * v

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``x_T ~ N(0, I)`` of ``shape``, drawn on the CPU in fp32 and moved to device/dtype."""
        return randn(shape, generator=generator, device=device, dtype=dtype)

    # ------------------------------------------------------------------ reverse process
    def sigma(self, t: Tensor | int, eta: float, like: Tensor) -> Tensor:
        """DDIM's ``sigma`` for the step from ``t`` with stochasticity ``eta``, (B,1,...,1)."""
        ab_t = self.alphas_cumprod[timestep_index(t)]
        ab_s = self._alpha_bar_prev(t)
        sig = eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).clamp(min=0).sqrt()
        return per_sample(sig, like)

    def step(
        self,
        eps: Tensor,
        t: Tensor | int,
        x_t: Tensor,
        *,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """One DDIM step ``x_t -> x_s`` (s: the chain's next timestep) from the predicted ``eps``.

        ``eta == 0`` is deterministic and draws nothing; otherwise ``noise`` (shaped like x_t) is
        drawn from ``generator`` on the CPU when None. At the chain's end (s = -1) the step returns
        ``x0_hat`` (clipped when ``clip_x0`` is set) whatever eta.
        """
        x0 = self.predict_x0(eps, t, x_t)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        ab_s64 = self._alpha_bar_prev(t)
        ab_s = per_sample(ab_s64, x_t)
        sig = self.sigma(t, eta, x_t)
        direction = (1 - ab_s - sig**2).clamp(min=0).sqrt() * eps
        out = ab_s.sqrt() * x0 + direction
        if eta == 0.0 or bool((ab_s64 == 1).all()):
            return out
        if noise is None:
            noise = _randn_like(x_t, generator)
        return out + sig * noise

    def __repr__(self) -> str:
        return (
            f"DDPMSchedule(T={self.num_timesteps}, clip_x0={self.clip_x0}, "
            f"steps={self.timesteps.numel()})"
        )
