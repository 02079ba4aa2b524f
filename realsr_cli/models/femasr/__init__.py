"""FeMaSR (Chen et al., "Real-World Blind Super-Resolution via Feature Matching with Implicit
High-Resolution Priors", ACM MM 2022): config, network, official-checkpoint conversion.

``FeMaSRNet(config).upscale(lq)`` reproduces the official ``FeMaSRNet.test()``; state-dict keys
are the official ones after :func:`convert_official_state_dict`.
"""

from realsr_cli.models.femasr.config import FeMaSRConfig
from realsr_cli.models.femasr.convert import (
    TRAINING_ONLY_PREFIXES,
    config_from_state_dict,
    convert_official_state_dict,
)
from realsr_cli.models.femasr.net import PRIOR_PREFIXES, FeMaSRNet, FeMaSROutput

__all__ = [
    "FeMaSRConfig",
    "FeMaSRNet",
    "FeMaSROutput",
    "PRIOR_PREFIXES",
    "TRAINING_ONLY_PREFIXES",
    "config_from_state_dict",
    "convert_official_state_dict",
]
