"""``bicres``: realsr's own compact model (bicubic + a learned residual), trained with a pixel loss.

One stage, one network (``g``, EMA'd): ``loss = pixel_weight * d(g(lq), hq)`` on the [0,1] scale
with ``d`` = L1 (default), MSE or Charbonnier. The target is the plain HR patch, also under the
Real-ESRGAN part of the ``mix`` pipeline (not its USM-sharpened copy): the model is scored against
the HR image, and a sharpened target teaches halos.

``inputs.init_weights`` continues from an earlier ``bicres`` export of the same shape (e.g. the
shipped default weights), for budgets split over several runs; otherwise the tail starts at zero,
so step 0 is bicubic exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.bicres import BicResConfig, BicResNet
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfigBase,
)
from realsr_cli.training.stage import Export
from realsr_cli.training.stages.helpers import PixelLossStage, net_state_dict

log = logging.getLogger(__name__)

__all__ = ["BicResInputsConfig", "BicResLossConfig", "BicResStage", "BicResStageConfig"]



@dataclass(frozen=True)
class BicResLossConfig:
    """``pixel``: ``l1`` | ``mse`` | ``charbonnier``; ``pixel_weight`` > 0."""

    pixel: Literal["l1", "mse", "charbonnier"] = "l1"
    pixel_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.pixel_weight > 0:
            raise ConfigError(f"loss.pixel_weight must be a positive number, got {self.pixel_weight}")


@dataclass(frozen=True)
class BicResInputsConfig:
    """``init_weights``: optional ``bicres`` safetensors of the same [model] to start from."""

    init_weights: str = ""


@dataclass(frozen=True)
class BicResStageConfig(StageConfigBase):
    """``bicres``: the compact default-model architecture; defaults are a GPU-sized recipe
    (configs/bicres.toml), configs/bicres-cpu.toml is the 2-core budget the shipped weights used."""

    run: RunConfig = RunConfig(max_steps=200_000, checkpoint_every=10_000)
    data: DataConfig = DataConfig(patch_size=192, scale=4, pipeline="mix", batch_size=32)
    optim: OptimConfig = OptimConfig(lr=5e-4, betas=(0.9, 0.99))
    schedule: ScheduleConfig = ScheduleConfig(kind="cosine", milestones=(), warmup_steps=1000)
    ema: EMAConfig = EMAConfig(decay=0.999)
    model: BicResConfig = BicResConfig()
    loss: BicResLossConfig = BicResLossConfig()
    inputs: BicResInputsConfig = BicResInputsConfig()

    def __post_init__(self) -> None:
        if self.data.scale != self.model.scale:
            raise ConfigError(
                f"bicres: data.scale {self.data.scale} differs from model.scale {self.model.scale}",
                hint="set both to the same factor, e.g. --set data.scale=2 --set model.scale=2",
            )


class BicResStage(PixelLossStage):
    """Net/optimizer ``g`` (:class:`BicResNet`, EMA'd); export = a complete ``bicres`` model."""

    name = "bicres"
    summary = "BicRes (realsr's default model): bicubic + a learned residual, pixel loss"
    config_cls = BicResStageConfig
    ema_net = "g"
    net_name = "g"

    def __init__(self, config: BicResStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets["g"] = BicResNet(config.model).to(device)

    def load_inputs(self) -> None:
        path = self.config.inputs.init_weights
        if not path:
            return
        from realsr_cli.registry.loader import load_weights

        spec, config, net = load_weights(path)
        if spec.name != "bicres" or config != self.config.model:
            raise WeightsError(
                f"{Path(path).name} is not a bicres network of this run's shape "
                f"(arch {spec.name!r}, config {config})",
                hint="inputs.init_weights takes a `bicres` export with the same [model] section",
            )
        self.net("g").load_state_dict(net.state_dict(), strict=True)
        log.info("initialised g from %s", Path(path).name)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        sd = net_state_dict(self.net("g"), state["g"], what=self.name)
        return Export("bicres", self.config.model, sd)
