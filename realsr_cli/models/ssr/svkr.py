"""SVKR, Spatially Variant Kernel Refinement (SSR Sec. 3.1, Algorithm 1, Eq. 2).

    I_0 = LR;  D_0 = DE(I_0);  K_0 = KE(LR, D_0)
    for t = 0 .. T-1:
        D_{t+1} = DE(I_t)
        K_{t+1} = KE(LR, D_{t+1});  K_{t+1} = gamma K_{t+1} + (1 - gamma) K_t
        I_{t+1} = NBSR(LR, K_{t+1})
    return D_T, K_T

Details the paper leaves open, decided here:

- I_t for t >= 1 is an x4 image; its depth is estimated at that size and resized to the LR size
  (area averaging) because KE works at LR resolution. I_0 = LR, so D_1 = DE(I_0) = D_0 for a
  deterministic DE: it is reused rather than recomputed.
- I_T is not needed for the outputs (D_T, K_T), so the last NBSR call is skipped unless
  ``keep_estimates`` asks for every I_t (e.g. to supervise NBSR inside the loop).

Call counts for T iterations: DE T times, KE T+1 times, NBSR T-1 times (T with keep_estimates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

__all__ = ["SVKRResult", "blend_kernels", "svkr"]

#: (B,3,H,W) -> (B,1,H,W) depth in [0,1]
DepthFn = Callable[[Tensor], Tensor]
#: (lr, depth) -> (B,k*k,h,w) kernels
KernelFn = Callable[[Tensor, Tensor], Tensor]
#: (lr, kernels) -> (B,3,4h,4w) SR estimate
SRFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SVKRResult:
    """``depth`` D_T (B,1,h,w), ``kernels`` K_T (B,k*k,h,w), both at LR size; ``estimates`` the
    SR images I_1..I_n computed on the way (x4, [0,1] scale)."""

    depth: Tensor
    kernels: Tensor
    estimates: list[Tensor] = field(default_factory=list)


def blend_kernels(new: Tensor, old: Tensor, gamma: float) -> Tensor:
    """SVKR's momentum update (Algorithm 1 / Eq. 2): ``gamma * new + (1 - gamma) * old``.

    A convex combination of two kernel fields that sum to 1 per pixel sums to 1 again.
    """
    return gamma * new + (1 - gamma) * old


def _depth_at(depth_fn: DepthFn, image: Tensor, size: tuple[int, int]) -> Tensor:
    depth = depth_fn(image)
    if depth.shape[-2:] != size:
        depth = F.interpolate(depth, size=size, mode="area")
    return depth


def svkr(
    lr: Tensor,
    *,
    depth_fn: DepthFn,
    kernel_fn: KernelFn,
    sr_fn: SRFn,
    iterations: int = 3,
    gamma: float = 0.9,
    keep_estimates: bool = False,
) -> SVKRResult:
    """Run Algorithm 1 on ``lr`` (B,3,h,w) in [0,1] and return D_T and K_T (see module docstring)."""
    if iterations < 1:
        raise ValueError(f"SVKR needs at least one iteration, got {iterations}")
    size = (lr.shape[-2], lr.shape[-1])
    depth = _depth_at(depth_fn, lr, size)  # D_0 = DE(I_0), I_0 = LR
    kernels = kernel_fn(lr, depth)  # K_0
    estimates: list[Tensor] = []
    image: Tensor | None = None  # I_t for t >= 1
    for t in range(iterations):
        if t > 0:
            assert image is not None
            depth = _depth_at(depth_fn, image, size)  # D_{t+1} = DE(I_t)
        kernels = blend_kernels(kernel_fn(lr, depth), kernels, gamma)
        if t < iterations - 1 or keep_estimates:
            image = sr_fn(lr, kernels)  # I_{t+1}
            estimates.append(image)
    return SVKRResult(depth=depth, kernels=kernels, estimates=estimates)
