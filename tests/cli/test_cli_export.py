"""`realsr export` as a user runs it: a registry id (downloaded, then from the cache with --offline)
or a weights file, exit codes, the refusal of diffusion models, --check output, nothing
half-written.

Tolerance: the exported graph matches PyTorch within 1e-4 (max abs, fp32, [0,1] scale)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from realsr_cli.engine import api
from realsr_cli.models.ssr import SSRConfig
from realsr_cli.models.upsr import UPSRConfig, UPSRDenoiserConfig
from realsr_cli.models.upsr.atd import ATDConfig
from tests.cli.conftest import run_cli
from tests.engine.test_export_onnx import FEMASR, write_weights

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (extra realsr[onnx])")
onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (extra realsr[onnx])")
pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript (extra realsr[onnx])")

ATOL = 1e-4
#: the smallest UPSR the tests build (tests/models/test_upsr.py)
UPSR_TINY = UPSRConfig(
    denoiser=UPSRDenoiserConfig(model_channels=32, channel_mult=(1, 1, 1, 1), swin_embed_dim=32, num_feat=32),
    aux=ATDConfig(embed_dim=16, depths=(2,), num_heads=(2,), window_size=8, num_tokens=8, reduced_dim=4),
)


def _catalog(tmp_path, monkeypatch, model_id: str, arch: str, src) -> None:
    """A one-entry extra catalog served from a file:// URL, and an empty cache."""
    sha = hashlib.sha256(src.read_bytes()).hexdigest() if src.exists() else "0" * 64
    toml = tmp_path / "extra.toml"
    toml.write_text(
        f'[[weights]]\nid = "{model_id}"\narch = "{arch}"\nscale = 4\nformat = "safetensors"\n'
        f'license = "MIT"\nsha256 = "{sha}"\nsource = {{ url = "{src.as_uri()}" }}\n'
    )
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(toml))
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "cache"))


def test_export_registry_id_static_with_check(tmp_path, monkeypatch):
    weights = tmp_path / "femasr-tiny.safetensors"
    write_weights(weights, "femasr", FEMASR)
    _catalog(tmp_path, monkeypatch, "femasr-x4-onnxtest", "femasr", weights)
    dst = tmp_path / "out" / "femasr.onnx"
    args = ["export", "femasr-x4-onnxtest", "--onnx", str(dst), "--height", "20", "--width", "28", "--opset", "18", "--check"]

    assert run_cli(["models", "download", "femasr-x4-onnxtest"]).code == 0
    weights.rename(tmp_path / "elsewhere.safetensors")  # from now on only the cache has it

    res = run_cli([*args, "--offline"])
    assert res.code == 0, res.stderr
    assert res.stdout == b""  # human output goes to stderr
    assert "wrote" in res.stderr and "opset 18" in res.stderr and "input 1x3x20x28" in res.stderr
    diff = float(res.stderr.split("max abs diff ")[1].split()[0])
    assert 0 <= diff <= ATOL
    assert sorted(p.name for p in dst.parent.iterdir()) == ["femasr.onnx"]

    graph = onnx.load(str(dst))
    assert graph.opset_import[0].version == 18
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["model"] == "femasr-x4-onnxtest" and meta["arch"] == "femasr" and meta["scale"] == "4"
    model = api.load_model(str(tmp_path / "elsewhere.safetensors"), device="cpu", precision="fp32")
    lq = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    (out,) = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(["sr"], {"lq": lq.numpy()})
    assert np.abs(out - model(lq).numpy()).max() <= ATOL
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):  # static: other sizes refused
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(["sr"], {"lq": np.zeros((1, 3, 24, 28), np.float32)})


@pytest.mark.parametrize(("arch", "config"), [("upsr", UPSR_TINY), ("ssr", SSRConfig.tiny())])
def test_diffusion_file_is_refused_with_exit_2(tmp_path, arch, config):
    src = write_weights(tmp_path / f"{arch}.safetensors", arch, config)
    dst = tmp_path / "x.onnx"
    res = run_cli(["export", src, "--onnx", str(dst)])
    assert res.code == 2, res.stderr
    assert f"{arch} cannot be exported to ONNX as one graph" in res.stderr and "diffusion" in res.stderr
    assert "femasr" in res.stderr  # the hint names what does export
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{arch}.safetensors"]


def test_diffusion_id_is_refused_before_any_download(tmp_path, monkeypatch):
    _catalog(tmp_path, monkeypatch, "ssr-x4-onnxtest", "ssr", tmp_path / "missing.safetensors")
    res = run_cli(["export", "ssr-x4-onnxtest", "--onnx", str(tmp_path / "x.onnx")])
    assert res.code == 2 and "diffusion" in res.stderr, res.stderr  # not 3: the download never started
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "cache").exists()


def test_usage_errors(tmp_path, capsys):
    src = write_weights(tmp_path / "f.safetensors", "femasr", FEMASR)
    res = run_cli(["export", src, "--onnx", str(tmp_path / "x.onnx"), "--opset", "17"])
    assert res.code == 2 and "opset 18 or newer" in res.stderr
    res = run_cli(["export", src, "--onnx", str(tmp_path / "x.onnx"), "--dynamic", "--height", "8"])
    assert res.code == 2 and "smallest side 16" in res.stderr
    res = run_cli(["export", src])
    assert res.code == 2 and "Missing option '--onnx'" in capsys.readouterr().err  # click writes to sys.stderr
    res = run_cli(["export", "no-such-model", "--onnx", str(tmp_path / "x.onnx")])
    assert res.code == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.safetensors"]


def test_help_has_examples():
    res = run_cli(["export", "--help"])
    assert res.code == 0
    text = res.stdout.decode()
    assert "realsr export femasr-x4 --onnx" in text and "--dynamic" in text and "--check" in text


def test_help_constants_agree_with_the_exporter():
    from realsr_cli.cli import export as cli_export
    from realsr_cli.engine import export as engine_export

    assert (cli_export.MIN_OPSET, cli_export.CHECK_ATOL) == (engine_export.MIN_OPSET, engine_export.CHECK_ATOL)
