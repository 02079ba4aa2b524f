"""SSR ("Adaptive Multi-modal Fusion of Spatially Variant Kernel Refinement with Diffusion Model
for Blind Image Super-Resolution"): SVKR (depth + per-pixel kernels) and an AMF-conditioned
eps-prediction diffusion model, x4.

No official code or weights exist: networks are trained with ``realsr train`` and exported as
realsr safetensors. ``SSRNet(config).upscale(lq, generator=..., steps=...)`` samples with DDIM;
``SSRNet.auxiliary(lq)`` returns the depth map and kernels it conditions on.
"""

from realsr_cli.models.ssr.amf import AMF, MODALITIES, AMFBlock, ModalityEncoder, ModalityFeatures
from realsr_cli.models.ssr.config import (
    DepthHeadConfig,
    DKENetConfig,
    NBSRConfig,
    SSRConfig,
    SSRDenoiserConfig,
    SSRScheduleConfig,
)
from realsr_cli.models.ssr.convert import config_from_state_dict, convert_official_state_dict
from realsr_cli.models.ssr.denoiser import SSRDenoiser
from realsr_cli.models.ssr.depth import DepthHead
from realsr_cli.models.ssr.dkenet import DABlock, DKENet, MAConv, SFTLayer
from realsr_cli.models.ssr.nbsr import NBSR, RRDB
from realsr_cli.models.ssr.net import (
    SSRCondition,
    SSRNet,
    kernel_variance,
    pad_to_multiple,
)
from realsr_cli.models.ssr.svkr import SVKRResult, blend_kernels, svkr

__all__ = [
    "AMF",
    "AMFBlock",
    "DABlock",
    "DKENet",
    "DKENetConfig",
    "DepthHead",
    "DepthHeadConfig",
    "MAConv",
    "MODALITIES",
    "ModalityEncoder",
    "ModalityFeatures",
    "NBSR",
    "NBSRConfig",
    "RRDB",
    "SFTLayer",
    "SSRCondition",
    "SSRConfig",
    "SSRDenoiser",
    "SSRDenoiserConfig",
    "SSRNet",
    "SSRScheduleConfig",
    "SVKRResult",
    "blend_kernels",
    "config_from_state_dict",
    "convert_official_state_dict",
    "kernel_variance",
    "pad_to_multiple",
    "svkr",
]
