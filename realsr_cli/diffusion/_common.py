"""What the diffusion schedules share: reading their float64 tables at given timesteps.

- :func:`timestep_index`: timesteps (an int or (B,)) as the int64 CPU index into a table;
- :func:`per_sample`: (B,) coefficients shaped (B,1,...,1) in a tensor's dtype and device;
- :class:`UniformTimesteps`: ``sample_timesteps``, the training draw over ``[0, T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["UniformTimesteps", "per_sample", "timestep_index"]


def timestep_index(t: Tensor | int) -> Tensor:
    """``t`` (an int or integers of shape (B,)) as int64 (B,) on the CPU, where the tables are."""
    return torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) ``values`` as (B,1,...,1) in ``like``'s dtype and device, to broadcast against it."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class UniformTimesteps:
    """Mixin of the schedules with a training chain of ``num_timesteps`` steps."""

    num_timesteps: int

    def sample_timesteps(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Training timesteps, uniform over ``[0, T)``: int64 (batch_size,) on the CPU."""
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator)
