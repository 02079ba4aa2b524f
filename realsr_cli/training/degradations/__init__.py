"""Synthetic degradations: HR images -> realistic LR images for training and ``realsr degrade``.

Operators (``ops``) and kernels (``kernels``) are small, seeded and device-agnostic: tensors
(B,C,H,W) float in [0,1] on any device, randomness only from an explicit CPU
:class:`torch.Generator`, so a seed reproduces on every device. Two published pipelines:

* ``"realesrgan"`` — :class:`RealESRGANDegradation`, Wang et al. 2021 (second-order model)
* ``"bsrgan"`` — :class:`BSRGANDegradation`, Zhang et al. 2021 (shuffled model)

and three of realsr's own (``simple.py``): ``"bicubic"`` (the classic benchmark LR: antialiased
bicubic down), ``"mild"`` (slight blur, light noise, JPEG 70-95) and ``"mix"`` (per image one of
bicubic / mild / realesrgan: the default model's training mix).

``PIPELINES`` is a literal name -> class table (STYLE §3); each class has a ``config_cls`` (a frozen
dataclass with the published defaults) and is called as ``pipeline(hr, generator) -> lq``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from realsr_cli.errors import UsageError
from realsr_cli.training.degradations.bsrgan import BSRGANConfig, BSRGANDegradation
from realsr_cli.training.degradations.kernels import KernelSettings
from realsr_cli.training.degradations.realesrgan import RealESRGANConfig, RealESRGANDegradation
from realsr_cli.training.degradations.simple import (
    BicubicConfig,
    BicubicDegradation,
    MildConfig,
    MildDegradation,
    MixConfig,
    MixDegradation,
)

__all__ = [
    "PIPELINES",
    "BicubicConfig",
    "BicubicDegradation",
    "MildConfig",
    "MildDegradation",
    "MixConfig",
    "MixDegradation",
    "BSRGANConfig",
    "BSRGANDegradation",
    "KernelSettings",
    "RealESRGANConfig",
    "RealESRGANDegradation",
    "build_pipeline",
    "degrade",
]

Degradation = (
    RealESRGANDegradation | BSRGANDegradation | BicubicDegradation | MildDegradation | MixDegradation
)

#: pipeline name -> pipeline class (``cls.config_cls`` holds its published defaults)
PIPELINES: dict[str, type[Degradation]] = {
    "realesrgan": RealESRGANDegradation,
    "bsrgan": BSRGANDegradation,
    "bicubic": BicubicDegradation,
    "mild": MildDegradation,
    "mix": MixDegradation,
}


def build_pipeline(name: str, scale: int = 4) -> Degradation:
    """The pipeline ``name`` with its published defaults at ``scale``."""
    try:
        cls = PIPELINES[name]
    except KeyError:
        raise UsageError(
            f"unknown degradation pipeline {name!r}",
            hint=f"use one of: {', '.join(PIPELINES)}",
        ) from None
    return cls(cls.config_cls(scale=scale))  # type: ignore[arg-type]


def degrade(hr: Tensor, pipeline: str, scale: int, generator: torch.Generator) -> Tensor:
    """Degrade ``hr`` (B,3,H,W) float in [0,1] into ``lq`` (B,3,H//scale,W//scale) in [0,1].

    ``pipeline`` is a key of :data:`PIPELINES`; ``generator`` a CPU generator (e.g.
    ``engine.device.make_generator(seed)``): the same seed gives the same ``lq`` on every device.
    """
    return build_pipeline(pipeline, scale)(hr, generator)
