"""VGG-16/19 feature extractors (Simonyan & Zisserman, ICLR 2015, configurations D and E).

Built here as a plain ``nn.Sequential`` named ``features`` whose indices are torchvision's
(``features.0`` = conv1_1, ``features.1`` = relu1_1, ``features.4`` = pool1, ...), so the state-dict
keys of torchvision's published ImageNet checkpoints (``vgg16-397923af.pth``,
``vgg19-dcbb9e9d.pth``) load 1:1 (STYLE §2) through :meth:`VGGFeatureExtractor.load_torchvision_state_dict`.
torchvision itself is not a dependency.

The network is cut after the deepest requested layer. Layer names follow the paper: ``conv{b}_{i}``
is the output of a convolution *before* its ReLU (ESRGAN/Real-ESRGAN use pre-activation features),
``relu{b}_{i}`` after it, ``pool{b}`` after each max-pool. ReLUs are not in-place so a returned
pre-activation feature is never overwritten. Parameters are frozen (``requires_grad=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from realsr_cli.errors import UsageError, WeightsError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VGG_CONFIGS", "VGGFeatureExtractor", "vgg_layer_names"]

#: ImageNet statistics torchvision's VGG checkpoints were trained with (RGB, inputs in [0,1])
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: convolutions per block (widths 64, 128, 256, 512, 512), each block ends with a 2x2 max-pool
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_WIDTHS = (64, 128, 256, 512, 512)


def _arch(arch: str) -> tuple[int, ...]:
    try:
        return VGG_CONFIGS[arch]
    except KeyError:
        raise UsageError(
            f"unknown VGG {arch!r}", hint=f"use one of {', '.join(VGG_CONFIGS)}"
        ) from None


def vgg_layer_names(arch: str) -> tuple[str, ...]:
    """Names of ``features[i]`` for every index i, e.g. ``("conv1_1", "relu1_1", ...)``."""
    names: list[str] = []
    for block, convs in enumerate(_arch(arch), start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


def _build_layers(arch: str, base_width: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    in_ch = 3
    for convs, width in zip(_arch(arch), _WIDTHS, strict=True):
        out_ch = width * base_width // 64
        for _ in range(convs):
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG features: (B,3,H,W) in [0,1] -> ``{layer name: (B,C_l,H_l,W_l)}``.

    ``base_width`` 64 is the real network; smaller widths give tiny random nets for tests (they
    cannot load the published weights). ``use_input_norm`` applies ImageNet mean/std;
    ``range_norm`` first maps inputs from [-1,1] to [0,1]. ``pretrained`` is True only after
    :meth:`load_torchvision_state_dict` succeeded.
    """

    def __init__(
        self,
        arch: str = "vgg19",
        layers: Sequence[str] = ("conv5_4",),
        *,
        base_width: int = 64,
        use_input_norm: bool = True,
        range_norm: bool = False,
    ) -> None:
        super().__init__()
        names = vgg_layer_names(arch)
        unknown = [name for name in layers if name not in names]
        if not layers or unknown:
            raise UsageError(
                f"unknown {arch} layer(s) {unknown or '(none given)'}",
                hint="use names like conv1_2, relu3_4, pool5 (conv = before the ReLU)",
            )
        if base_width < 1 or base_width > 64 or 64 % base_width:
            raise UsageError(f"base_width must divide 64, got {base_width}")
        self.arch = arch
        self.layers = tuple(layers)
        self.base_width = base_width
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self._index = {name: names.index(name) for name in self.layers}
        last = max(self._index.values())
        self.features = nn.Sequential(*_build_layers(arch, base_width)[: last + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = False
        self.requires_grad_(False)
        self.eval()

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load torchvision's VGG checkpoint keys ``features.N.weight/bias`` (strict on ours).

        ``classifier.*`` and features past the cut are ignored; any other key, a missing key or a
        shape mismatch is a :class:`WeightsError`. Marks the extractor ``pretrained``.
        """
        own = self.features.state_dict()
        stray = [k for k in state_dict if not k.startswith(("features.", "classifier."))]
        missing = [f"features.{k}" for k in own if f"features.{k}" not in state_dict]
        if stray or missing:
            raise WeightsError(
                f"not a torchvision {self.arch} state dict: "
                f"{len(missing)} missing key(s) {missing[:3]}, {len(stray)} unexpected {stray[:3]}",
                hint=f"load torchvision's ImageNet {self.arch} checkpoint (keys features.N.weight)",
            )
        loaded = {}
        for key, ref in own.items():
            value = state_dict[f"features.{key}"]
            if tuple(value.shape) != tuple(ref.shape):
                raise WeightsError(
                    f"features.{key}: shape {tuple(value.shape)} does not fit {tuple(ref.shape)}",
                    hint="the published weights need base_width=64 and the matching arch",
                )
            loaded[key] = value.to(dtype=ref.dtype)
        self.features.load_state_dict(loaded, strict=True)
        self.pretrained = True

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Always stays in eval mode (a frozen feature extractor)."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {i: name for name, i in self._index.items()}
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out
