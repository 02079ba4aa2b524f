"""Synthetic spatially variant blur with kernel and depth ground truth (SSR training data).

SSR (Sec. 3.1, 4: "DKENet employed a 21x21 anisotropic Gaussian blur kernel") trains its kernel
estimator on LR images whose per-pixel blur kernels are known. Arbitrary HR photos carry no depth,
so the depth is *synthesised* per image and the blur is made a function of it (defocus-like):

1. **Depth** (B,1,h,w) in [0,1] at LR resolution, smooth and random per image:
   ``d = normalise(low_freq + ramp_weight * ramp)`` where ``low_freq`` is uniform noise on a
   ``depth_grid x depth_grid`` lattice upsampled bicubically to (h,w), ``ramp`` a linear ramp in a
   random direction (a ground plane receding from the camera), ``ramp_weight ~ U[ramp_range]``,
   and ``normalise`` the per-image min-max map to [0,1] (a constant field becomes 0.5).
2. **Kernels** (B,k*k,h,w): at every LR pixel an anisotropic Gaussian (the ``kernels`` module's
   family and conventions, HR pixel units) with
   ``sigma_major = s_near + (s_far - s_near) * d`` — strictly increasing with depth (far = more
   blur, a camera focused at the near plane), per image ``s_near ~ U[sigma_near_range]``,
   ``s_far ~ U[max(s_near, sigma_far_range[0]), sigma_far_range[1]]``;
   ``sigma_minor = r * sigma_major`` with a per-image ratio ``r ~ U[anisotropy_range]`` and a
   per-image orientation ``theta ~ U[-pi, pi)``. Taps are row-major (tap ``i*k + j`` is kernel row
   i, column j, as DKENet's output), non-negative and sum to 1 per pixel.
3. **Blur + x s downsampling**: ``lq(i,j) = sum_p K_ij(p) hq(s*i + p_y, s*j + p_x)`` — the classic
   ``(hq (*) k)|s`` model of spatially variant blind SR (MANet), with the HR image reflect-padded
   by k//2 (replicate where it is too small). Only the kept HR positions are filtered.
4. **Noise and JPEG** from ``ops``: per image, with probability ``noise_prob``, Gaussian noise of
   sigma ~ U[noise_range] (8-bit levels, gray with ``gray_noise_prob``); then, with probability
   ``jpeg_prob``, JPEG at quality ~ U[jpeg_range]; finally clamp and round to 8 bits.

All randomness comes from one explicit CPU generator (the ``ops``/``_random`` convention), so the
same seed gives the same result on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training.degradations import _random as rnd
from realsr_cli.training.degradations.ops import (
    add_gaussian_noise,
    check_image,
    jpeg_compress,
    quantize_8bit,
)

__all__ = [
    "SpatialBlurConfig",
    "SpatialDegradation",
    "SpatiallyVariantBlur",
    "apply_spatial_blur",
    "depth_kernels",
    "synthetic_depth",
]


def _range(name: str, value: tuple[float, float], low: float = 0.0) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ConfigError(f"degradation.{name} must be (min, max) with {low} <= min <= max, "
                          f"got {value}")


@dataclass(frozen=True)
class SpatialBlurConfig:
    """Random ranges of :class:`SpatiallyVariantBlur` (kernel size and scale come from the model).

    Fields (sigmas in HR pixels, module docstring for the model):
        sigma_near_range: blur std at depth 0 (near plane).
        sigma_far_range: blur std at depth 1 (far plane), at least the near one.
        anisotropy_range: ratio minor/major std, in (0, 1].
        depth_grid: lattice side of the low-frequency depth noise (>= 2).
        ramp_range: weight of the linear depth ramp relative to the noise.
        noise_prob, noise_range, gray_noise_prob: Gaussian noise (8-bit levels).
        jpeg_prob, jpeg_range: JPEG compression and its quality range.
    """

    sigma_near_range: tuple[float, float] = (0.2, 1.5)
    sigma_far_range: tuple[float, float] = (1.5, 4.0)
    anisotropy_range: tuple[float, float] = (0.5, 1.0)
    depth_grid: int = 4
    ramp_range: tuple[float, float] = (0.0, 1.5)
    noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 15.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.5
    jpeg_range: tuple[float, float] = (50.0, 95.0)

    def __post_init__(self) -> None:
        _range("sigma_near_range", self.sigma_near_range, 1e-3)
        _range("sigma_far_range", self.sigma_far_range, 1e-3)
        _range("anisotropy_range", self.anisotropy_range, 1e-3)
        _range("ramp_range", self.ramp_range)
        _range("noise_range", self.noise_range)
        _range("jpeg_range", self.jpeg_range, 1.0)
        if self.anisotropy_range[1] > 1 or self.jpeg_range[1] > 100:
            raise ConfigError("degradation: anisotropy at most 1, JPEG quality at most 100")
        if self.sigma_far_range[1] < self.sigma_near_range[0]:
            raise ConfigError("degradation.sigma_far_range lies below sigma_near_range")
        if self.depth_grid < 2:
            raise ConfigError(f"degradation.depth_grid must be >= 2, got {self.depth_grid}")
        for name in ("noise_prob", "gray_noise_prob", "jpeg_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"degradation.{name} must be in [0, 1]")


@dataclass
class SpatialDegradation:
    """``lq`` (B,3,h,w) in [0,1]; ``kernels`` (B,k*k,h,w) the ground-truth per-pixel kernels;
    ``depth`` (B,1,h,w) in [0,1] the synthetic depth they were made from; ``sigma`` (B,1,h,w) the
    major-axis blur std (HR pixels)."""

    lq: Tensor
    kernels: Tensor
    depth: Tensor
    sigma: Tensor


def synthetic_depth(
    batch: int, size: tuple[int, int], generator: torch.Generator, *, grid: int = 4,
    ramp_range: tuple[float, float] = (0.0, 1.5),
) -> Tensor:
    """A smooth random depth field per image (module docstring, step 1): (B,1,h,w) float32 CPU."""
    rnd.check_generator(generator)
    h, w = size
    coarse = torch.rand((batch, 1, grid, grid), generator=generator, dtype=torch.float32)
    noise = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    angle = rnd.uniform_batch(generator, batch, -math.pi, math.pi).float().view(batch, 1, 1, 1)
    weight = rnd.uniform_batch(generator, batch, *ramp_range).float().view(batch, 1, 1, 1)
    ys = torch.linspace(-0.5, 0.5, h).view(1, 1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w).view(1, 1, 1, w)
    depth = noise + weight * (torch.cos(angle) * xs + torch.sin(angle) * ys)
    lo = depth.amin(dim=(2, 3), keepdim=True)
    hi = depth.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 1e-6, (depth - lo) / span.clamp(min=1e-6), torch.full_like(depth, 0.5))


def depth_kernels(
    sigma_major: Tensor, ratio: Tensor, theta: Tensor, kernel_size: int
) -> Tensor:
    """Per-pixel anisotropic Gaussians: ``sigma_major`` (B,1,h,w), ``ratio`` and ``theta`` (B,)
    or broadcastable to (B,1,h,w) -> (B,k*k,h,w), rows of taps row-major, summing to 1.

    Same covariance convention as :func:`realsr_cli.training.degradations.kernels.gaussian_kernel`
    (``x`` along columns, ``theta`` rotating the long axis from +x towards +y).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UsageError(f"kernel size must be a positive odd integer, got {kernel_size}")
    b = sigma_major.shape[0]
    dev, dt = sigma_major.device, torch.float32
    ax = torch.arange(kernel_size, dtype=dt, device=dev) - (kernel_size - 1) / 2
    yy = ax.repeat_interleave(kernel_size).view(1, -1, 1, 1)
    xx = ax.repeat(kernel_size).view(1, -1, 1, 1)

    def field(v: Tensor) -> Tensor:
        v = torch.as_tensor(v, dtype=dt, device=dev)
        return v.view(b, 1, 1, 1) if v.dim() == 1 else v

    sx = sigma_major.to(dt).clamp(min=1e-3)
    sy = (sx * field(ratio)).clamp(min=1e-3)
    th = field(theta)
    c, s = torch.cos(th), torch.sin(th)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    q = (u / sx) ** 2 + (v / sy) ** 2
    k = torch.exp(-0.5 * (q - q.amin(dim=1, keepdim=True)))
    return (k / k.sum(dim=1, keepdim=True)).to(sigma_major.dtype)


