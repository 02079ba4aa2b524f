"""NIQE (realsr_cli.evaluation.niqe): recorded reference values, the MATLAB resize, invariances and
errors.

Reference values: basicsr 1.4.2, the sdist from PyPI (``pip download basicsr==1.4.2 --no-deps``,
unpacked), in a scratch venv outside the repo with numpy 2.4.6, scipy 1.17.1, torch 2.13.0+cpu,
opencv 5.0.0; only ``basicsr/metrics/niqe.py`` and the modules it imports were loaded (the
package ``__init__`` pulls in the whole training stack). For each image::

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)            # uint8 BGR
    basicsr.metrics.niqe.calculate_niqe(img, crop_border, input_order="HWC", convert_to="y")

Ours agreed to better than 1e-9 on that machine (the implementation reproduces the reference's
float32 steps); the tests allow 1e-3, since other BLAS builds round the resize differently.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from realsr_cli.engine import io
from realsr_cli.errors import ModelError, UsageError
from realsr_cli.evaluation import niqe
from tests.parity import shared_dir

#: (image under ../shared/data, crop_border) -> basicsr 1.4.2 calculate_niqe
REFERENCE = {
    ("Set5/baby.png", 0): 3.2654885750,
    ("Set5/bird.png", 0): 4.3620784384,
    ("RealSRSet+5images/OST_009.png", 0): 5.5920815140,
    ("RealSRSet+5images/00003.png", 0): 4.0326069759,
    ("RealSRSet+5images/tiger.png", 0): 7.1273854321,
    ("Set5/baby.png", 4): 3.3221201509,
    ("Set5/bird.png", 4): 5.2830716202,
    ("RealSRSet+5images/00003.png", 4): 3.9155099705,
}


def _load(rel: str) -> torch.Tensor:
    px = io.read_image(shared_dir() / "data" / rel).pixels
    return torch.from_numpy(px).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize(("rel", "crop"), sorted(REFERENCE))
def test_niqe_matches_basicsr_reference(rel, crop):
    value = niqe.niqe(_load(rel), crop_border=crop)
    assert value == pytest.approx(REFERENCE[(rel, crop)], abs=1e-3)


def test_shipped_pristine_model_is_the_basicsr_file():
    shipped = Path(niqe.__file__).resolve().parent.parent / "data" / "niqe_pris_params.npz"
    source = shared_dir() / "data" / "metrics" / "niqe_pris_params.npz"
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    mu, cov, window = niqe.pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
    assert np.allclose(cov, cov.T) and window.sum() == pytest.approx(1.0)
    # the MSCN window is the 7x7 Gaussian with sigma 7/6
    t = np.arange(7) - 3.0
    g = np.exp(-(t**2) / (2 * (7 / 6) ** 2))
    assert np.allclose(window, np.outer(g, g) / np.outer(g, g).sum(), atol=1e-12)


# ----------------------------------------------------------------------------- MATLAB imresize
def _dense_resize_matrix(n: int, scale: float) -> np.ndarray:
    """An independent float64 build of MATLAB's antialiased bicubic resize along one axis."""
    out = math.ceil(n * scale)
    m = np.zeros((out, n))
    for k in range(1, out + 1):
        u = k / scale + 0.5 * (1 - 1 / scale)
        for j in range(math.floor(u - 2 / scale) - 1, math.ceil(u + 2 / scale) + 2):
            d = abs((u - j) * scale)
            w = (1.5 * d**3 - 2.5 * d**2 + 1) if d <= 1 else (
                (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) if d <= 2 else 0.0)
            src = j - 1
            src = -src - 1 if src < 0 else (2 * n - 1 - src if src >= n else src)
            m[k - 1, src] += w * scale
        m[k - 1] /= m[k - 1].sum()
    return m


@pytest.mark.parametrize(("h", "w"), [(96, 192), (13, 10), (40, 41)])
def test_imresize_half_matches_an_independent_float64_resize(h, w):
    rng = np.random.default_rng(h * w)
    img = rng.random((h, w))
    ours = niqe.imresize(torch.from_numpy(img), 0.5).numpy()
    ref = _dense_resize_matrix(h, 0.5) @ img @ _dense_resize_matrix(w, 0.5).T
    assert ours.shape == (math.ceil(h / 2), math.ceil(w / 2)) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5


def test_imresize_keeps_constants_and_linear_ramps():
    const = niqe.imresize(torch.full((20, 30), 0.25), 0.5)
    assert torch.allclose(const, torch.full((10, 15), 0.25))
    # bicubic reproduces linear functions: away from the mirrored borders, output k (0-based)
    # samples the input at 2k + 0.5
    ramp = torch.arange(40, dtype=torch.float32).expand(8, 40)
    out = niqe.imresize(ramp, 0.5)[0]
    k = torch.arange(20, dtype=torch.float32)
    assert torch.allclose(out[3:-3], (2 * k + 0.5)[3:-3], atol=1e-4)
    assert not torch.allclose(out[:1], (2 * k + 0.5)[:1], atol=1e-3)  # mirrored border


