"""BicRes: realsr's own compact model, bicubic plus a learned residual (the package default).

``BicResNet(config).upscale(lq)`` = bicubic(lq) + a correction from a plain stack of 3x3
convolutions at LR resolution with a pixel-shuffle tail; the zero-initialised tail makes an untrained
network exactly bicubic. Weights come from ``realsr train bicres`` (no paper, no official code).
"""

from realsr_cli.models.bicres.config import MAX_DEPTH, MAX_WIDTH, BicResConfig
from realsr_cli.models.bicres.convert import config_from_state_dict, convert_official_state_dict
from realsr_cli.models.bicres.net import BicResNet, upsample_base

__all__ = [
    "MAX_DEPTH",
    "MAX_WIDTH",
    "BicResConfig",
    "BicResNet",
    "config_from_state_dict",
    "convert_official_state_dict",
    "upsample_base",
]
