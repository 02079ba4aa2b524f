"""BSRGAN's shuffled degradation model (Zhang et al., "Designing a Practical Degradation Model for
Deep Blind Image Super-Resolution", ICCV 2021, Sec. 3 and Fig. 2).

Per image: (x4 only, probability 0.25) halve the image first and continue as x2; then apply, in a
random order (downsample2 always before downsample3), the seven steps

0, 1  blur: isotropic Gaussian, sigma ~ U[0, 2 + 0.2 sf), or anisotropic Gaussian with covariance
      eigenvalues l1, l2 ~ U[0, 4 + sf) and angle ~ U[0, pi), probability 1/2 each; size ~
      2 * U{2..11} + 3 (7..25)
2     downsample2: with probability 0.75 resize by 1/sf1, sf1 ~ U[1, 2 sf), random interpolation;
      else blur with a shifted Gaussian (25x25, sigma ~ U[0.1, 0.6 sf)) and keep every sf-th pixel
3     downsample3: resize to the final size H // s with a random interpolation
4     Gaussian noise: level ~ U{2..25} (8-bit), colour (p 0.4), gray (p 0.4) or channel-correlated
      with covariance |L^2 U^T D U|, L = 25/255, D ~ diag(U[0,1)^3), U orthonormal (p 0.2)
5     JPEG, probability 0.9, quality ~ U{30..95}
6     processed camera sensor noise, probability 0.25 (simplified, see below)

followed by a final JPEG (quality ~ U{30..95}). ``sf`` is the scale still to go (2 after the
optional halving). Numbers from the paper and ``utils/utils_blindsr.py::degradation_bsrgan`` of
cszn/BSRGAN (2021-08).

Simplifications, stated honestly:

* Camera sensor noise: the paper reverses a camera ISP to raw, adds noise there and re-renders; the
  released code applies it only when an ``isp_model`` is passed (the default ``None`` skips it). We
  keep the noise model and sampling ranges of Brooks et al. ("Unprocessing Images for Learned Raw
  Denoising", CVPR 2019): gamma 2.2 to linear, heteroscedastic Gaussian noise of variance
  ``shot * x + read`` with ``log shot ~ U[log 1e-4, log 1.2e-2]`` and
  ``log read = 2.18 log shot + 1.20 + N(0, 0.26^2)``, gamma back; no mosaicking, white balance,
  colour matrix or tone curve, so the HR image needs no matching change (the paper's ISP also
  re-renders the HR image). Set ``sensor_noise_prob = 0`` to match the released code.
* Channel-correlated noise: ``|.|`` of a covariance can be indefinite; we sample with its
  eigenvalues clipped at 0 (NumPy's sampler silently does something similar). The orthonormal U
  comes from a QR decomposition of a U[0,1) matrix (SciPy's ``orth`` uses an SVD).
* MATLAB bicubic ``imresize`` in the optional halving is ``F.interpolate(bicubic, antialias)``;
  OpenCV's INTER_LINEAR/INTER_CUBIC/INTER_AREA map to bilinear/bicubic/area.
* The shifted Gaussian is evaluated analytically (BSRGAN resamples a centred one bilinearly).
* No mod-crop and no random crop: the output is (B,C,H//s,W//s) for any H, W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from realsr_cli.errors import ConfigError
from realsr_cli.training.degradations import _random as rnd
from realsr_cli.training.degradations import ops
from realsr_cli.training.degradations._checks import check_prob, check_resize_modes, check_scale
from realsr_cli.training.degradations._pipeline import Pipeline
from realsr_cli.training.degradations.kernels import gaussian_kernel, shifted_gaussian_kernel

__all__ = ["BSRGANConfig", "BSRGANDegradation"]


@dataclass(frozen=True)
class BSRGANConfig:
    """Parameters of :class:`BSRGANDegradation`; defaults = BSRGAN's published values."""

    scale: int = 4
    resize_modes: tuple[str, ...] = ops.RESIZE_MODES
    #: x4 only: probability of halving first and degrading the rest as x2
    scale2_prob: float = 0.25
    #: shuffle the seven steps (False: the fixed order 0..6)
    shuffle: bool = True
    blur_kernel_sizes: tuple[int, ...] = tuple(range(7, 26, 2))
    aniso_prob: float = 0.5
    downsample2_resize_prob: float = 0.75
    shifted_kernel_size: int = 25
    noise_levels: tuple[int, int] = (2, 25)
    jpeg_prob: float = 0.9
    jpeg_qualities: tuple[int, int] = (30, 95)
    sensor_noise_prob: float = 0.25

    def __post_init__(self) -> None:
        check_scale(self.scale)
        check_resize_modes(self.resize_modes)
        for name in ("scale2_prob", "aniso_prob", "downsample2_resize_prob", "jpeg_prob", "sensor_noise_prob"):
            check_prob(name, getattr(self, name))
        if not self.blur_kernel_sizes or any(k % 2 == 0 or k < 1 for k in self.blur_kernel_sizes):
            raise ConfigError(f"blur_kernel_sizes must be odd, got {self.blur_kernel_sizes}")
        if self.shifted_kernel_size % 2 == 0:
            raise ConfigError("shifted_kernel_size must be odd")
        if not 0 <= self.noise_levels[0] <= self.noise_levels[1]:
            raise ConfigError(f"noise_levels must be (min, max), got {self.noise_levels}")
        if not 1 <= self.jpeg_qualities[0] <= self.jpeg_qualities[1] <= 100:
            raise ConfigError(f"jpeg_qualities must lie in [1, 100], got {self.jpeg_qualities}")


