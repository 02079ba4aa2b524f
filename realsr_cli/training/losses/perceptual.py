"""Perceptual (VGG feature) and style (Gram) losses.

* perceptual (Johnson et al., ECCV 2016; ESRGAN, ECCV-W 2018, Sec. 3.3):
  ``sum_l w_l d(phi_l(sr), phi_l(hq))``
* style / Gram (Gatys et al., CVPR 2016, eq. 3-5; Johnson et al. Sec. 3.2):
  ``sum_l w_l d(G(phi_l(sr)), G(phi_l(hq)))`` with ``G(F) = F F^T / (C H W)``

``d`` is the mean absolute (``l1``, Real-ESRGAN/BasicSR's choice) or mean squared (``mse``,
FeMaSR eq. 10 writes ``||.||_2^2``) difference. Real-ESRGAN uses VGG-19 with
``{conv1_2: 0.1, conv2_2: 0.1, conv3_4: 1, conv4_4: 1, conv5_4: 1}`` and L1. FeMaSR's paper (eq. 10)
names a VGG-16 feature loss, while its released training options use LPIPS (not implemented here);
UGTSR's spec says VGG-19. The layer set is the trainer's choice.

Without pretrained weights the loss is meaningless, so :class:`PerceptualLoss` refuses to run
(:class:`WeightsError`) until ImageNet weights are loaded, unless ``allow_random_weights=True`` is
passed explicitly (tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from realsr_cli.errors import UsageError, WeightsError
from realsr_cli.training.losses.vgg import VGGFeatureExtractor

__all__ = ["PerceptualLoss", "PerceptualTerms", "gram_matrix"]

Criterion = Literal["l1", "mse"]


def gram_matrix(feat: Tensor, normalize: Literal["chw", "hw"] = "chw") -> Tensor:
    """Gram matrix of (B,C,H,W) features: (B,C,C) ``F F^T`` with F the (C, H*W) reshaping.

    Divided by ``C*H*W`` (``chw``, Johnson et al./BasicSR) or by ``H*W`` (``hw``, FeMaSR's
    feature-matching Gram). Computed in float32 at least, for stable sums.
    """
    if feat.dim() != 4:
        raise UsageError(f"expected (B,C,H,W) features, got {tuple(feat.shape)}")
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    if f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    gram = f @ f.transpose(1, 2)
    return gram / (c * h * w if normalize == "chw" else h * w)


def _distance(x: Tensor, y: Tensor, criterion: Criterion) -> Tensor:
    diff = x - y
    return diff.abs().mean() if criterion == "l1" else diff.square().mean()


class PerceptualTerms(NamedTuple):
    """The weighted perceptual and style terms (0-dim tensors; zero when their weight is 0)."""

    perceptual: Tensor
    style: Tensor

    @property
    def total(self) -> Tensor:
        return self.perceptual + self.style


class PerceptualLoss(nn.Module):
    """``PerceptualLoss(layer_weights)(sr, hq) -> PerceptualTerms``.

    ``sr`` and ``hq`` (B,3,H,W) in [0,1] (or [-1,1] with ``range_norm``). ``hq`` features are
    computed without gradients. ``layer_weights`` maps VGG layer names (``conv5_4``...) to weights;
    ``perceptual_weight``/``style_weight`` scale the two terms (0 skips a term).
    Load weights with :meth:`load_torchvision_state_dict` (torchvision's ImageNet checkpoint).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        arch: str = "vgg19",
        criterion: Criterion = "l1",
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
        use_input_norm: bool = True,
        range_norm: bool = False,
        base_width: int = 64,
        allow_random_weights: bool = False,
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "mse"):
            raise UsageError(f"unknown perceptual criterion {criterion!r}", hint="use l1 or mse")
        if not layer_weights:
            raise UsageError("layer_weights is empty", hint="e.g. {'conv5_4': 1.0}")
        self.layer_weights = dict(layer_weights)
        self.criterion: Criterion = criterion
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.allow_random_weights = bool(allow_random_weights)
        self.vgg = VGGFeatureExtractor(
            arch,
            tuple(self.layer_weights),
            base_width=base_width,
            use_input_norm=use_input_norm,
            range_norm=range_norm,
        )

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load torchvision's ImageNet VGG weights (see :class:`VGGFeatureExtractor`)."""
        self.vgg.load_torchvision_state_dict(state_dict)

    def _check_weights(self) -> None:
        if not self.vgg.pretrained and not self.allow_random_weights:
            raise WeightsError(
                f"the perceptual loss has no pretrained {self.vgg.arch} weights; "
                "a randomly initialised VGG gives a meaningless loss",
                hint=(
                    f"load torchvision's ImageNet {self.vgg.arch} checkpoint with "
                    "load_torchvision_state_dict(...) (through the registry), or pass "
                    "allow_random_weights=True for tests"
                ),
            )

    def forward(self, sr: Tensor, hq: Tensor) -> PerceptualTerms:
        self._check_weights()
        if sr.shape != hq.shape:
            raise UsageError(f"sr and hq differ in shape: {tuple(sr.shape)} vs {tuple(hq.shape)}")
        zero = sr.new_zeros(())
        if self.perceptual_weight == 0 and self.style_weight == 0:
            return PerceptualTerms(zero, zero)
        sr_feats = self.vgg(sr)
        with torch.no_grad():
            hq_feats = self.vgg(hq.detach())
        percep, style = zero, zero
        for name, weight in self.layer_weights.items():
            if self.perceptual_weight:
                percep = percep + weight * _distance(sr_feats[name], hq_feats[name], self.criterion)
            if self.style_weight:
                g_sr, g_hq = gram_matrix(sr_feats[name]), gram_matrix(hq_feats[name])
                style = style + weight * _distance(g_sr, g_hq, self.criterion)
        return PerceptualTerms(percep * self.perceptual_weight, style * self.style_weight)
