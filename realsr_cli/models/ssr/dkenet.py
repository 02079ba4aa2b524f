"""DKENet, SSR's Depth-Informed Kernel Estimate Network (SSR Sec. 3.1, Fig. 3b).

Two branches. The depth branch extracts features from the depth map at full and half LR resolution.
The LR branch is ``conv3x3 -> DABlock -> downsample -> DABlock -> upsample -> DABlock -> conv3x3 ->
softmax over the k*k kernel taps``; every Depth-Aware Block (DABlock) first merges the depth features
through an SFT layer (Wang et al., "Recovering Realistic Texture ... Spatial Feature Transform",
CVPR 2018), then runs two MAConv layers (Liang et al., "Mutual Affine Network for Spatially Variant
Kernel Estimation", ICCV 2021) with a ReLU between them. MAConv *is* the paper's channel split: the
channels are split in halves, each half is convolved separately after an affine transform predicted
from the other half, and the halves are concatenated again.

Output: per-pixel kernels (B, k*k, h, w) at LR resolution, non-negative and summing to 1 over the
taps (row-major ``k x k`` order: tap ``i*k + j`` is kernel row i, column j). Any h, w >= 1 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.ssr.config import DKENetConfig

__all__ = ["DABlock", "DKENet", "MAConv", "SFTLayer"]


class SFTLayer(nn.Module):
    """Spatial Feature Transform: ``x * (1 + gamma(c)) + beta(c)`` with per-pixel gamma/beta.

    x (B,C,H,W), c (B,Cc,H,W) -> (B,C,H,W). gamma/beta come from ``conv1x1 -> LeakyReLU ->
    conv1x1`` of the condition; their last convs start at zero, so the layer starts as identity.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(cond_channels, channels)
        self.scale = nn.Sequential(
            nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, channels, 1)
        )
        self.shift = nn.Sequential(
            nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, channels, 1)
        )
        for branch in (self.scale, self.shift):
            nn.init.zeros_(branch[2].weight)
            nn.init.zeros_(branch[2].bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return x * (1 + self.scale(cond)) + self.shift(cond)


class MAConv(nn.Module):
    """Mutual affine convolution with two splits (MANet, Liang et al. ICCV 2021, Eq. 2-3).

    ``x = [x_1, x_2]`` along channels; for each half i, ``(s_i, b_i) = MLP(x_other)`` (1x1 convs,
    ReLU, sigmoid on the scale) and ``y_i = conv3x3(x_i * s_i + b_i)``; output ``[y_1, y_2]``.
    (B,C_in,H,W) -> (B,C_out,H,W); C_in and C_out even.
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        if in_channels % 2 or out_channels % 2:
            raise ValueError("MAConv needs even channel counts (two splits)")
        half_in, half_out = in_channels // 2, out_channels // 2
        hidden = max(1, half_in // reduction)
        self.affine = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(half_in, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, 2 * half_in, 1),
            )
            for _ in range(2)
        )
        self.conv = nn.ModuleList(nn.Conv2d(half_in, half_out, 3, padding=1) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:
        halves = x.chunk(2, dim=1)
        out = []
        for i in range(2):
            scale, shift = self.affine[i](halves[1 - i]).chunk(2, dim=1)
            out.append(self.conv[i](halves[i] * torch.sigmoid(scale) + shift))
        return torch.cat(out, dim=1)


class DABlock(nn.Module):
    """Depth-Aware Block: ``x + MAConv(ReLU(MAConv(SFT(x, depth_feat))))``. Keeps (B,C,H,W)."""

    def __init__(self, channels: int, depth_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.sft = SFTLayer(channels, depth_channels)
        self.conv1 = MAConv(channels, channels, reduction)
        self.conv2 = MAConv(channels, channels, reduction)

    def forward(self, x: Tensor, depth_feat: Tensor) -> Tensor:
        h = self.sft(x, depth_feat)
        return x + self.conv2(F.relu(self.conv1(h)))


class _DepthBranch(nn.Module):
    """Depth feature extractor: full-resolution features and a stride-2 copy for the middle DABlock."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.Sequential(
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.down = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.1)
        )

    def forward(self, depth: Tensor) -> tuple[Tensor, Tensor]:
        h = self.head(depth)
        full = h + self.body(h)
        return full, self.down(full)


class DKENet(nn.Module):
    """Per-pixel kernel estimation: ``DKENet(lr, depth) -> kernels``.

    lr (B,3,h,w) in [0,1]; depth (B,1,h,w) in [0,1] (same LR size) -> kernels (B,k*k,h,w),
    a softmax over the taps (non-negative, summing to 1 per pixel).
    """

    def __init__(self, config: DKENetConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DKENetConfig()
        c, cd = cfg.channels, cfg.depth_channels
        self.depth_branch = _DepthBranch(cd)
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = DABlock(c, cd, cfg.maconv_reduction)
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.block2 = DABlock(c, cd, cfg.maconv_reduction)
        self.up = nn.Conv2d(c, c, 3, padding=1)
        self.block3 = DABlock(c, cd, cfg.maconv_reduction)
        self.tail = nn.Conv2d(c, cfg.kernel_size**2, 3, padding=1)

    @property
    def kernel_size(self) -> int:
        return self.config.kernel_size

    def logits(self, lr: Tensor, depth: Tensor) -> Tensor:
        """Pre-softmax kernel logits (B,k*k,h,w) (e.g. for a cross-entropy-style loss)."""
        if depth.shape[-2:] != lr.shape[-2:]:
            raise ValueError(f"depth {tuple(depth.shape)} must match the LR size {tuple(lr.shape)}")
        d_full, d_half = self.depth_branch(depth)
        h = self.block1(self.head(lr), d_full)
        skip = h
        h = self.block2(self.down(h), d_half)
        h = F.interpolate(h, size=lr.shape[-2:], mode="nearest")
        h = self.block3(self.up(h) + skip, d_full)
        return self.tail(h)

    def forward(self, lr: Tensor, depth: Tensor) -> Tensor:
        return torch.softmax(self.logits(lr, depth), dim=1)
