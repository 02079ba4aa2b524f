"""RealSRT and UPSR end to end through the CLI: `realsr convert` official files, then `upscale`.

Uses the reduced parity fixtures (seeded random weights); inputs are tiny so CI stays fast.
UPSR's reduced denoiser (model_channels 32, swin_embed_dim 64, num_feat 32) converts with the
shapes-inferred config; its g is the full-size ATD fixture (the only one shipped with weights).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from realsr_cli.engine import io as rio
from tests.cli.conftest import run_cli
from tests.parity import shared_dir


def _png(path, w=16, h=16, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path)
    return path


def _convert(srcs, arch, dst):
    res = run_cli(["convert", *map(str, srcs), "--arch", arch, "-o", str(dst)])
    assert res.code == 0, res.stderr
    from realsr_cli.registry.loader import read_metadata

    meta = read_metadata(dst)
    assert meta["arch"] == arch and meta["scale"] == "4" and meta["format"] == "realsr"
    return dst


def _upscale(src, weights, dst, *extra):
    res = run_cli(["upscale", str(src), "--weights", str(weights), "-o", str(dst), "--json", *extra])
    assert res.code == 0, res.stderr
    return json.loads(res.stdout), np.asarray(Image.open(dst))


@pytest.fixture(scope="module")
def realsrt_weights(tmp_path_factory):
    src = shared_dir() / "parity" / "realsrt_reduced" / "weights.safetensors"
    return _convert([src], "realsrt", tmp_path_factory.mktemp("w") / "realsrt.safetensors")


@pytest.fixture(scope="module")
def upsr_weights(tmp_path_factory):
    p = shared_dir() / "parity"
    srcs = [p / "upsr_unet_reduced" / "weights.safetensors", p / "upsr_atd_g_full" / "weights.safetensors"]
    return _convert(srcs, "upsr", tmp_path_factory.mktemp("w") / "upsr.safetensors")


def test_upsr_reduced_config_matches_fixture(upsr_weights):
    """The config inferred at convert time is the reduced fixture's constructor config."""
    from realsr_cli.registry.loader import read_metadata

    cfg = json.loads(read_metadata(upsr_weights)["config"])
    fx = json.loads((shared_dir() / "parity" / "upsr_unet_reduced" / "fixture.json").read_text())["constructor"]
    den = cfg["denoiser"]
    shared = sorted(set(den) & set(fx))
    assert {"model_channels", "swin_embed_dim", "num_feat", "channel_mult"} <= set(shared)
    for key in shared:
        assert den[key] == pytest.approx(fx[key]), (key, den[key], fx[key])


def test_realsrt_upscale(tmp_path, realsrt_weights):
    src = _png(tmp_path / "in.png", 20, 16)
    report, out = _upscale(src, realsrt_weights, tmp_path / "o.png", "--steps", "2", "--seed", "0")
    assert report["arch"] == "realsrt"
    assert report["seed"] is None  # RealSRT is deterministic: the seed is ignored and not reported
    assert report["input_size"] == [20, 16] and report["output_size"] == [80, 64]
    assert out.shape == (64, 80, 3)
    img = rio.read_image(tmp_path / "o.png")
    assert "realsrt" in json.dumps(img.text)


def test_upsr_seeded_determinism(tmp_path, upsr_weights):
    src = _png(tmp_path / "in.png", 16, 16)
    common = ("--steps", "1", "--tile", "0")  # 1 step: the seed still picks the prior noise
    r0, a = _upscale(src, upsr_weights, tmp_path / "a.png", *common, "--seed", "0")
    _, b = _upscale(src, upsr_weights, tmp_path / "b.png", *common, "--seed", "0")
    r1, c = _upscale(src, upsr_weights, tmp_path / "c.png", *common, "--seed", "1")
    assert r0["arch"] == r1["arch"] == "upsr"
    assert r0["seed"] == 0 and r1["seed"] == 1
    assert r0["output_size"] == [64, 64] and r0["tiles"] == 1
    assert a.shape == b.shape == c.shape == (64, 64, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 0, "--seed 1 gave the --seed 0 output"
