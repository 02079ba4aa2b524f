"""UGTSR's uncertainty losses (spec ``shared/specs/ugtsr.md`` §1; UGTSR eq. 2-3 after Ning et al.,
"Uncertainty-driven loss for single image super-resolution", NeurIPS 2021).

``s`` is the predicted log-uncertainty map, ``theta = exp(s)``. ``s`` is (B,C,H,W) (one map per
colour channel) or (B,1,H,W) (one shared map, broadcast over channels); ``sr``/``hq`` (B,C,H,W).
Means run over all elements of the (broadcast) per-pixel loss, i.e. over B*C*H*W terms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from realsr_cli.errors import UsageError

__all__ = ["esu_loss", "ud_loss", "ud_weight"]


def _check(sr: Tensor, hq: Tensor, s: Tensor) -> None:
    if sr.shape != hq.shape or sr.dim() != 4:
        raise UsageError(
            f"sr and hq must be (B,C,H,W) of one shape, got {tuple(sr.shape)}, {tuple(hq.shape)}"
        )
    b, c, h, w = sr.shape
    if s.dim() != 4 or s.shape[0] != b or s.shape[1] not in (1, c) or tuple(s.shape[2:]) != (h, w):
        raise UsageError(f"log-uncertainty must be ({b},1 or {c},{h},{w}), got {tuple(s.shape)}")


def esu_loss(sr: Tensor, hq: Tensor, s: Tensor) -> Tensor:
    """Stage I, estimating sparse uncertainty: ``mean_i( exp(-s_i) |hq_i - sr_i| + 2 s_i )``.

    Gradients reach both the SR mean ``sr`` and the log-uncertainty ``s``. For a fixed error e the
    minimum over s is at ``exp(s) = e / 2``.
    """
    _check(sr, hq, s)
    per_pixel = torch.exp(-s) * (hq - sr).abs() + 2.0 * s  # (B,C,H,W), s broadcast if shared
    return per_pixel.mean()


def ud_weight(s: Tensor) -> Tensor:
    """``g(theta) = theta - min(theta)`` per image, ``theta = exp(s)`` detached (UDL's non-negative
    linear g; the minimum runs over all of one image's channels and pixels)."""
    theta = torch.exp(s.detach())
    return theta - theta.amin(dim=(1, 2, 3), keepdim=True)


def ud_loss(sr: Tensor, hq: Tensor, s: Tensor) -> Tensor:
    """Stage II, uncertainty-driven: ``mean_i( g(theta)_i |hq_i - sr_i| )``.

    ``s`` comes from the frozen stage-I network; it is detached here, so only ``sr`` gets gradients.
    High-uncertainty (textured, edge) pixels get large weights, the most certain pixel weight 0.
    """
    _check(sr, hq, s)
    return (ud_weight(s) * (hq - sr).abs()).mean()
