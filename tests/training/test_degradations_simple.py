"""realsr's own pipelines: ``bicubic`` (MATLAB imresize), ``mild`` and ``mix``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_cli.engine.device import make_generator
from realsr_cli.errors import ConfigError
from realsr_cli.training.degradations import PIPELINES, MildConfig, MixConfig, build_pipeline
from realsr_cli.training.degradations.simple import (
    MildDegradation,
    MixDegradation,
    matlab_bicubic_down,
)
from tests.parity import shared_dir


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    a = np.abs(x)
    near = 1.5 * a**3 - 2.5 * a**2 + 1
    far = -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return np.where(a <= 1, near, np.where(a <= 2, far, 0.0))


def _contributions(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize's weights and (symmetric-border) source indices for one axis, scale < 1."""
    width = 4.0 / scale  # the kernel stretched for antialiasing
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based source coordinate
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = scale * _cubic(scale * (u[:, None] - taps))
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    return weights, mirror[np.mod(taps.astype(int) - 1, 2 * n_in)]


def matlab_imresize_down(img: np.ndarray, s: int) -> np.ndarray:
    """(H,W,C) float64 -> imresize(img, 1/s) in float64 (rows first, as MATLAB for equal scales)."""
    wr, ir = _contributions(img.shape[0], img.shape[0] // s, 1.0 / s)
    rows = np.einsum("ot,otwc->owc", wr, img[ir])
    wc, ic = _contributions(img.shape[1], img.shape[1] // s, 1.0 / s)
    return np.einsum("ot,hotc->hoc", wc, rows[:, ic])


@pytest.mark.parametrize("name", ["baby", "butterfly"])
def test_bicubic_pipeline_is_matlab_imresize(name):
    hr = np.asarray(Image.open(shared_dir() / "data" / "Set5" / f"{name}.png").convert("RGB"), np.float64)
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    ref = np.clip(np.floor(matlab_imresize_down(hr, 4) + 0.5), 0, 255)  # MATLAB's uint8 rounding
    x = torch.from_numpy((hr / 255).astype(np.float32)).permute(2, 0, 1)[None]
    ours = build_pipeline("bicubic", 4)(x, make_generator(0))[0].permute(1, 2, 0).numpy() * 255
    diff = np.abs(np.round(ours) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # x.5 ties may round apart


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 12)])
def test_bicubic_down_tiny_images(size):
    out = matlab_bicubic_down(torch.full((1, 3, *size), 0.25), 4)
    assert out.shape == (1, 3, max(1, size[0] // 4), max(1, size[1] // 4))
    torch.testing.assert_close(out, torch.full_like(out, 0.25))  # weights sum to 1 everywhere


@pytest.mark.parametrize("name", ["bicubic", "mild", "mix"])
def test_seeded_shapes_levels_and_reproducible(name):
    hr = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    pipe = build_pipeline(name, 4)
    a, b = pipe(hr, make_generator(5)), pipe(hr, make_generator(5))
    assert a.shape == (3, 3, 16, 12) and torch.equal(a, b)
    assert torch.equal((a * 255).round() / 255, a) and 0 <= a.min() and a.max() <= 1
    assert name in PIPELINES


def test_mild_is_mild_and_random():
    """Closer to the clean bicubic LR than Real-ESRGAN's output, and not the same every time."""
    x = torch.linspace(0, 1, 96).view(1, 1, 1, 96).expand(1, 3, 96, 96).contiguous()
    hr = (x + 0.2 * torch.sin(x.transpose(2, 3) * 40)).clamp(0, 1)
    clean = build_pipeline("bicubic", 4)(hr, make_generator(0))
    mild = [MildDegradation()(hr, make_generator(s)) for s in range(8)]
    heavy = [build_pipeline("realesrgan", 4)(hr, make_generator(s)) for s in range(8)]
    err = lambda outs: float(np.mean([(o - clean).abs().mean() for o in outs]))  # noqa: E731
    assert err(mild) < err(heavy)
    assert len({o.sum().item() for o in mild}) > 4


def test_mix_weights_pick_the_part():
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    only_bicubic = MixDegradation(MixConfig(weights=(1.0, 0.0, 0.0)))
    torch.testing.assert_close(only_bicubic(hr, make_generator(3)), build_pipeline("bicubic", 4)(hr, make_generator(0)))


@pytest.mark.parametrize("bad", [{"blur_prob": 1.5}, {"noise_range": (5.0, 1.0)}, {"jpeg_range": (70.0, 120.0)},
                                 {"resize_modes": ("nearest",)}, {"blur_sigma": (0.1, float("nan"))}])
def test_mild_config_checks(bad):
    with pytest.raises(ConfigError):
        MildConfig(**bad)


def test_mix_config_checks():
    with pytest.raises(ConfigError):
        MixConfig(weights=(0.0, 0.0, 0.0))
