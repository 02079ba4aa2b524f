"""Learning-rate schedule: a pure function of the step (STYLE §5), so resuming needs no state.

``LRSchedule(config, max_steps).factor(step)`` is the multiplier of the base learning rate for the
0-based step about to be taken:

* linear warm-up ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then
* ``constant``: 1;
* ``multistep``: ``gamma ** (number of milestones <= step)`` (BasicSR ``MultiStepLR`` semantics:
  a milestone at 50 000 means steps 50 000 onwards run at ``gamma * lr``);
* ``cosine``: half a cosine from 1 down to ``min_lr_ratio`` between the end of warm-up and
  ``max_steps``.
"""

from __future__ import annotations

import bisect
import math

import torch

from realsr_cli.training.config import ScheduleConfig

__all__ = ["LRSchedule"]


class LRSchedule:
    """The learning-rate multiplier per step, applied to every optimizer of a stage."""

    def __init__(self, config: ScheduleConfig, max_steps: int) -> None:
        self.config = config
        self.max_steps = max_steps
        self._milestones = sorted(config.milestones)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at 0-based ``step``."""
        cfg = self.config
        warm = 1.0
        if cfg.warmup_steps and step < cfg.warmup_steps:
            warm = (step + 1) / cfg.warmup_steps
        if cfg.kind == "constant":
            return warm
        if cfg.kind == "multistep":
            return warm * cfg.gamma ** bisect.bisect_right(self._milestones, step)
        # cosine
        span = max(1, self.max_steps - cfg.warmup_steps)
        progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cos)

    def apply(self, optimizer: torch.optim.Optimizer, base_lr: float, step: int) -> float:
        """Set every param group of ``optimizer`` to ``base_lr * factor(step)``; returns the lr."""
        lr = base_lr * self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
