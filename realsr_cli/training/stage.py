"""The contract between the trainer (``training/trainer.py``) and a training stage.

A *stage* is one trainable step of one method's recipe (``femasr-hrp``, ``femasr``,
``ugtsr-uncertainty``, ``ugtsr`` ...). It owns the networks, the losses and what one optimisation
step does; the trainer owns everything around it: device, data, DDP wrapping, autocast, gradient
scaling and clipping, optimizer/scheduler stepping, EMA, logging, validation, checkpoints, resume.

Stage ``__init__(config, ctx_device)`` builds its networks on the given device (no I/O except
what :meth:`Stage.load_inputs` does with the paths in its config, e.g. a frozen stage-1 model);
the trainer then

1. calls :meth:`Stage.load_inputs` (frozen priors from files named in the config),
2. wraps every entry of :attr:`Stage.nets` with ``DistributedDataParallel`` when running under
   torchrun (so stage code must call networks through ``self.nets[name](...)`` in
   :meth:`train_step`; :meth:`Stage.net` returns the unwrapped module for anything else),
3. builds one optimizer per name in :meth:`Stage.param_groups`,
4. per step calls :meth:`Stage.train_step` with a batch on the device and a :class:`StepContext`.

Batches are dicts of tensors: ``"hq"`` (B,3,P,P) and ``"lq"`` (B,3,P/s,P/s), float32 in [0,1].
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

__all__ = ["Export", "Stage", "StepContext"]


class StepContext(Protocol):
    """What the trainer hands to :meth:`Stage.train_step` (one per step)."""

    step: int  #: 0-based index of the step being taken
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for forward passes (a no-op on CPU or with ``run.amp = "off"``)."""

    def backward_step(self, loss: Tensor, optimizer: str) -> None:
        """Backpropagate ``loss`` and step optimizer ``optimizer``.

        Does, in order: zero that optimizer's grads, (scaled) backward, unscale, clip to
        ``run.grad_clip``, optimizer step (skipped by the scaler on inf/NaN grads). Under DDP the
        gradients of the wrapped nets are averaged over ranks during backward.
        """


class Export(tuple):
    """``(arch, config, state_dict)`` as :func:`realsr_cli.registry.loader` expects them."""

    __slots__ = ()

    def __new__(cls, arch: str, config: Any, state_dict: dict[str, Tensor]) -> Export:
        return super().__new__(cls, (arch, config, state_dict))

    @property
    def arch(self) -> str:
        return self[0]

    @property
    def config(self) -> Any:
        return self[1]

    @property
    def state_dict(self) -> dict[str, Tensor]:
        return self[2]


class Stage(ABC):
    """One trainable stage. Subclasses set the class attributes and implement the abstract methods.

    Class attributes:
        name: CLI name, e.g. ``"femasr-hrp"``.
        summary: one line for ``realsr train stages``.
        config_cls: the frozen stage config dataclass (see :mod:`realsr_cli.training.config`).
        ema_net: name in :attr:`nets` whose EMA copy the trainer keeps (None = no EMA).
        find_unused_parameters: passed to DDP for every wrapped net.
        export_is_complete: False for stages whose export is only part of a model (an upstream
            input of a later stage, e.g. UPSR's auxiliary net g): ``train export`` then checks
            the keys are a shape-correct subset of the architecture's and marks the file
            ``partial``; the loader refuses to run such a file and says what it is for.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    config_cls: ClassVar[type]
    ema_net: ClassVar[str | None] = "g"
    find_unused_parameters: ClassVar[bool] = False
    export_is_complete: ClassVar[bool] = True

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device
        #: trainable networks by name (e.g. ``{"g": generator, "d": discriminator}``); the
        #: trainer may replace entries by DDP wrappers. Frozen helpers (priors, VGG) are plain
        #: attributes, not listed here.
        self.nets: dict[str, nn.Module] = {}

    # ----------------------------------------------------------------- helpers
    def net(self, name: str) -> nn.Module:
        """The unwrapped network ``name`` (``.module`` of a DDP wrapper)."""
        net = self.nets[name]
        return getattr(net, "module", net)

    def frozen(self) -> Iterator[nn.Module]:
        """Frozen sub-modules the stage holds (eval mode is enforced after ``train()``)."""
        return iter(())

    # ----------------------------------------------------------------- contract
    def load_inputs(self) -> None:  # noqa: B027 - optional hook
        """Load frozen inputs named in the config (stage-1 weights, VGG weights ...). Default: none."""

    @abstractmethod
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer name -> trainable parameters, e.g. ``{"g": [...], "d": [...]}``.

        Optimizer ``"d"`` uses ``optim.lr_d`` (when non-zero); every other one ``optim.lr``.
        """

    @abstractmethod
    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the scalar losses to log (floats)."""

    @abstractmethod
    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        """Validation forward: ``lq`` (1,3,h,w) in [0,1] -> (1,3,sh,sw) unclamped, any size."""

    @abstractmethod
    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        """Registry-loadable weights from ``state`` (net name -> state dict; EMA weights when on).

        The returned ``(arch, config, state_dict)`` must load with ``strict=True`` into
        ``ARCHITECTURES[arch].build(config)``.
        """

    def extra_state(self) -> dict[str, Any]:
        """Anything else a checkpoint must hold for an exact resume (default: nothing)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Inverse of :meth:`extra_state`."""
