"""NIQE, the no-reference Natural Image Quality Evaluator, with BasicSR's conventions.

Mittal, Soundararajan & Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE Signal
Processing Letters 2013. Lower is better. The procedure is the one of the authors' MATLAB release
as BasicSR's ``calculate_niqe`` (basicsr 1.4.2) reproduces it, so the numbers are comparable with
papers that report BasicSR's NIQE:

1. the image is quantised to 8 bits, ``crop_border`` pixels are cut from every side, and it is
   scored on the BT.601 luma ``Y`` in [16, 235] (:func:`metrics.rgb_to_y`), rounded to integers;
2. it is cropped at the bottom/right to whole 96x96 blocks (no overlap);
3. at two scales (the image, then the image halved by MATLAB's bicubic ``imresize`` with
   antialiasing, :func:`imresize`) the MSCN coefficients ``(I - mu) / (sigma + 1)`` are taken,
   ``mu`` and ``sigma`` local Gaussian-weighted mean and deviation (7x7 window, sigma 7/6,
   replicated borders; Eq. 1 of the paper);
4. for every block (96x96, then 48x48 at the second scale) 18 features: the shape and mean
   spread of an asymmetric generalised Gaussian (AGGD) fitted to the MSCN values, and shape,
   mean (Eq. 8), left and right spread of AGGDs fitted to the products of each value with its
   neighbour in four directions (circular shifts (0,1), (1,0), (1,1), (1,-1) within the block);
   the shape is the grid point of 0.2:0.001:10 whose moment ratio is nearest (Eq. 7);
5. a multivariate Gaussian is fitted to the 36-dimensional block features (mean over blocks,
   ignoring NaN features; covariance over blocks without NaN) and compared with the pristine model
   (mu, cov) the authors fitted to natural images: ``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2)
   (mu_p - mu))`` (Eq. 10).

The arithmetic follows the reference too (float32 MSCN after float64 filtering, float32 resize,
float32 block moments): NIQE's shape search on a 0.001 grid and the cancellation in the local
variance turn last-bit differences into visible ones (up to ~1e-2 in NIQE with plain float64).
Measured against basicsr 1.4.2 on the same machine, the scores agree to 1e-9 (tests/engine/
test_niqe.py records the reference values).

The pristine model ships with the package as ``realsr_cli/data/niqe_pris_params.npz`` (from
basicsr 1.4.2, Apache-2.0). numpy and torch only.
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.errors import ModelError, UsageError
from realsr_cli.evaluation import metrics

__all__ = ["BLOCK", "imresize", "mscn", "niqe", "niqe_y", "pristine_model"]

#: block side at the first scale (the authors' recommended value)
BLOCK = 96
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
_PARAMS = "niqe_pris_params.npz"


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), cov (36,36), window (7,7)) float64: the pristine MVG model and the MSCN window."""
    try:
        ref = resources.files("realsr_cli") / "data" / _PARAMS
        with ref.open("rb") as fh, np.load(fh) as data:
            mu = np.asarray(data["mu_pris_param"], np.float64).reshape(-1)
            cov = np.asarray(data["cov_pris_param"], np.float64)
            window = np.asarray(data["gaussian_window"], np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(
            f"the NIQE pristine model ({_PARAMS}) cannot be read: {exc}",
            hint="the realsr installation is incomplete; reinstall it (pip install --force-reinstall realsr)",
        ) from exc
    return mu, cov, window


# ----------------------------------------------------------------------------- MATLAB imresize


def _cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = x.abs()
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_taps(n_in: int, scale: float) -> tuple[Tensor, Tensor, int, int]:
    """MATLAB ``imresize`` along one axis, n_out = ceil(n_in * scale) output pixels.

    Returns (weights (n_out, taps) float32, first (n_out,) long, pad_before, pad_after): output
    pixel k is ``sum_t weights[k, t] * padded[first[k] + t]``, ``padded`` the input mirrored by
    ``pad_before`` / ``pad_after`` pixels at its ends (MATLAB's 'symmetric': ``c b a | a b c``).

    Output pixel k (1-based) samples the input at ``u = k / scale + (1 - 1 / scale) / 2``; the
    kernel is widened by ``1 / scale`` when shrinking (antialiasing); each row's weights are
    normalised to sum to 1; an edge tap column whose weight is zero for every output pixel is
    dropped. Computed in float32, as the reference (basicsr's torch port of MATLAB's code) does.
    """
    n_out = math.ceil(n_in * scale)
    shrink = scale < 1
    width = 4.0 / scale if shrink else 4.0
    taps = math.ceil(width) + 2
    u = torch.linspace(1, n_out, n_out) / scale + 0.5 * (1 - 1 / scale)
    first = torch.floor(u - width / 2)
    idx = first.view(n_out, 1) + torch.linspace(0, taps - 1, taps).view(1, taps)  # 1-based
    dist = u.view(n_out, 1) - idx
    w = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    keep = torch.ones(taps, dtype=torch.bool)
    keep[0] = bool((w[:, 0] != 0).any())
    keep[-1] = bool((w[:, -1] != 0).any())
    w, idx = w[:, keep].contiguous(), idx[:, keep].long()
    before, after = max(0, 1 - int(idx.min())), max(0, int(idx.max()) - n_in)
    if before > n_in or after > n_in:
        raise UsageError(f"imresize: a side of {n_in} px is too small for scale {scale}")
    return w, idx[:, 0] - 1 + before, before, after


def _mirror_pad(x: Tensor, dim: int, before: int, after: int) -> Tensor:
    """Pad ``x`` along ``dim`` by mirroring its ends, edge pixel included (``c b a | a b c``)."""
    n = x.shape[dim]
    head = x.narrow(dim, 0, before).flip(dim)
    tail = x.narrow(dim, n - after, after).flip(dim)
    return torch.cat([head, x, tail], dim=dim).contiguous()


def imresize(img: Tensor, scale: float) -> Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiased when shrinking) of a 2-D image.

    ``img`` (H,W) float; returns (ceil(H * scale), ceil(W * scale)) float32, not rounded or
    clamped. Separable: rows first, then columns, in float32 with one matrix-vector product per
    output line over a mirror-padded copy (the reference's arithmetic and memory layout, so the
    result matches it to the bit on the same torch build; NIQE amplifies last-bit differences).
    """
    if img.ndim != 2:
        raise UsageError(f"imresize expects an (H,W) image, got shape {tuple(img.shape)}")
    x = img.to(torch.float32)
    w_rows, first_rows, *pad_rows = _resize_taps(x.shape[0], scale)
    w_cols, first_cols, *pad_cols = _resize_taps(x.shape[1], scale)
    padded = _mirror_pad(x, 0, *pad_rows)
    taps = w_rows.shape[1]
    mid = torch.empty(len(w_rows), x.shape[1], dtype=torch.float32)
    for i, start in enumerate(first_rows.tolist()):
        mid[i] = padded[start : start + taps].T.mv(w_rows[i])
    padded = _mirror_pad(mid, 1, *pad_cols)
    taps = w_cols.shape[1]
    out = torch.empty(len(w_rows), len(w_cols), dtype=torch.float32)
    for j, start in enumerate(first_cols.tolist()):
        out[:, j] = padded[:, start : start + taps].mv(w_cols[j])
    return out


# ----------------------------------------------------------------------------- features


def mscn(img: Tensor, window: Tensor) -> Tensor:
    """Mean-subtracted contrast-normalised coefficients of an (H,W) image, (H,W) float32.

    ``window`` (k,k) sums to 1; borders are replicated (scipy's 'nearest'); ``sigma`` is
    ``sqrt(|E[I^2] - E[I]^2|)`` and the +1 keeps flat regions finite. As in the reference, the
    filtering accumulates in float64 and everything else is float32: the cancellation in
    ``E[I^2] - E[I]^2`` makes the precision visible (about 5e-4 in the coefficients, 1e-2 in
    NIQE), so it is reproduced rather than improved.
    """
    kh, kw = window.shape
    h, w = img.shape
    x = img.to(torch.float32)
    wk = window.to(torch.float64).flip(0, 1)  # a convolution, as scipy.ndimage.convolve

    def blur(t: Tensor) -> Tensor:
        pad = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
        padded = F.pad(t.to(torch.float64)[None, None], pad, mode="replicate")[0, 0]
        acc = torch.zeros(h, w, dtype=torch.float64)
        for a in range(kh):  # 49 shifted multiply-adds: faster than a float64 conv2d on CPU
            for b in range(kw):
                acc += wk[a, b] * padded[a : a + h, b : b + w]
        return acc.to(torch.float32)

    mu = blur(x)
    # float32 variance; its square root correctly rounded (via float64, as numpy's)
    sigma = (blur(x * x) - mu * mu).abs().to(torch.float64).sqrt().to(torch.float32)
    return (x - mu) / (sigma + 1)


@functools.lru_cache(maxsize=1)
def _shape_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AGGD shape grid 0.2:0.001:10 and, per grid point a, the moment ratio
    ``G(2/a)^2 / (G(1/a) G(3/a))`` (strictly increasing), ``sqrt(G(1/a) / G(3/a))`` and
    ``G(2/a) / G(1/a)`` (G the gamma function), float64."""
    grid = np.arange(0.2, 10.001, 0.001)
    ratio, spread, mean = [], [], []
    for a in grid.tolist():
        r = 1.0 / a
        ratio.append(math.gamma(r * 2) ** 2 / (math.gamma(r) * math.gamma(r * 3)))
        spread.append(math.sqrt(math.gamma(1 / a) / math.gamma(3 / a)))
        mean.append(math.gamma(2 / a) / math.gamma(1 / a))
    return grid, np.array(ratio), np.array(spread), np.array(mean)


def _aggd(x: np.ndarray) -> tuple[float, float, float, int]:
    """Fit an AGGD to the values ``x`` (1-D float32): (alpha, beta_left, beta_right, grid index).

    Moment matching (Lasmar et al. 2009): ``gamma = sigma_l / sigma_r``, ``r = E|x|^2 / E[x^2]``,
    ``R = r (gamma^3 + 1)(gamma + 1) / (gamma^2 + 1)^2``; alpha is the grid point whose moment
    ratio is nearest R (the first one on a tie; the first grid point when R is NaN, i.e. no
    negative or no positive values). The moments are float32 numpy means, as in the reference:
    the grid search turns their last bits into 0.001 steps of alpha.
    """
    grid, ratio, spread, _ = _shape_grid()
    neg, pos = x[x < 0], x[x > 0]
    nan = np.float32("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.mean(neg**2)) if neg.size else nan
        right = np.sqrt(np.mean(pos**2)) if pos.size else nan
        g = left / right
        rhat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
        rnorm = float(rhat * (g**3 + 1) * (g + 1) / ((g**2 + 1) ** 2))
    if math.isnan(rnorm):
        i = 0
    else:
        hi = min(int(np.searchsorted(ratio, rnorm)), len(grid) - 1)
        lo = max(hi - 1, 0)
        i = hi if (ratio[hi] - rnorm) ** 2 < (ratio[lo] - rnorm) ** 2 else lo
    return float(grid[i]), float(left) * spread[i], float(right) * spread[i], i


def _block_features(block: np.ndarray) -> list[float]:
    """18 features of one (b,b) float32 MSCN block (see the module docstring, step 4)."""
    _, _, _, mean_factor = _shape_grid()
    alpha, bl, br, _ = _aggd(block.ravel())
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        prod = block * np.roll(block, shift, axis=(0, 1))
        alpha, bl, br, i = _aggd(prod.ravel())
        feats += [alpha, (br - bl) * mean_factor[i], bl, br]
    return feats


def _features(coeffs: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """(nh*b, nw*b) MSCN image -> (nw*nh, 18) float64, blocks column by column (the reference's
    order, which fixes the summation order of the mean and covariance)."""
    b = coeffs.shape[0] // nh
    return np.array(
        [
            _block_features(coeffs[i * b : (i + 1) * b, j * b : (j + 1) * b])
            for j in range(nw)
            for i in range(nh)
        ],
        dtype=np.float64,
    )


# ----------------------------------------------------------------------------- NIQE


def niqe_y(y: Tensor) -> float:
    """NIQE of an (H,W) luma image in 8-bit levels (float, [0, 255]; BasicSR rounds Y first).

    Needs at least two 96x96 blocks (e.g. 96x192); raises :class:`UsageError` for smaller images
    and for images where NIQE is undefined (fewer than two blocks with finite features: flat or
    nearly constant images).
    """
    if y.ndim != 2:
        raise UsageError(f"niqe_y expects an (H,W) luma image, got shape {tuple(y.shape)}")
    h, w = y.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh * nw < 2:
        raise UsageError(
            f"NIQE needs at least two {BLOCK}x{BLOCK} blocks, the image is {w}x{h} (after cropping)",
            hint=f"score images of at least {BLOCK}x{2 * BLOCK} pixels, or use a smaller crop border",
        )
    mu_p, cov_p, window = pristine_model()
    win = torch.from_numpy(window)
    img = y[: nh * BLOCK, : nw * BLOCK].to(torch.float32)
    feats = []
    for level in range(2):
        feats.append(_features(mscn(img, win).numpy(), nh, nw))
        if level == 0:  # float32 between the steps, as the reference
            img = imresize(img / 255.0, 0.5) * 255.0
    dist = np.concatenate(feats, axis=1)  # (blocks, 36)
    finite = dist[~np.isnan(dist).any(axis=1)]
    if len(finite) < 2:
        raise UsageError(
            f"NIQE is undefined for this image: {len(finite)} of {len(dist)} blocks have finite "
            "features (a flat or nearly constant image)",
            hint="NIQE needs natural image content; skip this image",
        )
    mu_d = np.nanmean(dist, axis=0)
    cov_d = np.cov(finite, rowvar=False)
    diff = mu_p - mu_d
    quality = diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff
    return float(np.sqrt(quality))


def niqe(img: Tensor, *, crop_border: int = 0) -> float:
    """NIQE of an RGB image (lower is better; module docstring).

    ``img`` (1,3,H,W) or (3,H,W) float in [0,1] (gray images repeated to RGB); ``crop_border``
    pixels are removed from each side first. Raises :class:`UsageError` on bad shapes, too small
    or flat images.
    """
    x = metrics._as_image(img, "img")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise UsageError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    levels = metrics._quantise(x)
    if crop_border:
        levels = levels[:, crop_border:-crop_border, crop_border:-crop_border]
    if levels.numel() == 0:
        raise UsageError(f"crop_border {crop_border} leaves nothing of the image")
    y = torch.round(metrics.rgb_to_y(levels)[0])
    return niqe_y(y)
