"""The engine's model contract: ``upscale(lq, *, generator=None, steps=None, noise=None) -> sr``.

Every network the registry builds (``registry/archs.py``) subclasses :class:`Upscaler` (or
:class:`DeterministicUpscaler`), so the signature, the gradient policy and the contract below live
here once; a model implements only its own part, :meth:`Upscaler._upscale` (or
:meth:`DeterministicUpscaler._upscale_lq`). The engine (``engine/model.py``) and the ONNX export
(``engine/export.py``, which traces ``net.upscale(lq)``) call :meth:`Upscaler.upscale`.

Contract: ``lq`` (B,3,H,W) float in [0,1] -> ``sr`` (B,3,sH,sW) float, not clamped by the contract
(a method's own official post-processing applies, e.g. UPSR's clamp), with the method's official
pre/post-processing (padding, crop) applied. ``generator`` is a seeded CPU generator that noise is
drawn from (then moved to ``lq``'s device), ``steps`` the number of sampling steps (None: the
model's default) and ``noise`` explicit initial noise instead of a draw. Deterministic models
ignore all three.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["DeterministicUpscaler", "Sampling", "Upscaler", "grad_off"]


def grad_off() -> contextlib.AbstractContextManager[object]:
    """``torch.no_grad()``, or nothing under ``torch.inference_mode()`` (which already has no
    autograd; the engine runs there)."""
    return contextlib.nullcontext() if torch.is_inference_mode_enabled() else torch.no_grad()


@dataclass(frozen=True)
class Sampling:
    """What :meth:`Upscaler.upscale` hands a model besides ``lq`` (see the module doc)."""

    generator: torch.Generator | None = None
    steps: int | None = None
    noise: Tensor | None = None


class Upscaler(nn.Module):
    """A network with the engine's ``upscale`` entry point (module doc); subclasses implement
    :meth:`_upscale`."""

    def upscale(
        self,
        lq: Tensor,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Super-resolve ``lq`` (B,3,H,W) float in [0,1] -> ``sr`` (B,3,sH,sW) float, without
        autograd. The model's :meth:`_upscale` says what ``generator``, ``steps`` and ``noise``
        mean for it (module doc: the common meaning)."""
        with grad_off():
            return self._upscale(lq, Sampling(generator, steps, noise))

    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        """The model's part of :meth:`upscale` (called with autograd off)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _upscale")


class DeterministicUpscaler(Upscaler):
    """An :class:`Upscaler` whose output depends on ``lq`` alone: ``generator``, ``steps`` and
    ``noise`` are accepted for the common contract and ignored. Subclasses implement
    :meth:`_upscale_lq`."""

    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        return self._upscale_lq(lq)

    def _upscale_lq(self, lq: Tensor) -> Tensor:
        """The model's part of :meth:`upscale`: ``lq`` -> ``sr`` (called with autograd off)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _upscale_lq")
