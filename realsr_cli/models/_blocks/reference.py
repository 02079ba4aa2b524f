"""Opt-in "reference" (untuned) formulation of the layers we speed up, for benchmarks.

Our modules compute the same functions as the official code but faster: fused SDPA attention,
shifted-window masks built once per input size, cross-attention keys/values of an unchanging
condition computed once per image, row copies instead of expanded gathers. Inside
``with reference_mode():`` they switch to the straightforward formulation of the official code
instead -- explicit ``softmax(q k^T + bias) v``, masks rebuilt on every call, everything recomputed
per step -- so ``bench/`` can time both on the same weights in one run and check the outputs agree.

Default behaviour, parameters and state-dict keys are unchanged; the switch is a context variable,
so it is off unless a caller turns it on.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from torch import Tensor

__all__ = ["explicit_attention", "reference_enabled", "reference_mode"]

_REFERENCE = contextvars.ContextVar("realsr_reference_mode", default=False)


@contextlib.contextmanager
def reference_mode(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed forwards in the untuned reference formulation (module docstring)."""
    token = _REFERENCE.set(enabled)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def reference_enabled() -> bool:
    """True inside :func:`reference_mode`."""
    return _REFERENCE.get()


def explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """``softmax(scale * q k^T + bias) v`` materialising the (..., N, M) logits, as official code does.

    q (..., N, d), k and v (..., M, d); ``bias`` broadcastable to (..., N, M); ``scale`` defaults to
    1/sqrt(d). The same function as ``F.scaled_dot_product_attention(q, k, v, bias, scale=scale)``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    return attn.softmax(dim=-1) @ v
