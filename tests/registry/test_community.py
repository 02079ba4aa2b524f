"""Community checkpoints through spandrel: detection, safe reading, the engine contract, precision.

Checkpoints are built in-process from spandrel's architecture classes at tiny widths
(tests/registry/community_fixtures.py). Tests that need spandrel skip, with the reason, only where
the ``realsr[community]`` extra is not installed; safe reading and the missing-extra error are
tested everywhere.
"""

from __future__ import annotations

import logging

import pytest
import torch

from realsr_cli.engine import api
from realsr_cli.engine.io import ImageData
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.errors import EXIT_MODEL, UsageError, WeightsError
from realsr_cli.registry import community, loader
from realsr_cli.registry.describe import inspect_weights
from tests.registry.community_fixtures import (
    BUILDERS,
    compact,
    esrgan,
    malicious_pth,
    save,
    spandrel_or_skip,
    swinir,
)
from tests.registry.conftest import TinyConfig, tiny_state_dict


@pytest.fixture
def spandrel():
    return spandrel_or_skip()


def _lq(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- no spandrel needed


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(("protocol", "match"), [(2, r"\((io|builtins)\.open\); realsr refuses"),
                                                 (4, "safe loading refused")])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, protocol, match):
    marker = tmp_path / "pwned"
    pth = malicious_pth(tmp_path / "4x-evil.pth", marker, protocol)
    with pytest.raises(WeightsError, match=match) as info:
        loader.load_any(pth)
    assert info.value.exit_code == EXIT_MODEL and info.value.hint
    assert not marker.exists(), "the pickle was executed"


def test_corrupt_pth_is_a_weights_error(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="corrupt or holds more than tensors"):
        loader.load_any(bad)
    torch.save({"w": torch.ones(64, 64)}, bad)
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated download
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        loader.load_any(bad)


def test_missing_extra_says_how_to_install(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"body.0.weight": torch.zeros(4, 3, 3, 3)}, str(foreign))
    monkeypatch.setitem(__import__("sys").modules, "spandrel", None)  # import spandrel -> ImportError
    with pytest.raises(WeightsError, match="not installed") as info:
        loader.load_any(foreign)
    assert info.value.hint == "pip install 'realsr[community]'" and info.value.exit_code == EXIT_MODEL


