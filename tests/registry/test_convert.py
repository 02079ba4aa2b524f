"""Official checkpoints -> realsr safetensors: safe reading, unwrapping, merging, validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from realsr_cli.errors import WeightsError
from realsr_cli.registry import convert
from realsr_cli.registry.archs import ARCHITECTURES, ArchSpec
from realsr_cli.registry.loader import file_sha256, load_weights, read_metadata
from tests.registry.conftest import (
    TINY_SPEC,
    TinyConfig,
    TinyNet,
    official_state_dict,
    tiny_state_dict,
)


def _mark(path: str) -> None:  # what a malicious pickle would run: must never be called
    Path(path).write_text("executed")


class Payload:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (_mark, (str(self.path),))


def _check_converted(path: Path, src_files: list[Path], scale: int = 2) -> None:
    meta = read_metadata(path)
    assert meta["arch"] == "tiny" and meta["scale"] == str(scale)
    assert meta["source_sha256"] == ",".join(file_sha256(p) for p in src_files)
    assert meta["source_files"] == ",".join(p.name for p in src_files)
    spec, config, net = load_weights(path)
    assert config == TinyConfig(scale=scale) and "disc.weight" not in net.state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"params": sd, "iter": 100},
        lambda sd: {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {"model": {"params": sd}},
        lambda sd: sd,
    ],
    ids=["params", "params_ema-preferred", "state_dict+module", "nested", "bare"],
)
def test_pth_wrappers(tmp_path, tiny_arch, wrap: Callable):
    src = tmp_path / "official.pth"
    torch.save(wrap(official_state_dict(seed=1)), src)
    out = convert.convert_checkpoint(src, tmp_path / "out" / "tiny.safetensors", arch="tiny")
    assert out == tmp_path / "out" / "tiny.safetensors"
    _check_converted(out, [src])
    _, _, net = load_weights(out)
    assert torch.equal(net.state_dict()["tail.weight"], tiny_state_dict(seed=1)["tail.weight"])


def test_official_safetensors_and_scale_inference(tmp_path, tiny_arch):
    src = tmp_path / "official_x4.safetensors"
    save_file(official_state_dict(scale=4), str(src))
    out = convert.convert_checkpoint(str(src), tmp_path / "x4.safetensors", arch="tiny", scale=4)
    _check_converted(out, [src], scale=4)
    with pytest.raises(WeightsError, match="is a x4 checkpoint, not x2"):
        convert.convert_checkpoint(src, tmp_path / "x2.safetensors", arch="tiny", scale=2)


def test_refuses_files_that_need_arbitrary_unpickling(tmp_path, tiny_arch):
    marker = tmp_path / "marker"
    src = tmp_path / "evil.pth"
    torch.save({"params": official_state_dict(), "extra": Payload(marker)}, src)
    with pytest.raises(WeightsError, match="refuses to unpickle") as info:
        convert.convert_checkpoint(src, tmp_path / "o.safetensors", arch="tiny")
    assert "_mark" in info.value.message  # names the offending global
    assert "weights_only=False" in info.value.hint
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable PyTorch checkpoint"),
        (lambda p: torch.save({"params": {"a": 1}}, p), "holds no tensors"),
        (lambda p: torch.save([torch.zeros(1)], p), "not a state dict"),
        (lambda p: torch.save({"params": {"x.weight": torch.zeros(2)}}, p), "cannot read the tiny layout"),
    ],
)
def test_unusable_checkpoints(tmp_path, tiny_arch, make, match):
    src = tmp_path / "bad.pth"
    make(src)
    with pytest.raises(WeightsError, match=match):
        convert.convert_checkpoint(src, tmp_path / "o.safetensors", arch="tiny")


def test_strict_check_catches_missing_keys(tmp_path, tiny_arch):
    sd = official_state_dict()
    sd.pop("tail.bias")
    src = tmp_path / "partial.pth"
    torch.save({"params": sd}, src)
    with pytest.raises(WeightsError, match="missing key.*tail.bias"):
        convert.convert_checkpoint(src, tmp_path / "o.safetensors", arch="tiny")


def test_argument_errors(tmp_path, tiny_arch):
    src = tmp_path / "a.pth"
    torch.save({"params": official_state_dict()}, src)
    with pytest.raises(WeightsError, match=r"must end in \.safetensors"):
        convert.convert_checkpoint(src, tmp_path / "o.pth", arch="tiny")
    with pytest.raises(WeightsError, match="from 1 official file"):
        convert.convert_checkpoint([src, src], tmp_path / "o.safetensors", arch="tiny")
    with pytest.raises(WeightsError, match="checkpoint not found"):
        convert.convert_checkpoint(tmp_path / "none.pth", tmp_path / "o.safetensors", arch="tiny")
    (tmp_path / "a.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match="unsupported checkpoint type"):
        convert.convert_checkpoint(tmp_path / "a.npz", tmp_path / "o.safetensors", arch="tiny")
    same = tmp_path / "same.safetensors"
    save_file(official_state_dict(), str(same))
    with pytest.raises(WeightsError, match="overwrite its own source"):
        convert.convert_checkpoint(same, same, arch="tiny")


# --------------------------------------------------------------------------- several files


class PairNet(nn.Module):
    """Two tiny nets: ``main`` and ``aux`` (like UPSR's denoiser + auxiliary g)."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.main, self.aux = TinyNet(config), TinyNet(config)


@dataclasses.dataclass(frozen=True)
class PairSpec(ArchSpec):
    merge_official: Callable | None = None
    official_file_prefixes: tuple[str, ...] = ()


def _pair_spec(**fields) -> PairSpec:
    base = {f.name: getattr(TINY_SPEC, f.name) for f in dataclasses.fields(ArchSpec)}
    base.update(name="pair", build=PairNet, official_files=2, convert_official=lambda sd: dict(sd),
                infer_config=lambda sd, scale: TinyConfig(scale=2))
    base.update(fields)
    return PairSpec(**base)


def _two_files(tmp_path) -> list[Path]:
    paths = []
    for i, name in enumerate(("main.pth", "aux.pth")):
        paths.append(tmp_path / name)
        torch.save({"params_ema": tiny_state_dict(seed=i)}, paths[-1])
    return paths


def test_multi_file_default_merge_by_prefix(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "pair", lambda: _pair_spec(official_file_prefixes=("main.", "aux.")))
    srcs = _two_files(tmp_path)
    out = convert.convert_checkpoint(srcs, tmp_path / "pair.safetensors", arch="pair")
    meta = read_metadata(out)
    assert meta["source_files"] == "main.pth,aux.pth"
    assert meta["source_sha256"] == f"{file_sha256(srcs[0])},{file_sha256(srcs[1])}"
    _, _, net = load_weights(out)
    assert torch.equal(net.aux.head.weight, tiny_state_dict(seed=1)["head.weight"])


def test_multi_file_spec_merge_and_clashes(tmp_path, monkeypatch):
    def merge(sds):
        if len(sds[0]) != len(sds[1]):
            raise ValueError("unbalanced")
        return {**{f"main.{k}": v for k, v in sds[0].items()}, **{f"aux.{k}": v for k, v in sds[1].items()}}

    monkeypatch.setitem(ARCHITECTURES, "pair", lambda: _pair_spec(merge_official=merge))
    srcs = _two_files(tmp_path)
    out = convert.convert_checkpoint([str(s) for s in srcs], tmp_path / "pair.safetensors", arch="pair")
    assert load_weights(out)[0].name == "pair"

    torch.save({"params": {"only.weight": torch.zeros(1)}}, srcs[1])
    with pytest.raises(WeightsError, match="cannot combine main.pth, aux.pth.*unbalanced"):
        convert.convert_checkpoint(srcs, tmp_path / "pair2.safetensors", arch="pair")

    monkeypatch.setitem(ARCHITECTURES, "pair", lambda: _pair_spec())  # no merge, no prefixes: plain union
    _two_files(tmp_path)
    with pytest.raises(WeightsError, match="repeats keys of an earlier file"):
        convert.convert_checkpoint(srcs, tmp_path / "pair3.safetensors", arch="pair")


# --------------------------------------------------------------------------- a real architecture


def test_femasr_reduced_parity_weights_convert(tmp_path, shared):
    """The reduced official FeMaSR x4 fixture (official keys) converts and loads strictly."""
    src = shared / "parity" / "femasr_x4_reduced" / "weights.safetensors"
    out = convert.convert_checkpoint(src, tmp_path / "femasr-x4-reduced.safetensors", arch="femasr", scale=4)
    meta = read_metadata(out)
    assert meta["arch"] == "femasr" and meta["scale"] == "4" and meta["source_sha256"] == file_sha256(src)
    spec, config, net = load_weights(out)
    assert spec.name == "femasr" and config.scale == 4
