"""Vector-quantisation losses: the VQ-VAE codebook/commitment loss and FeMaSR's feature matching.

Features are (B,C,h,w) like ``models/_blocks/vq.py``; every squared norm is a mean over elements
(as the reference implementations do), so the values do not grow with the feature size.
"""

from __future__ import annotations

from torch import Tensor

from realsr_cli.errors import UsageError
from realsr_cli.training.losses.perceptual import gram_matrix

__all__ = ["fema_loss", "vq_codebook_loss"]


def _check(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise UsageError(
            f"{names} must be (B,C,h,w) of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )


def vq_codebook_loss(z_e: Tensor, codes: Tensor, beta: float = 0.25) -> Tensor:
    """VQ-VAE loss without the reconstruction term (van den Oord et al. 2017, eq. 3; FeMaSR eq. 3):

    ``||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2``

    ``z_e`` the encoder output, ``codes`` the selected codebook rows ``e`` *with* gradient to the
    codebook (``Quantized.codes``). The first term moves the codebook, the second (commitment) the
    encoder. ``beta = 0.25`` as in both papers.
    """
    _check(z_e, codes, "z_e and codes")
    codebook_term = (z_e.detach() - codes).square().mean()
    commitment_term = (z_e - codes.detach()).square().mean()
    return codebook_term + beta * commitment_term


def fema_loss(z_lq: Tensor, z_gt: Tensor, *, alpha: float = 1.0, beta: float = 0.25) -> Tensor:
    """FeMaSR's feature-matching loss (Chen et al., ACM MM 2022, eq. 9):

    ``L_fema = beta ||z_lq - z_gt||^2 + alpha ||psi(z_lq) - psi(z_gt)||^2``

    ``z_lq`` the continuous LR-encoder features before quantisation, ``z_gt = q[E(y), Z]`` the
    quantised HR-encoder features of the ground truth (treated as a constant: detached). ``psi`` is
    the Gram matrix over positions, normalised by h*w (FeMaSR's implementation); both norms are
    means. Paper weights: alpha = 1, beta = 0.25 (also UGTSR eq. 13).
    """
    _check(z_lq, z_gt, "z_lq and z_gt")
    target = z_gt.detach()
    feature_term = (z_lq - target).square().mean()
    gram_term = (gram_matrix(z_lq, "hw") - gram_matrix(target, "hw")).square().mean()
    return beta * feature_term + alpha * gram_term
