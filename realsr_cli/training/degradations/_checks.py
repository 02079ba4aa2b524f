"""The value checks every pipeline config repeats: scale, probabilities, (min, max) ranges, resize
modes. Each raises :class:`ConfigError` naming the field."""

from __future__ import annotations

import math
from collections.abc import Sequence

from realsr_cli.errors import ConfigError
from realsr_cli.training.degradations import ops

__all__ = ["check_prob", "check_range", "check_resize_modes", "check_scale"]


def check_scale(scale: object) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")


def check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")


def check_range(name: str, pair: tuple[float, float], low: float = 0.0) -> None:
    """``low <= min <= max``, both finite."""
    if not (math.isfinite(pair[0]) and math.isfinite(pair[1]) and low <= pair[0] <= pair[1]):
        raise ConfigError(f"{name} must be (min, max) with {low} <= min <= max, got {pair}")


def check_resize_modes(modes: Sequence[str]) -> None:
    if not modes or any(m not in ops.RESIZE_MODES for m in modes):
        raise ConfigError(f"resize_modes must be a non-empty subset of {ops.RESIZE_MODES}")
