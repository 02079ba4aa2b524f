"""Pieces the diffusion samplers share (UPSR, SSR): the padded working size, the initial noise and
the per-step timestep batch.

Both pad the LR image bottom/right to multiples of a size, sample at ``scale`` times that padded
size from noise (B,3,sH',sW') and crop the result back to (B,3,sH,sW).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from realsr_cli._noise import randn
from realsr_cli.models._blocks.upscaler import Sampling

__all__ = ["initial_noise", "noise_shape", "padded_size", "timestep_batches"]


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def noise_shape(lq_shape: Sequence[int], multiple: int, scale: int) -> tuple[int, int, int, int]:
    """Shape of the initial noise for an LR batch of shape (B,3,H,W): (B,3,sH',sW'), H' and W'
    the sides :func:`padded_size` gives."""
    b, _, h, w = lq_shape
    hp, wp = padded_size(h, w, multiple)
    return (b, 3, hp * scale, wp * scale)


def initial_noise(lq: Tensor, shape: tuple[int, ...], sampling: Sampling) -> Tensor:
    """``sampling.noise`` (which must have ``shape``), or when None a standard normal draw of
    ``shape`` from ``sampling.generator`` on the CPU in fp32; moved to ``lq``'s device and dtype."""
    noise = sampling.noise
    if noise is None:
        noise = randn(shape, generator=sampling.generator)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have the padded HR shape {shape}, got {tuple(noise.shape)}")
    return noise.to(device=lq.device, dtype=lq.dtype)


def timestep_batches(timesteps: Tensor, lq: Tensor) -> Iterator[Tensor]:
    """Each of ``timesteps`` in sampling order as an int64 batch (B,) on ``lq``'s device."""
    for t in timesteps.tolist():
        yield torch.full((lq.shape[0],), t, dtype=torch.long, device=lq.device)
