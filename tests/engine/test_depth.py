"""SSR's depth estimator choice (engine/depth.py, ``--depth-estimator``): the registry path for
a published depth model, the offline built-in head, ``auto``, the run manifest, and the errors.

The tiny Depth Anything fixture (tests/fixtures/depth_anything_tiny, written by
tools/make_depth_fixture.py) stands in for the published checkpoint through extra catalog
entries (``$REALSR_WEIGHTS_TOML``): a ``file://`` source and a hub source on the local fake hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from realsr_cli.engine import api, depth
from realsr_cli.engine import io as rio
from realsr_cli.errors import DownloadError, UnknownModelError, UsageError
from realsr_cli.models.depth import DepthAnythingEstimator
from realsr_cli.models.ssr import DepthHead, SSRConfig, SSRNet
from realsr_cli.registry import hub
from realsr_cli.registry.catalog import load_catalog
from realsr_cli.registry.loader import save_weights
from tests.cli.conftest import run_cli
from tests.registry.conftest import (  # noqa: F401 (fixtures: isolated caches, local hub, tiny SR arch)
    TinyConfig,
    TinyNet,
    fake_hub,
    isolated_env,
    sha256,
    tiny_arch,
    write_catalog,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "depth_anything_tiny"
WEIGHTS = FIXTURE / "model.safetensors"
TINY_ID = "depth_anything-tiny"


def _aux(entry_id: str, source: dict, data: bytes) -> dict:
    return {"id": entry_id, "kind": "aux", "arch": "depth_anything", "format": "safetensors",
            "source": source, "sha256": sha256(data), "license": "Apache-2.0"}  # fmt: skip


@pytest.fixture
def tiny_depth(tmp_path, monkeypatch):
    """``depth_anything-tiny`` (file:// source, the fixture's sha256) in an extra catalog."""
    data = WEIGHTS.read_bytes()
    cat = write_catalog(tmp_path / "depth.toml", [_aux(TINY_ID, {"url": WEIGHTS.as_uri()}, data)])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(cat))
    return load_catalog().get(TINY_ID, allow_aux=True)


@pytest.fixture(scope="module")
def ssr_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = SSRConfig.tiny()
    path = tmp_path_factory.mktemp("ssr") / "ssr-tiny.safetensors"
    save_weights(path, arch="ssr", config=cfg, state_dict=SSRNet(cfg).state_dict())
    return path


def _downloads(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "realsr-cache").rglob("*.safetensors")]


# --------------------------------------------------------------------------- engine


def test_explicit_id_loads_the_published_layout(tiny_depth, ssr_weights):
    m = api.load_model(ssr_weights, depth_estimator=TINY_ID)
    est = m.net.depth_estimator
    assert isinstance(est, DepthAnythingEstimator) and not est.training
    assert est.input_size == 518 and not any(p.requires_grad for p in est.parameters())
    published = load_file(str(WEIGHTS))
    assert all(torch.equal(est.net.state_dict()[k], v) for k, v in published.items())
    assert m.notes == (f"depth estimator: {TINY_ID} (Depth Anything, Apache-2.0), input 518 px",)
    manifest = api.manifest_for(m, {"scale": 4.0, "tile": 0, "seed": 1})
    assert manifest["depth_estimator"] == f"{TINY_ID} (Depth Anything, Apache-2.0)"
    assert manifest["depth_estimator_sha256"] == tiny_depth.sha256
    depth_map, _ = m.net.auxiliary(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert depth_map.shape == (1, 1, 16, 16) and 0 <= depth_map.min() <= depth_map.max() <= 1


def test_auto_never_downloads(tiny_depth, ssr_weights, tmp_path, monkeypatch):
    m = api.load_model(ssr_weights)  # auto; the published default is not in the (empty) cache
    assert isinstance(m.net.depth_estimator, DepthHead)
    assert m.notes == (
        "depth estimator: builtin SSR depth head (depth_anything-v2-small is not downloaded: "
        "`realsr models download depth_anything-v2-small` to use it)",
    )
    assert api.manifest_for(m, {"scale": 4.0, "tile": 0})["depth_estimator"].startswith("ssr-depth-head")
    monkeypatch.setattr(depth, "DEFAULT_ESTIMATOR", TINY_ID)
    m = api.load_model(ssr_weights, depth_estimator="auto")
    assert isinstance(m.net.depth_estimator, DepthHead) and _downloads(tmp_path) == []
    hub.fetch(tiny_depth)  # what `realsr models download depth_anything-tiny` does
    m = api.load_model(ssr_weights, depth_estimator="auto", offline=True)
    assert isinstance(m.net.depth_estimator, DepthAnythingEstimator)
    assert m.notes[0].startswith(f"depth estimator: {TINY_ID} ")


def test_builtin_injected_and_errors(tiny_depth, ssr_weights):
    m = api.load_model(ssr_weights, depth_estimator="builtin")
    assert isinstance(m.net.depth_estimator, DepthHead)
    assert m.notes == ("depth estimator: builtin SSR depth head",)
    mine = torch.nn.Conv2d(3, 1, 1)
    m = api.load_model(ssr_weights, depth_estimator=mine)
    assert m.net.depth_estimator is mine and m.notes == ("depth estimator: injected Conv2d",)

    plain = TinyNet(TinyConfig())
    assert depth.attach(plain, None) is None and depth.attach(plain, "auto") is None
    with pytest.raises(UsageError, match="SSR models only"):
        depth.attach(plain, "builtin")
    net = SSRNet(SSRConfig.tiny())
    with pytest.raises(UsageError, match="not a depth estimator") as info:
        depth.attach(net, "vgg16-imagenet")
    assert TINY_ID in info.value.hint and "depth_anything-v2-small" in info.value.hint
    with pytest.raises(UnknownModelError):
        depth.attach(net, "depth_anything-v9-giant")
    with pytest.raises(DownloadError, match="not in the cache"):
        depth.attach(net, "depth_anything-v2-small", offline=True)
    assert isinstance(net.depth_estimator, DepthHead)  # a failed choice leaves the net unchanged
    with pytest.raises(UnknownModelError, match="is a depth estimator") as info:
        load_catalog().get("depth_anything-v2-small")  # never an SR model (--model)
    assert "--depth-estimator depth_anything-v2-small" in info.value.hint


def test_hub_source_downloads_once(tmp_path, monkeypatch, fake_hub, ssr_weights):  # noqa: F811
    data = WEIGHTS.read_bytes()
    commit = fake_hub.add_file("test-org/depth-tiny-hf", "model.safetensors", data)
    source = {"hub": "test-org/depth-tiny-hf", "filename": "model.safetensors", "revision": commit}
    cat = write_catalog(tmp_path / "depth.toml", [_aux(TINY_ID, source, data)])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(cat))
    net = SSRNet(SSRConfig.tiny())
    note = depth.attach(net, TINY_ID)
    assert note.startswith(f"depth estimator: {TINY_ID}") and fake_hub.count("GET") == 1
    fake_hub.stop()  # cached: no network any more, also for auto
    monkeypatch.setattr(depth, "DEFAULT_ESTIMATOR", TINY_ID)
    assert depth.attach(SSRNet(SSRConfig.tiny()), "auto").startswith(f"depth estimator: {TINY_ID}")
    assert fake_hub.count("GET") == 1


