"""SSR's small trainable monocular depth head (the DE of SSR Algorithm 1, offline stand-in).

The paper runs an off-the-shelf estimator (MiDaS/DPT). Any module with the same contract can be
injected into :class:`~realsr_cli.models.ssr.net.SSRNet` instead (``depth_estimator=``):

    (B,3,H,W) float in [0,1]  ->  (B,1,H,W) relative depth in [0,1]

This head is a 3-level conv encoder-decoder with skip connections and a sigmoid output. It works at
any H, W >= 1 (strided convs round up; the decoder resizes to the skip's size). Train it on depth
pseudo-labels (e.g. from a published estimator) or jointly; untrained, it is a smooth image map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.ssr.config import DepthHeadConfig

__all__ = ["DepthHead"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class DepthHead(nn.Module):
    """``DepthHead(img) -> depth``: (B,3,H,W) in [0,1] -> (B,1,H,W) in [0,1]."""

    def __init__(self, config: DepthHeadConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DepthHeadConfig()
        c = cfg.channels
        self.enc1 = _conv(3, c)
        self.enc2 = _conv(c, 2 * c, stride=2)
        self.enc3 = _conv(2 * c, 4 * c, stride=2)
        self.dec2 = _conv(4 * c + 2 * c, 2 * c)
        self.dec1 = _conv(2 * c + c, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, img: Tensor) -> Tensor:
        e1 = self.enc1(img * 2 - 1)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear"), e1], 1))
        return torch.sigmoid(self.out(d1))
