"""Pixel losses: L1, MSE and Charbonnier, on any tensors of equal shape (typically (B,3,H,W))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from realsr_cli.errors import UsageError

__all__ = ["PIXEL_LOSSES", "Reduction", "charbonnier_loss", "l1_loss", "mse_loss", "reduce"]

Reduction = Literal["mean", "sum", "none"]


def reduce(loss: Tensor, reduction: Reduction) -> Tensor:
    """Apply ``mean`` (over all elements), ``sum`` or ``none`` to an element-wise loss."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise UsageError(f"unknown reduction {reduction!r}", hint="use mean, sum or none")


def _elementwise(
    pred: Tensor,
    target: Tensor,
    distance: Callable[[Tensor], Tensor],
    weight: Tensor | None,
    reduction: Reduction,
) -> Tensor:
    """``distance(pred - target)`` (times an optional broadcastable ``weight``), reduced; the
    shapes of ``pred`` and ``target`` must match."""
    if pred.shape != target.shape:
        raise UsageError(
            f"loss inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    loss = distance(pred - target)
    return reduce(loss if weight is None else loss * weight, reduction)


def l1_loss(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """``|pred - target|`` (times an optional broadcastable ``weight``), reduced."""
    return _elementwise(pred, target, Tensor.abs, weight, reduction)


def mse_loss(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """``(pred - target)^2`` (times an optional broadcastable ``weight``), reduced."""
    return _elementwise(pred, target, Tensor.square, weight, reduction)


def charbonnier_loss(
    pred: Tensor,
    target: Tensor,
    eps: float = 1e-3,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Charbonnier (smooth L1) ``sqrt((pred - target)^2 + eps^2)`` (Lai et al., LapSRN, CVPR 2017).

    ``eps`` is in image units (1e-3 as in LapSRN); the loss of identical inputs is ``eps``, not 0.
    """
    return _elementwise(
        pred, target, lambda d: torch.sqrt(d.square() + eps * eps), weight, reduction
    )


#: the pixel losses a stage config may name (``loss.pixel``)
PIXEL_LOSSES = {"l1": l1_loss, "mse": mse_loss, "charbonnier": charbonnier_loss}
