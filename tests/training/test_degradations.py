"""Degradation kernels, operators and the Real-ESRGAN / BSRGAN pipelines (CPU, small images)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from realsr_cli._config import from_dict, to_dict
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training.degradations import (
    PIPELINES,
    BSRGANConfig,
    BSRGANDegradation,
    RealESRGANConfig,
    RealESRGANDegradation,
    build_pipeline,
    degrade,
    ops,
)
from realsr_cli.training.degradations import kernels as K


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(b: int = 2, c: int = 3, h: int = 37, w: int = 29, seed: int = 123) -> torch.Tensor:
    """A smooth image with some texture, float32 in [0,1]."""
    g = gen(seed)
    low = torch.rand(b, c, max(2, h // 6), max(2, w // 6), generator=g)
    smooth = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(b, c, h, w, generator=g)).clamp(0, 1)


def on_8bit_levels(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x * 255, (x * 255).round(), atol=1e-3))


# ----------------------------------------------------------------------------- kernels
ANISO = dict(sigma_x=2.5, sigma_y=0.8)
FAMILIES = {
    "iso": lambda k: K.gaussian_kernel(k, 1.7),
    "aniso": lambda k: K.gaussian_kernel(k, theta=0.4, **ANISO),
    "generalized": lambda k: K.generalized_gaussian_kernel(k, theta=1.0, beta=0.7, **ANISO),
    "plateau": lambda k: K.plateau_kernel(k, theta=-2.0, beta=1.6, **ANISO),
    "sinc": lambda k: K.sinc_kernel(k, math.pi / 4),
}


@pytest.mark.parametrize("size", [7, 13, 21])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kernels_are_normalised_with_the_right_shape(family, size):
    k = FAMILIES[family](size)
    assert k.shape == (size, size) and k.dtype == torch.float32
    assert k.sum().item() == pytest.approx(1.0, abs=1e-5)
    if family != "sinc":
        assert k.min() >= 0
    # every family here is symmetric under a 180 degree rotation (p -> -p)
    assert torch.allclose(k, k.flip(0, 1), atol=1e-7)


def test_sinc_kernel_has_negative_lobes_and_a_central_peak():
    k = K.sinc_kernel(21, math.pi / 3)
    assert k.min() < 0
    assert k.argmax().item() == 10 * 21 + 10
    assert torch.allclose(k, k.T, atol=1e-7)


def test_isotropic_gaussian_matches_the_formula():
    k = K.gaussian_kernel(3, 1.0)
    e = math.exp
    raw = torch.tensor([[e(-1), e(-0.5), e(-1)], [e(-0.5), 1.0, e(-0.5)], [e(-1), e(-0.5), e(-1)]])
    assert torch.allclose(k, raw / raw.sum(), atol=1e-7)
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))


def test_generalized_beta_1_is_gaussian_and_plateau_formula():
    g = K.gaussian_kernel(9, 2.0, 1.0, 0.3)
    assert torch.allclose(K.generalized_gaussian_kernel(9, 2.0, 1.0, 0.3, beta=1.0), g, atol=1e-7)
    # plateau 1 / (1 + q^beta) on a 3x3 grid, isotropic sigma 1, beta 2: q = x^2 + y^2
    raw = 1 / (1 + torch.tensor([[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]) ** 2)
    assert torch.allclose(K.plateau_kernel(3, 1.0, beta=2.0), raw / raw.sum(), atol=1e-7)


def test_anisotropic_kernel_is_rotated_correctly():
    c, d = 10, 4
    k0 = K.gaussian_kernel(21, 3.0, 1.0, theta=0.0)
    # long axis along x (columns) at theta = 0
    assert k0[c, c + d] > 10 * k0[c + d, c]
    # a quarter turn moves the long axis to y: the transpose
    assert torch.allclose(K.gaussian_kernel(21, 3.0, 1.0, theta=math.pi / 2), k0.T, atol=1e-6)
    # theta = pi/4: long axis along +x+y (down-right), short along +x-y
    k45 = K.gaussian_kernel(21, 3.0, 1.0, theta=math.pi / 4)
    assert k45[c + d, c + d] > 10 * k45[c + d, c - d]
    assert torch.allclose(k45, k45.T, atol=1e-7)  # symmetric about the x = y diagonal
    # theta and theta + pi describe the same kernel
    assert torch.allclose(
        K.gaussian_kernel(21, 3.0, 1.0, 0.7),
        K.gaussian_kernel(21, 3.0, 1.0, 0.7 + math.pi),
        atol=1e-6,
    )
    # the covariance of the normalised kernel is R diag(sx^2, sy^2) R^T (within truncation)
    xs = torch.arange(21.0) - c
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    kd = k45.double()
    cov_xy = (kd * xx * yy).sum().item()
    expected = math.cos(math.pi / 4) * math.sin(math.pi / 4) * (3.0**2 - 1.0**2)
    assert cov_xy == pytest.approx(expected, rel=0.05)


def test_pad_pulse_and_shifted_kernels():
    k = K.pad_kernel(K.gaussian_kernel(7, 1.0), 21)
    assert k.shape == (21, 21) and k.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert k[:7].abs().sum() == 0 and k.argmax().item() == 10 * 21 + 10
    p = K.pulse_kernel(21)
    assert p.sum() == 1 and p[10, 10] == 1
    s = K.shifted_gaussian_kernel(25, 0.8, 1.5).double()
    xs = torch.arange(25.0, dtype=torch.float64) - 12
    assert (s.sum(0) * xs).sum().item() == pytest.approx(1.5, abs=1e-3)  # centre of mass in x
    assert (s.sum(1) * xs).sum().item() == pytest.approx(1.5, abs=1e-3)  # ... and in y
    with pytest.raises(UsageError):
        K.gaussian_kernel(8, 1.0)
    with pytest.raises(UsageError):
        K.pad_kernel(K.gaussian_kernel(9, 1.0), 7)


def test_random_kernels_are_seeded_and_follow_the_settings():
    settings = K.KernelSettings()
    a = [K.random_blur_kernel(gen(s), settings) for s in range(20)]
    b = [K.random_blur_kernel(gen(s), settings) for s in range(20)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({x.numpy().tobytes() for x in a}) == 20
    for k in a:
        assert k.shape == (21, 21) and k.sum().item() == pytest.approx(1.0, abs=1e-5)
    sinc_only = K.KernelSettings(sinc_prob=1.0)
    assert any(K.random_blur_kernel(gen(s), sinc_only).min() < 0 for s in range(5))
    assert torch.equal(K.random_final_sinc_kernel(gen(0), prob=0.0), K.pulse_kernel(21))
    assert K.random_final_sinc_kernel(gen(0), prob=1.0).sum().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError):
        K.KernelSettings(sizes=(7, 8))
    with pytest.raises(ConfigError):
        K.KernelSettings(sizes=(23,))


# ----------------------------------------------------------------------------- operators
def test_filter2d_identity_constant_and_per_sample_kernels():
    x = image()
    assert torch.allclose(ops.filter2d(x, K.pulse_kernel(21)), x, atol=1e-6)
    const = torch.full((2, 3, 9, 11), 0.3)
    assert torch.allclose(ops.filter2d(const, K.gaussian_kernel(7, 2.0)), const, atol=1e-6)
    kernels = torch.stack([K.pulse_kernel(7), K.gaussian_kernel(7, 1.5)])
    out = ops.filter2d(x, kernels)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out[0], x[0], atol=1e-6)
    ref = F.conv2d(
        F.pad(x[1:], (3, 3, 3, 3), mode="reflect"), kernels[1].expand(3, 1, 7, 7), groups=3
    )
    assert torch.allclose(out[1:], ref, atol=1e-6)
    tiny = ops.filter2d(torch.rand(1, 3, 5, 4), K.gaussian_kernel(21, 2.0))  # replicate fallback
    assert tiny.shape == (1, 3, 5, 4)
    with pytest.raises(UsageError):
        ops.filter2d(x, torch.ones(3, 7, 7) / 49)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic", "nearest"])
def test_resize_shapes(mode):
    x = image(h=37, w=29).double()
    y = ops.resize(x, (9, 30), mode)
    assert y.shape == (2, 3, 9, 30) and y.dtype == torch.float64
    assert ops.resize(x, (0, 0), mode).shape == (2, 3, 1, 1)
    with pytest.raises(UsageError):
        ops.resize(x, (9, 9), "lanczos")


def test_gaussian_noise_level_gray_and_determinism():
    x = torch.full((2, 3, 64, 64), 0.5)
    y = ops.add_gaussian_noise(x, [10.0, 10.0], gray=[False, True], generator=gen(1))
    assert torch.equal(y, ops.add_gaussian_noise(x, 10.0, gray=[False, True], generator=gen(1)))
    noise = y - x
    assert noise.std().item() == pytest.approx(10 / 255, rel=0.1)
    assert not torch.allclose(noise[0, 0], noise[0, 1])  # colour noise: independent channels
    assert torch.equal(noise[1, 0], noise[1, 1]) and torch.equal(noise[1, 1], noise[1, 2])
    bright = ops.add_gaussian_noise(torch.ones(1, 3, 8, 8), 30.0, gray=False, generator=gen(2))
    assert bright.max() <= 1 and bright.min() >= 0
    assert not torch.equal(y, ops.add_gaussian_noise(x, 10.0, gray=[False, True], generator=gen(2)))


def test_poisson_noise_gray_scale_and_range():
    x = image(h=32, w=32)
    y = ops.add_poisson_noise(x, [1.0, 1.0], gray=[False, True], generator=gen(3))
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1
    assert torch.equal(y, ops.add_poisson_noise(x, 1.0, gray=[False, True], generator=gen(3)))
    n = y - x
    assert n.abs().mean() > 1e-3
    # gray noise is shared by the channels (before clipping): compare where nothing clipped
    inside = (y[1] > 0) & (y[1] < 1)
    keep = inside.all(0)
    assert torch.allclose(n[1, 0][keep], n[1, 2][keep], atol=1e-6)
    assert torch.equal(ops.add_poisson_noise(x, 0.0, gray=False, generator=gen(3)), x)


def test_jpeg_keeps_colours_shape_and_8bit_levels():
    x = image(h=33, w=47).double()
    y = ops.jpeg_compress(x, [90, 20])
    assert y.shape == x.shape and y.dtype == torch.float64 and on_8bit_levels(y)
    assert (y[0] - x[0]).abs().mean() < (y[1] - x[1]).abs().mean()  # q90 closer than q20
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 0.9
    out = ops.jpeg_compress(red, 95)
    assert out[0, 0].mean() > 0.8 and out[0, 2].mean() < 0.1  # RGB was not swapped to BGR
    gray = ops.jpeg_compress(torch.rand(2, 1, 17, 9), 50)
    assert gray.shape == (2, 1, 17, 9)
    q = ops.random_jpeg(x, gen(0), (30, 95))
    assert torch.equal(q, ops.random_jpeg(x, gen(0), (30, 95)))


def test_usm_quantize_gray_and_resize_choice():
    const = torch.full((1, 3, 40, 40), 0.4)
    assert torch.allclose(ops.usm_sharpen(const), const, atol=1e-6)
    x = image(h=40, w=36)
    sharp = ops.usm_sharpen(x)
    assert 0 <= sharp.min() and sharp.max() <= 1
    # reference: the definition with a full 2-D Gaussian (size 51, OpenCV's sigma 8 for that size)
    g = K.gaussian_kernel(51, 8.0)
    residual = x - ops.filter2d(x, g)
    mask = ops.filter2d((residual.abs() * 255 > 10).float(), g)
    ref = mask * (x + 0.5 * residual).clamp(0, 1) + (1 - mask) * x
    assert torch.allclose(sharp, ref, atol=1e-5)
    q = ops.quantize_8bit(torch.tensor([-0.2, 0.5, 0.1 / 255, 1.3]))
    assert torch.allclose(q, torch.tensor([0.0, 128 / 255, 0.0, 1.0]))
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert ops.rgb_to_gray(rgb).item() == pytest.approx(0.299)
    draws = {ops.random_resize_scale(gen(s), (0.2, 0.7, 0.1), (0.15, 1.5)) for s in range(30)}
    assert all(0.15 <= f <= 1.5 for f in draws) and 1.0 in draws and len(draws) > 10


def test_operators_reject_bad_inputs():
    with pytest.raises(UsageError):
        ops.add_gaussian_noise(image(), 1.0, gray=False, generator="seed")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        ops.add_gaussian_noise(image(), [1.0, 2.0, 3.0], gray=False, generator=gen())
    with pytest.raises(UsageError):
        ops.filter2d(torch.zeros(3, 8, 8), K.pulse_kernel(3))
    with pytest.raises(UsageError):
        ops.jpeg_compress(torch.zeros(1, 4, 8, 8), 50)


# ----------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipelines_shape_range_levels_and_determinism(name, scale):
    hr = image(b=2, h=53, w=39)
    before = hr.clone()
    outs = []
    for seed in range(2):
        lq = degrade(hr, name, scale, gen(seed))
        assert lq.shape == (2, 3, 53 // scale, 39 // scale)
        assert lq.dtype == torch.float32 and lq.device == hr.device
        assert 0 <= lq.min() and lq.max() <= 1 and on_8bit_levels(lq)
        assert torch.equal(lq, degrade(hr, name, scale, gen(seed)))
        outs.append(lq)
    # every pipeline is random except the classic benchmark LR (bicubic: MATLAB imresize)
    assert torch.equal(outs[0], outs[1]) == (name == "bicubic")
    assert torch.equal(hr, before)  # the input is not modified in place


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipelines_never_touch_cuda_and_keep_dtype(name, monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("a degradation initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_cuda)
    hr = image(b=1, h=41, w=50).double()
    lq = degrade(hr, name, 4, gen(5))
    assert lq.dtype == torch.float64 and lq.shape == (1, 3, 10, 12) and lq.device.type == "cpu"


def test_realesrgan_branches():
    hr = image(b=2, h=48, w=40)
    for cfg in (
        RealESRGANConfig(gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0, usm_sharpen=False),
        RealESRGANConfig(gaussian_noise_prob=0.0, gaussian_noise_prob2=0.0, final_sinc_prob=1.0),
        RealESRGANConfig(
            scale=1, second_blur_prob=1.0, resize_prob=(1, 0, 0), resize_prob2=(0, 0, 1)
        ),
    ):
        lq = RealESRGANDegradation(cfg)(hr, gen(7))
        assert lq.shape == (2, 3, 48 // cfg.scale, 40 // cfg.scale)
        assert 0 <= lq.min() and lq.max() <= 1


def test_bsrgan_branches_and_grayscale():
    hr = image(b=2, h=52, w=44)
    forced = BSRGANConfig(
        scale2_prob=1.0,
        downsample2_resize_prob=0.0,
        jpeg_prob=1.0,
        sensor_noise_prob=1.0,
        aniso_prob=1.0,
    )
    plain = BSRGANConfig(scale=2, shuffle=False, downsample2_resize_prob=1.0, sensor_noise_prob=0.0)
    for cfg in (forced, plain):
        lq = BSRGANDegradation(cfg)(hr, gen(11))
        assert lq.shape == (2, 3, 52 // cfg.scale, 44 // cfg.scale)
        assert 0 <= lq.min() and lq.max() <= 1
    gray = BSRGANDegradation()(image(b=1, c=1, h=40, w=36), gen(2))
    assert gray.shape == (1, 1, 10, 9)
    # the seven steps come in a random order with downsample2 before downsample3
    for s in range(20):
        order = BSRGANDegradation()._order(gen(s))
        assert sorted(order) == list(range(7)) and order.index(2) < order.index(3)


def test_configs_validate_and_round_trip():
    for cls in (RealESRGANConfig, BSRGANConfig):
        cfg = cls(scale=2)
        assert from_dict(cls, to_dict(cfg)) == cfg
        with pytest.raises(ConfigError):
            cls(scale=0)
        with pytest.raises(ConfigError):
            dataclasses.replace(cfg, resize_modes=("lanczos",))
    assert to_dict(RealESRGANConfig())["blur2"]["sigma_range"] == [0.2, 1.5]
    with pytest.raises(ConfigError):
        RealESRGANConfig(jpeg_range=(30.0, 120.0))
    with pytest.raises(ConfigError):
        BSRGANConfig(noise_levels=(5, 2))


def test_registry_and_degrade_errors():
    assert set(PIPELINES) == {"realesrgan", "bsrgan", "bicubic", "mild", "mix"}
    assert isinstance(build_pipeline("bsrgan", 2), BSRGANDegradation)
    assert build_pipeline("realesrgan").scale == 4
    with pytest.raises(UsageError, match="unknown degradation pipeline"):
        degrade(image(), "nope", 4, gen())
    with pytest.raises(UsageError):
        degrade(image(), "realesrgan", 4, 0)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_same_seed_same_lq_on_cuda(name):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    hr = image(b=2, h=96, w=80)
    cpu = degrade(hr, name, 4, gen(3))
    cuda = degrade(hr.cuda(), name, 4, gen(3))
    assert cuda.device.type == "cuda" and cuda.shape == cpu.shape
    # float arithmetic differs slightly between devices; after 8-bit rounding nearly all agree
    diff = (cuda.cpu() - cpu).abs()
    assert diff.mean() < 1 / 255 and (diff > 2.5 / 255).float().mean() < 0.01