def apply_spatial_blur(hq: Tensor, kernels: Tensor, scale: int) -> Tensor:
    """``lq(i,j) = sum_p K_ij(p) hq(s i + p)``: hq (B,C,H,W), kernels (B,k*k,H/s,W/s) -> (B,C,H/s,W/s)."""
    b, c, h, w = check_image(hq)
    kk = kernels.shape[1]
    k = math.isqrt(kk)
    if k * k != kk or h % scale or w % scale or kernels.shape[-2:] != (h // scale, w // scale):
        raise UsageError(
            f"kernels {tuple(kernels.shape)} do not fit hq {tuple(hq.shape)} at x{scale}"
        )
    p = k // 2
    mode = "reflect" if p < h and p < w else "replicate"
    padded = F.pad(hq, (p, p, p, p), mode=mode) if p else hq
    cols = F.unfold(padded, k, stride=scale)  # (B, C*k*k, h*w), channel-major then row-major taps
    cols = cols.view(b, c, kk, h // scale, w // scale)
    return (cols * kernels.to(hq.dtype).unsqueeze(1)).sum(dim=2)


class SpatiallyVariantBlur:
    """``SpatiallyVariantBlur(config, kernel_size, scale)(hq, generator) -> SpatialDegradation``.

    hq (B,3,H,W) in [0,1] with H, W multiples of ``scale``; see the module docstring.
    """

    def __init__(self, config: SpatialBlurConfig, kernel_size: int = 21, scale: int = 4) -> None:
        self.config = config
        self.kernel_size = kernel_size
        self.scale = scale

    @torch.no_grad()
    def __call__(self, hq: Tensor, generator: torch.Generator) -> SpatialDegradation:
        cfg, s = self.config, self.scale
        b, _, h, w = check_image(hq)
        if h % s or w % s:
            raise UsageError(f"hq sides {h}x{w} must be multiples of the scale {s}")
        rnd.check_generator(generator)
        size = (h // s, w // s)
        depth = synthetic_depth(b, size, generator, grid=cfg.depth_grid, ramp_range=cfg.ramp_range)
        near = rnd.uniform_batch(generator, b, *cfg.sigma_near_range)
        far_lo = torch.clamp(near, min=cfg.sigma_far_range[0])
        far = far_lo + (cfg.sigma_far_range[1] - far_lo).clamp(min=0) * rnd.uniform_batch(
            generator, b, 0.0, 1.0
        )
        ratio = rnd.uniform_batch(generator, b, *cfg.anisotropy_range)
        theta = rnd.uniform_batch(generator, b, -math.pi, math.pi)
        view = (b, 1, 1, 1)
        sigma = near.view(view) + (far - near).view(view) * depth.double()
        depth = depth.to(hq.device)
        sigma = sigma.to(device=hq.device, dtype=torch.float32)
        kernels = depth_kernels(sigma, ratio, theta, self.kernel_size)
        lq = apply_spatial_blur(hq.float(), kernels, s)

        noisy = rnd.uniform_batch(generator, b, 0.0, 1.0) < cfg.noise_prob
        noise_sigma = rnd.uniform_batch(generator, b, *cfg.noise_range) * noisy
        gray = rnd.uniform_batch(generator, b, 0.0, 1.0) < cfg.gray_noise_prob
        if bool(noisy.any()):
            lq = add_gaussian_noise(lq, noise_sigma, gray=gray, generator=generator)
        jpeg = rnd.uniform_batch(generator, b, 0.0, 1.0) < cfg.jpeg_prob
        quality = rnd.uniform_batch(generator, b, *cfg.jpeg_range)
        lq = lq.clamp(0, 1)
        if bool(jpeg.any()):
            idx = torch.nonzero(jpeg).flatten().tolist()
            sel = torch.tensor(idx, device=lq.device)
            lq = lq.index_copy(0, sel, jpeg_compress(lq[sel], quality[idx]))
        lq = quantize_8bit(lq).to(hq.dtype)
        return SpatialDegradation(lq=lq, kernels=kernels, depth=depth.to(hq.dtype), sigma=sigma)
