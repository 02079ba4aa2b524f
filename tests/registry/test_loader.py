"""Our safetensors format: metadata, atomic writes, strict loading with plain-words errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from realsr_cli import __version__
from realsr_cli.errors import UnknownModelError, WeightsError
from realsr_cli.registry import loader
from tests.registry.conftest import TinyConfig, tiny_state_dict


def _meta(**overrides: str) -> dict[str, str]:
    meta = {
        "format": "realsr",
        "format_version": "1",
        "arch": "tiny",
        "config": json.dumps({"scale": 2, "width": 4}),
        "scale": "2",
        "realsr_version": __version__,
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def _raw(path, state_dict, **meta: str):
    save_file(state_dict, str(path), metadata=_meta(**meta))
    return path


def test_save_writes_metadata_and_loads_strictly(tmp_path, tiny_arch):
    sd = tiny_state_dict(seed=3)
    path = loader.save_weights(tmp_path / "sub" / "w.safetensors", arch="tiny", config=TinyConfig(),
                               state_dict=sd, extra_metadata={"source_sha256": "ab" * 32})
    meta = loader.read_metadata(path)
    assert meta["format"] == "realsr" and meta["format_version"] == "1" and meta["arch"] == "tiny"
    assert meta["scale"] == "2" and meta["realsr_version"] == __version__
    assert json.loads(meta["config"]) == {"scale": 2, "width": 4} and meta["source_sha256"] == "ab" * 32
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]  # no temporary left

    spec, config, net = loader.load_weights(path)
    assert spec.name == "tiny" and config == TinyConfig() and not net.training
    for k, v in sd.items():
        assert torch.equal(net.state_dict()[k], v)


def test_save_refuses_bad_input(tmp_path, tiny_arch):
    sd = tiny_state_dict()
    with pytest.raises(WeightsError, match="may not override 'arch'"):
        loader.save_weights(tmp_path / "a.safetensors", arch="tiny", config=TinyConfig(), state_dict=sd,
                            extra_metadata={"arch": "other"})
    with pytest.raises(WeightsError, match="must be a TinyConfig"):
        loader.save_weights(tmp_path / "a.safetensors", arch="tiny", config={"scale": 2}, state_dict=sd)
    with pytest.raises(WeightsError, match="not a tensor"):
        loader.save_weights(tmp_path / "a.safetensors", arch="tiny", config=TinyConfig(), state_dict={"x": 1})
    with pytest.raises(UnknownModelError):
        loader.save_weights(tmp_path / "a.safetensors", arch="nosuch", config=TinyConfig(), state_dict=sd)
    assert not list(tmp_path.iterdir())


def test_save_handles_tied_and_strided_tensors(tmp_path, tiny_arch):
    sd = tiny_state_dict()
    shared = torch.randn(4, 6)
    sd_extra = {**sd, "a": shared, "b": shared, "c": shared.t()}
    path = loader.save_weights(tmp_path / "t.safetensors", arch="tiny", config=TinyConfig(), state_dict=sd_extra)
    from safetensors.torch import load_file

    back = load_file(str(path))
    assert torch.equal(back["a"], back["b"]) and torch.equal(back["c"], shared.t())


def test_pickles_are_refused_with_a_convert_hint(tmp_path):
    pth = tmp_path / "model.pth"
    torch.save({"params": tiny_state_dict()}, pth)
    for fn in (loader.load_weights, loader.read_metadata):
        with pytest.raises(WeightsError, match="pickled PyTorch checkpoint") as info:
            fn(pth)
        assert "realsr convert" in info.value.hint


def test_not_ours_or_not_safetensors(tmp_path, tiny_arch):
    plain = tmp_path / "plain.safetensors"
    save_file(tiny_state_dict(), str(plain))
    with pytest.raises(WeightsError, match="no realsr metadata") as info:
        loader.load_weights(plain)
    assert "realsr convert" in info.value.hint
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        loader.load_weights(junk)
    with pytest.raises(WeightsError, match="not found"):
        loader.load_weights(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"format_version": "2"}, "format version '2'"),
        ({"config": None}, "lacks the 'config'"),
        ({"config": "{not json"}, "invalid tiny config"),
        ({"config": json.dumps({"scale": 2, "depth": 3})}, "invalid tiny config"),
        ({"scale": "4"}, "disagrees"),
    ],
)
def test_bad_metadata(tmp_path, tiny_arch, meta, match):
    path = _raw(tmp_path / "m.safetensors", tiny_state_dict(), **meta)
    with pytest.raises(WeightsError, match=match):
        loader.load_weights(path)


def test_unknown_arch_in_metadata(tmp_path):
    path = _raw(tmp_path / "m.safetensors", tiny_state_dict(), arch="nosuch")
    with pytest.raises(UnknownModelError, match="nosuch"):
        loader.load_weights(path)


def test_strict_errors_list_keys_in_plain_words(tmp_path, tiny_arch):
    sd = tiny_state_dict()
    sd.pop("tail.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(8, 3, 3, 3)
    path = _raw(tmp_path / "m.safetensors", sd)
    with pytest.raises(WeightsError) as info:
        loader.load_weights(path)
    msg = info.value.message
    assert "1 missing key(s): tail.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "1 shape mismatch(es): head.weight (file (8, 3, 3, 3), network (4, 3, 3, 3))" in msg
    assert "realsr convert" in info.value.hint


def test_long_key_lists_are_shortened(tmp_path, tiny_arch):
    sd = {**tiny_state_dict(), **{f"junk.{i}": torch.zeros(1) for i in range(9)}}
    with pytest.raises(WeightsError, match=r"9 unexpected key\(s\): .* and 4 more"):
        loader.load_weights(_raw(tmp_path / "m.safetensors", sd))


def test_file_sha256_streams(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert loader.file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_partial_export_is_refused_with_its_purpose(tmp_path, tiny_arch):
    sd = tiny_state_dict(seed=3)
    path = _raw(tmp_path / "g.safetensors", sd, partial="true", stage="upsr-g")
    with pytest.raises(WeightsError) as err:
        loader.load_weights(path)
    assert "only part" in str(err.value) and "upsr-g" in str(err.value)
    assert "next training stage" in err.value.hint


@pytest.mark.parametrize("codebook", [20_000_000, 1_000_000_000])
def test_hostile_metadata_is_refused_before_anything_is_allocated(tmp_path, codebook):
    """Issue 18 (4): `codebook_size = 2e7` in 4 KB of metadata allocated 5.3 GB for 29 s before the
    refusal; 1e9 ended in exit 1. The meta-device build and the header's shapes catch it (exit 3):
    the loading process stays far below the 5 GB (2e7 x 64 floats) a real build would take."""
    import subprocess
    import sys

    from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet

    cfg = FeMaSRConfig(scale=1, lq_stage=False, channels=(16, 16), codebook_size=8, codebook_dim=64,
                       norm_type="none")
    path = tmp_path / "hostile.safetensors"
    loader.save_weights(path, arch="femasr", config=cfg, state_dict=FeMaSRNet(cfg).state_dict())
    meta = loader.read_metadata(path)
    raw = json.loads(meta["config"])
    raw["codebook_size"] = codebook
    from safetensors.torch import load_file

    save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(raw)})
    code = (
        "import resource, sys\n"
        "from realsr_cli.registry import loader\n"
        "from realsr_cli.errors import WeightsError\n"
        "try:\n"
        f"    loader.load_weights({str(path)!r})\n"
        "except WeightsError as exc:\n"
        "    print(exc.exit_code, 'embedding.weight' in exc.message, 'shape mismatch' in exc.message)\n"
        # VmHWM: this process's own peak (ru_maxrss would include the forking pytest's RSS, which
        # Linux carries over exec)
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
        "print(int(hwm[0].split()[1]) // 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split("\n")
    assert lines[0] == "3 True True", out.stdout + out.stderr
    assert int(lines[1]) < 1500, f"peak RSS {lines[1]} MB"  # torch's import alone is ~400 MB


@pytest.mark.parametrize("weights_id", ["bicres-x4", "ugtsr-x4-cpu", "ssr-x4-cpu"])
def test_shipped_files_are_adopted_without_a_copy_and_equal_the_copy_path(weights_id):
    """load_weights builds on the meta device and adopts the file's tensors (no random init, no
    second copy); the result equals building for real and copying, tensor for tensor."""
    from realsr_cli.registry import catalog, hub

    path = hub.fetch(catalog.load_catalog().get(weights_id))
    spec, config, net = loader.load_weights(path)
    tensors = dict(net.state_dict())
    assert all(not t.is_meta and t.device.type == "cpu" for t in tensors.values())
    assert all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    # each in its own aligned allocation: unaligned weights change CPU results in the last bits
    assert all(t.data_ptr() % 64 == 0 for t in tensors.values())
    copied = spec.build(config)
    loader.load_state_dict_strict(copied, load_file(str(path)), what=weights_id)
    for k, v in copied.state_dict().items():
        assert torch.equal(v, tensors[k]), k
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(net.eval().upscale(x, generator=torch.Generator().manual_seed(0)),
                       copied.eval().upscale(x, generator=torch.Generator().manual_seed(0)))


def test_a_network_with_tensors_outside_its_state_dict_is_built_and_copied(tmp_path, tiny_arch, monkeypatch):
    """A constructor that computes a tensor the file does not hold (a plain attribute here) would
    leave it on the meta device if adopted: load_weights then builds for real and copies."""
    from realsr_cli.registry import archs

    spec = archs.get_arch("tiny")
    real_build = spec.build

    def build_with_attribute(config):
        net = real_build(config)
        net.table = torch.arange(4.0)  # computed, not saved
        return net

    patched = dataclasses.replace(spec, build=build_with_attribute)
    monkeypatch.setattr(loader, "get_arch", lambda name: patched if name == "tiny" else archs.get_arch(name))
    path = loader.save_weights(tmp_path / "w.safetensors", arch="tiny", config=TinyConfig(),
                               state_dict=tiny_state_dict(seed=1))
    _, _, net = loader.load_weights(path)
    assert not net.table.is_meta and torch.equal(net.table, torch.arange(4.0))


def test_loading_builds_on_meta_without_random_fills_or_dynamo():
    """The meta-device builds (shape check, adoption) skip random initialisation: ``normal_`` on a
    meta tensor would import torch._dynamo (about a second of every `realsr upscale`). Every
    architecture at its released size too (UPSR's mask and log-scale init, RealSRT's mask token
    did import it, and ``torch.randn`` on meta imports sympy: ~800 modules, 85 MB of a 469 MiB load)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from realsr_cli.registry import catalog, hub, loader\n"
            "from realsr_cli.registry.archs import get_arch\n"
            "from realsr_cli.models.bicres import BicResConfig\n"
            "net = loader.build_on_meta(get_arch('bicres'), BicResConfig())\n"
            "assert all(p.is_meta for p in net.parameters())\n"
            "for name in ('bicres-x4', 'ugtsr-x4-cpu', 'ssr-x4-cpu'):\n"
            "    loader.load_weights(hub.fetch(catalog.load_catalog().get(name)))\n"
            "from realsr_cli.models.femasr import FeMaSRConfig\n"
            "from realsr_cli.registry.archs import ARCHITECTURES\n"
            "for arch in ARCHITECTURES:\n"  # every one, at its default (= released) size
            "    spec = get_arch(arch)\n"
            "    cfg = FeMaSRConfig.released(4) if arch == 'femasr' else spec.config_cls()\n"
            "    net = loader.build_on_meta(spec, cfg)\n"
            "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"
