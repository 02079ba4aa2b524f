"""Small helpers every stage may use: freezing modules, logging scalars, exporting a net's state,
and two stage bases (:class:`PixelLossStage`, :class:`SeededGeneratorStage`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from realsr_cli.engine.device import make_generator
from realsr_cli.errors import WeightsError
from realsr_cli.training.distributed import rank
from realsr_cli.training.losses import PIXEL_LOSSES
from realsr_cli.training.stage import Stage, StepContext

__all__ = [
    "PixelLossStage",
    "SeededGeneratorStage",
    "freeze",
    "frozen_and_trained_state_dict",
    "net_state_dict",
    "params_frozen",
    "scalars",
]


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad_(False)`` and ``eval()``; returns ``module``."""
    module.requires_grad_(False)
    return module.eval()


@contextlib.contextmanager
def params_frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``module`` (restored after).

    Graphs built inside treat the parameters as constants: gradients still flow *through* the
    module to its inputs, but none accumulate in it.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def scalars(terms: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Loss terms -> plain floats for logging, with a single device sync."""
    keys = list(terms)
    tensors = [
        t.detach().float().reshape(()) if isinstance(t, Tensor) else torch.tensor(float(t))
        for t in terms.values()
    ]
    if not tensors:
        return {}
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    values = torch.stack([t.to(device) for t in tensors]).tolist()
    return dict(zip(keys, values, strict=True))


def net_state_dict(net: nn.Module, state: Mapping[str, Tensor], *, what: str) -> dict[str, Tensor]:
    """Exactly ``net``'s state-dict keys taken from ``state`` (e.g. an EMA copy).

    A leading ``module.`` (a DDP wrapper's prefix) is tolerated; missing keys are a
    :class:`WeightsError`, extra keys (training-only heads) are dropped.
    """
    own = net.state_dict()
    if own and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(
            f"{what}: the state to export lacks {len(missing)} key(s) of the network, "
            f"e.g. {missing[:3]}"
        )
    return {k: state[k] for k in own}


def frozen_and_trained_state_dict(
    stage: Stage,
    state: Mapping[str, Mapping[str, Tensor]],
    whole: nn.Module,
    trained: str,
    *,
    prefix: str = "",
) -> dict[str, Tensor]:
    """The state dict of ``whole`` (CPU copies) from a checkpoint's ``state`` alone, for a stage
    that trains one part of a network and carries the rest as net ``frozen``: ``frozen``'s keys
    as they are, then net ``trained``'s (EMA weights when on) with ``prefix``. A key of ``whole``
    that neither covers is a programming error (:class:`WeightsError`)."""
    frozen = net_state_dict(stage.net("frozen"), state["frozen"], what=stage.name)
    part = net_state_dict(stage.net(trained), state[trained], what=stage.name)
    sd = {k: v.detach().cpu().clone() for k, v in frozen.items()}
    sd.update({prefix + k: v.detach().cpu().clone() for k, v in part.items()})
    missing = set(whole.state_dict()) - set(sd)
    if missing:
        raise WeightsError(f"{stage.name}: export lacks {sorted(missing)[:3]}")
    return sd


class PixelLossStage(Stage):
    """A stage that trains one network with a pixel loss: ``pixel_weight * d(net(lq), hq)``.

    Subclasses set :attr:`net_name` (the entry of ``nets`` and of the optimizer, EMA'd), build the
    network in ``__init__`` and implement :meth:`export`; their config has a ``loss`` section with
    ``pixel`` (a key of ``losses.PIXEL_LOSSES``) and ``pixel_weight``.
    """

    net_name: ClassVar[str] = "g"

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {self.net_name: list(self.net(self.net_name).parameters())}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        with ctx.autocast():
            sr = self.nets[self.net_name](batch["lq"])
        pixel = loss.pixel_weight * PIXEL_LOSSES[loss.pixel](sr.float(), batch["hq"].float())
        ctx.backward_step(pixel, self.net_name)
        return scalars({"pixel": pixel})

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.net(self.net_name)(lq)


class SeededGeneratorStage(Stage):
    """A stage with its own CPU generator ``self.generator`` (synthetic degradations, timesteps,
    noise), seeded ``run.seed + generator_offset + rank`` so that its stream differs from the data
    pipeline's (seeded ``run.seed + rank`` too). Its state goes into every checkpoint
    (:meth:`extra_state`), so a resume draws exactly what the uninterrupted run would have drawn.
    """

    generator_offset: ClassVar[int]

    def __init__(self, config: Any, device: torch.device) -> None:
        super().__init__(config, device)
        self.generator = make_generator(config.run.seed + self.generator_offset + rank())

    def extra_state(self) -> dict[str, object]:
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict[str, object]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])  # type: ignore[arg-type]
