"""Real-ESRGAN's high-order degradation model (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021, Sec. 3, Fig. 2).

Second order: the classical model ``blur -> resize -> noise -> JPEG`` applied twice, then the final
sinc filter (ringing/overshoot) together with the resize back to the target size, in random order
with the last JPEG. Output rounded to 8-bit levels, as the paper's training code does.

Defaults are the published training options, ``options/train_realesrgan_x4plus.yml`` (the x2plus
file has the same degradation numbers) and the dataset defaults of
``realesrgan/data/realesrgan_dataset.py`` (xinntao/Real-ESRGAN v0.2.x); kernel numbers are listed in
``kernels.py``. As there, the blur kernels and JPEG qualities are drawn per sample, while the
resize factor/mode, the Gaussian-vs-Poisson choice, whether the second blur applies and the order of
the final steps are drawn once per batch. Noise sigmas/scales and gray-noise flags are per sample.

Deviations, all deliberate and small:

* JPEG: exact libjpeg (OpenCV) with integer quality instead of the differentiable ``DiffJPEG``.
* Resizes use an explicit integer output size ``int(H * scale)`` (what ``F.interpolate`` with
  ``scale_factor`` produces too), and a side never drops below 1 pixel.
* Blur on images smaller than half the kernel pads by replication instead of failing.
* The input is USM-sharpened first when ``usm_sharpen`` is on (default), as Real-ESRGAN degrades
  ``gt_usm``; the trainer should then use ``ops.usm_sharpen(hr)`` as its L1/perceptual target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from realsr_cli.errors import ConfigError
from realsr_cli.training.degradations import _random as rnd
from realsr_cli.training.degradations import ops
from realsr_cli.training.degradations._checks import (
    check_prob,
    check_range,
    check_resize_modes,
    check_scale,
)
from realsr_cli.training.degradations._pipeline import Pipeline
from realsr_cli.training.degradations.kernels import (
    KernelSettings,
    random_blur_kernel,
    random_final_sinc_kernel,
)

__all__ = ["RealESRGANConfig", "RealESRGANDegradation"]


@dataclass(frozen=True)
class RealESRGANConfig:
    """Parameters of :class:`RealESRGANDegradation`; defaults = Real-ESRGAN's published options.

    Noise sigmas are in 8-bit levels; resize probabilities are (up, down, keep).
    """

    scale: int = 4
    usm_sharpen: bool = True
    resize_modes: tuple[str, ...] = ops.RESIZE_MODES
    # the first degradation process
    blur: KernelSettings = field(default_factory=KernelSettings)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # the second degradation process
    second_blur_prob: float = 0.8
    blur2: KernelSettings = field(default_factory=lambda: KernelSettings(sigma_range=(0.2, 1.5)))
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # the final sinc filter
    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        check_scale(self.scale)
        check_resize_modes(self.resize_modes)
        for name in (
            "gaussian_noise_prob",
            "gray_noise_prob",
            "second_blur_prob",
            "gaussian_noise_prob2",
            "gray_noise_prob2",
            "final_sinc_prob",
        ):
            check_prob(name, getattr(self, name))
        for name in ("noise_range", "poisson_scale_range", "noise_range2", "poisson_scale_range2"):
            check_range(name, getattr(self, name))
        for name in ("jpeg_range", "jpeg_range2"):
            check_range(name, getattr(self, name), low=1.0)
            if getattr(self, name)[1] > 100:
                raise ConfigError(f"{name} must lie in [1, 100], got {getattr(self, name)}")
        for name in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= 1.0 <= hi:
                raise ConfigError(
                    f"{name} must be (min, max) with 0 < min <= 1 <= max, got {(lo, hi)}"
                )
        for name in ("resize_prob", "resize_prob2"):
            if min(getattr(self, name)) < 0 or sum(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be non-negative (up, down, keep) weights")


class RealESRGANDegradation(Pipeline):
    """``lq = RealESRGANDegradation(config)(hr, generator)``.

    ``hr`` (B,3,H,W) float in [0,1] on any device; ``generator`` a CPU :class:`torch.Generator`.
    Returns ``lq`` (B,3,H//s,W//s) on hr's device/dtype, in [0,1] on 8-bit levels. Not differentiable
    (runs under ``no_grad``, like the data synthesis it reproduces).
    """

    config_cls = RealESRGANConfig
    config: RealESRGANConfig

    def _mode(self, generator: torch.Generator) -> str:
        return ops.random_resize_mode(generator, self.config.resize_modes)

    def _noise(
        self,
        x: Tensor,
        generator: torch.Generator,
        gaussian_prob: float,
        sigma_range: tuple[float, float],
        poisson_range: tuple[float, float],
        gray_prob: float,
    ) -> Tensor:
        if rnd.bernoulli(generator, gaussian_prob):
            return ops.random_gaussian_noise(x, generator, sigma_range, gray_prob)
        return ops.random_poisson_noise(x, generator, poisson_range, gray_prob)

    def _resize_sinc(
        self, x: Tensor, generator: torch.Generator, size: tuple[int, int], sinc: Tensor
    ) -> Tensor:
        return ops.filter2d(ops.resize(x, size, self._mode(generator)), sinc)

    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        rnd.check_generator(generator)
        b, _, h, w = ops.check_image(hr)
        s = cfg.scale
        out_size = (max(1, h // s), max(1, w // s))

        # per-sample kernels, drawn up front as the published dataset does
        kernel1 = torch.stack([random_blur_kernel(generator, cfg.blur) for _ in range(b)])
        kernel2 = torch.stack([random_blur_kernel(generator, cfg.blur2) for _ in range(b)])
        sinc = torch.stack(
            [random_final_sinc_kernel(generator, cfg.final_sinc_prob) for _ in range(b)]
        )

        x = ops.usm_sharpen(hr) if cfg.usm_sharpen else hr

        # ---- the first degradation process
        x = ops.filter2d(x, kernel1)
        f = ops.random_resize_scale(generator, cfg.resize_prob, cfg.resize_range)
        x = ops.resize(x, (int(h * f), int(w * f)), self._mode(generator))
        x = self._noise(
            x,
            generator,
            cfg.gaussian_noise_prob,
            cfg.noise_range,
            cfg.poisson_scale_range,
            cfg.gray_noise_prob,
        )
        x = ops.random_jpeg(x, generator, cfg.jpeg_range)

        # ---- the second degradation process
        if rnd.bernoulli(generator, cfg.second_blur_prob):
            x = ops.filter2d(x, kernel2)
        f = ops.random_resize_scale(generator, cfg.resize_prob2, cfg.resize_range2)
        x = ops.resize(x, (int(h / s * f), int(w / s * f)), self._mode(generator))
        x = self._noise(
            x,
            generator,
            cfg.gaussian_noise_prob2,
            cfg.noise_range2,
            cfg.poisson_scale_range2,
            cfg.gray_noise_prob2,
        )

        # ---- resize back + final sinc filter, and JPEG, in random order
        if rnd.bernoulli(generator, 0.5):
            x = self._resize_sinc(x, generator, out_size, sinc)
            x = ops.random_jpeg(x, generator, cfg.jpeg_range2)
        else:
            x = ops.random_jpeg(x, generator, cfg.jpeg_range2)
            x = self._resize_sinc(x, generator, out_size, sinc)
        return ops.quantize_8bit(x)