def test_a_broken_spandrel_install_is_reported(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "spandrel":  # what a torchvision built for another torch does (pytorch/vision#9085)
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(WeightsError, match="installed but cannot be imported.*torchvision::nms") as info:
        community.import_spandrel()
    assert "torchvision build that matches torch" in info.value.hint


def test_spandrel_imports_in_a_fresh_interpreter_without_any_test_shim():
    """Issue 18 (5): in the README's environment (torch 2.13.0+cpu, torchvision 0.28.0 from PyPI)
    `import spandrel` failed with "operator torchvision::nms does not exist", so `--weights any.pth`
    exited 3; the tests passed only through a fixture's shim. realsr's own import now works."""
    import subprocess
    import sys

    pytest.importorskip("spandrel", reason="the optional community extra is not installed")
    code = ("from realsr_cli.registry.community import import_spandrel\n"
            "m = import_spandrel()\n"
            "from spandrel.architectures.Compact import Compact\n"
            "print(type(m).__name__, Compact.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["module", "SRVGGNetCompact"], out.stderr


def test_our_files_never_reach_spandrel(tmp_path, tiny_arch, monkeypatch):
    ours = tmp_path / "tiny.safetensors"
    loader.save_weights(ours, arch="tiny", config=TinyConfig(scale=2), state_dict=tiny_state_dict())
    monkeypatch.setitem(__import__("sys").modules, "spandrel", None)
    spec, config, _net = loader.load_any(ours)
    assert spec.name == "tiny" and config == TinyConfig(scale=2)
    # a broken file of ours keeps our strict error instead of a spandrel guess
    sd = tiny_state_dict()
    sd.pop("tail.bias")
    from safetensors.torch import save_file

    save_file(sd, str(ours), metadata={k: v for k, v in loader.read_metadata(ours).items()})
    with pytest.raises(WeightsError, match="missing key"):
        loader.load_any(ours)


def test_inspect_our_file_reports_arch_and_config(tmp_path, tiny_arch):
    ours = loader.save_weights(tmp_path / "tiny.safetensors", arch="tiny", config=TinyConfig(scale=2, width=4),
                               state_dict=tiny_state_dict(), extra_metadata={"source_sha256": "ab" * 32})
    doc = inspect_weights(ours)
    assert doc["loader"] == "realsr" and doc["arch"] == "tiny" and doc["scale"] == 2
    assert doc["config"] == {"scale": 2, "width": 4} and doc["metadata"] == {"source_sha256": "ab" * 32,
                                                                               "realsr_version": doc["metadata"]["realsr_version"]}
    assert doc["parameters"] == sum(v.numel() for v in tiny_state_dict().values())
    assert doc["spandrel_version"] is None and doc["format"] == "safetensors"
    with pytest.raises(UsageError):
        inspect_weights(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_detected_and_run_like_the_original_module(tmp_path, spandrel, arch, suffix):
    net = BUILDERS[arch](scale=2)
    path = save(net, tmp_path / f"2x-{arch}{suffix}")
    spec, config, wrapped = loader.load_any(path)
    assert community.is_community(config) and spec.name == f"spandrel:{arch}"
    assert (config.arch_id, config.scale, config.input_channels, config.output_channels) == (arch, 2, 3, 3)
    assert config.parameters == sum(p.numel() for p in net.parameters())
    lq = _lq(20, 18)
    with torch.no_grad():
        want = net(lq).clamp(0, 1)  # spandrel clamps; the engine clamps anyway
    got = wrapped.upscale(lq)
    assert got.shape == (1, 3, 40, 36)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_training_containers_and_prefixes_are_unwrapped(tmp_path, spandrel):
    net = compact(scale=4)
    path = save(net, tmp_path / "net_g_ema.pth", container="params_ema")
    _spec, config, _ = loader.load_any(path)
    assert config.arch_id == "Compact" and config.scale == 4


def test_unknown_architecture_is_explained(tmp_path, spandrel):
    from safetensors.torch import save_file

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.weird.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="does not recognise its architecture") as info:
        loader.load_any(path)
    assert "realsr convert" in info.value.hint


def test_spec_follows_spandrel_declarations(tmp_path, spandrel):
    s_spec, s_cfg, _ = loader.load_any(save(swinir(), tmp_path / "swinir.pth"))
    assert (s_cfg.min_size, s_cfg.tiling, s_cfg.fp16, s_cfg.bf16) == (16, "discouraged", False, True)
    assert s_spec.min_size == 16 and s_spec.tileable and s_spec.default_tile == community.DISCOURAGED_TILE
    e_spec, e_cfg, _ = loader.load_any(save(esrgan(), tmp_path / "esrgan.pth"))
    assert (e_cfg.min_size, e_cfg.tiling, e_cfg.fp16) == (2, "supported", True)
    assert e_spec.default_tile == community.SUPPORTED_TILE and e_spec.half_ok and not e_spec.stochastic


def test_gray_model_gets_luma_and_returns_rgb(tmp_path, spandrel):
    net = compact(in_ch=1, out_ch=1)
    _spec, config, wrapped = loader.load_any(save(net, tmp_path / "gray.pth"))
    assert (config.input_channels, config.output_channels) == (1, 1)
    lq = _lq(12, 10)
    luma = (lq * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        want = net(luma).clamp(0, 1)
    got = wrapped.upscale(lq)
    assert got.shape == (1, 3, 24, 20)
    for c in range(3):
        torch.testing.assert_close(got[:, c : c + 1], want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- engine


def test_tiled_equals_untiled_where_tiling_is_supported(tmp_path, spandrel):
    # Compact with 2 body convs sees 4 LR px around each pixel; overlap 16 -> margin 4: exact
    m = api.load_model(str(save(compact(convs=2), tmp_path / "c.safetensors")), device="cpu")
    lq = _lq(37, 43, seed=1)
    whole = run_model(m, lq, RunOptions(tile=0))
    tiled = run_model(m, lq, RunOptions(tile=24, tile_overlap=16))
    assert whole.tiles == 1 and tiled.tiles >= 4
    torch.testing.assert_close(tiled.sr, whole.sr, atol=1e-5, rtol=0)


def test_size_requirements_are_respected(tmp_path, spandrel):
    m = api.load_model(str(save(swinir(), tmp_path / "s.pth")), device="cpu")
    small = run_model(m, _lq(9, 11), RunOptions(tile=0))  # below spandrel's minimum of 16: padded
    assert small.sr.shape == (1, 3, 18, 22)
    with pytest.raises(UsageError, match="minimum size 16"):
        run_model(m, _lq(40, 40), RunOptions(tile=8, tile_overlap=2))


def test_discouraged_tiling_runs_whole_by_default_and_warns_once_when_tiled(tmp_path, spandrel, caplog):
    m = api.load_model(str(save(swinir(), tmp_path / "s.pth")), device="cpu")
    image = ImageData(pixels=_lq(40, 36)[0].permute(1, 2, 0).numpy())
    with caplog.at_level(logging.WARNING, logger="realsr_cli"):
        _, info = api.upscale_image(m, image, api.UpscaleOptions(tile=None))
        assert info["tiles"] == 1 and not caplog.records  # auto: the whole image (cap 1024 px)
        for _ in range(2):
            out, info = api.upscale_image(m, image, api.UpscaleOptions(tile=16, tile_overlap=8))
    assert info["tiles"] > 1 and (out.width, out.height) == (72, 80)
    warned = [r for r in caplog.records if "tiling discouraged" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]


def test_precision_follows_spandrel_support(tmp_path, spandrel, caplog):
    path = str(save(swinir(), tmp_path / "s.pth"))
    with caplog.at_level(logging.WARNING, logger="realsr_cli"):
        m = api.load_model(path, device="cpu", precision="fp16")
    assert m.dtype == torch.float32
    assert any("does not support it" in r.getMessage() for r in caplog.records)
    assert api.load_model(path, device="cpu", precision="bf16").dtype == torch.bfloat16
    cfg = community.load(path)[1]
    assert community.supported_precision(cfg, "auto") == "fp32"
    e_cfg = community.load(save(esrgan(), tmp_path / "e.pth"))[1]
    assert community.supported_precision(e_cfg, "auto") == "auto"
    assert community.supported_precision(e_cfg, "fp16") == "fp16"


def test_manifest_names_the_spandrel_architecture(tmp_path, spandrel):
    m = api.load_model(str(save(esrgan(), tmp_path / "e.pth")), device="cpu")
    manifest = api.manifest_for(m, {"scale": 2.0, "tile": 0, "seed": None})
    assert manifest["arch"] == "spandrel:ESRGAN" and manifest["spandrel_arch"] == "ESRGAN"
    assert manifest["model"] == "e.pth" and len(manifest["weights_sha256"]) == 64
    assert m.metadata == {}


def test_inspect_community_file(tmp_path, spandrel):
    net = swinir()
    doc = inspect_weights(save(net, tmp_path / "2x-swinir.safetensors"))
    assert doc["loader"] == "spandrel" and doc["arch"] == "spandrel:SwinIR" and doc["arch_id"] == "SwinIR"
    assert doc["size_requirements"] == {"minimum": 16, "multiple_of": 1, "square": False}
    assert doc["precision"] == {"fp32": True, "fp16": False, "bf16": True}
    assert doc["tiling"] == "discouraged" and doc["purpose"] == "SR" and doc["scale"] == 2
    assert doc["parameters"] == sum(p.numel() for p in net.parameters())
    assert doc["config"] is None and doc["spandrel_version"] == spandrel.__version__