# --------------------------------------------------------------------------- CLI


def _png(path: Path, w: int = 24, h: int = 20) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").save(path)
    return path


def test_cli_depth_estimator(tiny_depth, ssr_weights, tmp_path):
    src, dst, aux = _png(tmp_path / "in.png"), tmp_path / "out.png", tmp_path / "aux"
    res = run_cli(["upscale", str(src), "-o", str(dst), "--weights", str(ssr_weights), "--seed", "1",
                   "--depth-estimator", TINY_ID, "--save-aux", str(aux), "--json"])  # fmt: skip
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["output_size"] == [96, 80]
    assert f"depth estimator: {TINY_ID}" in res.stderr
    manifest = rio.read_manifest(rio.read_image(dst))
    assert manifest["depth_estimator"].startswith(TINY_ID)
    assert manifest["depth_estimator_sha256"] == tiny_depth.sha256
    published = rio.read_image(aux / "in_depth.png").pixels
    assert 0.0 <= published.min() < published.max() <= 1.0

    res = run_cli(["upscale", str(src), "-o", str(dst), "--weights", str(ssr_weights), "--seed", "1",
                   "--depth-estimator", "builtin", "--offline", "--save-aux", str(aux)])  # fmt: skip
    assert res.code == 0, res.stderr
    assert rio.read_manifest(rio.read_image(dst))["depth_estimator"].startswith("ssr-depth-head")
    assert not np.allclose(rio.read_image(aux / "in_depth.png").pixels, published)


def test_cli_depth_estimator_usage_errors(tiny_arch, tiny_depth, ssr_weights, tmp_path):  # noqa: F811
    src = _png(tmp_path / "in.png", 8, 8)
    tiny = tmp_path / "tiny-x2.safetensors"
    save_weights(tiny, arch="tiny", config=TinyConfig(), state_dict=TinyNet(TinyConfig()).state_dict())
    res = run_cli(["upscale", str(src), "-o", str(tmp_path / "a.png"), "--weights", str(tiny),
                   "--depth-estimator", "builtin"])  # fmt: skip
    assert res.code == 2 and "SSR models only" in res.stderr
    res = run_cli(["upscale", str(src), "-o", str(tmp_path / "b.png"), "--weights", str(ssr_weights),
                   "--depth-estimator", "vgg19-imagenet"])  # fmt: skip
    assert res.code == 2 and "not a depth estimator" in res.stderr
    res = run_cli(["batch", str(tmp_path), str(tmp_path / "out"), "--weights", str(ssr_weights),
                   "--depth-estimator", "depth_anything-v2-small", "--offline"])  # fmt: skip
    assert res.code == 3 and "not in the cache" in res.stderr
