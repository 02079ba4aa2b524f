"""LPIPS, the Learned Perceptual Image Patch Similarity (VGG-16 variant, weights v0.1).

Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018 (arXiv:1801.03924). Lower is better (0: identical images). The
distance between an image ``x`` and a reference ``x0`` (Eq. 1 of the paper) is

    d(x, x0) = sum_l  mean_{h,w}  || w_l * (y_l(x) - y_l(x0)) ||_2^2

where ``y_l`` are the activations of layer ``l`` of an ImageNet VGG-16 (relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3: torchvision ``features`` indices 3, 8, 15, 22, 29), each unit-normalised
along the channels (``y / (||y||_2 + 1e-10)``), and ``w_l`` are the learned non-negative channel
weights (a 1x1 convolution without bias to one channel) of the authors' v0.1 release. Before the
VGG, images in [-1, 1] are shifted and scaled per channel: ``(x - shift) / scale`` with
shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450) (ImageNet statistics in [-1, 1]).

The numbers are those of the authors' ``lpips`` package with ``net='vgg'``, version 0.1 (what
BasicSR's ``calculate_lpips.py`` and most SR papers report). Two files are needed, both
``kind = "aux"`` entries of the weights catalog, read from the registry cache (never downloaded
here: ``realsr models download ID`` fetches them):

- ``vgg16-imagenet``: torchvision's ImageNet VGG-16 (keys ``features.N.weight/bias``);
- ``lpips-vgg-v0.1``: the authors' ``vgg.pth`` (keys ``lin0.model.1.weight`` ... ``lin4...``).

:class:`LPIPSNet` keeps those keys 1:1 (STYLE §2). numpy-free: torch only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from realsr_cli.evaluation import vgg_metric

__all__ = ["LIN_ID", "SCALE", "SHIFT", "TAPS", "VGG_ID", "LPIPSNet", "load_lpips", "lpips"]

#: catalog ids of the two files (weights.toml, auxiliary section)
VGG_ID = "vgg16-imagenet"
LIN_ID = "lpips-vgg-v0.1"
#: the LPIPS input normalisation, per RGB channel, for images in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: torchvision VGG-16 ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAPS = (3, 8, 15, 22, 29)
_EPS = 1e-10


class _Lin(nn.Module):
    """One learned channel weighting ``w_l``: ``model.1`` is the 1x1 conv of the published file
    (``model.0`` is the training-time dropout, an identity here)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPSNet(nn.Module):
    """LPIPS-VGG (module docstring). ``forward(x, y)``: (B,3,H,W) float in [0,1] each, the same
    size (at least 16x16: relu5_3 is at 1/16 resolution) -> (B,) float32 distances."""

    def __init__(self) -> None:
        super().__init__()
        # torchvision's indices 0..29, with 2x2 max poolings
        self.features = vgg_metric.vgg16_features(lambda _: nn.MaxPool2d(2, 2))
        widths = [self.features[i - 1].out_channels for i in TAPS]  # type: ignore[union-attr]
        for k, width in enumerate(widths):
            self.add_module(f"lin{k}", _Lin(width))
        vgg_metric.freeze(self, shift=SHIFT, scale=SCALE)

    @classmethod
    def from_state_dicts(cls, vgg: Mapping[str, Tensor], lin: Mapping[str, Tensor]) -> LPIPSNet:
        """Build from torchvision VGG-16 tensors (``features.N.*``; other keys, e.g.
        ``classifier.*``, are ignored) and the LPIPS lin tensors (``linK.model.1.weight``), loaded
        strictly: a missing, unexpected or misshaped tensor is a :class:`WeightsError`."""
        return vgg_metric.load_strict(
            cls(), vgg, lin, metric="LPIPS",
            hint=f"use torchvision's ImageNet VGG-16 ({VGG_ID}) and LPIPS v0.1's vgg.pth ({LIN_ID})",
        )

    def _lins(self) -> list[nn.Conv2d]:
        return [getattr(self, f"lin{k}").model[1] for k in range(len(TAPS))]

    @torch.inference_mode()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        vgg_metric.check_inputs(x, y, metric="LPIPS")
        p = next(self.parameters())
        h = torch.cat([x, y]).to(p.device, p.dtype)
        h = (h * 2 - 1 - self.shift) / self.scale
        n, total, lins = x.shape[0], None, self._lins()
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                unit = h / (h.pow(2).sum(1, keepdim=True).sqrt() + _EPS)
                diff = (unit[:n] - unit[n:]).pow(2)
                term = lins[TAPS.index(i)](diff).mean((1, 2, 3))
                total = term if total is None else total + term
        assert total is not None
        return total.float()


def load_lpips(
    *, device: str | torch.device = "cpu", vgg_id: str | None = None, lin_id: str | None = None
) -> LPIPSNet:
    """LPIPS-VGG from two catalog entries (default :data:`VGG_ID`, :data:`LIN_ID`) on ``device``
    in float32, from the registry cache only (:func:`vgg_metric.load_net`: sha256-checked; a file
    that is not cached is a :class:`WeightsError`, exit 3, naming `realsr models download`)."""
    return vgg_metric.load_net(
        LPIPSNet.from_state_dicts, "LPIPS", (vgg_id or VGG_ID, lin_id or LIN_ID),
        ("vgg16", "lpips"), device=device,
    )


def lpips(sr: Tensor, hq: Tensor, net: LPIPSNet, *, crop_border: int = 0) -> float:
    """LPIPS of ``sr`` against ``hq``: (1,3,H,W) or (3,H,W) float in [0,1], same size, RGB.

    Both are quantised to 8 bits (``round(255 x) / 255`` after clamping, as PSNR/SSIM do) and
    ``crop_border`` pixels are cut from every side first. Lower is better.
    """
    return vgg_metric.score_pair(net, sr, hq, metric="LPIPS", crop_border=crop_border)
