"""Convolutional building blocks: norm/activation wrappers, pre-activation residual block, scale stages.

The wrappers keep the parameter one attribute deeper (``Norm2d.norm``, ``Activation.func``) because
the taming-transformers-style VQGAN code that FeMaSR (and several later VQ-prior SR methods) derive
from does so, and its checkpoint keys (``...conv.0.norm.weight``) are public API for us.

All blocks take and return (B,C,H,W) feature maps of any float dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.errors import ConfigError

__all__ = [
    "NORM_TYPES",
    "ACT_TYPES",
    "GROUPNORM_GROUPS",
    "Norm2d",
    "Activation",
    "ResBlock",
    "DownBlock",
    "UpBlock",
    "upsample2x_conv3x3",
]

#: group count of the ``"gn"`` normalisation (channel widths must be multiples of it)
GROUPNORM_GROUPS = 32


def _group_norm(channels: int) -> nn.Module:
    if channels % GROUPNORM_GROUPS:
        raise ConfigError(
            f"GroupNorm needs a channel count divisible by {GROUPNORM_GROUPS}, got {channels}"
        )
    return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=1e-6, affine=True)


#: :class:`Norm2d`'s normalisations: name -> module for a channel count
_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "gn": _group_norm,
    "bn": nn.BatchNorm2d,
    "in": lambda channels: nn.InstanceNorm2d(channels, affine=False),
    "none": lambda channels: nn.Identity(),
}
#: :class:`Activation`'s activations: name -> module for a channel count
_ACTS: dict[str, Callable[[int], nn.Module]] = {
    "silu": lambda channels: nn.SiLU(),
    "relu": lambda channels: nn.ReLU(),
    "leakyrelu": lambda channels: nn.LeakyReLU(0.2),
    "prelu": nn.PReLU,
    "gelu": lambda channels: nn.GELU(),
    "none": lambda channels: nn.Identity(),
}
#: normalisations understood by :class:`Norm2d`
NORM_TYPES = tuple(_NORMS)
#: activations understood by :class:`Activation`
ACT_TYPES = tuple(_ACTS)


def _by_name(
    table: Mapping[str, Callable[[int], nn.Module]], name: str, channels: int, what: str
) -> nn.Module:
    make = table.get(name)
    if make is None:
        raise ConfigError(f"unknown {what} {name!r}", hint=f"use one of {', '.join(table)}")
    return make(channels)


class Norm2d(nn.Module):
    """Feature-map normalisation selected by name.

    ``"gn"``: GroupNorm with 32 groups, eps 1e-6, affine (the VQGAN default); ``"bn"``: BatchNorm2d;
    ``"in"``: InstanceNorm2d without affine parameters; ``"none"``: identity.
    """

    def __init__(self, channels: int, norm_type: str = "gn") -> None:
        super().__init__()
        self.norm = _by_name(_NORMS, norm_type.lower(), channels, "norm type")

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


class Activation(nn.Module):
    """Point-wise activation selected by name (``"leakyrelu"`` has slope 0.2; ``"prelu"`` is per channel)."""

    def __init__(self, channels: int, act_type: str = "silu") -> None:
        super().__init__()
        self.func = _by_name(_ACTS, act_type.lower(), channels, "activation")

    def forward(self, x: Tensor) -> Tensor:
        return self.func(x)


class ResBlock(nn.Module):
    """Pre-activation residual block ``x + conv(act(norm(conv(act(norm(x))))))`` with 3x3 convs.

    This is the VQGAN/taming residual unit (Esser et al., CVPR 2021) used throughout FeMaSR's encoder
    and decoder. Keys: ``conv.{0,3}.norm.*`` (norms), ``conv.{2,5}.*`` (convs).
    (B,C,H,W) -> (B,C,H,W); the identity shortcut needs ``in_channels == out_channels``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm_type: str = "gn", act_type: str = "silu"
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ConfigError(
                f"ResBlock has an identity shortcut: {in_channels} != {out_channels} channels"
            )
        self.conv = nn.Sequential(
            Norm2d(in_channels, norm_type),
            Activation(in_channels, act_type),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            Norm2d(out_channels, norm_type),
            Activation(out_channels, act_type),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class DownBlock(nn.Sequential):
    """Halve the resolution: 3x3 stride-2 conv, then two :class:`ResBlock` (keys ``0``, ``1``, ``2``).

    (B,C_in,H,W) -> (B,C_out,ceil(H/2),ceil(W/2)).
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm_type: str = "gn", act_type: str = "silu"
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
            ResBlock(out_channels, out_channels, norm_type, act_type),
            ResBlock(out_channels, out_channels, norm_type, act_type),
        )


class UpBlock(nn.Sequential):
    """Double the resolution: nearest x2 upsampling, 3x3 conv, two :class:`ResBlock`.

    Keys ``1`` (conv), ``2`` and ``3`` (residual blocks); index ``0`` is the parameter-free upsampler.
    (B,C_in,H,W) -> (B,C_out,2H,2W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm_type: str = "gn", act_type: str = "silu"
    ) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            ResBlock(out_channels, out_channels, norm_type, act_type),
            ResBlock(out_channels, out_channels, norm_type, act_type),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Inference (no autograd, not tracing) runs the upsampling and the first conv as one
        phase-decomposed conv (:func:`upsample2x_conv3x3`): 2.25x fewer multiply-adds, equal to
        the plain path within float rounding. Training and export run the plain layers."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return super().forward(x)
        return self[3](self[2](upsample2x_conv3x3(x, self[1])))


#: phase (0 = even, 1 = odd output row/column) -> the 3x3 kernel taps that land on LR row/column
#: i-1+phase and i+phase (2 taps) after nearest x2 upsampling
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def upsample2x_conv3x3(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(interpolate(x, scale_factor=2, mode="nearest"))`` for a 3x3, stride-1, padding-1 conv,
    without building the upsampled input.

    After nearest x2 upsampling, output pixel (2i+a, 2j+b) of the 3x3 conv only sees LR rows
    i-1+a..i+a and columns j-1+b..j+b, with the kernel taps summed per LR pixel: four 2x2 kernels
    (one per phase a, b) applied to the LR input padded by one, as one conv with 4 x C_out
    outputs, then interleaved. Same zero padding as the plain path at the borders.
    (B,C_in,H,W) -> (B,C_out,2H,2W), in ``x``'s memory format.
    """
    w, bias = conv.weight.float(), conv.bias  # tap sums in fp32, then one rounding to x's dtype
    kernels = []
    for rows in _PHASE_TAPS:
        for cols in _PHASE_TAPS:
            k = torch.stack([torch.stack([w[:, :, list(r)][:, :, :, list(c)].sum((2, 3)) for c in cols], -1) for r in rows], -2)
            kernels.append(k)
    weight = torch.cat(kernels, 0).to(conv.weight.dtype)  # (4 C_out, C_in, 2, 2), phase-major
    x = x.to(conv.weight.dtype)  # a mixed-precision net casts at module inputs (engine/model.py)
    b, _, h, wd = x.shape
    c_out = w.shape[0]
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, None if bias is None else bias.repeat(4))  # (B,4C_out,H+1,W+1)
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    out = torch.empty((b, c_out, 2 * h, 2 * wd), dtype=y.dtype, device=y.device, memory_format=fmt)
    # write each phase through a view where it is a plain slice: (B,C,H,2,W,2) or, for NHWC
    # memory, (B,H,2,W,2,C)
    grid = out.permute(0, 2, 3, 1).view(b, h, 2, wd, 2, c_out) if nhwc else out.view(b, c_out, h, 2, wd, 2)
    for p, (a, bb) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        phase = y[:, p * c_out : (p + 1) * c_out, a : a + h, bb : bb + wd]
        if nhwc:
            grid[:, :, a, :, bb, :] = phase.permute(0, 2, 3, 1)
        else:
            grid[:, :, :, a, :, bb] = phase
    return out
