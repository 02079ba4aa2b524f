"""LoadedModel: a pure network bound to a device/dtype, with its architecture's run contract."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from realsr_cli.registry.archs import ArchSpec
from realsr_cli.registry.capabilities import DecidingParts, has

_HALF = (torch.float16, torch.bfloat16)


def _cast_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Forward pre-hook: floating tensor inputs -> the dtype of the module's own parameters."""
    dtype = next(module.parameters(recurse=False)).dtype
    if not any(isinstance(a, Tensor) and a.is_floating_point() and a.dtype != dtype for a in args):
        return None
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def set_dtype(net: nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> None:
    """Move ``net`` to ``dtype`` (and ``device``, in the same per-tensor copy); in fp16/bf16 a
    network with :class:`DecidingParts` keeps those parts in fp32, so half precision never changes
    a discrete choice (FeMaSR's code indices).

    Mixed networks get a pre-hook on every module that owns parameters, casting its floating
    inputs to its parameters' dtype (added once, at the first half-precision move; they read the
    dtype at each call, so the fp32 redo of a tile and the way back need nothing else). An fp32
    network gets none.
    """
    if dtype not in _HALF or not has(net, DecidingParts):
        net.to(device=device, dtype=dtype)  # one dtype throughout (earlier hooks stay harmless)
        return
    keep = {id(m) for part in net.fp32_parts() for m in part.modules()}
    for module in net.modules():  # never round the deciding parts through half precision
        to = {"device": device} if id(module) in keep else {"device": device, "dtype": dtype}
        for param in module.parameters(recurse=False):
            param.data = param.data.to(**to)
        for name, buf in module.named_buffers(recurse=False):
            setattr(module, name, buf.to(**to) if buf.is_floating_point() else buf.to(device=device))
    if not getattr(net, "_realsr_cast_hooks", False):
        for module in net.modules():
            if next(module.parameters(recurse=False), None) is not None:
                module.register_forward_pre_hook(_cast_inputs)
        net._realsr_cast_hooks = True  # type: ignore[assignment]


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
    def channels_last(self) -> bool:
        """Weights and activations channels-last: CPU half precision only. In fp32, oneDNN's
        channels-last convolutions sum in a thread-count-dependent order (last-bit differences
        between 1 and 2 threads), while NCHW gives the same bits on any thread count — which
        ``--precision fp32``'s exactness (and torchrun shards equal to one process) relies on."""
        return self.spec.channels_last and self.device.type == "cpu" and self.dtype in _HALF

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
        # a network with fp32 deciding parts takes fp32 input (its modules cast what they need)
        x = lq.to(self.device, torch.float32 if has(self.net, DecidingParts) else run_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if noise is not None:
            noise = noise.to(self.device, run_dtype)
        switched = run_dtype != self.dtype
        if switched:  # e.g. the fp32 redo of a half-precision tile that overflowed
            set_dtype(self.net, run_dtype)
        try:
            out = self.net.upscale(x, generator=generator, steps=steps, noise=noise)
        finally:
            if switched:
                set_dtype(self.net, self.dtype)
        return out.to(src_device, torch.float32)
