"""No visible seams: FeMaSR run tiled (tile 32, overlap 16) vs. whole on a real photo crop.

Seam metric: the mean gradient energy (|dx| + |dy|) of the HR output on a thin band of rows/columns
at the tile borders (``plan_tiles`` x scale) divided by the mean energy elsewhere. A seam is an
edge the image does not have, so it raises the tiled ratio above the untiled ratio measured at the
same positions; blending that smears the borders lowers it. Both must stay within 15%.
A control run with overlap 0 (hard tile edges) must fail that bound, so the metric has power.

The reduced parity weights are seeded random weights, so FeMaSR's output is far from local: the
whole-image output and a crop's output already differ in the crop's interior (~15-19 dB PSNR), and
tiled vs. whole therefore sits near 16 dB here. The PSNR floor guards against gross tiling errors
(misplaced tiles, wrong normalisation: those fall to single digits), not against model non-locality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import realsr_cli
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.engine.tiling import plan_tiles
from tests.parity import shared_dir

TILE, OVERLAP = 32, 16
#: LR crop (left, top, right, bottom): 64x64 LR -> 256x256 HR, 3x3 tiles of 32 px (CI-fast)
CROP_BOX = (0, 0, 64, 64)
BAND = 2  # HR pixels either side of a border line counted as "border"
RATIO_TOL = 0.15
#: measured 15.86 dB (tiled vs whole, this crop, CPU fp32); floor with ~3 dB margin
PSNR_FLOOR_DB = 13.0


@pytest.fixture(scope="module")
def femasr(tmp_path_factory):
    src = shared_dir() / "parity" / "femasr_x4_reduced" / "weights.safetensors"
    dst = tmp_path_factory.mktemp("seams") / "femasr-x4-reduced.safetensors"
    realsr_cli.convert_checkpoint(src, dst, arch="femasr")
    return realsr_cli.load_model(dst)


@pytest.fixture(scope="module")
def lq() -> torch.Tensor:
    img = Image.open(shared_dir() / "data" / "Set14" / "baboon.png").convert("RGB").crop(CROP_BOX)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def outputs(femasr, lq):
    tiled = run_model(femasr, lq, RunOptions(tile=TILE, tile_overlap=OVERLAP, tile_batch=16))
    whole = run_model(femasr, lq, RunOptions(tile=0))
    return tiled, whole


def _energy(sr: torch.Tensor) -> np.ndarray:
    """|dx| + |dy| per HR pixel (channel mean), of the output clamped to [0, 1] as it is saved."""
    x = sr.clamp(0, 1)[0].mean(0).double().numpy()
    e = np.zeros_like(x)
    dy = np.abs(np.diff(x, axis=0))
    dx = np.abs(np.diff(x, axis=1))
    # a step between pixel i-1 and i is charged to both, so a border line at i is centred
    e[1:, :] += dy
    e[:-1, :] += dy
    e[:, 1:] += dx
    e[:, :-1] += dx
    return e


def _border_mask(h: int, w: int, scale: int) -> np.ndarray:
    """HR pixels within BAND of an interior tile edge (every tile's start and end, x scale)."""
    tiles = plan_tiles(h, w, TILE, OVERLAP, multiple=16)
    rows = {v * scale for t in tiles for v in (t.y, t.y + t.h)} - {0, h * scale}
    cols = {v * scale for t in tiles for v in (t.x, t.x + t.w)} - {0, w * scale}
    assert rows and cols, "the crop must be cut into several tiles both ways"
    mask = np.zeros((h * scale, w * scale), dtype=bool)
    for r in rows:
        mask[max(0, r - BAND) : r + BAND, :] = True
    for c in cols:
        mask[:, max(0, c - BAND) : c + BAND] = True
    return mask


def _ratio(e: np.ndarray, mask: np.ndarray) -> float:
    return float(e[mask].mean() / e[~mask].mean())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_tiled_run_really_tiles(outputs, femasr, lq):
    tiled, whole = outputs
    h, w = lq.shape[-2:]
    assert tiled.tiles == len(plan_tiles(h, w, TILE, OVERLAP, multiple=16)) > 1
    assert whole.tiles == 1 and whole.tile == 0
    assert tiled.sr.shape == whole.sr.shape == (1, 3, h * femasr.scale, w * femasr.scale)
    assert torch.isfinite(tiled.sr).all()


def test_no_visible_seams(outputs, femasr, lq):
    tiled, whole = outputs
    h, w = lq.shape[-2:]
    mask = _border_mask(h, w, femasr.scale)
    r_tiled = _ratio(_energy(tiled.sr), mask)
    r_whole = _ratio(_energy(whole.sr), mask)
    rel = r_tiled / r_whole - 1
    assert abs(rel) <= RATIO_TOL, (
        f"seam ratio border/elsewhere: tiled {r_tiled:.4f} vs whole {r_whole:.4f} ({rel:+.1%})"
    )


def test_tiled_close_to_whole(outputs):
    tiled, whole = outputs
    psnr = _psnr(tiled.sr, whole.sr)
    assert psnr >= PSNR_FLOOR_DB, f"PSNR(tiled, whole) = {psnr:.2f} dB < {PSNR_FLOOR_DB} dB"


def test_metric_detects_hard_tile_edges(outputs, femasr, lq):
    """Control: abutting tiles (overlap 0) leave seams the metric must see (measured +21%)."""
    _, whole = outputs
    hard = run_model(femasr, lq, RunOptions(tile=TILE, tile_overlap=0, tile_batch=16))
    h, w = lq.shape[-2:]
    s = femasr.scale
    mask = np.zeros((h * s, w * s), dtype=bool)
    for v in range(TILE * s, h * s, TILE * s):
        mask[v - BAND : v + BAND, :] = True
    for v in range(TILE * s, w * s, TILE * s):
        mask[:, v - BAND : v + BAND] = True
    rel = _ratio(_energy(hard.sr), mask) / _ratio(_energy(whole.sr), mask) - 1
    assert rel > RATIO_TOL, f"overlap-0 seams not detected: {rel:+.1%}"
