"""Training losses (pure functions, plus the VGG-based :class:`PerceptualLoss` module).

* pixel: :func:`l1_loss`, :func:`mse_loss`, :func:`charbonnier_loss`
* perceptual/style: :class:`PerceptualLoss` on our own :class:`VGGFeatureExtractor` (torchvision
  key layout), :func:`gram_matrix`
* adversarial: :func:`hinge_d_loss`, :func:`hinge_g_loss`
* vector quantisation: :func:`vq_codebook_loss` (VQ-VAE), :func:`fema_loss` (FeMaSR eq. 9)
* uncertainty (UGTSR): :func:`esu_loss` (stage I), :func:`ud_loss` (stage II)

Loss weights are the trainer's; each function documents the paper's value.
"""

from __future__ import annotations

from realsr_cli.training.losses.gan import hinge_d_loss, hinge_g_loss
from realsr_cli.training.losses.perceptual import PerceptualLoss, PerceptualTerms, gram_matrix
from realsr_cli.training.losses.pixel import PIXEL_LOSSES, charbonnier_loss, l1_loss, mse_loss
from realsr_cli.training.losses.uncertainty import esu_loss, ud_loss, ud_weight
from realsr_cli.training.losses.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGGFeatureExtractor,
    vgg_layer_names,
)
from realsr_cli.training.losses.vq import fema_loss, vq_codebook_loss

__all__ = [
    "PIXEL_LOSSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PerceptualLoss",
    "PerceptualTerms",
    "VGGFeatureExtractor",
    "charbonnier_loss",
    "esu_loss",
    "fema_loss",
    "gram_matrix",
    "hinge_d_loss",
    "hinge_g_loss",
    "l1_loss",
    "mse_loss",
    "ud_loss",
    "ud_weight",
    "vgg_layer_names",
    "vq_codebook_loss",
]
