"""PSNR / SSIM (BasicSR conventions) and codebook matching accuracy: values computed by hand or by
an independent, deliberately naive NumPy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from realsr_cli.errors import UsageError
from realsr_cli.evaluation.metrics import codebook_accuracy, psnr, rgb_to_y, ssim

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _levels(seed: int, h: int, w: int, lo: int = 0, hi: int = 256) -> torch.Tensor:
    """(1,3,h,w) float32 image on exact 8-bit levels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (1, 3, h, w), generator=g).float() / 255


# ----------------------------------------------------------------------------- reference SSIM
def _naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two HxW float64 maps on [0,255], window by window (no convolution routines)."""
    t = np.arange(11) - 5.0
    g = np.exp(-t * t / (2 * 1.5 * 1.5))
    win = np.outer(g, g) / g.sum() ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va = (win * (pa - ma) ** 2).sum()
            vb = (win * (pb - mb) ** 2).sum()
            cov = (win * (pa - ma) * (pb - mb)).sum()
            num = (2 * ma * mb + C1) * (2 * cov + C2)
            vals.append(num / ((ma**2 + mb**2 + C1) * (va + vb + C2)))
    return float(np.mean(vals))


def _naive_y(img: torch.Tensor) -> np.ndarray:
    x = np.round(img[0].numpy().astype(np.float64) * 255) / 255
    return 16 + 65.481 * x[0] + 128.553 * x[1] + 24.966 * x[2]


# ----------------------------------------------------------------------------- PSNR
def test_identical_images_give_inf_psnr_and_ssim_one():
    x = _levels(0, 16, 20)
    for y_channel in (True, False):
        assert psnr(x, x.clone(), y_channel=y_channel) == float("inf")
        assert ssim(x, x.clone(), y_channel=y_channel) == pytest.approx(1.0, abs=1e-12)
    # (3,H,W) works as well as (1,3,H,W); float64 inputs too
    assert psnr(x[0], x[0].double()) == float("inf")


def test_psnr_of_a_constant_offset_is_known():
    hq = _levels(1, 12, 12, lo=20, hi=200)
    for d in (1, 5, 17):
        sr = hq + d / 255
        # RGB: every sample is off by d levels -> MSE = d^2
        assert psnr(sr, hq, y_channel=False) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
        # Y: the luma moves by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255
        expected = 20 * math.log10(255 / (d * 219 / 255))
        assert psnr(sr, hq) == pytest.approx(expected, abs=1e-4)


def test_quantisation_to_8_bit_and_clamping():
    hq = _levels(2, 8, 8, lo=10, hi=240)
    assert psnr(hq + 0.4 / 255, hq) == float("inf")  # rounds to the same levels
    over = torch.ones(1, 3, 8, 8) * 1.7
    assert psnr(over, torch.ones(1, 3, 8, 8)) == float("inf")  # clamped to 1
    nan = torch.full((1, 3, 8, 8), float("nan"))
    assert psnr(nan, torch.zeros(1, 3, 8, 8)) == float("inf")  # NaN counts as 0


def test_y_channel_of_pure_colours():
    colours = torch.tensor(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], dtype=torch.float64
    )
    y = rgb_to_y(colours.T.reshape(3, 1, 5))[0, 0]
    expected = [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0]
    assert y.tolist() == pytest.approx(expected, abs=1e-4)


def test_crop_border_removes_border_differences():
    hq = _levels(3, 24, 24)
    sr = hq.clone()
    sr[..., :2, :] = 1 - sr[..., :2, :]  # damage the top two rows
    sr[..., :, -2:] = 1 - sr[..., :, -2:]  # and the right two columns
    assert math.isfinite(psnr(sr, hq, crop_border=1))
    assert psnr(sr, hq, crop_border=2) == float("inf")
    assert ssim(sr, hq, crop_border=2) == pytest.approx(1.0)
    assert ssim(sr, hq) < ssim(sr, hq, crop_border=1) < 1.0
    # the MSE is over the cropped area only
    base = _levels(6, 24, 24, hi=240)
    inner = base.clone()
    inner[..., 5, 5] += 10 / 255  # 3 samples (R, G, B) off by 10 levels, 3 * 20 * 20 kept
    assert psnr(inner, base, crop_border=2, y_channel=False) == pytest.approx(
        10 * math.log10(255**2 / (3 * 100 / (3 * 20 * 20))), abs=1e-9
    )


# ----------------------------------------------------------------------------- SSIM
def test_ssim_of_constant_images_is_known():
    a, b = torch.full((1, 3, 16, 16), 100 / 255), torch.full((1, 3, 16, 16), 110 / 255)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)  # no variance: only the luminance term
    assert ssim(a, b, y_channel=False) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_a_naive_window_by_window_implementation():
    hq = _levels(4, 17, 19)
    sr = (hq + 0.08 * torch.randn(hq.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    sr = torch.round(sr * 255) / 255
    expected_y = _naive_ssim(_naive_y(sr), _naive_y(hq))
    assert ssim(sr, hq) == pytest.approx(expected_y, abs=1e-6)
    a, b = sr[0].double().numpy() * 255, hq[0].double().numpy() * 255
    expected_rgb = np.mean([_naive_ssim(np.round(a[c]), np.round(b[c])) for c in range(3)])
    assert ssim(sr, hq, y_channel=False) == pytest.approx(expected_rgb, abs=1e-9)
    # with a crop: the same on the cropped maps
    cropped = _naive_ssim(_naive_y(sr)[2:-2, 2:-2], _naive_y(hq)[2:-2, 2:-2])
    assert ssim(sr, hq, crop_border=2) == pytest.approx(cropped, abs=1e-6)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "sr, hq, kwargs",
    [
        (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17), {}),  # size mismatch
        (torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), {}),  # a batch of two
        (torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), {}),  # one channel
        (torch.rand(16, 16), torch.rand(16, 16), {}),  # no channel axis
        (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), {"crop_border": 8}),  # nothing left
        (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), {"crop_border": -1}),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 16, 16), {}),
        (np.zeros((3, 16, 16)), torch.zeros(3, 16, 16), {}),
    ],
)
def test_bad_inputs_are_usage_errors(sr, hq, kwargs):
    for fn in (psnr, ssim):
        with pytest.raises(UsageError):
            fn(sr, hq, **kwargs)


def test_ssim_needs_an_11x11_window():
    x = torch.rand(1, 3, 14, 14)
    assert ssim(x, x) == pytest.approx(1.0)
    with pytest.raises(UsageError, match="11x11"):
        ssim(x, x, crop_border=2)
    assert psnr(x, x, crop_border=2) == float("inf")  # PSNR has no such limit


# ----------------------------------------------------------------------------- codebook accuracy
def test_codebook_accuracy_on_hand_made_maps():
    gt = torch.tensor([0, 1, 2, 3]).view(1, 1, 2, 2)
    chosen = torch.tensor([0, 1, 9, 9]).view(1, 1, 2, 2)
    ranks = [[0, 5, 6], [1, 4, 4], [7, 2, 8], [8, 9, 3]]  # gt at rank 1, 1, 2, 3
    candidates = torch.tensor(ranks).T.reshape(1, 3, 2, 2)
    acc = codebook_accuracy(chosen, candidates, gt, ks=(1, 2, 3, 5))
    assert acc == {"top1": 0.5, "topk@1": 0.5, "topk@2": 0.75, "topk@3": 1.0}  # 5 > K: left out
    # batch of two: the share is over all positions of all images
    acc2 = codebook_accuracy(
        torch.cat([chosen, gt]), torch.cat([candidates, candidates]), torch.cat([gt, gt]), ks=(3,)
    )
    assert acc2 == {"top1": 0.75, "topk@3": 1.0}
    # top1 follows `chosen`, not the ranking (UGTSR's fused match may differ from rank 1)
    assert codebook_accuracy(gt, candidates, gt, ks=(1,))["top1"] == 1.0


def test_codebook_accuracy_shape_errors():
    gt = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(UsageError):
        codebook_accuracy(gt, torch.zeros(1, 3, 2, 3, dtype=torch.long), gt)
    with pytest.raises(UsageError):
        codebook_accuracy(gt[0], torch.zeros(1, 3, 2, 2, dtype=torch.long), gt)
    with pytest.raises(UsageError):
        codebook_accuracy(gt, torch.zeros(1, 3, 2, 2, dtype=torch.long), gt, ks=(0,))
