"""Degradation operators on image batches: blur, resize, noise, JPEG, sharpening, 8-bit rounding.

Images are (B,C,H,W) floating tensors in [0,1] on any device (C = 3 RGB, or 1). Outputs keep the
input's device and dtype. Random parameters are drawn from an explicit CPU generator (see
``_random``), so a seed reproduces on every device. Two operators round-trip through the CPU:

* :func:`add_poisson_noise` draws ``torch.poisson`` on the CPU (a CPU generator cannot feed a CUDA
  sampler), then moves the noise back;
* :func:`jpeg_compress` encodes and decodes every image with OpenCV's libjpeg (quality 1..100,
  4:2:0 chroma subsampling). It is exact JPEG, not differentiable: Real-ESRGAN trains with
  ``DiffJPEG``, a differentiable GPU approximation; the gradients it offers are never used there
  either (the degradations run under ``no_grad``), so the exact codec is the faithful choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.errors import UsageError
from realsr_cli.training.degradations import _random as rnd
from realsr_cli.training.degradations.kernels import gaussian_kernel

__all__ = [
    "RESIZE_MODES",
    "add_gaussian_noise",
    "check_image",
    "add_poisson_noise",
    "filter2d",
    "jpeg_compress",
    "quantize_8bit",
    "random_gaussian_noise",
    "random_jpeg",
    "random_poisson_noise",
    "random_resize_mode",
    "random_resize_scale",
    "resize",
    "rgb_to_gray",
    "usm_sharpen",
]

#: interpolation modes Real-ESRGAN and BSRGAN choose from (cv2 INTER_LINEAR/CUBIC/AREA in BSRGAN)
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
_ALL_MODES = (*RESIZE_MODES, "nearest")


def check_image(img: Tensor) -> tuple[int, int, int, int]:
    if not isinstance(img, Tensor) or img.dim() != 4 or not img.is_floating_point():
        raise UsageError(
            f"expected a (B,C,H,W) floating tensor, got {getattr(img, 'shape', type(img))}"
        )
    b, c, h, w = img.shape
    return b, c, h, w


def _per_sample(value: float | Sequence[float] | Tensor, batch: int) -> Tensor:
    """A scalar or (B,) parameter as a (B,) float64 CPU tensor."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().flatten()
    if t.numel() == 1:
        return t.expand(batch).clone()
    if t.numel() != batch:
        raise UsageError(f"expected 1 or {batch} per-sample values, got {t.numel()}")
    return t


def _per_sample_bool(value: bool | Sequence[bool] | Tensor, batch: int) -> Tensor:
    return _per_sample(torch.as_tensor(value, dtype=torch.float64), batch) > 0.5


# ----------------------------------------------------------------------------- filtering
def filter2d(img: Tensor, kernel: Tensor) -> Tensor:
    """Blur every channel with ``kernel``: (k,k) for the whole batch or (B,k,k) per sample.

    Reflect padding (no edge duplication, scipy's ``mirror``), like Real-ESRGAN's ``filter2D``; an
    image too small to reflect ``k // 2`` pixels is padded by replication instead. Computed as a
    correlation (``F.conv2d``), which equals a convolution for the centrally symmetric kernels of
    ``kernels.py`` (:func:`~.kernels.shifted_gaussian_kernel` documents the one exception).
    """
    b, c, h, w = check_image(img)
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0).expand(b, -1, -1)
    k = kernel.shape[-1]
    if kernel.dim() != 3 or kernel.shape[0] != b or kernel.shape[1] != k or k % 2 == 0:
        raise UsageError(
            f"expected a (k,k) or ({b},k,k) kernel with odd k, got {tuple(kernel.shape)}"
        )
    p = k // 2
    mode = "reflect" if p < h and p < w else "replicate"
    padded = F.pad(img, (p, p, p, p), mode=mode) if p else img
    weight = kernel.to(device=img.device, dtype=img.dtype)[:, None].expand(b, c, k, k)
    out = F.conv2d(
        padded.reshape(1, b * c, h + 2 * p, w + 2 * p), weight.reshape(b * c, 1, k, k), groups=b * c
    )
    return out.view(b, c, h, w)


def _gaussian_blur_separable(img: Tensor, size: int, sigma: float) -> Tensor:
    """Isotropic Gaussian blur as two 1-D passes (same result as :func:`filter2d` with
    ``gaussian_kernel(size, sigma)``, k instead of k^2 operations per pixel)."""
    b, c, h, w = img.shape
    row = gaussian_kernel(size, sigma).sum(0).to(device=img.device, dtype=img.dtype)
    p = size // 2
    mode = "reflect" if p < h and p < w else "replicate"
    x = F.pad(img, (p, p, p, p), mode=mode).reshape(b * c, 1, h + 2 * p, w + 2 * p)
    x = F.conv2d(F.conv2d(x, row.view(1, 1, 1, size)), row.view(1, 1, size, 1))
    return x.view(b, c, h, w)


