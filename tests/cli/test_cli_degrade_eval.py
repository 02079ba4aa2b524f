"""`realsr degrade` (reproducible synthetic LR sets) and `realsr eval` (PSNR/SSIM, codebook
matching accuracy) end to end, with tiny random FeMaSR weights on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_cli.engine import api, io
from realsr_cli.evaluation.metrics import psnr, ssim
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.registry.loader import save_weights
from tests.cli.conftest import run_cli

#: a tiny x2 FeMaSR (code grid: 4 HR px per code, LR padded to multiples of 32) and its HR prior
TINY = dict(channels=(32, 32, 32), gt_resolution=64, codebook_size=16, codebook_dim=8)
TINY_SR = FeMaSRConfig(scale=2, swin_dim=32, swin_heads=4, swin_depth=1, swin_blocks=1, **TINY)
TINY_PRIOR = FeMaSRConfig(scale=1, lq_stage=False, **TINY)


def _png(path: Path, h: int, w: int, seed: int, gray: bool = False) -> Path:
    """A smooth random 8-bit image (a small noise field, upsampled): SR scores are not trivial."""
    rng = np.random.default_rng(seed)
    c = 1 if gray else 3
    small = rng.random((max(2, h // 4), max(2, w // 4), c)).astype(np.float32)
    px = io.resize(small, (h, w), filter="bicubic").reshape(h, w, c).clip(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_image(path, io.ImageData(pixels=px), format="PNG")
    return path


def _weights(tmp: Path, name: str, config: FeMaSRConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    net = FeMaSRNet(config)
    return save_weights(tmp / f"{name}.safetensors", arch="femasr", config=config,
                        state_dict=net.state_dict())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tiny-femasr")
    return _weights(tmp, "sr", TINY_SR, 0), _weights(tmp, "hrp", TINY_PRIOR, 1)


# ----------------------------------------------------------------------------- degrade
@pytest.fixture
def hr_dir(tmp_path) -> Path:
    root = tmp_path / "hr"
    _png(root / "a.png", 30, 34, 0)  # sides not divisible by 4: cropped to 28x32
    _png(root / "sub" / "b.png", 32, 24, 1)
    _png(root / "g.png", 16, 16, 2, gray=True)
    return root


def _degrade(hr: Path, lr: Path, *extra: str):
    return run_cli(["degrade", str(hr), str(lr), "--scale", "4", "-r", *extra])


def test_degrade_is_reproducible_per_image(hr_dir, tmp_path):
    runs = {}
    for name, seed in (("one", "7"), ("two", "7"), ("other", "8")):
        res = _degrade(hr_dir, tmp_path / name, "--seed", seed, "--pipeline", "bsrgan", "--json")
        assert res.code == 0, res.stderr
        runs[name] = json.loads(res.stdout)
    files = ["a.png", "sub/b.png", "g.png"]
    one, two, other = (tmp_path / n for n in ("one", "two", "other"))
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes()
        assert (one / f).read_bytes() != (other / f).read_bytes()
    # sizes: HR cropped to a multiple of 4, then / 4; gray comes out RGB
    sizes = {f: Image.open(one / f).size for f in files}
    assert sizes == {"a.png": (8, 7), "sub/b.png": (6, 8), "g.png": (4, 4)}
    assert Image.open(one / "g.png").mode == "RGB"
    # manifest on disk and on stdout
    manifest = json.loads((one / "degrade.json").read_text())
    assert manifest["pipeline"] == "bsrgan" and manifest["scale"] == 4 and manifest["seed"] == 7
    assert "version" in manifest and manifest["failed"] == []
    by_hr = {e["hr"]: e for e in manifest["files"]}
    assert by_hr["a.png"]["hr_size"] == [32, 28] and by_hr["a.png"]["lr_size"] == [8, 7]
    assert runs["one"]["files"] == manifest["files"] and runs["one"]["done"] == 3
    # one image alone (another set of files, another order) gives the same bytes
    alone = tmp_path / "alone"
    assert _degrade(hr_dir, alone, "--seed", "7", "-p", "bsrgan", "--glob", "sub/*").code == 0
    assert (alone / "sub/b.png").read_bytes() == (one / "sub/b.png").read_bytes()
    assert not (alone / "a.png").exists()


def test_degrade_goes_on_past_a_corrupt_file_and_exits_6(hr_dir, tmp_path):
    (hr_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lr = tmp_path / "lr"
    res = _degrade(hr_dir, lr)
    assert res.code == 6, res.stderr
    assert "bad.png" in res.stderr
    assert (lr / "a.png").is_file() and (lr / "sub" / "b.png").is_file()
    assert not (lr / "bad.png").exists()
    manifest = json.loads((lr / "degrade.json").read_text())
    assert [f["hr"] for f in manifest["failed"]] == ["bad.png"]
    assert manifest["pipeline"] == "realesrgan" and len(manifest["files"]) == 3
    assert not list(lr.rglob("*.tmp"))
    # --skip-existing retries only the failure; other settings would mix two sets: refused
    before = (lr / "a.png").stat().st_mtime_ns
    (hr_dir / "bad.png").unlink()
    assert _degrade(hr_dir, lr, "--skip-existing").code == 0
    assert (lr / "a.png").stat().st_mtime_ns == before
    again = json.loads((lr / "degrade.json").read_text())
    assert again["files"] == manifest["files"] and again["failed"] == []  # sizes kept
    res = _degrade(hr_dir, lr, "--skip-existing", "--seed", "3")
    assert res.code == 2 and "seed=0" in res.stderr


# ----------------------------------------------------------------------------- eval
@pytest.fixture
def pairs(tmp_path) -> tuple[Path, Path]:
    """HR 40x40 (and 41x43: not divisible by 2) with LR halves; an LR image without HR."""
    hq, lq = tmp_path / "hq", tmp_path / "lq"
    for name, (h, w) in {"x": (40, 40), "y": (41, 43)}.items():
        hr = io.read_image(_png(hq / f"{name}.png", h, w, seed=len(name) + h))
        small = io.resize(hr.pixels[: h // 2 * 2, : w // 2 * 2], (h // 2, w // 2), filter="area")
        io.write_image(lq / f"{name}.png", io.ImageData(pixels=small), format="PNG")
    _png(lq / "orphan.png", 20, 20, 9)
    return lq, hq


def _eval(weights: Path, lq: Path, hq: Path, *extra: str):
    return run_cli(["eval", "--weights", str(weights), "--lq", str(lq), "--hq", str(hq),
                    "--device", "cpu", "--tile", "0", *extra])


def test_eval_psnr_ssim_match_the_metrics_on_the_saved_images(tiny_weights, pairs, tmp_path):
    lq, hq = pairs
    save = tmp_path / "sr"
    # fp32 on both sides: the API call below must give the CLI's bits (bf16, which auto may pick
    # on this CPU, depends on the thread count)
    res = _eval(tiny_weights[0], lq, hq, "--save-dir", str(save), "--json", "--precision", "fp32")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["crop_border"] == 2 and report["scale"] == 2 and report["count"] == 2
    assert [m["lq"] for m in report["missing_hq"]] == ["orphan.png"]
    assert "orphan.png" in res.stderr and report["failed"] == []
    for item in report["images"]:
        sr = io.read_image(save / item["name"]).pixels
        hr = io.read_image(hq / item["name"]).pixels[: sr.shape[0], : sr.shape[1]]  # 41x43 -> 40x42
        sr_t, hr_t = (torch.from_numpy(a).permute(2, 0, 1)[None] for a in (sr, hr))
        assert item["psnr"] == pytest.approx(psnr(sr_t, hr_t, crop_border=2), abs=1e-9)
        assert item["ssim"] == pytest.approx(ssim(sr_t, hr_t, crop_border=2), abs=1e-9)
        assert item["size"] == [sr.shape[1], sr.shape[0]] and "codebook" not in item
    mean = report["mean"]
    assert mean["psnr"] == pytest.approx(np.mean([i["psnr"] for i in report["images"]]))
    # the same through the Python API directly (no saved file involved)
    model = api.load_model(tiny_weights[0], device="cpu", precision="fp32")
    out, _ = api.upscale_image(model, io.read_image(lq / "x.png"), api.UpscaleOptions(tile=0))
    t = torch.from_numpy(out.pixels).permute(2, 0, 1)[None]
    h = torch.from_numpy(io.read_image(hq / "x.png").pixels).permute(2, 0, 1)[None]
    x_item = next(i for i in report["images"] if i["name"] == "x.png")
    assert x_item["psnr"] == psnr(t, h, crop_border=2)
    # human output: a table on stderr, nothing on stdout
    res = _eval(tiny_weights[0], lq, hq, "--crop-border", "0")
    assert res.code == 0 and res.stdout == b""
    assert "PSNR" in res.stderr and "x.png" in res.stderr and "mean" in res.stderr


def test_eval_size_mismatch_fails_that_image_only(tiny_weights, pairs):
    lq, hq = pairs
    _png(hq / "x.png", 48, 40, 3)  # LR x is 20x20 -> SR 40x40, HR now 40x48
    res = _eval(tiny_weights[0], lq, hq, "--json")
    assert res.code == 6, res.stderr
    report = json.loads(res.stdout)
    assert [f["lq"] for f in report["failed"]] == ["x.png"]
    assert "40x48" in report["failed"][0]["error"] and report["count"] == 1


def test_eval_codebook_accuracy_with_a_real_prior(tiny_weights, pairs):
    lq, hq = pairs
    res = _eval(tiny_weights[0], lq, hq, "--hr-prior", str(tiny_weights[1]), "--top-k", "1,3",
                "--top-k", "5", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["top_k"] == [1, 3, 5] and report["hr_prior"] == str(tiny_weights[1])
    keys = {"top1", "topk@1", "topk@3", "topk@5"}
    for item in report["images"]:
        acc = item["codebook"]
        assert set(acc) == keys and all(0.0 <= v <= 1.0 for v in acc.values())
        # FeMaSR: the chosen code is the nearest one
        assert acc["top1"] == acc["topk@1"] <= acc["topk@3"] <= acc["topk@5"]
    assert keys <= set(report["mean"])


def test_eval_codebook_accuracy_exact_on_a_constructed_case(tiny_weights, pairs, monkeypatch):
    """Model: always code 0, ranked 0, 1, 2, ...; prior: code = grid row % 3. LR 20x20 pads to
    32x32 (a 16x16 code grid, 2 LR px per code): 10 valid rows 0..9, of which 0, 3, 6, 9 have code
    0 -> top1 = 0.4 (0.375 without the crop to the valid region), top-2 = 0.7, top-3 = 1."""
    lq, hq = pairs
    seen = []

    def fake_match(self, x, k=1):
        b, _, h, w = x.shape
        grid = (h // 4 * self.config.scale, w // 4 * self.config.scale)  # 4 HR px per code
        seen.append((self.config.lq_stage, tuple(x.shape[-2:])))
        if self.config.lq_stage:
            ranks = torch.arange(k).view(1, k, 1, 1).expand(b, k, *grid)
            return ranks[:, :1], ranks
        rows = torch.arange(grid[0]).view(1, 1, -1, 1).expand(b, 1, *grid) % 3
        return rows, rows

    monkeypatch.setattr(FeMaSRNet, "match_indices", fake_match)
    (lq / "y.png").unlink()
    res = _eval(tiny_weights[0], lq, hq, "--hr-prior", str(tiny_weights[1]), "--top-k", "1,2,3",
                "--json")
    assert res.code == 0, res.stderr
    (item,) = json.loads(res.stdout)["images"]
    assert item["codebook"] == {"top1": 0.4, "topk@1": 0.4, "topk@2": 0.7, "topk@3": 1.0}
    # the model saw the padded LR, the prior the HR mirror-padded to (padded LR) x scale
    assert seen == [(True, (32, 32)), (False, (64, 64))]


def test_eval_usage_errors(tiny_weights, pairs, tmp_path, monkeypatch):
    lq, hq = pairs
    # --hr-prior for an architecture without match_indices
    monkeypatch.delattr(FeMaSRNet, "match_indices")
    res = _eval(tiny_weights[0], lq, hq, "--hr-prior", str(tiny_weights[1]))
    assert res.code == 2 and "--hr-prior" in res.stderr
    monkeypatch.undo()
    # a prior that is not an HQ-stage network
    res = _eval(tiny_weights[0], lq, hq, "--hr-prior", str(tiny_weights[0]))
    assert res.code == 2 and "not an HR prior" in res.stderr
    # top-k beyond the codebook, bad top-k, no pairs at all, missing folder
    prior = str(tiny_weights[1])
    assert _eval(tiny_weights[0], lq, hq, "--hr-prior", prior, "--top-k", "17").code == 2
    assert _eval(tiny_weights[0], lq, hq, "--top-k", "x").code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _eval(tiny_weights[0], lq, empty).code == 2
    assert _eval(tiny_weights[0], lq, tmp_path / "nope").code == 2


def test_psnr_null_for_identical_images_in_json(tiny_weights, pairs, monkeypatch):
    """SR == HR gives PSNR inf, reported as null (JSON has no infinity)."""
    lq, hq = pairs
    (lq / "y.png").unlink()
    monkeypatch.setattr(api, "upscale_image", lambda m, img, o, progress=None: (
        io.read_image(hq / "x.png"), {"scale": 2.0, "tile": 0, "tiles": 1, "seed": None,
                                      "fp32_fallbacks": 0}))
    res = _eval(tiny_weights[0], lq, hq, "--json")
    report = json.loads(res.stdout)
    assert report["images"][0]["psnr"] is None and report["mean"]["psnr"] is None
    assert math.isclose(report["images"][0]["ssim"], 1.0)
