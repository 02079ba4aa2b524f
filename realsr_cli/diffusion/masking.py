"""Mask schedule of masked-token generation (MaskGIT / Token-Critic), as used by RealSRT.

RealSRT (Peng et al., "Confidence-Based Iterative Generation for Real-World Image Super-Resolution",
ECCV 2024, Sec. 3.2) generates the N high-resolution tokens in T steps, starting from a canvas of
mask tokens. The mask scheduling function (Sec. 4.1) is the square root schedule

    gamma(r) = 1 - sqrt(r),        r in [0, 1],  gamma(0) = 1, gamma(1) = 0.

Sampling (confidence-based re-masking). At step ``s = 0 .. T-1`` the generator fills every masked
token, the critic scores every token, and the ``k_s`` tokens with the *largest* critic logits (the
least confident: the critic is trained to flag originally-masked tokens, Eq. 2) are masked again:

    k_s = int(gamma((s + 1) / T) * N)       for s < T - 1,     k_{T-1} = 0.

The paper writes ceil; the official code truncates with ``int`` and evaluates gamma in float32
(``1 - torch.sqrt(torch.tensor([(s + 1) / T]))``), which we reproduce bit for bit: for T = 4 and
N = 1024 this is 512, 299, 137, 0. Already generated tokens are *not* frozen: the critic may mask
any token again, which lets later steps correct earlier ones. Ties between critic logits fall to
``torch.topk``'s order (the official rule; exact float ties do not occur in practice).

Training (random masking). A ratio ``gamma(r)``, ``r ~ U[0, 1)`` per sample, masks
``max(1, round(gamma(r) * N))`` tokens chosen uniformly at random (a random permutation rank below
that count), as in the official training step.

Layouts: token ids (B, N) int64 with the mask id (RealSRT: ``K = 512``, one past the codebook) for
masked positions; scores (B, N) float (critic logits, larger = less confident); masks (B, N) bool,
True = masked. Random draws use an explicit CPU ``torch.Generator`` and are moved to the device
(STYLE §6), so a seed reproduces on any device. A small pure class without parameters (STYLE §5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MASK_SCHEDULES", "MaskSchedule"]


def _sqrt(r: Tensor) -> Tensor:
    return 1 - torch.sqrt(r)


def _cosine(r: Tensor) -> Tensor:
    return torch.cos(r * (math.pi / 2))


def _linear(r: Tensor) -> Tensor:
    return 1 - r


def _square(r: Tensor) -> Tensor:
    return 1 - r**2


def _cubic(r: Tensor) -> Tensor:
    return 1 - r**3


#: gamma functions by name; RealSRT uses ``"sqrt"`` (the others are the official code's alternatives)
MASK_SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = {
    "sqrt": _sqrt,
    "cosine": _cosine,
    "linear": _linear,
    "square": _square,
    "cubic": _cubic,
}


class MaskSchedule:
    """Mask ratio ``gamma(r)`` and the per-step re-masking counts of iterative decoding.

    Args:
        num_tokens: sequence length N (RealSRT: 32 x 32 = 1024 tokens per 64-px LR patch).
        mask_id: id of the mask token (RealSRT: 512 = codebook size).
        schedule: name of gamma in :data:`MASK_SCHEDULES` (RealSRT: ``"sqrt"``).

    After :meth:`set_timesteps`, ``num_inference_steps`` is T and ``masked_counts`` the tuple
    ``(k_0, ..., k_{T-1})`` of tokens re-masked after each step (``k_{T-1} = 0``).
    """

    def __init__(
        self, num_tokens: int = 1024, *, mask_id: int = 512, schedule: str = "sqrt"
    ) -> None:
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be positive, got {num_tokens}")
        if schedule not in MASK_SCHEDULES:
            raise ValueError(
                f"unknown mask schedule {schedule!r}; use one of {sorted(MASK_SCHEDULES)}"
            )
        self.num_tokens = num_tokens
        self.mask_id = mask_id
        self.schedule = schedule
        self._gamma = MASK_SCHEDULES[schedule]
        self.num_inference_steps: int | None = None
        self.masked_counts: tuple[int, ...] = ()

    # ----------------------------------------------------------------- the schedule
    def mask_ratio(self, r: float | Tensor) -> float | Tensor:
        """gamma(r): the share of tokens masked at generation progress ``r`` in [0, 1].

        A Python float in gives a Python float out, evaluated in float32 like the official code;
        a tensor in gives gamma elementwise in the tensor's dtype.
        """
        if isinstance(r, Tensor):
            return self._gamma(r)
        return float(self._gamma(torch.tensor(float(r), dtype=torch.float32)))

    def set_timesteps(self, num_inference_steps: int) -> MaskSchedule:
        """Fix T and precompute ``masked_counts``; returns ``self`` for chaining."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        steps = num_inference_steps
        counts = []
        for s in range(steps - 1):
            # float32 throughout, then truncation: exactly the official arithmetic
            ratio = self._gamma(torch.tensor([(s + 1) / steps], dtype=torch.float32))
            counts.append(int((ratio * self.num_tokens).item()))
        counts.append(0)
        self.num_inference_steps = steps
        self.masked_counts = tuple(counts)
        return self

    def num_masked(self, step: int) -> int:
        """k_step: how many tokens :meth:`step` masks again after step ``step`` (0-based)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(T) before num_masked()")
        if not 0 <= step < self.num_inference_steps:
            raise IndexError(f"step {step} outside [0, {self.num_inference_steps})")
        return self.masked_counts[step]

    # ----------------------------------------------------------------- sampling
    def is_masked(self, ids: Tensor) -> Tensor:
        """(B, N) bool: True where ``ids`` holds the mask id."""
        return ids == self.mask_id

    def step(self, ids: Tensor, scores: Tensor, step: int) -> Tensor:
        """Confidence-based re-masking after decoding step ``step``.

        Args:
            ids: (B, N) int64 predicted tokens of this step (no mask ids).
            scores: (B, N) or (B, N, 1) critic logits; larger = less confident.
            step: the 0-based step just decoded.

        Returns the (B, N) ids for the next step: the ``num_masked(step)`` highest-scoring positions
        replaced by the mask id (a new tensor; ``ids`` itself is unchanged). After the last step
        nothing is masked and ``ids`` is returned as is.
        """
        k = self.num_masked(step)
        if k == 0:
            return ids
        if scores.dim() == ids.dim() + 1:
            scores = scores.squeeze(-1)
        if scores.shape != ids.shape:
            raise ValueError(f"scores {tuple(scores.shape)} do not match ids {tuple(ids.shape)}")
        worst = scores.topk(k, dim=-1).indices
        return ids.scatter(-1, worst, self.mask_id)

    # ----------------------------------------------------------------- training
    def random_mask(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(B, N) bool training mask: per sample ``max(1, round(gamma(r) * N))`` random positions.

        ``r ~ U[0, 1)`` and the positions are drawn on the CPU from ``generator``, then moved.
        """
        r = torch.rand(batch, generator=generator, dtype=torch.float32)
        count = (self._gamma(r) * self.num_tokens).round().clamp(min=1)
        rank = torch.rand(batch, self.num_tokens, generator=generator).argsort(dim=-1)
        return (rank < count[:, None]).to(device=device)

    def add_noise(
        self, ids: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Randomly mask ground-truth tokens for training the generator (Eq. 1).

        ``ids`` (B, N) int64 -> ``(masked_ids, mask)``: ``masked_ids`` holds the mask id where
        ``mask`` (B, N) bool is True and ``ids`` elsewhere.
        """
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"ids must be (B, {self.num_tokens}), got {tuple(ids.shape)}")
        mask = self.random_mask(ids.shape[0], generator=generator, device=ids.device)
        return ids.masked_fill(mask, self.mask_id), mask

    def __repr__(self) -> str:
        return (
            f"MaskSchedule(num_tokens={self.num_tokens}, mask_id={self.mask_id}, "
            f"schedule={self.schedule!r}, masked_counts={self.masked_counts})"
        )
