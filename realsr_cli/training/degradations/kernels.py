"""Blur kernels of the Real-ESRGAN and BSRGAN degradation models.

All kernels are (k,k) float32 CPU tensors, k odd, normalised to sum to 1. Gaussian-family kernels
are non-negative; the sinc (circular low-pass) kernel has negative side lobes.

Coordinates: ``x`` runs along columns (to the right), ``y`` along rows (downwards), origin at the
centre pixel. An anisotropic kernel with ``sigma_x > sigma_y`` and ``theta = 0`` is elongated along
x; ``theta`` rotates that long axis from +x towards +y (clockwise on screen). Its covariance is
``R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` (Real-ESRGAN's blur model; BSRGAN writes the same
matrix with eigenvalues ``l1 = sigma_x^2``, ``l2 = sigma_y^2``).

Families (Wang et al., "Real-ESRGAN", ICCVW 2021, Sec. 3: blur, and the sinc filter for ringing):

* Gaussian:             ``exp(-q/2)``
* generalized Gaussian: ``exp(-q^beta / 2)`` (Liu et al. 2020)
* plateau:              ``1 / (1 + q^beta)``
* sinc:                 ``h(r) = omega_c J1(omega_c r) / (2 pi r)`` (ideal circular low-pass,
  ringing/overshoot artifacts; the r = 0 limit is ``omega_c^2 / (4 pi)``)

with ``q = p^T Sigma^-1 p`` the squared Mahalanobis distance of pixel offset ``p``.

Sampling numbers (``KernelSettings`` defaults, ``random_final_sinc_kernel``) are Real-ESRGAN's
published training options (``options/train_realesrgan_x4plus.yml`` with the dataset defaults of
``realesrgan/data/realesrgan_dataset.py``, xinntao/Real-ESRGAN v0.2.x):

* kernel size uniform over {7, 9, ..., 21}, zero-padded to 21x21 so a batch can be stacked
* with probability 0.1 a sinc kernel, cutoff omega_c ~ U[pi/3, pi] for k < 13, U[pi/5, pi] else
* otherwise a type with probabilities iso 0.45, aniso 0.25, generalized iso 0.12, generalized aniso
  0.03, plateau iso 0.12, plateau aniso 0.03; sigma ~ U[0.2, 3] (first degradation) or
  U[0.2, 1.5] (second); rotation ~ U[-pi, pi]; beta ~ U[0.5, 4] (generalized), U[1, 2] (plateau),
  drawn as U[beta_min, 1] or U[1, beta_max] with probability 1/2 each
* final sinc: probability 0.8, k uniform over {7..21}, omega_c ~ U[pi/3, pi]; else a unit pulse
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training.degradations import _random as rnd

__all__ = [
    "KERNEL_SIZES",
    "KERNEL_TYPES",
    "KernelSettings",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "pad_kernel",
    "plateau_kernel",
    "pulse_kernel",
    "random_blur_kernel",
    "random_final_sinc_kernel",
    "shifted_gaussian_kernel",
    "sinc_kernel",
]

#: Real-ESRGAN's kernel sizes: odd, 7 to 21
KERNEL_SIZES: tuple[int, ...] = tuple(range(7, 22, 2))
#: kernel families in the order of :attr:`KernelSettings.type_probs`
KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
#: a sigma below this is treated as this (the kernel is a unit pulse at that point anyway)
_MIN_SIGMA = 1e-3


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise UsageError(f"kernel size must be a positive odd integer, got {size!r}")
    return size


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """(x, y) offsets from the centre of a (size,size) kernel, float64; x along columns."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _mahalanobis_sq(size: int, sigma_x: float, sigma_y: float | None, theta: float) -> Tensor:
    """``q = p^T Sigma^-1 p`` on the kernel grid, Sigma = R diag(sx^2, sy^2) R^T."""
    _check_size(size)
    sx = max(float(sigma_x), _MIN_SIGMA)
    sy = sx if sigma_y is None else max(float(sigma_y), _MIN_SIGMA)
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinate along the rotated x axis
    v = -s * xx + c * yy  # ... and along the rotated y axis
    return (u / sx) ** 2 + (v / sy) ** 2


def _normalised(kernel: Tensor) -> Tensor:
    return (kernel / kernel.sum()).to(torch.float32)


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> Tensor:
    """Bivariate Gaussian, isotropic when ``sigma_y`` is None. (size,size) float32, sums to 1."""
    return _normalised(torch.exp(-0.5 * _mahalanobis_sq(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
) -> Tensor:
    """Generalized Gaussian ``exp(-q^beta / 2)``; beta = 1 is the Gaussian. Sums to 1."""
    q = _mahalanobis_sq(size, sigma_x, sigma_y, theta)
    return _normalised(torch.exp(-0.5 * q.pow(beta)))


def plateau_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
) -> Tensor:
    """Plateau-shaped ``1 / (1 + q^beta)`` (flat top, heavy tails). Sums to 1."""
    q = _mahalanobis_sq(size, sigma_x, sigma_y, theta)
    return _normalised(1.0 / (1.0 + q.pow(beta)))


def sinc_kernel(size: int, cutoff: float, pad_to: int | None = None) -> Tensor:
    """Ideal circular low-pass ``omega_c J1(omega_c r) / (2 pi r)`` with cutoff ``omega_c`` (rad).

    Sums to 1, may be negative off-centre. ``pad_to`` zero-pads to a larger odd size.
    """
    _check_size(size)
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r)
    kernel = torch.where(r > 0, kernel, torch.full_like(r, cutoff**2 / (4 * math.pi)))
    kernel = _normalised(kernel)
    return kernel if pad_to is None else pad_kernel(kernel, pad_to)


