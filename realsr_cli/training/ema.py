"""Exponential moving average of a network's weights (Polyak averaging, as in BasicSR/Real-ESRGAN).

``ema = decay * ema + (1 - decay) * weights`` after every step from ``start_step`` on; before
that the EMA copy simply follows the weights. Floating-point parameters and buffers are averaged,
integer buffers (counters, codebook usage) are copied. The EMA network is a frozen deep copy in
eval mode on the same device; exported weights are the EMA ones when it is on.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from realsr_cli.errors import ConfigError

__all__ = ["EMA"]


class EMA:
    """EMA copy of ``net`` (``decay`` in (0, 1); see the module docstring)."""

    def __init__(self, net: nn.Module, decay: float, start_step: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema.decay must be in (0, 1) for an EMA, got {decay}")
        self.decay = decay
        self.start_step = start_step
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Fold ``net``'s current weights in after 0-based ``step`` has been taken."""
        src = net.state_dict()
        weight = 1.0 - self.decay if step >= self.start_step else 1.0
        for key, ema in self.module.state_dict().items():
            value = src[key].detach()
            if ema.is_floating_point() and weight < 1.0:
                ema.lerp_(value.to(ema.dtype), weight)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)
