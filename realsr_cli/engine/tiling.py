"""Tiling contract (STYLE §7): cut the LR image into equal tiles, run each, blend by weights.

Every tile's output is weighted by a window and the sum is divided by the summed weights::

    sr = sum_j (W_j * out_j) / sum_j W_j

which with a Gaussian ``W_j`` and ``margin=0`` is RealSRT's image patch aggregation, Eq. 3
(Gao et al., ECCV 2024): LR patches of 64 px, overlap half the patch (stride 32), a centred Gaussian
of variance 0.05 — ``tiled_forward(fn, lq, scale=4, tile=64, overlap=32, sigma=REALSRT_SIGMA,
margin=0)``.

Gaussian convention. ``sigma`` is the standard deviation in units of the tile side: a pixel at
offset ``d`` pixels from the tile centre, in a tile of side ``n``, gets ``exp(-(d/n)^2 / (2 sigma^2))``
per axis (the product of the two axes). Normalised coordinates therefore run over [-0.5, 0.5], the
convention of the StableSR-family tiled aggregation RealSRT builds on, so the paper's "variance 0.05"
is ``sigma = sqrt(0.05) ≈ 0.224``. The window is clamped below at ``MIN_WEIGHT`` so it is strictly
positive (no underflow to 0 for small sigma, so the division is always safe).

Margins. A conv net's output near a tile edge differs from the whole-image output (it saw zero
padding instead of the neighbours). ``margin`` LR pixels at each *interior* tile edge (one that is
not on the image border) get weight 0; blending happens in the rest of the overlap. With
``margin <= overlap // 2`` every pixel keeps a positive weight, and a model whose receptive-field
radius is at most ``margin`` is reproduced exactly. Default ``overlap // 4``.

Stochastic models. ``fn`` receives the tiles it is running, so it can seed per-tile noise from the
tile coordinates (the runner does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from realsr_cli.errors import ModelError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SIGMA",
    "MIN_WEIGHT",
    "REALSRT_SIGMA",
    "Tile",
    "TileFn",
    "gaussian_window",
    "grid_side",
    "plan_tiles",
    "sigma_from_variance",
    "tiled_forward",
]

#: RealSRT §4.1: "the variance of the centered Gaussian kernel is set to 0.05" (see module doc)
REALSRT_SIGMA = math.sqrt(0.05)
#: default: a quarter of the tile side (edge weight e^-2 ≈ 0.14 of the centre)
DEFAULT_SIGMA = 0.25
#: floor of every window value (relative to a peak of ~1)
MIN_WEIGHT = 1e-6


def sigma_from_variance(variance: float) -> float:
    """A paper's "variance of the Gaussian kernel" (normalised coordinates) -> ``sigma``."""
    if variance <= 0:
        raise UsageError(f"Gaussian variance must be positive, got {variance}")
    return math.sqrt(variance)


@dataclass(frozen=True)
class Tile:
    """A tile in LR pixels: rows ``y:y+h``, columns ``x:x+w``."""

    y: int
    x: int
    h: int
    w: int


#: ``fn(x, tiles)``: x (k*N,C,h,w) tile-major (rows i*N:(i+1)*N belong to tiles[i]) -> (k*N,C,sh,sw)
TileFn = Callable[[Tensor, Sequence[Tile]], Tensor]


