"""Three pipelines for what people actually feed an upscaler (realsr's own, no paper):

* ``"bicubic"`` — :class:`BicubicDegradation`: the classic benchmark LR, MATLAB's ``imresize(hr,
  1/s)``: the cubic kernel with a = -0.5 stretched by the scale (``F.interpolate(...,
  antialias=True)``) over a symmetric (edge-repeating) border, as MATLAB pads, rounded to 8 bits.
  Deterministic. Measured against a NumPy transcription of MATLAB's algorithm on Set5: identical
  8-bit values except 1 pixel in 10^4 off by one level (rounding of x.5); tests check it.
* ``"mild"`` — :class:`MildDegradation`: an everyday photo: slight isotropic Gaussian blur, a x4
  downscale (antialiased bicubic, bilinear or area), light Gaussian or Poisson noise, JPEG 70-95.
* ``"mix"`` — :class:`MixDegradation`: one of ``bicubic`` / ``mild`` / ``realesrgan`` per image
  (weights ``MixConfig.weights``), for one blind model that must not lose on clean inputs.

Same calling convention as the published pipelines: ``pipeline(hr, generator) -> lq`` with ``hr``
(B,3,H,W) float in [0,1] on any device, a CPU generator, ``lq`` (B,3,H//s,W//s) on 8-bit levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.errors import ConfigError
from realsr_cli.models._blocks.pad import mirror_pad_all
from realsr_cli.training.degradations import _random as rnd
from realsr_cli.training.degradations import ops
from realsr_cli.training.degradations._checks import (
    check_prob,
    check_range,
    check_resize_modes,
    check_scale,
)
from realsr_cli.training.degradations._pipeline import Pipeline
from realsr_cli.training.degradations.kernels import gaussian_kernel
from realsr_cli.training.degradations.realesrgan import RealESRGANConfig, RealESRGANDegradation

__all__ = [
    "BicubicConfig",
    "BicubicDegradation",
    "MildConfig",
    "MildDegradation",
    "MixConfig",
    "MixDegradation",
    "matlab_bicubic_down",
]


def _out_size(hr: Tensor, scale: int) -> tuple[int, int]:
    _, _, h, w = ops.check_image(hr)
    return max(1, h // scale), max(1, w // scale)


@dataclass(frozen=True)
class BicubicConfig:
    """``scale``: the downscaling factor."""

    scale: int = 4

    def __post_init__(self) -> None:
        check_scale(self.scale)


class BicubicDegradation(Pipeline):
    """``lq = antialiased_bicubic_down(hr)``, rounded to 8 bits; the generator is not used."""

    config_cls = BicubicConfig

    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        rnd.check_generator(generator)
        return ops.quantize_8bit(matlab_bicubic_down(hr, self.scale))


def matlab_bicubic_down(hr: Tensor, scale: int) -> Tensor:
    """MATLAB ``imresize(hr, 1/scale)`` (bicubic, antialiased) of (B,C,H,W) with H, W multiples
    of ``scale`` (others are cropped at the bottom/right); float, not rounded."""
    oh, ow = _out_size(hr, scale)
    x = hr[..., : oh * scale, : ow * scale]
    pad = 2 * scale  # the stretched kernel's radius in HR pixels, on the LR grid
    x = mirror_pad_all(x, pad)
    out = F.interpolate(x, size=(oh + 4, ow + 4), mode="bicubic", align_corners=False, antialias=True)
    return out[..., 2:-2, 2:-2]


@dataclass(frozen=True)
class MildConfig:
    """Parameters of :class:`MildDegradation` (noise in 8-bit levels; blur sigma in HR pixels).

    Each step applies with its probability; ranges are sampled uniformly per image.
    """

    scale: int = 4
    blur_prob: float = 0.7
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    resize_modes: tuple[str, ...] = ("bicubic", "bilinear", "area")
    noise_prob: float = 0.6
    gaussian_noise_prob: float = 0.6
    noise_range: tuple[float, float] = (1.0, 6.0)
    poisson_scale_range: tuple[float, float] = (0.05, 0.5)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.8
    jpeg_range: tuple[float, float] = (70.0, 95.0)

    def __post_init__(self) -> None:
        check_scale(self.scale)
        for name in ("blur_prob", "noise_prob", "gaussian_noise_prob", "gray_noise_prob", "jpeg_prob"):
            check_prob(name, getattr(self, name))
        for name, low in (("blur_sigma", 0.0), ("noise_range", 0.0), ("poisson_scale_range", 0.0),
                          ("jpeg_range", 1.0)):
            check_range(name, getattr(self, name), low)
        if self.jpeg_range[1] > 100:
            raise ConfigError(f"jpeg_range must lie in [1, 100], got {self.jpeg_range}")
        check_resize_modes(self.resize_modes)


class MildDegradation(Pipeline):
    """blur (p) -> x``scale`` down (random mode) -> Gaussian or Poisson noise (p) -> JPEG (p) -> 8 bit.

    Every draw is made whether or not its step applies, so one image's choices never shift the
    random stream of the next decision (and a config change of one probability keeps the rest).
    """

    config_cls = MildConfig

    def _one(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        blur, noise, jpeg = (rnd.bernoulli(generator, p) for p in (cfg.blur_prob, cfg.noise_prob, cfg.jpeg_prob))
        sigma = rnd.uniform(generator, *cfg.blur_sigma)
        mode = ops.random_resize_mode(generator, cfg.resize_modes)
        gaussian = rnd.bernoulli(generator, cfg.gaussian_noise_prob)
        x = hr
        if blur and sigma > 0:
            size = min(21, 2 * math.ceil(3 * sigma) + 1)
            x = ops.filter2d(x, gaussian_kernel(size, sigma).unsqueeze(0))
        x = ops.resize(x, _out_size(hr, cfg.scale), mode, antialias=mode != "area")
        if noise:
            if gaussian:
                x = ops.random_gaussian_noise(x, generator, cfg.noise_range, cfg.gray_noise_prob)
            else:
                x = ops.random_poisson_noise(x, generator, cfg.poisson_scale_range, cfg.gray_noise_prob)
        if jpeg:
            x = ops.random_jpeg(x, generator, cfg.jpeg_range)
        return ops.quantize_8bit(x)

    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        rnd.check_generator(generator)
        ops.check_image(hr)
        return torch.cat([self._one(hr[i : i + 1], generator) for i in range(hr.shape[0])])


@dataclass(frozen=True)
class MixConfig:
    """``weights``: relative frequency of (bicubic, mild, realesrgan) per image; the parts use their
    defaults (Real-ESRGAN's published options, USM-sharpened input included).

    Default 0.4 / 0.4 / 0.2: in 5-minute probes (docs/benchmarks.md) a compact model gained ~0.9 dB
    over bicubic on Real-ESRGAN inputs of held-out photos early but lost 0.2-0.3 dB on clean ones
    with 0.3 / 0.4 / 0.3, so clean and mild inputs get more of the budget."""

    scale: int = 4
    weights: tuple[float, float, float] = (0.4, 0.4, 0.2)

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ConfigError(f"weights must be three non-negative numbers, not all 0; got {self.weights}")


class MixDegradation(Pipeline):
    """Per image, one of bicubic / mild / Real-ESRGAN chosen with ``MixConfig.weights``."""

    config_cls = MixConfig

    def __init__(self, config: MixConfig | None = None) -> None:
        super().__init__(config)
        s = self.config.scale
        self.parts = (
            BicubicDegradation(BicubicConfig(scale=s)),
            MildDegradation(MildConfig(scale=s)),
            RealESRGANDegradation(RealESRGANConfig(scale=s)),
        )


    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        rnd.check_generator(generator)
        ops.check_image(hr)
        out = []
        for i in range(hr.shape[0]):
            part = self.parts[rnd.choice(generator, self.config.weights)]
            out.append(part(hr[i : i + 1], generator))
        return torch.cat(out)
