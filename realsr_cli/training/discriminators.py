"""Discriminators for adversarial training (STYLE §12: they live in training/, never in models/).

:class:`UNetDiscriminatorSN` is Real-ESRGAN's U-Net discriminator with spectral normalisation
(Wang et al., ICCVW 2021, Sec. 3), also used by FeMaSR and UGTSR: a per-pixel
realness map instead of one score per image, and spectral norm (Miyato et al., ICLR 2018) on the
inner convolutions to stabilise training.

Layout (F = ``num_feat``, lrelu = LeakyReLU(0.2)):

* ``conv0``: 3x3, in -> F (plain)
* ``conv1..3``: 4x4 stride-2 downsamplings F -> 2F -> 4F -> 8F (spectral norm, no bias)
* ``conv4..6``: bilinear x2 upsampling then 3x3 8F -> 4F -> 2F -> F, each plus the skip of the same
  resolution (x2, x1, x0) when ``skip_connection`` (spectral norm, no bias)
* ``conv7, conv8``: 3x3 F -> F (spectral norm, no bias); ``conv9``: 3x3 F -> 1 (plain)

Module names and ``torch.nn.utils.spectral_norm``'s parameter names (``weight_orig``,
``weight_u``, ``weight_v``) follow the published Real-ESRGAN discriminator, so its released
``*_netD.pth`` weights load 1:1. Upsampling goes to the skip's exact size, so any H, W >= 8 works
(for multiples of 8 this is the plain x2 of the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from realsr_cli.errors import ConfigError, UsageError

__all__ = ["UNetDiscriminatorConfig", "UNetDiscriminatorSN"]


@dataclass(frozen=True)
class UNetDiscriminatorConfig:
    """``in_channels`` image channels; ``num_feat`` base width (64 published); U-Net skips on/off."""

    in_channels: int = 3
    num_feat: int = 64
    skip_connection: bool = True

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_feat < 1:
            raise ConfigError(
                f"in_channels and num_feat must be positive, got {self.in_channels}, {self.num_feat}"
            )


def _sn_conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False))


class UNetDiscriminatorSN(nn.Module):
    """(B,in_channels,H,W) images (any range the generator uses, typically [0,1]) -> (B,1,H,W)
    unbounded realness logits, for :func:`realsr_cli.training.losses.hinge_d_loss`."""

    def __init__(self, config: UNetDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else UNetDiscriminatorConfig()
        f = config.num_feat
        self.conv0 = nn.Conv2d(config.in_channels, f, 3, 1, 1)
        # downsample
        self.conv1 = _sn_conv(f, f * 2, 4, 2, 1)
        self.conv2 = _sn_conv(f * 2, f * 4, 4, 2, 1)
        self.conv3 = _sn_conv(f * 4, f * 8, 4, 2, 1)
        # upsample
        self.conv4 = _sn_conv(f * 8, f * 4, 3, 1, 1)
        self.conv5 = _sn_conv(f * 4, f * 2, 3, 1, 1)
        self.conv6 = _sn_conv(f * 2, f, 3, 1, 1)
        # extra convolutions
        self.conv7 = _sn_conv(f, f, 3, 1, 1)
        self.conv8 = _sn_conv(f, f, 3, 1, 1)
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    @staticmethod
    def _act(x: Tensor) -> Tensor:
        return F.leaky_relu(x, negative_slope=0.2)

    def _up(self, x: Tensor, conv: nn.Module, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self._act(conv(x))
        return x + skip if self.config.skip_connection else x

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < 8:
            raise UsageError(f"expected (B,C,H,W) with H, W >= 8, got {tuple(x.shape)}")
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.conv1(x0))
        x2 = self._act(self.conv2(x1))
        x3 = self._act(self.conv3(x2))
        x4 = self._up(x3, self.conv4, x2)
        x5 = self._up(x4, self.conv5, x1)
        x6 = self._up(x5, self.conv6, x0)
        out = self._act(self.conv7(x6))
        out = self._act(self.conv8(out))
        return self.conv9(out)
