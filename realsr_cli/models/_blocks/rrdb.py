"""ESRGAN's Residual-in-Residual Dense Block (Wang et al., ECCV Workshops 2018).

Key names follow SSR's NBSR (``blocks.{0,1,2}.convs.{0..4}``), the one model that uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RRDB", "DenseBlock"]


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense connections; ``x + 0.2 * conv5(...)``. Keeps (B,C,H,W)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1)
            for i in range(5)
        )

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Residual in residual dense block: ``x + 0.2 * DB3(DB2(DB1(x)))``."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.blocks(x)
