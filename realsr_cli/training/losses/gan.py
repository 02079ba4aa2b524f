"""Hinge adversarial losses (Lim & Ye, "Geometric GAN", 2017; Miyato et al., ICLR 2018).

Used by FeMaSR (eq. 11, with a U-Net discriminator with spectral norm, weight 0.1) and UGTSR.
Logits may be a per-pixel map (U-Net discriminator, (B,1,H,W)) or per-image scores; means are
taken over all elements.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["hinge_d_loss", "hinge_g_loss"]


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator: ``E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]``.

    Pass ``fake_logits`` computed on detached generator outputs.
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator: ``-E[D(fake)]`` (FeMaSR eq. 11 without its weight lambda_adv)."""
    return -fake_logits.mean()
