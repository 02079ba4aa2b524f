"""Helpers shared by the training-stage tests: a minimal StepContext and smooth test images."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

CPU = torch.device("cpu")


class StepCtx:
    """The trainer's StepContext, reduced to what a CPU test needs.

    No autocast; one Adam per param group (``lr_d`` for the ``"d"`` group when given), zeroed,
    back-propagated and stepped by `backward_step`.
    """

    def __init__(
        self,
        stage,
        lr: float,
        *,
        lr_d: float | None = None,
        betas: Sequence[float] = (0.9, 0.999),
    ) -> None:
        self.step = 0
        self.device = CPU
        self.optimizers = {
            name: torch.optim.Adam(
                params, lr=lr_d if name == "d" and lr_d is not None else lr, betas=betas
            )
            for name, params in stage.param_groups().items()
        }

    def autocast(self):
        return contextlib.nullcontext()

    def backward_step(self, loss: Tensor, optimizer: str) -> None:
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def smooth_images(n: int, size: int, seed: int, *, grid: int = 6, mode: str = "bicubic") -> Tensor:
    """(n,3,size,size) smooth random images in [0,1]: `mode`-upsampled grid x grid noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, grid, grid, generator=g)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False).clamp(0, 1)


def train_steps(stage, steps: int, batch: dict[str, Tensor], key: str) -> list[float]:
    """``steps`` train_steps of ``stage`` on one fixed ``batch`` (nets in train mode, frozen parts
    in eval mode); the logged term ``key`` of each step."""
    ctx = StepCtx(stage, stage.config.optim.lr)
    for net in stage.nets.values():
        net.train()
    for module in stage.frozen():
        module.eval()
    losses = []
    for step in range(steps):
        ctx.step = step
        losses.append(stage.train_step(batch, ctx)[key])
    return losses


def first_last(losses: Sequence[float], n: int = 5) -> tuple[float, float]:
    """Mean of the first and of the last ``n`` losses."""
    return sum(losses[:n]) / n, sum(losses[-n:]) / n
