"""Training stages by CLI name: a literal table of lazy factories (STYLE §3, no registration).

Each factory imports its module only when called, so listing stages costs nothing. A stage class
follows :class:`realsr_cli.training.stage.Stage`; its ``config_cls`` is the frozen dataclass its
TOML (``realsr_cli/configs/<stage>[-tiny].toml``) loads into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from realsr_cli.errors import UsageError

if TYPE_CHECKING:
    from realsr_cli.training.stage import Stage

__all__ = ["STAGES", "get_stage"]


def _femasr_hrp() -> type[Stage]:
    from realsr_cli.training.stages.femasr import FeMaSRHRPStage

    return FeMaSRHRPStage


def _femasr() -> type[Stage]:
    from realsr_cli.training.stages.femasr import FeMaSRStage

    return FeMaSRStage


def _upsr_g() -> type[Stage]:
    from realsr_cli.training.stages.upsr import UPSRGStage

    return UPSRGStage


def _upsr() -> type[Stage]:
    from realsr_cli.training.stages.upsr import UPSRStage

    return UPSRStage


def _ugtsr_uncertainty() -> type[Stage]:
    from realsr_cli.training.stages.ugtsr import UGTSRUncertaintyStage

    return UGTSRUncertaintyStage


def _ugtsr() -> type[Stage]:
    from realsr_cli.training.stages.ugtsr import UGTSRStage

    return UGTSRStage


def _realsrt_vqgan() -> type[Stage]:
    from realsr_cli.training.stages.realsrt.vqgan import RealSRTVQGANStage

    return RealSRTVQGANStage


def _realsrt_generator() -> type[Stage]:
    from realsr_cli.training.stages.realsrt.generator import RealSRTGeneratorStage

    return RealSRTGeneratorStage


def _realsrt_critic() -> type[Stage]:
    from realsr_cli.training.stages.realsrt.critic import RealSRTCriticStage

    return RealSRTCriticStage


def _realsrt_ccm() -> type[Stage]:
    from realsr_cli.training.stages.realsrt.ccm import RealSRTCCMStage

    return RealSRTCCMStage


def _ssr_kernel() -> type[Stage]:
    from realsr_cli.training.stages.ssr import SSRKernelStage

    return SSRKernelStage


def _ssr_nbsr() -> type[Stage]:
    from realsr_cli.training.stages.ssr import SSRNBSRStage

    return SSRNBSRStage


def _ssr() -> type[Stage]:
    from realsr_cli.training.stages.ssr import SSRStage

    return SSRStage


def _bicres() -> type[Stage]:
    from realsr_cli.training.stages.bicres import BicResStage

    return BicResStage


#: stage name -> factory returning the Stage class
STAGES: dict[str, Callable[[], type[Stage]]] = {
    "femasr-hrp": _femasr_hrp,
    "femasr": _femasr,
    "ugtsr-uncertainty": _ugtsr_uncertainty,
    "ugtsr": _ugtsr,
    "upsr-g": _upsr_g,
    "upsr": _upsr,
    "realsrt-vqgan": _realsrt_vqgan,
    "realsrt-generator": _realsrt_generator,
    "realsrt-critic": _realsrt_critic,
    "realsrt-ccm": _realsrt_ccm,
    "ssr-kernel": _ssr_kernel,
    "ssr-nbsr": _ssr_nbsr,
    "ssr": _ssr,
    "bicres": _bicres,
}


def get_stage(name: str) -> type[Stage]:
    """The Stage class called ``name``; :class:`UsageError` listing the known ones otherwise."""
    try:
        factory = STAGES[name]
    except KeyError:
        raise UsageError(
            f"unknown training stage {name!r}",
            hint=f"known stages: {', '.join(sorted(STAGES))} (see `realsr train stages`)",
        ) from None
    return factory()
