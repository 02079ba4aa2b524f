"""Image-quality and codebook-matching metrics, with the conventions of BasicSR's evaluation.

PSNR and SSIM take images (1,3,H,W) or (3,H,W) float in [0,1], RGB, on any device, and score them
the way BasicSR's ``calculate_psnr`` / ``calculate_ssim`` score the 8-bit images written by its
``tensor2img`` (Wang et al., "Image Quality Assessment: From Error Visibility to Structural
Similarity", IEEE TIP 2004, for SSIM):

1. quantise: clamp to [0,1], ``round(x * 255)`` (ties to even, in float32), NaN -> 0;
2. crop ``crop_border`` pixels from every side;
3. ``y_channel``: the luma of ITU-R BT.601 YCbCr on the [16, 235] scale,
   ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0,1] (BasicSR's ``rgb2ycbcr``
   with ``y_only``, in its precision); otherwise the three RGB channels;
4. PSNR: ``10 log10(255^2 / MSE)`` over all pixels and channels, ``inf`` for identical images;
   SSIM: 11x11 Gaussian window (sigma 1.5), ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``,
   'valid' filtering (no padding), the mean of the SSIM map, averaged over channels.

``codebook_accuracy`` scores code-index maps (FeMaSR/UGTSR codebook matching, e.g. UGTSR's
top-k matching accuracy) against ground-truth codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.errors import UsageError

__all__ = ["codebook_accuracy", "gaussian_window", "psnr", "rgb_to_y", "ssim"]

#: BT.601 luma weights for R, G, B in [0,1] -> Y in [16, 235] (BasicSR ``rgb2ycbcr``)
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_SIZE, _SSIM_SIGMA = 11, 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _as_image(x: Tensor, name: str) -> Tensor:
    """(1,3,H,W) or (3,H,W) float -> (3,H,W) float32 on the CPU."""
    if not isinstance(x, Tensor):
        raise UsageError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise UsageError(f"{name} must have shape (1,3,H,W) or (3,H,W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UsageError(f"{name} must be a float tensor in [0,1], got {x.dtype}")
    return x.detach().to("cpu", torch.float32)


def _quantise(x: Tensor) -> Tensor:
    """Float in [0,1] -> 8-bit levels 0..255 as float64 (BasicSR ``tensor2img``)."""
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    return torch.round(x * 255.0).to(torch.float64)


def rgb_to_y(levels: Tensor) -> Tensor:
    """(3,H,W) RGB 8-bit levels (0..255, float) -> (1,H,W) float64 BT.601 luma in [16, 235].

    Computed in BasicSR's order and precision (float32 [0,1] input, float64 weighted sum from
    blue to red, float32 result), so the scores match its numbers.
    """
    rgb = (levels.to(torch.float32) / 255.0).to(torch.float64)  # float32 [0,1], as BasicSR
    wr, wg, wb = _Y_WEIGHTS
    y = rgb[2:3] * wb + rgb[1:2] * wg + rgb[0:1] * wr
    return (((y + 16.0) / 255.0).to(torch.float32) * 255.0).to(torch.float64)


def _prepare(
    sr: Tensor, hq: Tensor, crop_border: int, y_channel: bool
) -> tuple[Tensor, Tensor]:
    a, b = _as_image(sr, "sr"), _as_image(hq, "hq")
    if a.shape != b.shape:
        raise UsageError(
            f"sr and hq differ in size: {tuple(a.shape)} vs {tuple(b.shape)}",
            hint="compare images of the same size (the SR output of the matching LR image)",
        )
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise UsageError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = a.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise UsageError(
            f"crop_border {crop_border} leaves nothing of a {w}x{h} image",
            hint="use a smaller --crop-border",
        )
    a, b = _quantise(a), _quantise(b)
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b


def psnr(sr: Tensor, hq: Tensor, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB of ``sr`` against ``hq`` (see the module docstring).

    ``sr``, ``hq``: (1,3,H,W) or (3,H,W) float in [0,1], same size. Returns ``inf`` when the
    quantised (cropped, luma) images are identical. Raises :class:`UsageError` on bad shapes.
    """
    a, b = _prepare(sr, hq, crop_border, y_channel)
    mse = float(torch.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = _SSIM_SIZE, sigma: float = _SSIM_SIGMA) -> Tensor:
    """(size, size) float64 Gaussian window summing to 1 (the outer product of a 1-D kernel)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(sr: Tensor, hq: Tensor, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """Structural similarity of ``sr`` against ``hq`` (Wang et al. 2004, Eq. 13; module docstring).

    ``sr``, ``hq``: (1,3,H,W) or (3,H,W) float in [0,1], same size, at least 11x11 after the crop.
    Returns the mean SSIM in [-1, 1] (1 for identical images).
    """
    a, b = _prepare(sr, hq, crop_border, y_channel)
    if min(a.shape[-2:]) < _SSIM_SIZE:
        raise UsageError(
            f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after cropping, "
            f"got {a.shape[-1]}x{a.shape[-2]}",
            hint="use larger images or a smaller --crop-border",
        )
    window = gaussian_window().view(1, 1, _SSIM_SIZE, _SSIM_SIZE)
    x, y = a.unsqueeze(1), b.unsqueeze(1)  # channels as batch: (C,1,H,W)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window)  # 'valid': no padding

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    per_channel = (num / den).mean(dim=(1, 2, 3))
    return float(per_channel.mean())


def codebook_accuracy(
    chosen: Tensor, candidates: Tensor, gt: Tensor, ks: Sequence[int] = (1, 3, 5)
) -> dict[str, float]:
    """Share of code positions matched correctly.

    ``chosen`` (B,1,h,w) the code ids the decoder used; ``candidates`` (B,K,h,w) code ids ranked
    nearest first; ``gt`` (B,1,h,w) the ground-truth ids (the HR prior's codes of the HR image).
    Returns ``{"top1": mean(chosen == gt), "topk@k": mean(gt in candidates[:, :k]) for each k in
    ks with k <= K}``, floats in [0,1].
    """
    for name, t in (("chosen", chosen), ("candidates", candidates), ("gt", gt)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise UsageError(f"{name} must be a (B,C,h,w) tensor of code ids, got {shape}")
    b, k_max, h, w = candidates.shape
    if chosen.shape != (b, 1, h, w) or gt.shape != (b, 1, h, w):
        raise UsageError(
            f"code maps differ in shape: chosen {tuple(chosen.shape)}, candidates "
            f"{tuple(candidates.shape)}, gt {tuple(gt.shape)} (expected (B,1,h,w) and (B,K,h,w))"
        )
    if b * h * w == 0 or k_max == 0:
        raise UsageError("codebook_accuracy needs at least one code position and one candidate")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise UsageError(f"top-k values must be integers >= 1, got {list(ks)}")
    gt = gt.to(candidates.device)
    out = {"top1": float((chosen.to(gt.device) == gt).double().mean())}
    hits = candidates == gt  # (B,K,h,w): where gt sits in the ranking (at most once per rank)
    for k in sorted(set(ks)):
        if k <= k_max:
            out[f"topk@{k}"] = float(hits[:, :k].any(dim=1).double().mean())
    return out
