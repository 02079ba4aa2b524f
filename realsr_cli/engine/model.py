"""LoadedModel: a pure network bound to a device/dtype, with its architecture's run contract."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from realsr_cli.registry.archs import ArchSpec


@dataclass
class LoadedModel:
    """A ready-to-run model: ``model(lq) -> sr`` on the whole image (no tiling, no clamping).

    lq: (B,3,H,W) float32 in [0,1] on any device; returns (B,3,sH,sW) float32 on lq's device.
    """

    spec: ArchSpec
    config: Any
    net: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights_id: str | None = None
    weights_path: str | None = None
    weights_sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: one-line facts about this load for the user (e.g. which depth estimator SSR runs)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # size rules that depend on the config (e.g. RealSRT's patch side) refine the spec's
        if self.spec.tile_rules is not None:
            multiple, tile, overlap = self.spec.tile_rules(self.config)
            self.spec = replace(
                self.spec, tile_multiple=multiple, default_tile=tile, default_overlap=overlap
            )

    @property
    def arch(self) -> str:
        return self.spec.name

    @property
    def scale(self) -> int:
        return int(self.spec.scale_of(self.config))

    @torch.inference_mode()
    def __call__(
        self,
        lq: Tensor,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        noise: Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Run the whole image through the network at ``dtype`` (default: the model's)."""
        run_dtype = dtype or self.dtype
        src_device = lq.device
        x = lq.to(self.device, run_dtype)
        if self.spec.channels_last and self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if noise is not None:
            noise = noise.to(self.device, run_dtype)
        switched = run_dtype != self.dtype
        if switched:  # e.g. the fp32 redo of a half-precision tile that overflowed
            self.net.to(run_dtype)
        try:
            out = self.net.upscale(x, generator=generator, steps=steps, noise=noise)
        finally:
            if switched:
                self.net.to(self.dtype)
        return out.to(src_device, torch.float32)
