"""The architecture table: a literal dict, no decorators, no folder scanning (STYLE §3).

Each entry says how to build the pure model from its frozen config, how to infer that config from a
state_dict's shapes (so official checkpoints convert with only ``--arch``), how to map official keys
to ours, and what the engine must respect when it runs the model (size rule, tiling, precision).

Contract every model class satisfies (the engine relies on nothing else):
  ``net.upscale(lq, *, generator=None, steps=None, noise=None) -> sr``
  lq: (B,3,H,W) float in [0,1]; sr: (B,3,sH,sW) float, NOT clamped. ``upscale`` applies the method's
  official pre/post-processing (e.g. FeMaSR's mirrored pad + crop) so any H, W >= min_size works.
  Deterministic methods ignore generator/steps/noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from realsr_cli.errors import UnknownModelError

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    title: str
    paper: str
    config_cls: type
    build: Callable[[Any], nn.Module]
    #: infer the config from a state dict already in our key layout (+ the scale when ambiguous)
    infer_config: Callable[[StateDict, int | None], Any]
    #: official keys -> ours: drop training-only keys, rename; returns a new dict
    convert_official: Callable[[StateDict], StateDict]
    #: scale of a config
    scale_of: Callable[[Any], int]
    #: LR-side size rule: the engine feeds tiles whose sides are multiples of this (after the
    #: model's own padding it can run any size, but tiles on this grid avoid wasted padding)
    tile_multiple: int = 1
    #: smallest LR side the model accepts
    min_size: int = 1
    #: can the image be cut into tiles and blended? (False: global models)
    tileable: bool = True
    #: default LR tile side for --tile auto upper bound and the tile overlap (LR pixels)
    default_tile: int = 256
    default_overlap: int = 16
    #: may run in fp16/bf16 on CUDA
    half_ok: bool = True
    #: output depends on random noise (seed/steps matter)
    stochastic: bool = False
    #: number of official checkpoint files convert_checkpoint expects (UPSR: denoiser + g)
    official_files: int = 1


def _femasr() -> ArchSpec:
    from realsr_cli.models import femasr

    return ArchSpec(
        name="femasr",
        title="FeMaSR",
        paper="Chen et al., Real-World Blind Super-Resolution via Feature Matching with Implicit "
        "High-Resolution Priors, ACM MM 2022",
        config_cls=femasr.FeMaSRConfig,
        build=femasr.FeMaSRNet,
        infer_config=femasr.config_from_state_dict,
        convert_official=femasr.convert_official_state_dict,
        scale_of=lambda cfg: cfg.scale,
        tile_multiple=8,
        min_size=1,
        default_tile=192,
        default_overlap=16,
        half_ok=True,
    )


# Literal table of architecture name -> factory (imports stay lazy so `realsr models list` is fast).
ARCHITECTURES: dict[str, Callable[[], ArchSpec]] = {
    "femasr": _femasr,
}


def get_arch(name: str) -> ArchSpec:
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}",
            hint=f"known architectures: {', '.join(sorted(ARCHITECTURES))}",
        ) from None
    return factory()
