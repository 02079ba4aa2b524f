"""AMF, SSR's Adaptive Multi-modal Fusion (SSR Sec. 3.2, Eq. 3, Fig. 3c), and the modality encoders.

Eq. 3, for a modality feature ``f_i`` (i = 1 kernel, 2 depth, 3 LR):

    F_out^i = (1 + M_alpha_i(f_i)) * N(F_in^i) + M_beta_i(f_i)

``M_alpha`` / ``M_beta`` are MLPs with one hidden layer of 128 units and ReLU (paper, Sec. 4),
applied per pixel (1x1 convolutions), because the modality features are spatial maps aligned with
the UNet features. Their last layers start at zero, so an untrained AMF is exactly ``N(F_in)``.

``N`` is the paper's BN. Batch-statistics BatchNorm makes a batch-1 inference depend on the image
alone and tiles on their neighbours in the batch, so the default is an affine-free GroupNorm
(``amf_norm="gn"``, 32 groups or fewer for narrow maps; batch-independent, the same in train and
eval). ``amf_norm="bn"`` gives affine-free BatchNorm2d (batch statistics while training, running
statistics in ``eval()``, which is what inference uses).

:class:`AMFBlock` applies Eq. 3 for the three modalities in the paper's order, each output being the
next input (``F_in^{i+1} = F_out^i``). The encoders (Sec. 3.2, "encoders of diverse scales"):
a half-UNet for the LR image (the largest), small conv pyramids for depth and kernels. Each yields
one feature map per UNet level plus one for the middle block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AMF",
    "AMFBlock",
    "MODALITIES",
    "ModalityEncoder",
    "ModalityFeatures",
    "depth_input",
    "kernel_input",
    "stack_features",
]

#: modality order of Eq. 3 (f_1, f_2, f_3)
MODALITIES: tuple[str, ...] = ("kernel", "depth", "lr")


def _groups(channels: int) -> int:
    g = min(32, channels)
    while channels % g:
        g -= 1
    return g


@dataclass
class ModalityFeatures:
    """Encoded modalities, one list per modality with a (B,C_l,h_l,w_l) map per UNet level and a
    last entry for the middle block. ``l1()`` gives Eq. 5's sparsity terms ``C_i(f_i)``."""

    kernel: list[Tensor]
    depth: list[Tensor]
    lr: list[Tensor]

    def at(self, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """(f_kernel, f_depth, f_lr) of one level, in Eq. 3's order."""
        return self.kernel[level], self.depth[level], self.lr[level]

    def l1(self) -> dict[str, Tensor]:
        """Mean absolute value of each modality's features over all levels (scalar tensors)."""
        out = {}
        for name in MODALITIES:
            maps = getattr(self, name)
            total = sum(m.abs().sum() for m in maps)
            count = sum(m.numel() for m in maps)
            out[name] = total / count
        return out


def _mlp(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    mlp = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
    )
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


class AMF(nn.Module):
    """Eq. 3 for one modality: ``(1 + M_alpha(f)) * N(F) + M_beta(f)``.

    x (B,C,H,W), f (B,Cf,H',W') -> (B,C,H,W); f is resized (bilinear) when H',W' differ.
    """

    def __init__(
        self, channels: int, feat_channels: int, hidden: int = 128, norm: str = "gn"
    ) -> None:
        super().__init__()
        if norm == "gn":
            self.norm: nn.Module = nn.GroupNorm(_groups(channels), channels, affine=False)
        elif norm == "bn":
            self.norm = nn.BatchNorm2d(channels, affine=False)
        else:
            raise ValueError(f"norm must be 'gn' or 'bn', got {norm!r}")
        self.alpha = _mlp(feat_channels, hidden, channels)
        self.beta = _mlp(feat_channels, hidden, channels)

    def forward(self, x: Tensor, f: Tensor) -> Tensor:
        if f.shape[-2:] != x.shape[-2:]:
            f = F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (1 + self.alpha(f)) * self.norm(x) + self.beta(f)


class AMFBlock(nn.Module):
    """The three AMFs of one UNet level, chained in Eq. 3's order (kernel, depth, LR)."""

    def __init__(
        self,
        channels: int,
        feat_channels: tuple[int, int, int],
        hidden: int = 128,
        norm: str = "gn",
    ) -> None:
        super().__init__()
        self.kernel = AMF(channels, feat_channels[0], hidden, norm)
        self.depth = AMF(channels, feat_channels[1], hidden, norm)
        self.lr = AMF(channels, feat_channels[2], hidden, norm)

    def forward(self, x: Tensor, f_kernel: Tensor, f_depth: Tensor, f_lr: Tensor) -> Tensor:
        return self.lr(self.depth(self.kernel(x, f_kernel), f_depth), f_lr)


class _Unit(nn.Module):
    """Residual conv pair ``x + conv(SiLU(conv(SiLU(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ModalityEncoder(nn.Module):
    """A conv pyramid: input block, ``blocks`` residual units per level (stride-2 convs between
    levels, as the UNet's downsamplings), a middle unit, and a 1x1 "feature translate" conv per
    output. (B,in,h,w) -> ``len(widths) + 1`` maps; map l is (B,widths[l],ceil(h/2^l),ceil(w/2^l)),
    the last (middle) has the last level's size and width.

    ``embed``: project the input with a 1x1 conv first (the k*k kernel taps).
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], blocks: int = 1, embed: int | None = None
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = []
        if embed is not None:
            stem += [nn.Conv2d(in_channels, embed, 1), nn.SiLU()]
            in_channels = embed
        stem.append(nn.Conv2d(in_channels, widths[0], 3, padding=1))
        self.stem = nn.Sequential(*stem)
        self.downs = nn.ModuleList(
            nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1)
            for i in range(1, len(widths))
        )
        self.levels = nn.ModuleList(
            nn.Sequential(*(_Unit(w) for _ in range(blocks))) for w in widths
        )
        self.middle = _Unit(widths[-1])
        self.translate = nn.ModuleList(nn.Conv2d(w, w, 1) for w in (*widths, widths[-1]))

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(conv.out_channels for conv in self.translate)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        feats = []
        for level, body in enumerate(self.levels):
            if level:
                h = self.downs[level - 1](h)
            h = body(h)
            feats.append(h)
        feats.append(self.middle(h))
        return [conv(f) for conv, f in zip(self.translate, feats, strict=True)]


def kernel_input(kernels: Tensor) -> Tensor:
    """Kernel taps rescaled for the encoder: ``k*k * kernels`` (a uniform kernel becomes 1s)."""
    return kernels * kernels.shape[1]


def depth_input(depth: Tensor) -> Tensor:
    """Depth in [0,1] -> [-1,1] for the encoder."""
    return depth * 2 - 1


def stack_features(features: ModalityFeatures) -> list[Tensor]:
    """All feature maps of all modalities (e.g. for inspection), kernel first."""
    return [*features.kernel, *features.depth, *features.lr]
