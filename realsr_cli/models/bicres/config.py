"""BicResConfig: realsr's own compact model, bicubic upsampling plus a learned LR-side residual.

There is no paper: the design follows the compact real-world SR networks (a plain stack of 3x3
convolutions at LR resolution with a pixel-shuffle tail, as Real-ESRGAN's SRVGGNetCompact and
ESPCN/FSRCNN before it), with one change that decides how it behaves with little training: the
network predicts a *correction* added to a fixed bicubic upsampling of the input, and the last
convolution is zero-initialised, so an untrained network *is* bicubic and training only moves it
where the data says so. See docs/models.md ("BicRes: the default model").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from realsr_cli.errors import ConfigError

__all__ = ["BicResConfig", "MAX_DEPTH", "MAX_WIDTH"]

#: bounds a config must respect (a metadata header cannot ask for an absurd network)
MAX_WIDTH = 512
MAX_DEPTH = 64


@dataclass(frozen=True)
class BicResConfig:
    """Architecture of a :class:`~realsr_cli.models.bicres.BicResNet`.

    Fields:
        scale: upscaling factor (2, 3 or 4; any integer >= 1 works).
        width: feature channels of every body convolution (LR resolution).
        depth: 3x3 convolutions between the head (3 -> width) and the tail (width -> 3*scale^2).
        act: activation after the head and each body convolution: ``prelu`` (one slope per
            channel, SRVGGNetCompact's choice), ``lrelu`` (slope 0.1) or ``relu``.
        base: the fixed upsampling the residual corrects: ``bicubic`` (PyTorch/OpenCV cubic
            convolution, a = -0.75, edge pixels replicated) or ``nearest``.
    """

    scale: int = 4
    width: int = 48
    depth: int = 8
    act: Literal["prelu", "lrelu", "relu"] = "prelu"
    base: Literal["bicubic", "nearest"] = "bicubic"

    def __post_init__(self) -> None:
        for name, value, top in (("scale", self.scale, 8), ("width", self.width, MAX_WIDTH),
                                 ("depth", self.depth, MAX_DEPTH)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ConfigError(f"bicres: {name} must be an integer in [1, {top}], got {value!r}")
        if self.act not in ("prelu", "lrelu", "relu"):
            raise ConfigError(f"bicres: act must be prelu, lrelu or relu, got {self.act!r}")
        if self.base not in ("bicubic", "nearest"):
            raise ConfigError(f"bicres: base must be bicubic or nearest, got {self.base!r}")

    @property
    def receptive_radius(self) -> int:
        """LR pixels on each side of its own LR pixel that one output pixel depends on: one per
        3x3 convolution (head, body, tail); the cubic base reaches 2, always less."""
        return self.depth + 2
