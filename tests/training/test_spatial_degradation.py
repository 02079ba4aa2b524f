"""Synthetic spatially variant blur (training/degradations/spatial.py): kernel ground truth,
depth-monotone widths, shapes and seeded determinism."""

from __future__ import annotations

import math

import pytest
import torch

from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.models.ssr import kernel_variance
from realsr_cli.training.degradations.kernels import gaussian_kernel
from realsr_cli.training.degradations.spatial import (
    SpatialBlurConfig,
    SpatiallyVariantBlur,
    apply_spatial_blur,
    depth_kernels,
    synthetic_depth,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hq(n: int = 2, h: int = 48, w: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=_gen(7))


def test_shapes_and_kernel_ground_truth():
    deg = SpatiallyVariantBlur(SpatialBlurConfig(), kernel_size=21, scale=4)(_hq(), _gen())
    assert deg.lq.shape == (2, 3, 12, 16)
    assert deg.kernels.shape == (2, 441, 12, 16)
    assert deg.depth.shape == (2, 1, 12, 16) and deg.sigma.shape == (2, 1, 12, 16)
    assert float(deg.kernels.min()) >= 0.0
    assert torch.allclose(deg.kernels.sum(dim=1), torch.ones(2, 12, 16), atol=1e-5)
    assert 0.0 <= float(deg.depth.min()) and float(deg.depth.max()) <= 1.0
    assert 0.0 <= float(deg.lq.min()) and float(deg.lq.max()) <= 1.0


def test_width_increases_with_depth():
    deg = SpatiallyVariantBlur(SpatialBlurConfig(), kernel_size=21, scale=4)(_hq(), _gen(3))
    var = kernel_variance(deg.kernels)
    for i in range(2):
        d, s, v = deg.depth[i].flatten(), deg.sigma[i].flatten(), var[i].flatten()
        order = torch.argsort(d)
        assert bool((s[order].diff() >= -1e-6).all())  # sigma monotone in depth
        assert bool((v[order].diff() >= -1e-5).all())  # so is the kernels' spatial variance
        assert float(v[order[-1]]) > float(v[order[0]])


def test_per_pixel_kernels_match_the_gaussian_family():
    sigma = torch.full((1, 1, 1, 1), 2.0)
    k = depth_kernels(sigma, torch.tensor([0.5]), torch.tensor([0.3]), 9)
    assert torch.allclose(k.view(9, 9), gaussian_kernel(9, 2.0, 1.0, 0.3), atol=1e-6)


def test_blur_is_correlation_at_the_kept_positions():
    hq = _hq(1, 16, 16)
    pulse = torch.zeros(1, 9, 4, 4)
    pulse[:, 4] = 1.0  # identity kernel: plain s-fold subsampling
    assert torch.allclose(apply_spatial_blur(hq, pulse, 4), hq[..., ::4, ::4])
    right = torch.zeros(1, 9, 4, 4)
    right[:, 5] = 1.0  # tap (row 1, col 2): the pixel one to the right
    assert torch.allclose(apply_spatial_blur(hq, right, 4)[..., :3], hq[..., ::4, 1:13:4])


def test_deterministic_under_a_seed():
    cfg = SpatialBlurConfig(noise_prob=1.0, jpeg_prob=1.0)
    run = SpatiallyVariantBlur(cfg, kernel_size=7, scale=4)
    a, b = run(_hq(), _gen(5)), run(_hq(), _gen(5))
    assert torch.equal(a.lq, b.lq) and torch.equal(a.kernels, b.kernels)
    assert torch.equal(a.depth, b.depth)
    c = run(_hq(), _gen(6))
    assert not torch.equal(a.depth, c.depth)


def test_synthetic_depth_is_smooth_and_normalised():
    d = synthetic_depth(3, (32, 32), _gen(), grid=4)
    assert d.shape == (3, 1, 32, 32)
    assert torch.allclose(d.amin(dim=(2, 3)), torch.zeros(3, 1))
    assert torch.allclose(d.amax(dim=(2, 3)), torch.ones(3, 1))
    assert float(d.diff(dim=-1).abs().max()) < 0.5  # low frequency: no jumps between neighbours


def test_bad_inputs_are_errors():
    with pytest.raises(ConfigError):
        SpatialBlurConfig(anisotropy_range=(0.5, 2.0))
    with pytest.raises(ConfigError):
        SpatialBlurConfig(noise_prob=1.5)
    with pytest.raises(UsageError):
        SpatiallyVariantBlur(SpatialBlurConfig(), 7, 4)(_hq(1, 18, 16), _gen())
    with pytest.raises(UsageError):
        depth_kernels(torch.ones(1, 1, 2, 2), torch.ones(1), torch.zeros(1), 4)
    assert math.isclose(float(depth_kernels(torch.ones(1, 1, 1, 1), torch.ones(1),
                                            torch.zeros(1), 1).sum()), 1.0)
