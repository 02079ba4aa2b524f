"""The DPT decoder of Depth Anything (Ranftl et al., "Vision Transformers for Dense Prediction",
ICCV 2021, Sec. 3 and Fig. 1; Depth Anything keeps DPT's design and drops the CLS readout).

For a ``gh x gw`` patch grid and the four backbone states (B, 1+N, C):

1. **Reassemble** (level i): drop the CLS token, fold to (B,C,gh,gw), 1x1 conv to
   ``neck_hidden_sizes[i]``, resize by ``reassemble_factors[i]`` (4 and 2: transposed convs with
   kernel = stride = factor; 1: none; 0.5: a stride-2 3x3 conv, size ``ceil(g/2)``);
   then a bias-free 3x3 conv to ``fusion_hidden_size`` (``neck.convs.i``).
2. **Fusion** (RefineNet-style, deepest level first), with RCU(x) = x + conv(relu(conv(relu(x)))):
   ``f = RCU_2(f_prev + RCU_1(level))`` (the deepest block has no ``f_prev`` and skips RCU_1; a
   level whose size differs from ``f_prev`` is first resized to it bilinearly), then ``f`` is
   upsampled bilinearly (``align_corners=True``) to the next level's size, or x2 after the last
   level, and projected by a 1x1 conv.
3. **Head**: 3x3 conv to half width, bilinear resize (``align_corners=True``) to the patch grid
   times the patch size (14 gh, 14 gw), 3x3 conv to ``head_hidden_size``, ReLU, 1x1 conv to one
   channel, then ReLU (relative depth) or ``max_depth * sigmoid`` (metric depth).

Keys match the published Transformers checkpoints: ``neck.reassemble_stage.layers.{i}.projection``,
``.resize``, ``neck.convs.{i}``, ``neck.fusion_stage.layers.{j}.{projection, residual_layer1,
residual_layer2}.convolution{1,2}``, ``head.conv{1,2,3}``. ``fusion_stage.layers.0.residual_layer1``
is never run (the deepest block has no skip input) but exists in the published files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.depth.config import DepthAnythingConfig

__all__ = ["DPTHead", "DPTNeck"]


class _ReassembleLayer(nn.Module):
    def __init__(self, hidden: int, channels: int, factor: float) -> None:
        super().__init__()
        self.projection = nn.Conv2d(hidden, channels, kernel_size=1)
        if factor > 1:
            k = int(factor)
            self.resize: nn.Module = nn.ConvTranspose2d(channels, channels, kernel_size=k, stride=k)
        elif factor == 1:
            self.resize = nn.Identity()
        else:
            stride = round(1 / factor)
            self.resize = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.resize(self.projection(x))


class _ReassembleStage(nn.Module):
    def __init__(self, cfg: DepthAnythingConfig) -> None:
        super().__init__()
        hidden = cfg.backbone.hidden_size
        self.layers = nn.ModuleList(
            _ReassembleLayer(hidden, c, f)
            for c, f in zip(cfg.neck_hidden_sizes, cfg.reassemble_factors, strict=True)
        )

    def forward(self, states: list[Tensor], grid_h: int, grid_w: int) -> list[Tensor]:
        out = []
        for state, layer in zip(states, self.layers, strict=True):
            b, _, c = state.shape
            fmap = state[:, 1:].reshape(b, grid_h, grid_w, c).permute(0, 3, 1, 2)
            out.append(layer(fmap.contiguous()))
        return out


class _ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convolution1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.convolution2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.convolution2(F.relu(self.convolution1(F.relu(x))))


class _FusionLayer(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, channels, kernel_size=1)
        self.residual_layer1 = _ResidualConvUnit(channels)
        self.residual_layer2 = _ResidualConvUnit(channels)

    def forward(
        self, x: Tensor, skip: Tensor | None, size: tuple[int, int] | None
    ) -> Tensor:
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.residual_layer1(skip)
        x = self.residual_layer2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.projection(x)


class _FusionStage(nn.Module):
    def __init__(self, cfg: DepthAnythingConfig) -> None:
        super().__init__()
        n = len(cfg.neck_hidden_sizes)
        self.layers = nn.ModuleList(_FusionLayer(cfg.fusion_hidden_size) for _ in range(n))

    def forward(self, features: list[Tensor]) -> Tensor:
        levels = features[::-1]  # deepest first
        fused: Tensor | None = None
        for i, (level, layer) in enumerate(zip(levels, self.layers, strict=True)):
            size = tuple(levels[i + 1].shape[-2:]) if i + 1 < len(levels) else None
            if fused is None:
                fused = layer(level, None, size)
            else:
                fused = layer(fused, level, size)
        assert fused is not None
        return fused


class DPTNeck(nn.Module):
    """``neck(states, grid_h, grid_w)``: the backbone states -> the fused map
    (B, fusion_hidden_size, 2 h0, 2 w0), h0 x w0 the finest level's size (8 gh x 8 gw for the
    factors 4, 2, 1, 0.5)."""

    def __init__(self, config: DepthAnythingConfig) -> None:
        super().__init__()
        cfg = config
        self.reassemble_stage = _ReassembleStage(cfg)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, cfg.fusion_hidden_size, kernel_size=3, padding=1, bias=False)
            for c in cfg.neck_hidden_sizes
        )
        self.fusion_stage = _FusionStage(cfg)

    def forward(self, states: list[Tensor], grid_h: int, grid_w: int) -> Tensor:
        maps = self.reassemble_stage(states, grid_h, grid_w)
        return self.fusion_stage([conv(m) for conv, m in zip(self.convs, maps, strict=True)])


class DPTHead(nn.Module):
    """``head(fused, grid_h, grid_w)`` -> depth (B, p*gh, p*gw): ReLU'd relative disparity, or
    metric depth in [0, max_depth]."""

    def __init__(self, config: DepthAnythingConfig) -> None:
        super().__init__()
        cfg = config
        f = cfg.fusion_hidden_size
        self.patch_size = cfg.backbone.patch_size
        self.metric = cfg.depth_type == "metric"
        self.max_depth = cfg.max_depth
        self.conv1 = nn.Conv2d(f, f // 2, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(f // 2, cfg.head_hidden_size, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(cfg.head_hidden_size, 1, kernel_size=1)

    def forward(self, fused: Tensor, grid_h: int, grid_w: int) -> Tensor:
        p = self.patch_size
        x = self.conv1(fused)
        x = F.interpolate(x, size=(grid_h * p, grid_w * p), mode="bilinear", align_corners=True)
        x = self.conv3(F.relu(self.conv2(x)))
        x = torch.sigmoid(x) * self.max_depth if self.metric else F.relu(x) * self.max_depth
        return x.squeeze(1)