def resize(img: Tensor, size: tuple[int, int], mode: str, *, antialias: bool = False) -> Tensor:
    """Resize to ``size`` = (H', W') with ``area | bilinear | bicubic | nearest`` (no clamping).

    Sides below 1 become 1. ``antialias`` is only meaningful for bilinear/bicubic downscaling
    (MATLAB-style ``imresize``, used by BSRGAN's optional first halving).
    """
    check_image(img)
    if mode not in _ALL_MODES:
        raise UsageError(
            f"unknown resize mode {mode!r}", hint=f"use one of {', '.join(_ALL_MODES)}"
        )
    out_size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(img.shape[-2:]) == out_size:
        return img
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(
            img, size=out_size, mode=mode, align_corners=False, antialias=antialias
        )
    return F.interpolate(img, size=out_size, mode=mode)


def usm_sharpen(
    img: Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10
) -> Tensor:
    """Unsharp masking as Real-ESRGAN's released training code applies it to the ground truth.

    ``K = clip(I + weight (I - G*I))``, mask ``|I - G*I| * 255 > threshold`` blurred by the same
    Gaussian G (size ``radius`` rounded up to odd, OpenCV's default sigma for that size), output
    ``mask K + (1 - mask) I``. Published defaults: weight 0.5, radius 50, threshold 10.
    """
    check_image(img)
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel's sigma for sigma <= 0
    residual = img - _gaussian_blur_separable(img, size, sigma)
    mask = _gaussian_blur_separable((residual.abs() * 255 > threshold).to(img.dtype), size, sigma)
    sharp = (img + weight * residual).clamp(0, 1)
    return mask * sharp + (1 - mask) * img


def quantize_8bit(img: Tensor) -> Tensor:
    """Clamp to [0,1] and round to 8-bit levels: ``clamp(round(255 x), 0, 255) / 255``."""
    return torch.clamp((img * 255.0).round(), 0, 255) / 255.0


def rgb_to_gray(img: Tensor) -> Tensor:
    """ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B: (B,3,H,W) -> (B,1,H,W); (B,1,..) unchanged."""
    _, c, _, _ = check_image(img)
    if c == 1:
        return img
    if c != 3:
        raise UsageError(f"expected 1 or 3 channels, got {c}")
    r, g, b = img.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


# ----------------------------------------------------------------------------- noise
def add_gaussian_noise(
    img: Tensor,
    sigma: float | Sequence[float] | Tensor,
    *,
    gray: bool | Sequence[bool] | Tensor,
    generator: torch.Generator,
    clip: bool = True,
) -> Tensor:
    """Additive white Gaussian noise, per sample std ``sigma`` in 8-bit levels (e.g. 1..30).

    ``gray`` (per sample) draws one noise plane shared by all channels ("gray noise"), otherwise
    independent noise per channel ("colour noise"). Both planes are always drawn, so the number of
    draws and hence later random numbers do not depend on the choice.
    """
    b, c, h, w = check_image(img)
    rnd.check_generator(generator)
    std = (_per_sample(sigma, b) / 255.0).to(device=img.device, dtype=img.dtype).view(b, 1, 1, 1)
    is_gray = _per_sample_bool(gray, b).to(img.device).view(b, 1, 1, 1)
    colour = rnd.randn(generator, (b, c, h, w), like=img)
    mono = rnd.randn(generator, (b, 1, h, w), like=img).expand(b, c, h, w)
    out = img + torch.where(is_gray, mono, colour) * std
    return out.clamp(0, 1) if clip else out


@torch.no_grad()
def _poisson_noise(img: Tensor, gray: Tensor, generator: torch.Generator) -> Tensor:
    """Real-ESRGAN's Poisson noise on the CPU: rate = x * 2^ceil(log2(#distinct 8-bit levels))."""
    x = img.detach().to("cpu", torch.float32)
    colour, mono = quantize_8bit(x), quantize_8bit(rgb_to_gray(x))
    noise = torch.zeros_like(x)
    for i in range(x.shape[0]):
        src = mono[i] if bool(gray[i]) else colour[i]
        vals = 2.0 ** math.ceil(math.log2(int(torch.unique(src).numel())))
        noise[i] = torch.poisson(src * vals, generator=generator) / vals - src
    return noise


