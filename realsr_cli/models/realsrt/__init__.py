"""RealSRT (Peng et al., "Confidence-Based Iterative Generation for Real-World Image
Super-Resolution", ECCV 2024): config, network, official-checkpoint conversion.

``RealSRTNet(config).upscale(lq)`` reproduces the official per-patch processing of
``inference_realsrt.py`` (``forward_with_ccm`` + AdaIN colour correction) on 64 x 64 LR patches;
the engine tiles whole images (tile 64, overlap 32, Gaussian variance 0.05 -> ``REALSRT_SIGMA``,
margin 0). State-dict keys are the official ones after :func:`convert_official_state_dict`.
"""

from realsr_cli.models.realsrt.config import (
    CCMConfig,
    RealSRTConfig,
    TransformerConfig,
    VQGANConfig,
    reduced_config,
)
from realsr_cli.models.realsrt.convert import (
    TRAINING_ONLY_SUFFIXES,
    config_from_state_dict,
    convert_official_state_dict,
)
from realsr_cli.models.realsrt.net import DecodeStep, RealSRTNet, adain_color_correction

__all__ = [
    "CCMConfig",
    "DecodeStep",
    "RealSRTConfig",
    "RealSRTNet",
    "TRAINING_ONLY_SUFFIXES",
    "TransformerConfig",
    "VQGANConfig",
    "adain_color_correction",
    "config_from_state_dict",
    "convert_official_state_dict",
    "reduced_config",
]
