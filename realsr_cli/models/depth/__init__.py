"""Monocular depth estimation networks that SSR can use as its depth estimator (DE).

Depth Anything V2 (Yang et al., NeurIPS 2024): a DINOv2 ViT encoder and a DPT decoder predicting
relative inverse depth. :class:`DepthAnythingNet` loads the published Transformers checkpoints
(``depth-anything/Depth-Anything-V2-Small-hf``'s ``model.safetensors``) strictly, keys 1:1;
:class:`DepthAnythingEstimator` adapts it to SSR's contract ((B,3,H,W) in [0,1] -> (B,1,H,W) depth
in [0,1], 0 = near). Weights come from the registry (``realsr_cli.engine.depth``), never from here.
"""

from realsr_cli.models.depth.config import PRESETS, DepthAnythingConfig, DINOv2Config
from realsr_cli.models.depth.dinov2 import DINOv2Backbone, DINOv2Embeddings, DINOv2Layer
from realsr_cli.models.depth.dpt import DPTHead, DPTNeck
from realsr_cli.models.depth.net import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthAnythingEstimator,
    DepthAnythingNet,
    disparity_to_depth,
    dpt_input_size,
)

__all__ = [
    "DINOv2Backbone",
    "DINOv2Config",
    "DINOv2Embeddings",
    "DINOv2Layer",
    "DPTHead",
    "DPTNeck",
    "DepthAnythingConfig",
    "DepthAnythingEstimator",
    "DepthAnythingNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "disparity_to_depth",
    "dpt_input_size",
]
