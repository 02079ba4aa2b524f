"""Random draws from an explicit CPU :class:`torch.Generator` (STYLE §6).

Every random decision of the degradation pipelines goes through these helpers, so one seed gives
the same low-quality image on every device: numbers are drawn on the CPU and only then moved to the
image's device. Python's ``random`` and NumPy's global state are never used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from realsr_cli import _noise
from realsr_cli.errors import UsageError

__all__ = [
    "bernoulli",
    "check_generator",
    "choice",
    "randint",
    "randn",
    "uniform",
    "uniform_batch",
]


def check_generator(generator: torch.Generator) -> torch.Generator:
    """Reject a missing or non-CPU generator (seeded draws must reproduce on any device)."""
    if not isinstance(generator, torch.Generator):
        raise UsageError(
            f"expected a torch.Generator, got {type(generator).__name__}",
            hint="pass generator=realsr_cli.engine.device.make_generator(seed)",
        )
    if generator.device.type != "cpu":
        raise UsageError(
            f"degradations draw from a CPU generator, got one on {generator.device}",
            hint="create it with torch.Generator(device='cpu') or engine.device.make_generator",
        )
    return generator


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float uniform in [low, high)."""
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return low + (high - low) * u


def uniform_batch(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    """``n`` floats uniform in [low, high), a (n,) float64 CPU tensor."""
    u = torch.rand((n,), generator=generator, dtype=torch.float64)
    return low + (high - low) * u


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer uniform in [low, high], both ends included (like Python's ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def bernoulli(generator: torch.Generator, p: float) -> bool:
    """True with probability ``p``."""
    return uniform(generator, 0.0, 1.0) < p


def choice(generator: torch.Generator, probs: Sequence[float]) -> int:
    """An index drawn with the (unnormalised, non-negative) weights ``probs``."""
    weights = torch.tensor(list(probs), dtype=torch.float64)
    if weights.numel() == 0 or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise UsageError(f"invalid choice probabilities {list(probs)}")
    cdf = torch.cumsum(weights / weights.sum(), 0)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return min(int(torch.searchsorted(cdf, u, right=True).item()), len(cdf) - 1)


def randn(
    generator: torch.Generator,
    shape: Sequence[int],
    *,
    like: Tensor,
) -> Tensor:
    """Standard normal noise drawn on the CPU in float32, then moved/cast like ``like``."""
    return _noise.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