def gaussian_window(
    h: int,
    w: int,
    *,
    sigma: float = DEFAULT_SIGMA,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(h, w) centred Gaussian, peak ~1, strictly positive (>= ``MIN_WEIGHT``).

    ``sigma`` is in units of the side (normalised coordinates in [-0.5, 0.5]; see module doc).
    """
    if h < 1 or w < 1:
        raise UsageError(f"window size must be positive, got {h}x{w}")
    if not sigma > 0:
        raise UsageError(f"sigma must be positive, got {sigma}")

    def axis(n: int) -> Tensor:
        u = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / n
        return torch.exp(-(u * u) / (2 * sigma * sigma))

    win = torch.outer(axis(h), axis(w)).clamp_min(MIN_WEIGHT)
    return win.to(device=device, dtype=dtype)


def grid_side(n: int, tile: int, multiple: int) -> int:
    """Tile side along an image side of ``n``: the whole side if it fits, else ``tile`` rounded down
    to ``multiple`` (at least ``multiple``) — what :func:`plan_tiles` uses."""
    if n <= tile:
        return n
    side = max(multiple, tile // multiple * multiple)
    return min(side, n)


def _starts(n: int, side: int, stride: int) -> list[int]:
    starts = [0]
    while starts[-1] + side < n:
        starts.append(min(starts[-1] + stride, n - side))  # the last is shifted back inside
    return starts


def plan_tiles(
    height: int, width: int, tile: int | tuple[int, int], overlap: int, multiple: int = 1
) -> list[Tile]:
    """Equal-size tiles covering a ``height`` x ``width`` LR image, row-major, deterministic.

    ``tile``: a square side, or (height, width) of the tiles. Along a side longer than its tile
    side the tile side is rounded down to ``multiple`` (at least ``multiple``), neighbours are
    ``side - overlap`` apart and the last one is shifted back inside the image (never shrunk). A
    side that fits in its tile side is one tile of the whole side.
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if height < 1 or width < 1:
        raise UsageError(f"image size must be positive, got {width}x{height}")
    if min(tile_h, tile_w) < 1 or multiple < 1 or overlap < 0:
        raise UsageError(f"invalid tiling: tile={tile}, overlap={overlap}, multiple={multiple}")
    th, tw = grid_side(height, tile_h, multiple), grid_side(width, tile_w, multiple)
    for n, side in ((height, th), (width, tw)):
        if n > side and overlap >= side:
            raise UsageError(
                f"tile overlap {overlap} must be smaller than the tile side {side}",
                hint="use a larger --tile or a smaller --tile-overlap",
            )
    ys = _starts(height, th, th - overlap)
    xs = _starts(width, tw, tw - overlap)
    return [Tile(y, x, th, tw) for y in ys for x in xs]


def _tile_weight(
    base: Tensor, t: Tile, height: int, width: int, m: int, cache: dict[tuple[bool, ...], Tensor]
) -> Tensor:
    """``base`` with ``m`` HR pixels zeroed along each interior edge of ``t`` (cached per edge set)."""
    key = (t.y > 0, t.y + t.h < height, t.x > 0, t.x + t.w < width)
    if m == 0 or not any(key):
        return base
    if key not in cache:
        win = base.clone()
        top, bottom, left, right = key
        if top:
            win[:m, :] = 0
        if bottom:
            win[-m:, :] = 0
        if left:
            win[:, :m] = 0
        if right:
            win[:, -m:] = 0
        cache[key] = win
    return cache[key]


def tiled_forward(
    fn: TileFn,
    lq: Tensor,
    *,
    scale: int,
    tile: int | tuple[int, int],
    overlap: int,
    multiple: int = 1,
    batch: int = 1,
    window: Literal["gaussian", "flat"] = "gaussian",
    sigma: float = DEFAULT_SIGMA,
    margin: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Run ``fn`` over tiles of ``lq`` and blend: (N,C,H,W) -> (N,C',sH,sW) float32.

    ``fn(x, tiles)`` maps (k*N,C,h,w) -> (k*N,C',h*scale,w*scale) for up to ``batch`` equal-size
    tiles at once (tile-major rows, see :data:`TileFn`). Outputs are accumulated as
    ``sum(W*out)`` and ``sum(W)`` in float32 on the device of ``fn``'s output, then divided; peak
    memory is those accumulators plus one batch of tiles. ``margin`` (LR px, default
    ``overlap // 4``, at most ``overlap // 2``) is zeroed at interior tile edges (module doc).
    If one tile covers the image, ``fn`` runs once on the whole image and its output is returned.
    ``progress(done, total)`` is called after each ``fn`` call.
    """
    if lq.ndim != 4:
        raise UsageError(f"expected lq of shape (N,C,H,W), got {tuple(lq.shape)}")
    if scale < 1 or batch < 1:
        raise UsageError(f"scale and batch must be >= 1, got scale={scale}, batch={batch}")
    if window not in ("gaussian", "flat"):
        raise UsageError(f"unknown window {window!r}", hint="use 'gaussian' or 'flat'")
    n, _, height, width = lq.shape
    tiles = plan_tiles(height, width, tile, overlap, multiple)
    total = len(tiles)

    if total == 1:
        whole = tiles[0]
        out = _checked(fn(lq, [whole]), n, whole, scale)
        if progress is not None:
            progress(1, 1)
        return out.float()

    margin = overlap // 4 if margin is None else margin
    if not 0 <= margin <= overlap // 2:
        raise UsageError(
            f"tile margin must be within 0..{overlap // 2} (overlap // 2), got {margin}"
        )
    th, tw = tiles[0].h, tiles[0].w
    acc: Tensor | None = None
    wsum: Tensor | None = None
    base: Tensor | None = None
    masked: dict[tuple[bool, ...], Tensor] = {}
    log.debug(
        "tiling %dx%d into %d tiles of %dx%d (overlap %d, margin %d, batch %d)",
        width,
        height,
        total,
        tw,
        th,
        overlap,
        margin,
        batch,
    )

    for start in range(0, total, batch):
        group = tiles[start : start + batch]
        x = torch.cat([lq[:, :, t.y : t.y + t.h, t.x : t.x + t.w] for t in group], dim=0)
        out = _checked(fn(x, group), n * len(group), group[0], scale)
        if acc is None:  # allocate on the output's device, with the output's channel count
            acc = torch.zeros(
                n,
                out.shape[1],
                height * scale,
                width * scale,
                dtype=torch.float32,
                device=out.device,
            )
            wsum = torch.zeros(
                1, 1, height * scale, width * scale, dtype=torch.float32, device=out.device
            )
            if window == "gaussian":
                base = gaussian_window(th * scale, tw * scale, sigma=sigma, device=out.device)
            else:
                base = torch.ones(th * scale, tw * scale, device=out.device)
        assert wsum is not None and base is not None
        out = out.to(acc.device, torch.float32)
        for i, t in enumerate(group):
            wt = _tile_weight(base, t, height, width, margin * scale, masked)
            ys, xs = (
                slice(t.y * scale, (t.y + t.h) * scale),
                slice(t.x * scale, (t.x + t.w) * scale),
            )
            acc[:, :, ys, xs].addcmul_(out[i * n : (i + 1) * n], wt)
            wsum[0, 0, ys, xs].add_(wt)
        del x, out
        if progress is not None:
            progress(min(start + batch, total), total)

    assert acc is not None and wsum is not None
    return acc.div_(wsum)


def _checked(out: Tensor, rows: int, t: Tile, scale: int) -> Tensor:
    want = (rows, t.h * scale, t.w * scale)
    if out.ndim != 4 or (out.shape[0], out.shape[2], out.shape[3]) != want:
        raise ModelError(
            f"model returned shape {tuple(out.shape)} for a {t.h}x{t.w} input tile; expected "
            f"({rows}, C, {want[1]}, {want[2]}) at scale {scale}",
            hint="the model's scale does not match its weights; reconvert the checkpoint",
        )
    return out
