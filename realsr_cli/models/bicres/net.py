"""BicResNet: ``sr = up(lq) + PixelShuffle(tail(body(head(lq - 0.5))))`` (realsr's own design).

Layout: LR-resolution features only; the one HR-resolution operation is the fixed upsampling
``up`` (bicubic by default) and the pixel shuffle of the tail's ``3 * scale^2`` channels. The
tail is zero-initialised, so ``BicResNet(config)`` computes exactly ``up(lq)`` until trained.

State-dict keys (``depth = D``)::

    head.weight (W,3,3,3)  head.bias (W,)        [head_act.weight (W,) when act = prelu]
    body.{2i}.weight (W,W,3,3)  body.{2i}.bias  [body.{2i+1}.weight (W,) prelu]   i < D
    tail.weight (3 s^2,W,3,3)  tail.bias (3 s^2,)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.upscaler import DeterministicUpscaler
from realsr_cli.models.bicres.config import BicResConfig

__all__ = ["BicResNet", "upsample_base"]


def _act(kind: str, width: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=width, init=0.1)
    if kind == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    return nn.ReLU(inplace=True)


def upsample_base(lq: Tensor, scale: int, mode: str = "bicubic") -> Tensor:
    """The fixed part: ``lq`` (B,C,H,W) -> (B,C,sH,sW) by cubic convolution (a = -0.75,
    half-pixel centres, replicated edges: OpenCV's ``INTER_CUBIC``) or nearest neighbour."""
    if mode == "nearest":
        return F.interpolate(lq, scale_factor=scale, mode="nearest")
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)


class BicResNet(DeterministicUpscaler):
    """Bicubic plus a learned correction.

    ``forward(lq)``/``upscale(lq)``: ``lq`` (B,3,H,W) float in [0,1], any H, W >= 1 ->
    ``sr`` (B,3,sH,sW) float, not clamped. Deterministic; every layer is local (receptive field
    ``config.receptive_radius`` LR pixels each side), so tiles blend seamlessly.
    """

    def __init__(self, config: BicResConfig) -> None:
        super().__init__()
        self.config = config
        w, s = config.width, config.scale
        self.head = nn.Conv2d(3, w, 3, padding=1)
        self.head_act = _act(config.act, w)
        layers: list[nn.Module] = []
        for _ in range(config.depth):
            layers += [nn.Conv2d(w, w, 3, padding=1), _act(config.act, w)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(w, 3 * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s)
        # He initialisation for the activation's negative slope keeps the feature scale through
        # the stack (PyTorch's default conv init shrinks it ~2.5x per layer: with 10 layers the
        # tail would see features ~1e-4 and the body would get no gradient to speak of)
        slope = 0.0 if config.act == "relu" else 0.1
        for conv in (self.head, *(m for m in self.body if isinstance(m, nn.Conv2d))):
            nn.init.kaiming_normal_(conv.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.tail.weight)  # an untrained network is exactly its base upsampling
        nn.init.zeros_(self.tail.bias)

    def residual(self, lq: Tensor) -> Tensor:
        """The learned correction at HR resolution, (B,3,sH,sW)."""
        x = self.head_act(self.head(lq - 0.5))
        return self.shuffle(self.tail(self.body(x)))

    def forward(self, lq: Tensor) -> Tensor:
        base = upsample_base(lq, self.config.scale, self.config.base)
        res = self.residual(lq)
        if res.dtype != base.dtype:  # autocast: the correction may come back in half precision
            res = res.to(base.dtype)
        return base + res

    def _upscale_lq(self, lq: Tensor) -> Tensor:
        """:meth:`upscale`'s part: :meth:`forward`."""
        return self(lq)
