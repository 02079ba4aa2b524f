"""`realsr eval SR_DIR [HR_DIR]`: scoring existing images without a model (pairing, JSON keys,
exit codes, NIQE, LPIPS, DISTS), and `--niqe` / `--lpips` / `--dists` in the model form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from realsr_cli.cli import _schemas
from realsr_cli.engine import io
from realsr_cli.evaluation import dists, lpips, niqe
from realsr_cli.evaluation.metrics import psnr, ssim
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.registry.loader import save_weights
from tests.cli.conftest import run_cli
from tests.evaluation.test_dists import DISTS_TEST_ID, serve_dists
from tests.evaluation.test_dists import VGG_TEST_ID as DISTS_VGG_TEST_ID
from tests.evaluation.test_lpips import LIN_TEST_ID, VGG_TEST_ID, serve_lpips
from tests.parity import shared_dir

TOP_KEYS = ["sr_dir", "hr_dir", "scale", "crop_border", "y_channel", "metrics", "count", "mean",
            "images", "unpaired_sr", "unpaired_hr", "failed", "seconds"]


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    """An h x w crop of a natural image (Set5 baby, 512x512) at an offset picked by ``seed``."""
    base = io.read_image(shared_dir() / "data" / "Set5" / "baby.png").pixels
    y, x = (seed * 37) % (512 - h + 1), (seed * 53) % (512 - w + 1)
    return np.ascontiguousarray(base[y : y + h, x : x + w])


def _write(path: Path, px: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_image(path, io.ImageData(pixels=px.astype(np.float32)), format="PNG")
    return path


def _degraded(px: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 0.03, px.shape)
    return (px + noise).clip(0, 1).astype(np.float32)


def _t(path: Path) -> torch.Tensor:
    return torch.from_numpy(io.read_image(path).pixels).permute(2, 0, 1)[None]


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    """sr/a.png, sr/sub/b.png (pair with hr/), sr/orphan.png (no HR); hr/extra.png (no SR)."""
    sr, hr = tmp_path / "sr", tmp_path / "hr"
    for i, name in enumerate(["a.png", "sub/b.png"]):
        px = _pixels(104, 200, i)
        _write(hr / name, px)
        _write(sr / name, _degraded(px, i))
    _write(sr / "orphan.png", _pixels(40, 40, 5))
    _write(hr / "extra.png", _pixels(40, 40, 6))
    return sr, hr


def _eval(*args: str | Path):
    return run_cli(["eval", *map(str, args)])


def test_pairs_by_relative_path_and_stem_with_json_report(dirs):
    sr, hr = dirs
    res = _eval(sr, hr, "-r", "--scale", "2", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert [k for k in report if k != "schema"] == TOP_KEYS
    assert report["schema"] == "realsr.eval.dirs/1" and _schemas.validate(report, "eval.dirs") == []
    assert report["metrics"] == ["psnr", "ssim"] and report["crop_border"] == 2
    assert report["scale"] == 2 and report["y_channel"] is True and report["count"] == 2
    assert report["sr_dir"] == str(sr) and report["hr_dir"] == str(hr)
    assert report["unpaired_sr"] == [
        {"sr": "orphan.png", "reason": f"no HR image orphan.* in {hr}"}]
    assert report["unpaired_hr"] == [{"hr": "extra.png"}] and report["failed"] == []
    assert [i["name"] for i in report["images"]] == ["a.png", "sub/b.png"]
    for item in report["images"]:
        assert list(item) == ["name", "sr", "hr", "size", "psnr", "ssim", "seconds"]
        a, b = _t(sr / item["name"]), _t(hr / item["name"])
        assert item["psnr"] == psnr(a, b, crop_border=2) and item["ssim"] == ssim(a, b, crop_border=2)
        assert item["hr"] == str(hr / item["name"]) and item["size"] == [200, 104]
        assert 20 < item["psnr"] < 40
    mean = report["mean"]
    assert list(mean) == ["psnr", "ssim"]
    assert mean["psnr"] == pytest.approx(np.mean([i["psnr"] for i in report["images"]]))
    assert "orphan.png" in res.stderr and "extra.png" in res.stderr  # warned about
    # without -r only the top level is scored; --crop-border overrides the scale's crop
    res = _eval(sr, hr, "--scale", "2", "--crop-border", "0", "--json")
    report = json.loads(res.stdout)
    assert [i["name"] for i in report["images"]] == ["a.png"] and report["crop_border"] == 0
    a, b = _t(sr / "a.png"), _t(hr / "a.png")
    assert report["images"][0]["psnr"] == psnr(a, b, crop_border=0)


def test_suffix_tag_and_any_image_suffix(tmp_path):
    sr, hr = tmp_path / "sr", tmp_path / "hr"
    px = _pixels(64, 64, 1)
    _write(hr / "0801.png", px)
    io.write_image(hr / "0802.bmp", io.ImageData(pixels=px), format="BMP")
    _write(sr / "0801_x4.png", _degraded(px, 0))
    _write(sr / "0802_x4.png", px)
    _write(sr / "0803.png", px)
    res = _eval(sr, hr, "--suffix", "_x4", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert [(i["name"], Path(i["hr"]).name) for i in report["images"]] == [
        ("0801_x4.png", "0801.png"), ("0802_x4.png", "0802.bmp")]
    assert report["unpaired_sr"][0]["sr"] == "0803.png"
    assert "'_x4'" in report["unpaired_sr"][0]["reason"]
    # identical images: PSNR is infinite, reported as null (in the mean too), SSIM 1
    same = report["images"][1]
    assert same["psnr"] is None and math.isclose(same["ssim"], 1.0)
    assert report["mean"]["psnr"] is None
    assert report["crop_border"] == 0 and report["scale"] is None
    assert "crop border 0" in res.stderr  # the hint to give --scale


def test_niqe_without_hr(tmp_path):
    sr = tmp_path / "sr"
    a = _write(sr / "a.png", _pixels(200, 300, 2))
    res = _eval(sr, "--niqe", "--crop-border", "4", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["metrics"] == ["niqe"] and report["hr_dir"] is None
    (item,) = report["images"]
    assert list(item) == ["name", "sr", "hr", "size", "niqe", "seconds"] and item["hr"] is None
    assert item["niqe"] == niqe.niqe(_t(a), crop_border=4)
    assert report["mean"] == {"niqe": item["niqe"]} and report["unpaired_hr"] == []
    # human form: a table on stderr, nothing on stdout
    res = _eval(sr, "--niqe")
    assert res.code == 0 and res.stdout == b""
    assert "NIQE" in res.stderr and "a.png" in res.stderr and "mean" in res.stderr


def test_niqe_with_hr_uses_the_same_crop(dirs):
    sr, hr = dirs
    res = _eval(sr, hr, "--scale", "2", "--niqe", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["metrics"] == ["psnr", "ssim", "niqe"]
    (item,) = report["images"]
    assert item["niqe"] == niqe.niqe(_t(sr / "a.png"), crop_border=2)
    assert set(report["mean"]) == {"psnr", "ssim", "niqe"}


def test_failed_images_exit_6_and_the_rest_is_scored(dirs):
    sr, hr = dirs
    (sr / "broken.png").write_bytes(b"not a png")
    _write(hr / "broken.png", _pixels(40, 40, 7))
    _write(hr / "small.png", _pixels(40, 40, 8))  # SR 40x40 (below)
    _write(sr / "small.png", _pixels(40, 40, 9))
    _write(hr / "big.png", _pixels(64, 64, 3))  # HR 64x64 vs SR 60x60: not within the scale
    _write(sr / "big.png", _pixels(60, 60, 3))
    odd = _write(hr / "odd.png", _pixels(65, 66, 4))  # HR 1-2 px larger than SR: cropped (x4)
    _write(sr / "odd.png", _degraded(io.read_image(odd).pixels[:64, :64], 4))
    res = _eval(sr, hr, "--scale", "4", "--niqe", "--json")
    assert res.code == 6, res.stderr
    report = json.loads(res.stdout)
    failed = {f["sr"]: f["error"] for f in report["failed"]}
    assert set(failed) == {"big.png", "broken.png", "odd.png", "small.png"}
    assert "64x64" in failed["big.png"] and "60x60" in failed["big.png"]
    assert "96x96" in failed["small.png"] and "broken.png" in failed["broken.png"]
    assert [i["name"] for i in report["images"]] == ["a.png"]
    assert "4 of 5 image(s) failed" in res.stderr
    # without NIQE the odd-sized HR is cropped and scored; the 40x40 pair scores too
    res = _eval(sr, hr, "--scale", "4", "--json")
    report = json.loads(res.stdout)
    assert res.code == 6 and {f["sr"] for f in report["failed"]} == {"big.png", "broken.png"}
    item = next(i for i in report["images"] if i["name"] == "odd.png")
    hr_odd = _t(odd)[..., :64, :64]
    assert item["psnr"] == psnr(_t(sr / "odd.png"), hr_odd, crop_border=4)
    assert 20 < item["psnr"] < 40


def test_usage_errors(dirs, tmp_path):
    sr, hr = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([sr, empty], "no SR image"),  # nothing pairs
        ([empty, "--niqe"], "no images"),
        ([sr], "--niqe"),  # no HR and no metric
        ([tmp_path / "nope", hr], "not found"),
        ([sr, tmp_path / "nope"], "not found"),
        ([sr, sr], "same folder"),
        ([sr, "--suffix", "_x4", "--niqe"], "needs HR_DIR"),
        ([sr, "--lpips", "--niqe"], "--lpips compares with a reference: it needs HR_DIR"),
        ([sr, "--dists"], "--dists compares with a reference: it needs HR_DIR"),
        ([sr, hr, "--model", "femasr-x4"], "--model"),
        ([sr, hr, "--device", "cpu", "--tile", "0"], "--device, --tile"),
        (["--crop-border", "2"], "give SR_DIR"),  # neither form
        (["--lq", sr, "--hq", hr, "--scale", "2"], "--scale"),
    ]
    for args, needle in cases:
        res = _eval(*args)
        assert res.code == 2, (args, res.stderr)
        assert needle in res.stderr, (args, res.stderr)
        assert res.stdout == b""


#: per learned metric: its flag name, the test-weights server, the net from the served tensors,
#: the scoring function, the open bounds of a value, and the two cache ids it needs
LEARNED = {
    "lpips": (serve_lpips, lpips.LPIPSNet.from_state_dicts, lpips.lpips, (0, math.inf),
              (VGG_TEST_ID, LIN_TEST_ID)),
    "dists": (serve_dists, dists.DISTSNet.from_state_dicts, dists.dists, (0, 1),
              (DISTS_VGG_TEST_ID, DISTS_TEST_ID)),
}


@pytest.mark.parametrize("metric", LEARNED)
def test_learned_metric_per_image_and_mean(metric, dirs, tmp_path, monkeypatch):
    sr, hr = dirs
    serve, build, score, (low, high), _ = LEARNED[metric]
    net = build(*serve(tmp_path, monkeypatch))
    res = _eval(sr, hr, "-r", "--scale", "2", f"--{metric}", "--offline", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["schema"] == "realsr.eval.dirs/1" and _schemas.validate(report, "eval.dirs") == []
    assert report["metrics"] == ["psnr", "ssim", metric] and report["count"] == 2
    for item in report["images"]:
        assert list(item) == ["name", "sr", "hr", "size", "psnr", "ssim", metric, "seconds"]
        a, b = _t(sr / item["name"]), _t(hr / item["name"])
        assert item[metric] == score(a, b, net, crop_border=2) and low < item[metric] < high
    assert list(report["mean"]) == ["psnr", "ssim", metric]
    assert report["mean"][metric] == pytest.approx(np.mean([i[metric] for i in report["images"]]))
    # human form: a column with 4 digits, per image and mean
    res = _eval(sr, hr, "-r", "--scale", "2", f"--{metric}")
    assert res.code == 0 and res.stdout == b"", res.stderr
    assert metric.upper() in res.stderr
    assert f"{report['images'][0][metric]:.4f}" in res.stderr
    assert f"{report['mean'][metric]:.4f}" in res.stderr


@pytest.mark.parametrize("metric", LEARNED)
def test_learned_metric_without_its_weights_exits_3(metric, dirs, tmp_path, monkeypatch):
    sr, hr = dirs
    serve, *_, ids = LEARNED[metric]
    serve(tmp_path, monkeypatch, download=False)  # known to the catalog, not downloaded
    res = _eval(sr, hr, "--scale", "2", f"--{metric}", "--json")
    assert res.code == 3, res.stderr
    assert res.stdout == b""  # never skipped silently, no half report
    assert f"not in the cache: {ids[0]}, {ids[1]}" in res.stderr
    for entry_id in ids:
        assert f"realsr models download {entry_id}" in res.stderr
    assert not (tmp_path / "realsr-cache" / "downloads").exists()


def test_lpips_and_dists_together(dirs, tmp_path, monkeypatch):
    sr, hr = dirs
    serve_lpips(tmp_path, monkeypatch)
    serve_dists(tmp_path, monkeypatch, add_to_catalogs=True)  # both test catalogs, one cache
    res = _eval(sr, hr, "--scale", "2", "--lpips", "--dists", "--niqe", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert _schemas.validate(report, "eval.dirs") == []
    assert report["metrics"] == ["psnr", "ssim", "lpips", "dists", "niqe"]
    assert list(report["mean"]) == report["metrics"]
    (item,) = report["images"]
    assert list(item)[4:] == ["psnr", "ssim", "lpips", "dists", "niqe", "seconds"]


# ----------------------------------------------------------------------------- model form
TINY_SR = FeMaSRConfig(scale=2, swin_dim=32, swin_heads=4, swin_depth=1, swin_blocks=1,
                       channels=(32, 32, 32), gt_resolution=64, codebook_size=16, codebook_dim=8)


def _model_form_files(tmp_path: Path, height: int, width: int, seed: int) -> Path:
    """A seeded random tiny x2 FeMaSR file, HQ/x.png (height x width) and its area x1/2 LQ/x.png."""
    torch.manual_seed(0)
    weights = save_weights(tmp_path / "sr.safetensors", arch="femasr", config=TINY_SR,
                           state_dict=FeMaSRNet(TINY_SR).state_dict())
    px = _pixels(height, width, seed)
    _write(tmp_path / "hq" / "x.png", px)
    _write(tmp_path / "lq" / "x.png", io.resize(px, (height // 2, width // 2), filter="area"))
    return weights


def test_model_form_with_niqe(tmp_path):
    weights = _model_form_files(tmp_path, 104, 200, 3)
    save = tmp_path / "out"
    res = _eval("--weights", weights, "--lq", tmp_path / "lq", "--hq", tmp_path / "hq",
                "--device", "cpu", "--tile", "0", "--niqe", "--save-dir", save, "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["schema"] == "realsr.eval/1" and report["crop_border"] == 2
    assert _schemas.validate(report, "eval") == []
    (item,) = report["images"]
    assert item["niqe"] == niqe.niqe(_t(save / "x.png"), crop_border=2)
    assert report["mean"]["niqe"] == item["niqe"]
    # the same report without --niqe has no niqe key
    res = _eval("--weights", weights, "--lq", tmp_path / "lq", "--hq", tmp_path / "hq",
                "--device", "cpu", "--tile", "0", "--json")
    report = json.loads(res.stdout)
    assert "niqe" not in report["images"][0] and "niqe" not in report["mean"]
    assert _schemas.validate(report, "eval") == []
    # human form: the NIQE column
    res = _eval("--weights", weights, "--lq", tmp_path / "lq", "--hq", tmp_path / "hq",
                "--device", "cpu", "--tile", "0", "--niqe")
    assert res.code == 0 and "NIQE" in res.stderr and res.stdout == b""


@pytest.mark.parametrize("metric", LEARNED)
def test_model_form_with_a_vgg_metric(tmp_path, monkeypatch, metric):
    serve, build, score, *_ = LEARNED[metric]
    served = serve(tmp_path, monkeypatch)
    weights = _model_form_files(tmp_path, 64, 80, 4)
    save = tmp_path / "out"
    res = _eval("--weights", weights, "--lq", tmp_path / "lq", "--hq", tmp_path / "hq",
                "--device", "cpu", "--tile", "0", f"--{metric}", "--save-dir", save, "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert _schemas.validate(report, "eval") == []
    assert list(report["mean"]) == ["psnr", "ssim", metric]
    (item,) = report["images"]
    assert list(item)[5:] == ["psnr", "ssim", metric, "seconds"]
    net = build(*served)
    expected = score(_t(save / "x.png"), _t(tmp_path / "hq" / "x.png"), net, crop_border=2)
    assert item[metric] == pytest.approx(expected, abs=1e-6)
    assert report["mean"][metric] == item[metric]
    # human form: the metric's column, 4 digits
    res = _eval("--weights", weights, "--lq", tmp_path / "lq", "--hq", tmp_path / "hq",
                "--device", "cpu", "--tile", "0", f"--{metric}")
    assert res.code == 0 and metric.upper() in res.stderr and res.stdout == b""
    assert f"{item[metric]:.4f}" in res.stderr
