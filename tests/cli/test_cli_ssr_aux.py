"""`--save-aux` (SSR depth + kernel-variance maps) and the SSR run manifest, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_cli.engine import io as rio
from tests.cli.conftest import run_cli


def _png(path, w=24, h=20, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def ssr_weights(tmp_path_factory):
    from realsr_cli.models.ssr import SSRConfig, SSRNet
    from realsr_cli.registry.loader import save_weights

    torch.manual_seed(0)
    cfg = SSRConfig.tiny()
    path = tmp_path_factory.mktemp("ssr") / "ssr-tiny.safetensors"
    save_weights(path, arch="ssr", config=cfg, state_dict=SSRNet(cfg).state_dict())
    return path


def _check_aux(depth_path, var_path, w, h):
    assert depth_path.is_file() and var_path.is_file()
    with Image.open(depth_path) as im:
        assert im.size == (w, h) and im.mode in ("I;16", "I;16B", "I")
    depth = rio.read_image(depth_path)
    assert depth.is_gray and depth.bit_depth == 16 and (depth.width, depth.height) == (w, h)
    assert 0.0 <= depth.pixels.min() <= depth.pixels.max() <= 1.0
    with Image.open(var_path) as im:
        assert im.size == (w, h) and im.mode == "RGB"
        lo, hi = float(im.text["kernel_var_min"]), float(im.text["kernel_var_max"])
        assert 0.0 <= lo <= hi
        assert json.loads(im.text["realsr"])["depth_estimator"].startswith("ssr-depth-head")
    assert not [p for p in depth_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_upscale_save_aux_and_manifest(tmp_path, ssr_weights):
    src = _png(tmp_path / "photo.png", 24, 20)
    dst, aux = tmp_path / "out.png", tmp_path / "aux"
    args = ["upscale", str(src), "-o", str(dst), "--weights", str(ssr_weights), "--seed", "1"]
    res = run_cli([*args, "--save-aux", str(aux), "--json"])
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["output_size"] == [96, 80]
    assert report["aux"] == {
        "depth": str(aux / "photo_depth.png"),
        "kernel_var": str(aux / "photo_kernel_var.png"),
    }
    _check_aux(aux / "photo_depth.png", aux / "photo_kernel_var.png", 24, 20)
    manifest = rio.read_manifest(rio.read_image(dst))
    assert manifest is not None and manifest["arch"] == "ssr"
    assert manifest["depth_estimator"] == (
        "ssr-depth-head (trained in realsr; no published depth model)"
    )


def test_aux_tiled_matches_shape(tmp_path, ssr_weights):
    """A tiled upscale computes the maps per LR tile and blends them to the full LR size."""
    from realsr_cli.engine import api, auxmaps

    model = api.load_model(ssr_weights, device="cpu")
    lq = torch.rand(1, 3, 20, 40, generator=torch.Generator().manual_seed(0))
    whole = auxmaps.compute_aux(model, lq)
    tiled = auxmaps.compute_aux(model, lq, run_tile=16, tile_overlap=8)
    assert whole.tiles == 1 and tiled.tiles > 1
    assert tiled.depth.shape == whole.depth.shape == (20, 40)
    assert tiled.kernel_var.shape == (20, 40) and np.all(tiled.kernel_var >= 0)
    assert np.all((tiled.depth >= 0) & (tiled.depth <= 1))


def test_save_aux_unsupported_model_exits_2(tmp_path, femasr_weights):
    src = _png(tmp_path / "in.png", 16, 16)
    dst, aux = tmp_path / "out.png", tmp_path / "aux"
    res = run_cli(["upscale", str(src), "-o", str(dst), "--weights", str(femasr_weights),
                   "--save-aux", str(aux)])
    assert res.code == 2, res.stderr
    assert "--save-aux" in res.stderr
    assert not dst.exists() and not aux.exists()

    out_dir = tmp_path / "batch_out"
    res = run_cli(["batch", str(tmp_path), str(out_dir), "--weights", str(femasr_weights),
                   "--save-aux", str(aux)])
    assert res.code == 2, res.stderr
    assert not out_dir.exists() and not aux.exists()


def test_batch_save_aux_mirrors_tree(tmp_path, ssr_weights):
    src = tmp_path / "in"
    _png(src / "a.png", 16, 12, seed=1)
    _png(src / "sub" / "b.png", 20, 16, seed=2)
    out, aux = tmp_path / "out", tmp_path / "aux"
    res = run_cli(["batch", str(src), str(out), "-r", "--weights", str(ssr_weights), "--seed", "1",
                   "--tile", "16", "--tile-overlap", "8", "--save-aux", str(aux), "--json"])
    assert res.code == 0, res.stderr
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    summary = json.loads(res.stdout)
    assert summary["done"] == 2 and max(r["tiles"] for r in summary["images"]) > 1
    _check_aux(aux / "a_depth.png", aux / "a_kernel_var.png", 16, 12)
    _check_aux(aux / "sub" / "b_depth.png", aux / "sub" / "b_kernel_var.png", 20, 16)
