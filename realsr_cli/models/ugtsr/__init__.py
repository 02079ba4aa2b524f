"""UGTSR ("Incorporating Uncertainty-Guided and Top-k Codebook Matching for Real-World Blind Image
Super-Resolution"): FeMaSR plus top-k fusion matching, Align-Attention and an uncertainty head.

No official code or weights exist: networks are trained with ``realsr train`` (stage I
:meth:`UGTSRConfig.stage1`, stage II :meth:`UGTSRConfig.stage2`) and exported as realsr
safetensors. ``UGTSRNet(config).upscale(lq)`` runs FeMaSR's inference path (mirror pad, crop).
"""

from realsr_cli.models.ugtsr.align import AlignAttention
from realsr_cli.models.ugtsr.config import UNCERTAINTY_CHANNELS, UGTSRConfig
from realsr_cli.models.ugtsr.convert import config_from_state_dict, convert_official_state_dict
from realsr_cli.models.ugtsr.fusion import MDTA, TopKFusion
from realsr_cli.models.ugtsr.net import (
    PRIOR_PREFIXES,
    UGTSR_PREFIXES,
    TopKMatch,
    UGTSRNet,
    UGTSROutput,
    UncertaintyHead,
)

__all__ = [
    "AlignAttention",
    "MDTA",
    "PRIOR_PREFIXES",
    "TopKFusion",
    "TopKMatch",
    "UGTSRConfig",
    "UGTSRNet",
    "UGTSROutput",
    "UGTSR_PREFIXES",
    "UNCERTAINTY_CHANNELS",
    "UncertaintyHead",
    "config_from_state_dict",
    "convert_official_state_dict",
]
