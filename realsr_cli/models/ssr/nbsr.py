"""NBSR: SSR's lightweight RRDB non-blind SR network (SSR Sec. 3.1, used inside SVKR).

The trunk is ESRGAN's Residual-in-Residual Dense Block (Wang et al., ECCV Workshops 2018): each RRDB
holds three 5-conv dense blocks with 0.2-scaled residuals. The per-pixel kernels enter through SFT:
``conv1x1 -> LeakyReLU -> conv3x3`` turns the k*k kernel taps into kernel features, and an SFT layer
modulates the trunk before every RRDB. Two nearest x2 upsamplings with 3x3 convs give x4.

``NBSR(lr, kernels) -> sr``: lr (B,3,h,w) in [0,1], kernels (B,k*k,h,w) -> sr (B,3,4h,4w) on the
[0,1] scale, not clamped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.rrdb import RRDB, DenseBlock
from realsr_cli.models.ssr.config import NBSRConfig
from realsr_cli.models.ssr.dkenet import SFTLayer

__all__ = ["NBSR", "RRDB", "DenseBlock"]  # RRDB, DenseBlock: models/_blocks/rrdb.py


class NBSR(nn.Module):
    """Kernel-conditioned x4 SR: ``NBSR(lr, kernels) -> sr`` (layouts in the module docstring)."""

    def __init__(
        self, config: NBSRConfig | None = None, kernel_size: int = 21, scale: int = 4
    ) -> None:
        super().__init__()
        cfg = self.config = config or NBSRConfig()
        if scale != 4:
            raise ValueError("NBSR upsamples x4")
        nf, kf = cfg.num_feat, cfg.kernel_feat
        self.kernel_size = kernel_size
        self.kernel_encoder = nn.Sequential(
            nn.Conv2d(kernel_size**2, kf, 1), nn.LeakyReLU(0.1), nn.Conv2d(kf, kf, 3, padding=1)
        )
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.sft = nn.ModuleList(SFTLayer(nf, kf) for _ in range(cfg.num_blocks))
        self.body = nn.ModuleList(RRDB(nf, cfg.growth) for _ in range(cfg.num_blocks))
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, lr: Tensor, kernels: Tensor) -> Tensor:
        if kernels.shape[1] != self.kernel_size**2 or kernels.shape[-2:] != lr.shape[-2:]:
            raise ValueError(
                f"kernels must be (B,{self.kernel_size**2},h,w) at the LR size, "
                f"got {tuple(kernels.shape)} for LR {tuple(lr.shape)}"
            )
        kfeat = self.kernel_encoder(kernels)
        feat = self.conv_first(lr)
        h = feat
        for sft, block in zip(self.sft, self.body, strict=True):
            h = block(sft(h, kfeat))
        h = feat + self.conv_body(h)
        h = F.leaky_relu(self.conv_up1(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        h = F.leaky_relu(self.conv_up2(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        # residual on the bicubic upsampling: an untrained NBSR already gives a usable estimate
        base = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
        return base + self.conv_last(F.leaky_relu(self.conv_hr(h), 0.2))
