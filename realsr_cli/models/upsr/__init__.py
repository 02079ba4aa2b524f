"""UPSR: Uncertainty-guided Perturbation for image Super-Resolution diffusion (Zhang et al., CVPR 2025).

- ``config``: frozen ``UPSRConfig`` (+ ``UPSRDenoiserConfig``, ``ATDConfig``, ``UPSRDiffusionConfig``)
- ``swin``: the denoiser's GroupNorm Swin layers (with the official row-only shifted-window mask)
- ``unet``: ``SwinUNet``, the pixel-space denoiser f(x_t, t, y, g(y))
- ``atd``: ``ATD``, the auxiliary SR network g
- ``net``: ``UPSRNet`` (the sampler) and the official-checkpoint helpers

State-dict layout: ``denoiser.<official upsr.pth key>`` + ``aux.<official atd_real.pth key>``.
"""

from realsr_cli.models.upsr.atd import ATD
from realsr_cli.models.upsr.config import (
    ATDConfig,
    UPSRConfig,
    UPSRDenoiserConfig,
    UPSRDiffusionConfig,
    reduced_config,
)
from realsr_cli.models.upsr.convert import (
    config_from_state_dict,
    convert_official_state_dict,
    merge_official,
)
from realsr_cli.models.upsr.net import (
    AUX_PREFIX,
    DENOISER_PREFIX,
    UPSRCondition,
    UPSRNet,
)
from realsr_cli.models.upsr.unet import SwinUNet

__all__ = [
    "ATD",
    "ATDConfig",
    "AUX_PREFIX",
    "DENOISER_PREFIX",
    "SwinUNet",
    "UPSRCondition",
    "UPSRConfig",
    "UPSRDenoiserConfig",
    "UPSRDiffusionConfig",
    "UPSRNet",
    "config_from_state_dict",
    "convert_official_state_dict",
    "merge_official",
    "reduced_config",
]