def shifted_gaussian_kernel(size: int, sigma: float, shift: float) -> Tensor:
    """Isotropic Gaussian whose centre sits ``shift`` pixels right of and below the middle.

    Correlating with it (``F.conv2d``) averages the image around ``(i + shift, j + shift)``; then
    taking every s-th pixel with ``shift = (s - 1) / 2`` samples the centres of s x s blocks. This is
    BSRGAN's "shifted Gaussian + nearest downsampling" (its ``shift_pixel``, which resamples the
    kernel bilinearly; we evaluate the shifted Gaussian analytically).
    """
    _check_size(size)
    xx, yy = _grid(size)
    sig = max(float(sigma), _MIN_SIGMA)
    return _normalised(torch.exp(-((xx - shift) ** 2 + (yy - shift) ** 2) / (2 * sig**2)))


def pulse_kernel(size: int = 21) -> Tensor:
    """The identity kernel: 1 at the centre, 0 elsewhere."""
    _check_size(size)
    kernel = torch.zeros(size, size)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a (k,k) kernel to (size,size), centred; k and size odd, k <= size."""
    _check_size(size)
    k = kernel.shape[-1]
    if kernel.dim() != 2 or kernel.shape[0] != k or k % 2 == 0 or k > size:
        raise UsageError(f"cannot pad a {tuple(kernel.shape)} kernel to {size}x{size}")
    p = (size - k) // 2
    return torch.nn.functional.pad(kernel, (p, p, p, p))


# ----------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class KernelSettings:
    """How one degradation stage draws its blur kernel (defaults: Real-ESRGAN's first stage)."""

    sizes: tuple[int, ...] = KERNEL_SIZES
    #: probabilities of :data:`KERNEL_TYPES`
    type_probs: tuple[float, float, float, float, float, float] = (
        0.45,
        0.25,
        0.12,
        0.03,
        0.12,
        0.03,
    )
    sigma_range: tuple[float, float] = (0.2, 3.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1
    #: every kernel is zero-padded to this size
    pad_to: int = 21

    def __post_init__(self) -> None:
        bad = [k for k in self.sizes if k % 2 == 0 or not 1 <= k <= self.pad_to]
        if not self.sizes or bad or self.pad_to % 2 == 0:
            raise ConfigError(
                f"kernel sizes must be odd and at most pad_to={self.pad_to}, got {self.sizes}"
            )
        if min(self.type_probs) < 0 or sum(self.type_probs) <= 0:
            raise ConfigError(f"type_probs must be non-negative weights, got {self.type_probs}")
        if not 0.0 <= self.sinc_prob <= 1.0:
            raise ConfigError(f"sinc_prob must be in [0, 1], got {self.sinc_prob}")
        if not 0.0 < self.sigma_range[0] <= self.sigma_range[1]:
            raise ConfigError(
                f"sigma_range must be (min, max) with 0 < min <= max, got {self.sigma_range}"
            )
        if not 0.0 < self.betag_range[0] <= 1.0 <= self.betag_range[1]:
            raise ConfigError(f"betag_range must straddle 1, got {self.betag_range}")
        if not 0.0 < self.betap_range[0] <= 1.0 <= self.betap_range[1]:
            raise ConfigError(f"betap_range must straddle 1, got {self.betap_range}")


def _random_beta(generator: torch.Generator, beta_range: tuple[float, float]) -> float:
    """Real-ESRGAN's beta draw: U[lo, 1] or U[1, hi] with probability 1/2 each."""
    if rnd.bernoulli(generator, 0.5):
        return rnd.uniform(generator, beta_range[0], 1.0)
    return rnd.uniform(generator, 1.0, beta_range[1])


def random_blur_kernel(generator: torch.Generator, settings: KernelSettings) -> Tensor:
    """Draw one blur kernel of a Real-ESRGAN degradation stage, padded to ``settings.pad_to``."""
    size = settings.sizes[rnd.randint(generator, 0, len(settings.sizes) - 1)]
    if rnd.bernoulli(generator, settings.sinc_prob):
        # this cutoff range is Real-ESRGAN's, tuned for sizes 7..21
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, rnd.uniform(generator, low, math.pi), pad_to=settings.pad_to)
    kind = KERNEL_TYPES[rnd.choice(generator, settings.type_probs)]
    sigma_x = rnd.uniform(generator, *settings.sigma_range)
    if kind.endswith("aniso"):
        sigma_y: float | None = rnd.uniform(generator, *settings.sigma_range)
        theta = rnd.uniform(generator, *settings.rotation_range)
    else:
        sigma_y, theta = None, 0.0
    if kind.startswith("generalized"):
        beta = _random_beta(generator, settings.betag_range)
        kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
    elif kind.startswith("plateau"):
        beta = _random_beta(generator, settings.betap_range)
        kernel = plateau_kernel(size, sigma_x, sigma_y, theta, beta)
    else:
        kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    return pad_kernel(kernel, settings.pad_to)


def random_final_sinc_kernel(
    generator: torch.Generator,
    prob: float = 0.8,
    sizes: tuple[int, ...] = KERNEL_SIZES,
    cutoff_range: tuple[float, float] = (math.pi / 3, math.pi),
    pad_to: int = 21,
) -> Tensor:
    """Real-ESRGAN's final sinc filter: a sinc kernel with probability ``prob``, else a pulse."""
    if rnd.bernoulli(generator, prob):
        size = sizes[rnd.randint(generator, 0, len(sizes) - 1)]
        return sinc_kernel(size, rnd.uniform(generator, *cutoff_range), pad_to=pad_to)
    return pulse_kernel(pad_to)
