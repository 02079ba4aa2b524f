"""Depth Anything as a pure network, and its adapter to SSR's depth-estimator contract.

:class:`DepthAnythingNet` is the published network (DINOv2 backbone + DPT neck and head) with the
published Transformers state-dict keys (``backbone.*``, ``neck.*``, ``head.*``), so a
``model.safetensors`` from the hub loads into it with ``strict=True`` and no key conversion.

:class:`DepthAnythingEstimator` wraps it for SSR (the DE of SSR Algorithm 1)::

    (B,3,H,W) float in [0,1]  ->  (B,1,H,W) relative depth in [0,1], 0 = near, 1 = far

1. **Resize** like the published pipeline (Transformers' DPT image processor with
   ``keep_aspect_ratio`` and ``ensure_multiple_of = 14``): scale both sides by whichever of
   ``input_size / H`` and ``input_size / W`` is closer to 1 (so small images grow until the
   *longer* side reaches ``input_size``, large ones shrink until the *shorter* side does), then
   round each side to a multiple of the patch size (at least one patch) — :func:`dpt_input_size`.
   PIL-style bicubic (torch's ``antialias=True`` kernel), on the image clamped to [0,1] (the
   published pipeline resizes the 8-bit image with PIL; ours skips the 8-bit rounding).
   ``input_size`` 518 is the published setting; smaller values (e.g. 266 or 364) trade detail for
   speed, roughly quadratically.
2. **Normalise** with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
3. **Predict** relative inverse depth (disparity, larger = nearer, unknown scale and shift) and
   resize it bilinearly back to (H, W).
4. **Convert** per image to SSR's depth convention (the one the synthetic training data uses:
   ``training/degradations/spatial.py``, depth 0 at the near plane, 1 at the far plane)::

       depth = (max(disp) - disp) / (max(disp) - min(disp))       (0.5 where disp is constant)

   The order of depths is exact; the spacing is that of disparity, an affine-invariant quantity,
   because an inverse of disparity would need the unknown shift. Far regions are therefore
   compressed towards 1, as with any relative-disparity model. Each call normalises on its own
   input, so with tiled inference each tile is normalised separately (and then blended).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.depth.config import DepthAnythingConfig
from realsr_cli.models.depth.dinov2 import DINOv2Backbone
from realsr_cli.models.depth.dpt import DPTHead, DPTNeck

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DepthAnythingEstimator",
    "DepthAnythingNet",
    "disparity_to_depth",
    "dpt_input_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the published inference resolution of Depth Anything (37 patches of 14 pixels)
DEFAULT_INPUT_SIZE = 518


class DepthAnythingNet(nn.Module):
    """``net(x) -> depth``: x (B,3,H,W) ImageNet-normalised, H and W multiples of the patch size
    (other sizes are cut down to them) -> (B,H,W) float: relative disparity >= 0 (``depth_type``
    "relative") or metric depth in [0, max_depth] ("metric")."""

    def __init__(self, config: DepthAnythingConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DepthAnythingConfig()
        self.backbone = DINOv2Backbone(cfg.backbone)
        self.neck = DPTNeck(cfg)
        self.head = DPTHead(cfg)

    def forward(self, x: Tensor) -> Tensor:
        p = self.config.backbone.patch_size
        gh, gw = x.shape[-2] // p, x.shape[-1] // p
        if gh < 1 or gw < 1:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than one {p}x{p} patch")
        states = self.backbone(x, self.config.out_indices)
        return self.head(self.neck(states, gh, gw), gh, gw)


def dpt_input_size(height: int, width: int, size: int = DEFAULT_INPUT_SIZE, multiple: int = 14) -> tuple[int, int]:
    """The network input size for an HxW image (module docstring, step 1): aspect kept, the
    scale closest to 1 of ``size/H`` and ``size/W``, each side rounded to a multiple of
    ``multiple`` (Python's round-half-even, as the published pipeline), at least ``multiple``."""
    if min(height, width, size, multiple) < 1:
        raise ValueError("sizes must be positive")
    scale_h, scale_w = size / height, size / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h

    def snap(value: float) -> int:
        return max(multiple, round(value / multiple) * multiple)

    return snap(scale * height), snap(scale * width)


def disparity_to_depth(disparity: Tensor) -> Tensor:
    """(B,1,H,W) relative disparity -> (B,1,H,W) depth in [0,1], 0 = nearest, 1 = farthest,
    normalised per image; a constant map becomes 0.5 (module docstring, step 4)."""
    hi = disparity.amax(dim=(1, 2, 3), keepdim=True)
    lo = disparity.amin(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    flat = span <= 1e-8 * hi.abs().clamp(min=1.0)
    depth = (hi - disparity) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.full_like(depth, 0.5), depth.clamp(0.0, 1.0))


class DepthAnythingEstimator(nn.Module):
    """SSR's depth estimator backed by :class:`DepthAnythingNet` (module docstring).

    ``estimator(img)``: (B,3,H,W) float in [0,1] (clamped) -> (B,1,H,W) depth in [0,1], same
    dtype and device. ``input_size``: the resize target of step 1 (518 published). ``label`` and
    ``sha256``: how run manifests name this estimator and its weights file (``manifest_label``,
    ``manifest_sha256``), e.g. its weights id. The wrapped network is ``self.net`` (state-dict
    keys ``net.backbone.*`` ...).
    """

    def __init__(
        self,
        net: DepthAnythingNet,
        *,
        input_size: int = DEFAULT_INPUT_SIZE,
        label: str = "depth-anything",
        sha256: str = "",
    ) -> None:
        super().__init__()
        if net.config.depth_type != "relative":
            raise ValueError("SSR's depth estimator expects a relative-depth (disparity) model")
        self.net = net
        self.input_size = int(input_size)
        self.manifest_label = label
        self.manifest_sha256 = sha256
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def network_input(self, img: Tensor) -> Tensor:
        """Steps 1-2: (B,3,H,W) in [0,1] -> resized, ImageNet-normalised (B,3,h,w)."""
        p = self.net.config.backbone.patch_size
        size = dpt_input_size(img.shape[-2], img.shape[-1], self.input_size, p)
        x = img.clamp(0.0, 1.0)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        disparity = self.net(self.network_input(img)).unsqueeze(1)
        if tuple(disparity.shape[-2:]) != (h, w):
            disparity = F.interpolate(disparity, size=(h, w), mode="bilinear", align_corners=False)
        return disparity_to_depth(disparity)

    def extra_repr(self) -> str:
        return f"label={self.manifest_label!r}, input_size={self.input_size}"