# ----------------------------------------------------------------------------- features
def test_shape_grid_is_strictly_increasing_and_nearest_search_is_argmin():
    grid, ratio, _, _ = niqe._shape_grid()
    assert len(grid) == 9801 and grid[0] == pytest.approx(0.2) and grid[-1] == pytest.approx(10)
    assert np.all(np.diff(ratio) > 0)  # what the binary search relies on
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = (rng.standard_normal(500) * rng.uniform(0.1, 3)).astype(np.float32)
        x = np.where(x > 0, x * rng.uniform(1.5, 3), x).astype(np.float32)  # asymmetric
        alpha, bl, br, i = niqe._aggd(x)
        left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
        g = left / right
        r = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
        rn = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        assert i == int(np.argmin((ratio - rn) ** 2)) and alpha == grid[i]
        assert bl < br  # the positive side was stretched


def test_aggd_of_a_gaussian_has_shape_two_and_a_one_sided_sample_is_nan():
    x = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    alpha, bl, br, _ = niqe._aggd(x)
    assert alpha == pytest.approx(2.0, abs=0.03)
    # GGD scale beta = sigma sqrt(G(1/a) / G(3/a)): sqrt(2) for a unit Gaussian
    assert bl == pytest.approx(math.sqrt(2), abs=0.02) and br == pytest.approx(math.sqrt(2), abs=0.02)
    alpha, bl, br, i = niqe._aggd(np.abs(x))
    assert i == 0 and math.isnan(bl) and not math.isnan(br)


def test_mscn_of_a_constant_image_is_zero():
    _, _, window = niqe.pristine_model()
    out = niqe.mscn(torch.full((30, 40), 117.0), torch.from_numpy(window))
    assert out.shape == (30, 40) and out.abs().max() == 0


# ----------------------------------------------------------------------------- invariances
def test_niqe_ignores_what_the_block_grid_drops_and_applies_the_crop():
    img = _load("Set5/baby.png")[:, :250, :330]  # 2 x 3 whole blocks + a remainder
    assert niqe.niqe(img) == niqe.niqe(img[:, :192, :288])
    assert niqe.niqe(img, crop_border=5) == niqe.niqe(img[:, 5:-5, 5:-5])
    # gray (1 channel) is scored as RGB with equal channels
    gray = img[:1, :192, :288]
    assert niqe.niqe(gray.expand(3, -1, -1)) == niqe.niqe(gray.repeat(3, 1, 1)[None])


def test_niqe_is_invariant_to_a_half_turn_but_not_to_a_mirror():
    """A half turn maps blocks to blocks and each neighbour direction onto itself (the mirrored
    borders and the resize are symmetric); a mirror swaps the two diagonal directions, whose
    features the pristine model tells apart."""
    img = _load("Set5/bird.png")[:, :192, :288]
    base = niqe.niqe(img)
    assert niqe.niqe(img.flip(1, 2)) == pytest.approx(base, abs=1e-4)
    assert abs(niqe.niqe(img.flip(2)) - base) > 1e-2


def test_niqe_rises_with_blur_and_noise():
    img = _load("Set5/baby.png")[:, :288, :288]
    base = niqe.niqe(img)
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0)))
    blurred = torch.from_numpy(io.resize(io.resize(img.permute(1, 2, 0).numpy(), (72, 72)),
                                         (288, 288))).permute(2, 0, 1)
    assert niqe.niqe(noisy.clamp(0, 1)) > base + 2
    assert niqe.niqe(blurred) > base + 2


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("h", "w"), [(95, 400), (96, 96), (150, 191)])
def test_too_small_images_are_usage_errors(h, w):
    img = torch.rand(3, h, w)
    with pytest.raises(UsageError, match="at least two 96x96 blocks"):
        niqe.niqe(img)


def test_two_blocks_suffice_and_crop_is_checked():
    img = _load("Set5/baby.png")[:, :96, :192]
    assert math.isfinite(niqe.niqe(img))
    with pytest.raises(UsageError, match="at least two"):
        niqe.niqe(img, crop_border=1)
    with pytest.raises(UsageError, match="crop_border"):
        niqe.niqe(img, crop_border=-1)
    with pytest.raises(UsageError, match="leaves nothing"):
        niqe.niqe(img, crop_border=48)
    with pytest.raises(UsageError, match="shape"):
        niqe.niqe(torch.rand(2, 3, 96, 192))


def test_flat_images_are_undefined():
    with pytest.raises(UsageError, match="undefined"):
        niqe.niqe(torch.full((3, 192, 192), 0.5))


def test_a_missing_pristine_model_is_a_model_error(monkeypatch):
    niqe.pristine_model.cache_clear()
    monkeypatch.setattr(niqe, "_PARAMS", "no_such_file.npz")
    try:
        with pytest.raises(ModelError, match="no_such_file.npz") as info:
            niqe.niqe(torch.rand(3, 96, 192))
        assert info.value.exit_code == 3 and "reinstall" in (info.value.hint or "")
    finally:
        niqe.pristine_model.cache_clear()
