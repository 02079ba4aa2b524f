"""The one noise rule (STYLE §6): draw on the CPU in float32 from an explicit generator, then move.

The same generator state then gives the same numbers on every device (cf. diffusers
``randn_tensor``). Every layer that draws noise (diffusion schedules, the engine, degradations,
training) calls :func:`randn`; nothing else in the package calls ``torch.randn`` with a device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["randn", "randn_like"]


def randn(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise of ``shape`` drawn on the CPU in float32, cast to ``dtype`` and moved
    to ``device``."""
    noise = torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """:func:`randn` shaped like ``x``, on its device in its dtype."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
