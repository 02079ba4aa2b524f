"""ONNX export (engine/export.py): tiny FeMaSR, UGTSR and RealSRT graphs run in onnxruntime on the
CPU and match PyTorch's ``net.upscale``; diffusion models are refused; failures leave no file.
UGTSR and RealSRT export without the graph optimizer (``optimize=False``) to keep the tests short;
FeMaSR (here and in tests/cli/test_cli_export.py) covers the optimized path.

Tolerance: max |onnxruntime - PyTorch| <= ATOL = 1e-4 on outputs of the [0,1] scale (fp32 on both
sides; measured ~1e-5 for these tiny random-weight models).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import realsr_cli
from realsr_cli._config import from_dict, load_toml
from realsr_cli.engine import export as ex
from realsr_cli.errors import EXIT_MODEL, EXIT_USAGE, ModelError, UsageError
from realsr_cli.models._blocks.swin import SwinBlock
from realsr_cli.models._blocks.vq import VectorQuantizer
from realsr_cli.models.femasr import FeMaSRConfig
from realsr_cli.models.realsrt import RealSRTConfig
from realsr_cli.models.ugtsr import UGTSRConfig
from realsr_cli.registry.archs import get_arch
from realsr_cli.registry.loader import save_weights

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (extra realsr[onnx])")
onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (extra realsr[onnx])")
pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript (extra realsr[onnx])")

#: relative to the output's largest magnitude (at least 1), as the parity fixtures compare:
#: the engine runs FeMaSR/UGTSR channels-last, whose convolutions sum in another order than the
#: exported NCHW graph (1.3e-4 absolute on a 2.9-magnitude output)
ATOL = 1e-4
CONFIGS = Path(realsr_cli.__file__).parent / "configs"

#: femasr-tiny.toml's network with two Swin blocks (so one is shifted) whose stored mask fits
#: 16x16 maps: LR sides 16..31 pad to 32 and hit it, other sizes need the mask computed
FEMASR = dataclasses.replace(
    from_dict(FeMaSRConfig, load_toml(str(CONFIGS / "femasr-tiny.toml"))["model"]), swin_depth=2, swin_input_resolution=16
)
UGTSR = UGTSRConfig(femasr=FEMASR, fusion_dim=16, fusion_heads=2, align_window=4, align_heads=2)
#: realsrt-ccm-tiny.toml's network (16 px LR patches) with T = 2 decoding steps
REALSRT = dataclasses.replace(
    from_dict(RealSRTConfig, load_toml(str(CONFIGS / "realsrt-ccm-tiny.toml"))["model"]), steps=2
)


def write_weights(path, arch: str, config) -> str:
    torch.manual_seed(0)
    net = get_arch(arch).build(config)
    save_weights(path, arch=arch, config=config, state_dict=net.state_dict())
    return str(path)


def run_onnx(path, lq: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sr"], {"lq": lq.numpy()})[0]


def assert_matches(path, model, shape, seed=1):
    lq = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    ref = model(lq).numpy()
    out = run_onnx(path, lq)
    assert out.shape == ref.shape
    diff = float(np.abs(out - ref).max())
    assert diff <= ATOL * max(1.0, float(np.abs(ref).max())), (shape, diff)
    return diff


def metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def femasr_model(tmp_path_factory):
    return ex.load_for_export(write_weights(tmp_path_factory.mktemp("w") / "femasr.safetensors", "femasr", FEMASR))


@pytest.fixture(scope="module")
def femasr_dynamic(tmp_path_factory, femasr_model):
    """Dynamic FeMaSR, traced at 2x3x20x24 (the stored Swin mask's size) while the eager codebook
    search runs in chunks of 7 positions: neither may leak into the graph."""
    dst = tmp_path_factory.mktemp("onnx") / "femasr-dyn.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VectorQuantizer, "chunk_rows", 7)
        report = ex.export_onnx(femasr_model, dst, ex.ExportOptions(dynamic=True, height=20, width=24))
    return dst, report


def test_femasr_dynamic_matches_pytorch_at_several_sizes(femasr_dynamic, femasr_model, monkeypatch):
    dst, report = femasr_dynamic
    monkeypatch.setattr(VectorQuantizer, "chunk_rows", 7)  # PyTorch side chunked, graph not
    assert report.dynamic and report.input_shape == ["batch", 3, "height", "width"]
    assert report.min_size == 16 and report.max_size is None and report.opset >= ex.MIN_OPSET
    for shape in [(1, 3, 20, 24), (2, 3, 33, 17), (3, 3, 16, 16), (1, 3, 48, 35)]:
        assert_matches(dst, femasr_model, shape)


def test_femasr_metadata_and_model_left_unchanged(femasr_dynamic, femasr_model):
    dst, report = femasr_dynamic
    meta = metadata(dst)
    assert meta["arch"] == "femasr" and meta["scale"] == "4" and meta["size_multiple"] == "16"
    assert meta["min_size"] == "16" and meta["input_shape"] == '["batch", 3, "height", "width"]'
    assert meta["realsr_version"] and meta["weights_sha256"] == femasr_model.weights_sha256
    assert report.bytes == dst.stat().st_size
    assert not [p for p in dst.parent.iterdir() if p != dst], "temporary files left behind"
    # the export-mode overrides were undone
    assert not any("chunk_rows" in vars(m) for m in femasr_model.net.modules())
    blocks = [m for m in femasr_model.net.modules() if isinstance(m, SwinBlock)]
    assert blocks and all(b.input_resolution == (16, 16) for b in blocks)


def test_ugtsr_dynamic(tmp_path):
    model = ex.load_for_export(write_weights(tmp_path / "ugtsr.safetensors", "ugtsr", UGTSR))
    dst = tmp_path / "ugtsr.onnx"
    ex.export_onnx(model, dst, ex.ExportOptions(dynamic=True, height=24, width=20, optimize=False))
    for shape in [(1, 3, 24, 20), (2, 3, 17, 37)]:
        assert_matches(dst, model, shape)


def test_realsrt_unrolled_steps_dynamic_batch(tmp_path):
    model = ex.load_for_export(write_weights(tmp_path / "realsrt.safetensors", "realsrt", REALSRT))
    with pytest.raises(UsageError, match="at most 16 px"):
        ex.export_onnx(model, tmp_path / "big.onnx", ex.ExportOptions(height=17))
    dst = tmp_path / "realsrt.onnx"
    report = ex.export_onnx(model, dst, ex.ExportOptions(dynamic=True, check=True, optimize=False))
    assert report.input_shape == ["batch", 3, 16, 16] and report.max_size == 16
    assert report.max_abs_diff is not None and report.max_abs_diff <= ATOL
    assert report.checked_shapes == [[1, 3, 16, 16], [3, 3, 16, 16]]
    assert_matches(dst, model, (2, 3, 16, 16))
    assert metadata(dst)["max_size"] == "16"
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):  # H, W are fixed
        run_onnx(dst, torch.rand(1, 3, 12, 16))


def test_bicres_dynamic_matches_pytorch(tmp_path):
    """The default model's architecture: bicubic base + trained-looking (non-zero) residual."""
    from realsr_cli.models.bicres import BicResConfig

    cfg = BicResConfig(scale=4, width=8, depth=2)
    torch.manual_seed(0)
    net = get_arch("bicres").build(cfg)
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    path = tmp_path / "bicres.safetensors"
    save_weights(path, arch="bicres", config=cfg, state_dict=net.state_dict())
    model = ex.load_for_export(str(path))
    dst = tmp_path / "bicres.onnx"
    report = ex.export_onnx(model, dst, ex.ExportOptions(dynamic=True, height=24, width=20, check=True))
    assert report.min_size == 1 and report.max_abs_diff is not None and report.max_abs_diff <= ATOL
    for shape in [(1, 3, 24, 20), (2, 3, 7, 33)]:
        assert_matches(dst, model, shape)


@pytest.mark.parametrize("arch", ["upsr", "ssr"])
def test_diffusion_archs_are_refused(arch):
    with pytest.raises(UsageError, match="diffusion") as info:
        ex.check_exportable(arch)
    assert info.value.exit_code == EXIT_USAGE and "seed" in info.value.message
    assert "femasr" in (info.value.hint or "")
    assert ex.check_exportable("femasr").exports


def test_every_architecture_has_a_rule():
    from realsr_cli.registry.archs import ARCHITECTURES

    assert set(ex.EXPORT_RULES) == set(ARCHITECTURES)
    with pytest.raises(UsageError, match="no export rule"):
        ex.check_exportable("not-an-arch")


def test_bad_options_fail_before_tracing(tmp_path, femasr_model, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("traced")

    monkeypatch.setattr(torch.onnx, "export", boom)
    for opts, match in [
        (ex.ExportOptions(opset=17), "opset 18 or newer"),
        (ex.ExportOptions(dynamic=True, height=8), "smallest side 16"),
    ]:
        with pytest.raises(UsageError, match=match):
            ex.export_onnx(femasr_model, tmp_path / "x.onnx", opts)
    with pytest.raises(UsageError, match="folder"):
        ex.export_onnx(femasr_model, tmp_path, ex.ExportOptions(height=16, width=16))
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_packages_are_a_usage_error_with_the_extra(tmp_path, femasr_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(UsageError, match="'onnxscript' package") as info:
        ex.export_onnx(femasr_model, tmp_path / "x.onnx", ex.ExportOptions(height=16, width=16))
    assert 'realsr[onnx]' in (info.value.hint or "")
    assert list(tmp_path.iterdir()) == []


def test_failures_leave_no_file_and_keep_the_old_one(tmp_path, femasr_model, monkeypatch):
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong traceback ...")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ModelError, match="ONNX export of femasr failed: Unsupported operator") as info:
        ex.export_onnx(femasr_model, dst, ex.ExportOptions(height=16, width=16))
    assert info.value.exit_code == EXIT_MODEL
    monkeypatch.undo()

    # a check that disagrees: the complete graph was written to a temporary file, then dropped
    monkeypatch.setattr(ex, "compare_onnx", lambda *a, **k: 0.5)
    with pytest.raises(ModelError, match="differ by up to 0.5"):
        ex.export_onnx(femasr_model, dst, ex.ExportOptions(height=16, width=16, check=True))
    assert dst.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_engine_export_does_not_load_cli_or_training():
    code = "import sys, realsr_cli.engine.export; print('\\n'.join(sys.modules))"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    bad = {m for m in mods if m.split(".")[0] in {"typer", "rich"} or m.startswith(("realsr_cli.cli", "realsr_cli.training"))}
    assert not bad
