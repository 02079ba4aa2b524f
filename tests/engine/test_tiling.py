"""Tiling contract: plans cover the image, windows are safe, tiled == untiled (engine/tiling.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from realsr_cli.engine import tiling
from realsr_cli.engine.tiling import Tile, gaussian_window, plan_tiles, tiled_forward
from realsr_cli.errors import ModelError, UsageError

# ---------------------------------------------------------------- gaussian_window


@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 9), (64, 64), (33, 20)])
@pytest.mark.parametrize("sigma", [0.01, 0.25, tiling.REALSRT_SIGMA, 5.0])
def test_window_positive_symmetric_peaked(h, w, sigma):
    win = gaussian_window(h, w, sigma=sigma)
    assert win.shape == (h, w) and win.dtype == torch.float32
    assert bool((win > 0).all())
    assert torch.equal(win, win.flip(0)) and torch.equal(win, win.flip(1))
    assert float(win.max()) <= 1.0
    # the maximum sits at the centre pixel(s)
    cy, cx = (h - 1) // 2, (w - 1) // 2
    assert float(win[cy, cx]) == float(win.max())
    # and decreases away from it
    if w > 2:
        assert float(win[cy, 0]) <= float(win[cy, cx])


def test_window_convention_is_offset_over_side():
    n = 65  # odd: centre pixel 32, edge pixel offset 32 px = 32/65 of the side
    win = gaussian_window(n, n, sigma=tiling.REALSRT_SIGMA, dtype=torch.float64)
    assert float(win[32, 32]) == pytest.approx(1.0)
    expected = math.exp(-((32 / 65) ** 2) / (2 * 0.05))
    assert float(win[32, 0]) == pytest.approx(expected, rel=1e-9)
    assert tiling.sigma_from_variance(0.05) == pytest.approx(tiling.REALSRT_SIGMA)


def test_window_floor_and_errors():
    win = gaussian_window(50, 50, sigma=1e-3)
    assert float(win.min()) == pytest.approx(tiling.MIN_WEIGHT)
    with pytest.raises(UsageError):
        gaussian_window(4, 4, sigma=0)
    with pytest.raises(UsageError):
        gaussian_window(0, 4)


# ---------------------------------------------------------------- plan_tiles

SIZES = [(1, 1), (5, 300), (37, 53), (64, 64), (65, 64), (101, 67), (200, 129)]
SETTINGS = [(16, 4, 1), (32, 8, 8), (48, 16, 1), (64, 32, 1), (20, 0, 8), (64, 16, 16)]


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("tile", "overlap", "multiple"), SETTINGS)
def test_plan_covers_with_equal_tiles(height, width, tile, overlap, multiple):
    tiles = plan_tiles(height, width, tile, overlap, multiple)
    assert tiles == plan_tiles(height, width, tile, overlap, multiple)  # deterministic
    assert len(set(tiles)) == len(tiles)
    hits = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        assert (t.h, t.w) == (tiles[0].h, tiles[0].w)
        assert 0 <= t.y and t.y + t.h <= height and 0 <= t.x and t.x + t.w <= width
        hits[t.y : t.y + t.h, t.x : t.x + t.w] += 1
    assert bool((hits > 0).all())
    for n, side in ((height, tiles[0].h), (width, tiles[0].w)):
        if n <= tile:
            assert side == n  # a side that fits is one whole tile
        else:
            assert side % multiple == 0 and side <= max(tile, multiple)
    ys = sorted({t.y for t in tiles})
    xs = sorted({t.x for t in tiles})
    assert ys[0] == 0 and ys[-1] + tiles[0].h == height  # last shifted back, not shrunk
    assert xs[0] == 0 and xs[-1] + tiles[0].w == width
    for starts, side in ((ys, tiles[0].h), (xs, tiles[0].w)):
        assert all(0 < b - a <= side - overlap for a, b in itertools.pairwise(starts))
    assert [(t.y, t.x) for t in tiles] == sorted((t.y, t.x) for t in tiles)  # row-major


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_rectangular_plan_is_each_side_planned_on_its_own(height, width):
    """``tile=(th, tw)``: rows as a square ``th`` plans them, columns as a square ``tw`` does."""
    rect = plan_tiles(height, width, (32, 48), 8, 8)
    rows = {(t.y, t.h) for t in plan_tiles(height, width, 32, 8, 8)}
    cols = {(t.x, t.w) for t in plan_tiles(height, width, 48, 8, 8)}
    assert {(t.y, t.h) for t in rect} == rows and {(t.x, t.w) for t in rect} == cols
    assert len(rect) == len(rows) * len(cols)


def test_plan_small_image_is_one_whole_tile():
    assert plan_tiles(30, 40, 64, 16, 8) == [Tile(0, 0, 30, 40)]


def test_plan_realsrt_setting():
    tiles = plan_tiles(128, 96, 64, 32)
    assert sorted({t.y for t in tiles}) == [0, 32, 64] and sorted({t.x for t in tiles}) == [0, 32]
    assert all((t.h, t.w) == (64, 64) for t in tiles)


@pytest.mark.parametrize(
    ("tile", "overlap", "multiple"), [(16, 16, 1), (0, 0, 1), (16, -1, 1), (16, 2, 0)]
)
def test_plan_rejects_bad_settings(tile, overlap, multiple):
    with pytest.raises(UsageError):
        plan_tiles(100, 100, tile, overlap, multiple)


# ---------------------------------------------------------------- tiled_forward


class LocalNet(nn.Module):
    """3x3 conv stack (receptive-field radius 4 LR px) + PixelShuffle: a purely local model."""

    def __init__(self, scale: int, channels: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x):
        return self.body(x)


RADIUS = 4


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return {size: torch.rand(1, 3, *size, generator=g) for size in [(37, 53), (101, 67)]}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(37, 53), (101, 67)])
@pytest.mark.parametrize(
    ("tile", "overlap", "multiple", "batch"),
    [(16, 8, 1, 1), (24, 16, 8, 3), (32, 12, 1, 4), (40, 16, 4, 2), ((16, 40), 8, 1, 2), ((40, 24), 16, 8, 3)],
)
@pytest.mark.parametrize("window", ["gaussian", "flat"])
def test_tiled_equals_untiled_for_local_model(
    images, scale, size, tile, overlap, multiple, batch, window
):
    net = LocalNet(scale)
    lq = images[size]
    with torch.inference_mode():
        ref = net(lq)
        calls = []

        def fn(x, tiles):
            assert x.shape[0] == len(tiles) <= batch
            calls.append(len(tiles))
            return net(x)

        out = tiled_forward(
            fn,
            lq,
            scale=scale,
            tile=tile,
            overlap=overlap,
            multiple=multiple,
            batch=batch,
            window=window,
            margin=RADIUS,
        )
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert sum(calls) > 1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_default_margin_is_exact_when_overlap_covers_radius(images):
    net = LocalNet(2)
    lq = images[(101, 67)]
    with torch.inference_mode():
        out = tiled_forward(lambda x, t: net(x), lq, scale=2, tile=32, overlap=4 * RADIUS, batch=2)
        torch.testing.assert_close(out, net(lq), atol=1e-5, rtol=0)


def test_without_margin_conv_borders_show(images):
    """Sanity check that the margin matters: a conv net is not exact with margin 0."""
    net = LocalNet(2)
    lq = images[(37, 53)]
    with torch.inference_mode():
        out = tiled_forward(lambda x, t: net(x), lq, scale=2, tile=16, overlap=8, margin=0)
        assert float((out - net(lq)).abs().max()) > 1e-4


@pytest.mark.parametrize("margin", [0, 3, 6])
def test_weights_never_vanish(margin):
    lq = torch.zeros(1, 1, 45, 71)
    out = tiled_forward(
        lambda x, t: torch.ones(x.shape[0], 1, x.shape[2] * 3, x.shape[3] * 3),
        lq,
        scale=3,
        tile=16,
        overlap=12,
        sigma=0.05,
        margin=margin,
    )
    torch.testing.assert_close(out, torch.ones(1, 1, 135, 213))


def test_realsrt_eq3_aggregation():
    """margin=0 + Gaussian = Eq. 3: sum_j W_j/W_sum * I_j with W_j a centred Gaussian on patch j."""
    scale, h, w = 4, 128, 96
    lq = torch.zeros(1, 3, h, w)
    plan = plan_tiles(h, w, 64, 32)
    value = {t: float(i + 1) for i, t in enumerate(plan)}  # each patch outputs a constant

    def fn(x, tiles):
        return torch.cat([torch.full((1, 3, 64 * scale, 64 * scale), value[t]) for t in tiles])

    out = tiled_forward(
        fn, lq, scale=scale, tile=64, overlap=32, sigma=tiling.REALSRT_SIGMA, margin=0, batch=4
    )
    num = torch.zeros(h * scale, w * scale, dtype=torch.float64)
    den = torch.zeros_like(num)
    win = gaussian_window(64 * scale, 64 * scale, sigma=tiling.REALSRT_SIGMA, dtype=torch.float64)
    for t in plan:
        sl = (slice(t.y * scale, (t.y + t.h) * scale), slice(t.x * scale, (t.x + t.w) * scale))
        num[sl] += win * value[t]
        den[sl] += win
    torch.testing.assert_close(out[0, 0].double(), num / den, atol=1e-5, rtol=0)


def test_batch_rows_are_tile_major_and_tiles_match_crops():
    lq = torch.rand(2, 3, 30, 41)
    seen = []

    def fn(x, tiles):
        n = 2
        for i, t in enumerate(tiles):
            torch.testing.assert_close(
                x[i * n : (i + 1) * n], lq[:, :, t.y : t.y + t.h, t.x : t.x + t.w]
            )
            seen.append(t)
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    out = tiled_forward(fn, lq, scale=2, tile=16, overlap=4, batch=3)
    assert seen == plan_tiles(30, 41, 16, 4)
    torch.testing.assert_close(out, lq.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_small_image_runs_whole_and_reports_progress():
    lq = torch.rand(1, 3, 20, 30)
    calls, progress = [], []

    def fn(x, tiles):
        calls.append(tiles)
        return torch.zeros(x.shape[0], 3, 40, 60, dtype=torch.float16)

    out = tiled_forward(
        fn, lq, scale=2, tile=64, overlap=8, progress=lambda d, t: progress.append((d, t))
    )
    assert calls == [[Tile(0, 0, 20, 30)]] and progress == [(1, 1)] and out.dtype == torch.float32


def test_progress_counts_tiles():
    lq = torch.rand(1, 3, 40, 40)
    progress = []
    tiled_forward(
        lambda x, t: x.repeat_interleave(2, 2).repeat_interleave(2, 3),
        lq,
        scale=2,
        tile=16,
        overlap=4,
        batch=4,
        progress=lambda d, t: progress.append((d, t)),
    )
    total = len(plan_tiles(40, 40, 16, 4))
    assert progress[-1] == (total, total) and [d for d, _ in progress] == sorted(
        d for d, _ in progress
    )


def test_wrong_output_size_is_model_error():
    with pytest.raises(ModelError, match="expected"):
        tiled_forward(lambda x, t: x, torch.rand(1, 3, 40, 40), scale=2, tile=16, overlap=4)


def test_bad_margin_and_window():
    lq = torch.rand(1, 3, 40, 40)
    with pytest.raises(UsageError):
        tiled_forward(lambda x, t: x, lq, scale=1, tile=16, overlap=4, margin=3)
    with pytest.raises(UsageError):
        tiled_forward(lambda x, t: x, lq, scale=1, tile=16, overlap=4, window="cosine")
