"""The diffusion UNet's building blocks (guided-diffusion, Dhariwal & Nichol 2021), shared by UPSR's
Swin-UNet denoiser and SSR's denoiser: sinusoidal timestep embedding, the scale-shift ResBlock,
strided-conv down- and nearest+conv upsampling. Key names follow the official UPSR checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Downsample", "ResBlock", "Upsample", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim) float32, ``[cos(t f_i), sin(t f_i)]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(
        t.device
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """Pre-activation residual block with FiLM time conditioning (guided-diffusion, scale-shift norm).

    ``h = conv(SiLU(GN(x)))``; ``h = conv(SiLU(GN(h) * (1 + scale) + shift))``; ``out = skip(x) + h``,
    ``(scale, shift) = Linear(SiLU(emb))``. Keys: ``in_layers.{0,2}``, ``emb_layers.1``,
    ``out_layers.{0,3}``, ``skip_connection`` (1x1 conv, only when the width changes).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Conv2d(channels, out_channels, 1) if out_channels != channels else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Strided 3x3 conv, /2. Key ``op``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv. Key ``conv``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