def add_poisson_noise(
    img: Tensor,
    scale: float | Sequence[float] | Tensor,
    *,
    gray: bool | Sequence[bool] | Tensor,
    generator: torch.Generator,
    clip: bool = True,
) -> Tensor:
    """Poisson (shot) noise scaled by ``scale`` per sample (Real-ESRGAN's noise model).

    The noise is ``Poisson(v x_q) / v - x_q`` with ``x_q`` the image rounded to 8-bit levels and
    ``v`` the number of distinct levels rounded up to a power of two; gray noise uses the BT.601
    luma and is shared by all channels. Output ``img + scale * noise``.
    """
    b, _, _, _ = check_image(img)
    rnd.check_generator(generator)
    noise = _poisson_noise(img, _per_sample_bool(gray, b), generator).to(img)
    factor = _per_sample(scale, b).to(device=img.device, dtype=img.dtype).view(b, 1, 1, 1)
    out = img + noise * factor
    return out.clamp(0, 1) if clip else out


def random_gaussian_noise(
    img: Tensor,
    generator: torch.Generator,
    sigma_range: tuple[float, float],
    gray_prob: float,
) -> Tensor:
    """Gaussian noise with per-sample sigma ~ U[sigma_range] (8-bit levels) and gray probability."""
    return _random_noise(add_gaussian_noise, img, generator, sigma_range, gray_prob)


def random_poisson_noise(
    img: Tensor,
    generator: torch.Generator,
    scale_range: tuple[float, float],
    gray_prob: float,
) -> Tensor:
    """Poisson noise with per-sample scale ~ U[scale_range] and gray probability."""
    return _random_noise(add_poisson_noise, img, generator, scale_range, gray_prob)


def _random_noise(
    add: Callable[..., Tensor],
    img: Tensor,
    generator: torch.Generator,
    amount_range: tuple[float, float],
    gray_prob: float,
) -> Tensor:
    """``add(img, amount, gray=..., generator=...)`` with per-sample amounts ~ U[amount_range]
    drawn first, then the per-sample gray choices (probability ``gray_prob``)."""
    b = check_image(img)[0]
    amount = rnd.uniform_batch(generator, b, *amount_range)
    gray = rnd.uniform_batch(generator, b, 0.0, 1.0) < gray_prob
    return add(img, amount, gray=gray, generator=generator)


# ----------------------------------------------------------------------------- JPEG
def jpeg_compress(img: Tensor, quality: int | float | Sequence[float] | Tensor) -> Tensor:
    """Encode and decode every image as baseline JPEG with OpenCV (per-sample ``quality`` 1..100).

    Inputs are clamped and rounded to 8 bits first (a JPEG file holds 8-bit samples); qualities are
    rounded to integers. RGB goes to OpenCV as BGR so its YCbCr conversion sees the right channels.
    Runs on the CPU, returns on the input's device and dtype. Not differentiable.
    """
    b, c, h, w = check_image(img)
    if c not in (1, 3):
        raise UsageError(f"JPEG needs 1 or 3 channels, got {c}")
    qualities = [int(min(100, max(1, round(float(q))))) for q in _per_sample(quality, b)]
    data = (img.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = data.permute(0, 2, 3, 1).numpy()
    decoded = []
    for arr, q in zip(arrays, qualities, strict=True):
        src = np.ascontiguousarray(arr[..., ::-1] if c == 3 else arr[..., 0])
        ok, buf = cv2.imencode(".jpg", src, [int(cv2.IMWRITE_JPEG_QUALITY), q])
        if not ok:  # pragma: no cover - libjpeg does not fail on valid uint8 input
            raise RuntimeError("OpenCV could not JPEG-encode an image")
        flag = cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE
        out = cv2.imdecode(buf, flag)
        decoded.append(out[..., ::-1] if c == 3 else out[..., None])
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(decoded))).permute(0, 3, 1, 2)
    return (stacked.to(torch.float32) / 255.0).to(device=img.device, dtype=img.dtype)


def random_jpeg(
    img: Tensor, generator: torch.Generator, quality_range: tuple[float, float]
) -> Tensor:
    """JPEG with per-sample quality ~ U[quality_range] (rounded); clamps to [0,1] first."""
    b = check_image(img)[0]
    quality = rnd.uniform_batch(generator, b, *quality_range)
    return jpeg_compress(img.clamp(0, 1), quality)


# ----------------------------------------------------------------------------- resize choice
def random_resize_mode(generator: torch.Generator, modes: Sequence[str]) -> str:
    """One of ``modes``, uniformly (one integer draw)."""
    return modes[rnd.randint(generator, 0, len(modes) - 1)]


def random_resize_scale(
    generator: torch.Generator,
    probs: tuple[float, float, float],
    scale_range: tuple[float, float],
) -> float:
    """Real-ESRGAN's random resize factor: up U[1, max], down U[min, 1] or keep 1 with ``probs``."""
    kind = rnd.choice(generator, probs)
    if kind == 0:
        return rnd.uniform(generator, 1.0, scale_range[1])
    if kind == 1:
        return rnd.uniform(generator, scale_range[0], 1.0)
    return 1.0