class BSRGANDegradation(Pipeline):
    """``lq = BSRGANDegradation(config)(hr, generator)``.

    ``hr`` (B,C,H,W) float in [0,1] (C = 3, or 1) on any device; ``generator`` a CPU
    :class:`torch.Generator`. Each image gets its own random order and parameters. Returns ``lq``
    (B,C,H//s,W//s) on hr's device/dtype, in [0,1] on 8-bit levels. Not differentiable.
    """

    config_cls = BSRGANConfig
    config: BSRGANConfig

    # ------------------------------------------------------------------ steps
    def _mode(self, g: torch.Generator) -> str:
        return ops.random_resize_mode(g, self.config.resize_modes)

    def _blur(self, x: Tensor, g: torch.Generator, sf: int) -> Tensor:
        sizes = self.config.blur_kernel_sizes
        size = sizes[rnd.randint(g, 0, len(sizes) - 1)]
        if rnd.bernoulli(g, self.config.aniso_prob):
            l1, l2 = rnd.uniform(g, 0, 4.0 + sf), rnd.uniform(g, 0, 4.0 + sf)
            theta = rnd.uniform(g, 0, math.pi)
            kernel = gaussian_kernel(size, math.sqrt(l1), math.sqrt(l2), theta)
        else:
            kernel = gaussian_kernel(size, rnd.uniform(g, 0, 2.0 + 0.2 * sf))
        return ops.filter2d(x, kernel)

    def _downsample2(self, x: Tensor, g: torch.Generator, sf: int) -> Tensor:
        h, w = x.shape[-2:]
        if rnd.bernoulli(g, self.config.downsample2_resize_prob):
            sf1 = rnd.uniform(g, 1.0, 2.0 * sf)
            x = ops.resize(x, (int(h / sf1), int(w / sf1)), self._mode(g))
        else:
            sigma = rnd.uniform(g, 0.1, 0.6 * sf)
            kernel = shifted_gaussian_kernel(self.config.shifted_kernel_size, sigma, (sf - 1) / 2)
            x = ops.filter2d(x, kernel)[..., ::sf, ::sf]
        return x.clamp(0, 1)

    def _gaussian_noise(self, x: Tensor, g: torch.Generator) -> Tensor:
        lo, hi = self.config.noise_levels
        level = rnd.randint(g, lo, hi)
        r = rnd.uniform(g, 0.0, 1.0)
        if r > 0.6:
            return ops.add_gaussian_noise(x, level, gray=False, generator=g)
        if r < 0.4 or x.shape[1] != 3:
            return ops.add_gaussian_noise(x, level, gray=True, generator=g)
        scale = hi / 255.0
        d = torch.diag(torch.rand(3, generator=g, dtype=torch.float64))
        u = torch.linalg.qr(torch.rand(3, 3, generator=g, dtype=torch.float64)).Q
        cov = (scale**2 * u.T @ d @ u).abs()
        evals, evecs = torch.linalg.eigh(cov)
        mix = evecs * evals.clamp(min=0).sqrt()  # mix @ mix.T = PSD part of cov
        z = rnd.randn(g, x.shape, like=x)
        noise = torch.einsum("ij,bjhw->bihw", mix.to(device=x.device, dtype=x.dtype), z)
        return (x + noise).clamp(0, 1)

    def _jpeg(self, x: Tensor, g: torch.Generator) -> Tensor:
        return ops.jpeg_compress(x, rnd.randint(g, *self.config.jpeg_qualities))

    def _sensor_noise(self, x: Tensor, g: torch.Generator) -> Tensor:
        log_shot = rnd.uniform(g, math.log(1e-4), math.log(1.2e-2))
        log_read = 2.18 * log_shot + 1.20 + 0.26 * float(torch.randn((), generator=g))
        shot, read = math.exp(log_shot), math.exp(log_read)
        linear = x.clamp(0, 1) ** 2.2
        std = torch.sqrt(linear * shot + read)
        noisy = linear + std * rnd.randn(g, x.shape, like=x)
        return noisy.clamp(0, 1) ** (1 / 2.2)

    # ------------------------------------------------------------------ one image
    def _order(self, g: torch.Generator) -> list[int]:
        if not self.config.shuffle:
            return list(range(7))
        order = torch.randperm(7, generator=g).tolist()
        i2, i3 = order.index(2), order.index(3)
        if i2 > i3:  # downsample3 must come after downsample2
            order[i2], order[i3] = order[i3], order[i2]
        return order

    def _degrade_one(self, x: Tensor, g: torch.Generator) -> Tensor:
        cfg = self.config
        h, w = x.shape[-2:]
        out_size = (max(1, h // cfg.scale), max(1, w // cfg.scale))
        sf = cfg.scale
        if sf == 4 and rnd.bernoulli(g, cfg.scale2_prob):  # downsample1
            if rnd.bernoulli(g, 0.5):
                x = ops.resize(x, (h // 2, w // 2), self._mode(g))
            else:
                x = ops.resize(x, (h // 2, w // 2), "bicubic", antialias=True)
            x, sf = x.clamp(0, 1), 2
        for step in self._order(g):
            if step in (0, 1):
                x = self._blur(x, g, sf)
            elif step == 2:
                x = self._downsample2(x, g, sf)
            elif step == 3:  # downsample3: to the final size (= the size before step 2, / sf)
                x = ops.resize(x, out_size, self._mode(g)).clamp(0, 1)
            elif step == 4:
                x = self._gaussian_noise(x, g)
            elif step == 5:
                if rnd.bernoulli(g, cfg.jpeg_prob):
                    x = self._jpeg(x, g)
            elif rnd.bernoulli(g, cfg.sensor_noise_prob):  # step 6
                x = self._sensor_noise(x, g)
        return self._jpeg(x, g)

    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        rnd.check_generator(generator)
        ops.check_image(hr)
        outs = [self._degrade_one(hr[i : i + 1], generator) for i in range(hr.shape[0])]
        return ops.quantize_8bit(torch.cat(outs))
