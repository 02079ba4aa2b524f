"""DISTS, the Deep Image Structure and Texture Similarity (a distance: lower is better).

Ding, Ma, Wang & Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
Similarity", IEEE TPAMI 2020 (arXiv:2004.07728). Both images go through an ImageNet VGG-16 whose
max poolings are replaced by L2 poolings; six stages are compared: the [0,1] RGB image itself
(stage 0, 3 channels) and relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision ``features``
indices 3, 8, 15, 22, 29; 64, 128, 256, 512, 512 channels). For channel ``j`` of stage ``i``,
with the global (spatial) means ``mu``, variances ``sigma^2`` and covariance ``sigma_xy`` of the
two feature maps,

    texture    l_ij = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    structure  s_ij = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2)          c1 = c2 = 1e-6

    D(x, y) = 1 - sum_ij (alpha_ij l_ij + beta_ij s_ij)

where ``alpha``, ``beta`` (1475 = 3 + 64 + 128 + 256 + 512 + 512 weights each) are the authors'
learned weights, divided by the sum of both so that they add up to 1. Since they do, we evaluate
the same number as ``sum_ij alpha_ij (1 - l_ij) + beta_ij (1 - s_ij)``: no cancellation for
close images, and exactly 0 for identical ones. With non-negative weights D >= 0 (l is in (0, 1]
for the non-negative stages, |s| <= 1); it stays below 1 unless the structures anti-correlate.

L2 pooling (the paper's replacement for max pooling, after Henaff & Simoncelli 2016):
``sqrt(g * x^2 + 1e-12)`` per channel, with ``g`` the 3x3 Hann window
``[1, 2, 1]^T [1, 2, 1] / 16``, stride 2, zero padding 1 (so a side n becomes ceil(n / 2)). Before
the VGG, the [0,1] image is normalised with ImageNet's mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225); stage 0 uses the image before that normalisation. Images are compared at
full resolution (no resizing).

The numbers are those of the authors' ``DISTS_pytorch`` package (0.1). Two files are needed, both
``kind = "aux"`` entries of the weights catalog, read from the registry cache (never downloaded
here: ``realsr models download ID`` fetches them):

- ``vgg16-imagenet``: torchvision's ImageNet VGG-16 (keys ``features.N.weight/bias``);
- ``dists-vgg``: the authors' ``weights.pt`` (keys ``alpha``, ``beta``, each (1,1475,1,1)).

:class:`DISTSNet` keeps those keys 1:1 (STYLE §2). numpy-free: torch only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.evaluation import vgg_metric

__all__ = [
    "CHANNELS", "DISTS_ID", "MEAN", "STD", "TAPS", "VGG_ID", "DISTSNet", "L2Pool", "dists",
    "load_dists",
]

#: catalog ids of the two files (weights.toml, auxiliary section)
VGG_ID = "vgg16-imagenet"
DISTS_ID = "dists-vgg"
#: ImageNet normalisation of the [0,1] RGB input, per channel
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: torchvision VGG-16 ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAPS = (3, 8, 15, 22, 29)
#: channels of the six compared stages: the image itself, then the five taps
CHANNELS = (3, 64, 128, 256, 512, 512)
_C1 = _C2 = 1e-6
_POOL_EPS = 1e-12


class L2Pool(nn.Module):
    """L2 pooling: ``sqrt(hann3x3 * x^2 + 1e-12)`` per channel, stride 2, padding 1.
    (B,C,H,W) -> (B,C,ceil(H/2),ceil(W/2)). No parameters (the window is a fixed buffer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hann = torch.tensor([1.0, 2.0, 1.0])  # the 5-tap Hann window without its zero ends, x2
        window = torch.outer(hann, hann) / 16
        self.register_buffer("window", window.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.conv2d(x * x, self.window, stride=2, padding=1, groups=x.shape[1])
        return (pooled + _POOL_EPS).sqrt()


class DISTSNet(nn.Module):
    """DISTS (module docstring). ``forward(x, y)``: (B,3,H,W) float in [0,1] each, the same size
    (at least 16x16: relu5_3 is at 1/16 resolution) -> (B,) float32 distances."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg_metric.vgg16_features(L2Pool)  # torchvision's 0..29, L2 poolings
        self.alpha = nn.Parameter(torch.zeros(1, sum(CHANNELS), 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, sum(CHANNELS), 1, 1))
        vgg_metric.freeze(self, mean=MEAN, std=STD)

    @classmethod
    def from_state_dicts(cls, vgg: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> DISTSNet:
        """Build from torchvision VGG-16 tensors (``features.N.*``; other keys, e.g.
        ``classifier.*``, are ignored) and the DISTS tensors (``alpha``, ``beta``), loaded
        strictly: a missing, unexpected or misshaped tensor is a :class:`WeightsError`."""
        return vgg_metric.load_strict(
            cls(), vgg, weights, metric="DISTS",
            hint=f"use torchvision's ImageNet VGG-16 ({VGG_ID}) and DISTS' weights.pt ({DISTS_ID})",
        )

    def _stage(self, a: Tensor, b: Tensor, weights: tuple[Tensor, Tensor]) -> Tensor:
        """One stage's share of the distance, ``sum_j alpha_j (1 - l_j) + beta_j (1 - s_j)``:
        ``a``, ``b`` (n,C,h,w) feature maps, ``weights`` the normalised (C,) alpha and beta ->
        (n,)."""
        mu_a, mu_b = a.mean((2, 3)), b.mean((2, 3))
        da, db = a - mu_a[..., None, None], b - mu_b[..., None, None]
        var_a, var_b, cov = da.pow(2).mean((2, 3)), db.pow(2).mean((2, 3)), (da * db).mean((2, 3))
        texture = (2 * mu_a * mu_b + _C1) / (mu_a.pow(2) + mu_b.pow(2) + _C1)
        structure = (2 * cov + _C2) / (var_a + var_b + _C2)
        alpha, beta = weights
        return ((1 - texture) * alpha + (1 - structure) * beta).sum(1)

    @torch.inference_mode()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        vgg_metric.check_inputs(x, y, metric="DISTS")
        total_weight = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha.flatten() / total_weight, CHANNELS)
        betas = torch.split(self.beta.flatten() / total_weight, CHANNELS)
        n = x.shape[0]
        h = torch.cat([x, y]).to(self.alpha.device, self.alpha.dtype)
        total = self._stage(h[:n], h[n:], (alphas[0], betas[0]))  # stage 0: the image itself
        h = (h - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                k = TAPS.index(i) + 1
                total = total + self._stage(h[:n], h[n:], (alphas[k], betas[k]))
        return total.float()


def load_dists(
    *, device: str | torch.device = "cpu", vgg_id: str | None = None, dists_id: str | None = None
) -> DISTSNet:
    """DISTS from two catalog entries (default :data:`VGG_ID`, :data:`DISTS_ID`) on ``device`` in
    float32, from the registry cache only (:func:`vgg_metric.load_net`: sha256-checked; a file
    that is not cached is a :class:`WeightsError`, exit 3, naming `realsr models download`)."""
    return vgg_metric.load_net(
        DISTSNet.from_state_dicts, "DISTS", (vgg_id or VGG_ID, dists_id or DISTS_ID),
        ("vgg16", "dists"), device=device,
    )


def dists(sr: Tensor, hq: Tensor, net: DISTSNet, *, crop_border: int = 0) -> float:
    """DISTS of ``sr`` against ``hq``: (1,3,H,W) or (3,H,W) float in [0,1], same size, RGB.

    Both are quantised to 8 bits (``round(255 x) / 255`` after clamping, as PSNR/SSIM/LPIPS do)
    and ``crop_border`` pixels are cut from every side first. Lower is better (0: identical).
    """
    return vgg_metric.score_pair(net, sr, hq, metric="DISTS", crop_border=crop_border)
