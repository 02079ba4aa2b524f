"""Auxiliary (non-SR) weights: ``kind = "aux"`` catalog entries (torchvision's ImageNet VGGs),
downloaded raw through the registry cache and resolved from the training configs' VGG fields."""

from __future__ import annotations

import pytest
import torch

from realsr_cli.errors import (
    ChecksumError,
    ConfigError,
    DownloadError,
    UnknownModelError,
    WeightsError,
)
from realsr_cli.registry import hub
from realsr_cli.registry.catalog import AUX_ARCHS, load_catalog
from realsr_cli.training.losses import VGGFeatureExtractor
from realsr_cli.training.stages.reconstruction import (
    ReconstructionLossConfig,
    check_vgg_inputs,
    load_vgg_weights,
    read_vgg_state_dict,
    resolve_vgg_weights,
)
from tests.registry.conftest import entry_dict, sha256, write_catalog

WIDTH = 8  # a tiny VGG (loss.vgg_base_width = 8): a few KiB


def aux_dict(**overrides):
    base = {
        "id": "vgg16-tiny",
        "kind": "aux",
        "arch": "vgg16",
        "format": "pth",
        "source": {"url": "https://example.invalid/vgg16-tiny.pth"},
        "license": "BSD-3-Clause",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def tiny_vgg_bytes(tmp_path, arch: str = "vgg16", seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A torchvision-layout ``.pth`` (flat ``features.N.*`` state dict) of a tiny VGG."""
    torch.manual_seed(seed)
    vgg = VGGFeatureExtractor(arch, ("relu5_3" if arch == "vgg16" else "relu5_4",), base_width=WIDTH)
    sd = {f"features.{k}": v.detach().clone() for k, v in vgg.features.state_dict().items()}
    sd["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path / f"made-{arch}-{seed}.pth"
    torch.save(sd, path)
    return path.read_bytes(), sd


@pytest.fixture
def served_vgg(tmp_path, fake_hub, monkeypatch):
    """A tiny VGG-16 .pth on the local server and an extra catalog naming it ``vgg16-tiny``."""
    data, sd = tiny_vgg_bytes(tmp_path)
    url = fake_hub.add_plain("vgg16-tiny.pth", data)
    cat = write_catalog(tmp_path / "aux.toml", [aux_dict(source={"url": url})])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(cat))
    return data, sd, load_catalog().get("vgg16-tiny", allow_aux=True)


# --------------------------------------------------------------------------- catalog


def test_shipped_vgg_entries():
    catalog = load_catalog()
    for arch, name in (("vgg16", "vgg16-397923af.pth"), ("vgg19", "vgg19-dcbb9e9d.pth")):
        (e,) = catalog.aux(arch)
        assert e.id == f"{arch}-imagenet" and e.kind == "aux" and e.is_aux and e.arch in AUX_ARCHS
        assert e.source.url == f"https://download.pytorch.org/models/{name}"
        assert e.format == "pth" and e.sha256 is None and e.license == "BSD-3-Clause"
        assert e.to_json()["kind"] == "aux" and e.to_json()["scale"] is None
    assert all(not e.is_aux for e in catalog.sr_entries)


BAD_AUX = [
    ({"arch": "femasr", "id": "femasr-imagenet"}, "unknown aux architecture 'femasr'"),
    ({"arch": "resnet50", "id": "resnet50-imagenet"}, "unknown aux architecture"),
    ({"id": "vgg19-tiny"}, "must read 'vgg16-<variant>'"),
    ({"id": "vgg16"}, "must read"),
    ({"scale": 1}, "unknown key.*scale"),
    ({"aliases": ["vgg"]}, "unknown key.*aliases"),
    ({"default": True}, "unknown key.*default"),
    ({"kind": "extra"}, "kind 'extra'"),
    ({"format": "ckpt"}, "format 'ckpt'"),
    ({"sha256": "abc"}, "sha256 must be 64"),
    ({"license": None}, "missing required key"),
    ({"source": {"url": "http://example.com/a.pth"}}, "https://"),
]


@pytest.mark.parametrize("overrides, match", BAD_AUX)
def test_invalid_aux_entries(tmp_path, overrides, match):
    path = write_catalog(tmp_path / "w.toml", [aux_dict(), aux_dict(**{"id": "vgg16-b", **overrides})])
    with pytest.raises(ConfigError, match=match) as info:
        load_catalog(path)
    assert "#2" in info.value.message


def test_aux_entries_are_not_sr_models(tmp_path, tiny_arch):
    c = load_catalog(write_catalog(tmp_path / "w.toml", [aux_dict(), entry_dict()]))
    assert c.get("vgg16-tiny", allow_aux=True).is_aux and "vgg16-tiny" in c
    with pytest.raises(UnknownModelError, match="auxiliary weights entry"):
        c.get("vgg16-tiny")
    with pytest.raises(UnknownModelError, match="unknown model 'vgg16'"):
        c.get("vgg16")  # an aux arch is no SR architecture name
    assert c.default().id == "tiny-x2"  # the first SR entry, not the first entry
    with pytest.raises(ConfigError, match="auxiliary weights"):
        load_catalog(write_catalog(tmp_path / "d.toml", [aux_dict(), entry_dict()], default_model="vgg16-tiny"))
    with pytest.raises(ConfigError, match="duplicate weights id"):
        load_catalog(write_catalog(tmp_path / "dup.toml", [aux_dict(), aux_dict()]))


def test_upscale_refuses_an_aux_id(tmp_path):
    from tests.cli.conftest import run_cli

    src = tmp_path / "in.png"
    src.write_bytes(b"")  # never read: the model is refused first
    res = run_cli(["upscale", str(src), "--model", "vgg19-imagenet", "-o", str(tmp_path / "out.png")])
    assert res.code == 3, res.stderr
    assert "auxiliary weights" in res.stderr and "not a super-resolution model" in res.stderr


def test_models_list_marks_aux():
    from tests.cli.conftest import run_cli

    res = run_cli(["models", "list"])
    assert res.code == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "vgg19-imagenet" in ln)  # the table goes to stderr
    assert "aux" in line
    res = run_cli(["models", "info", "vgg16-imagenet", "--json"])
    assert res.code == 0 and b'"kind": "aux"' in res.stdout


# --------------------------------------------------------------------------- download


def test_download_raw_file_then_cache_hit(served_vgg, fake_hub, tmp_path):
    data, sd, entry = served_vgg
    with pytest.raises(WeightsError, match="no recorded sha256"):
        hub.fetch(entry)  # no hash and no trust: refused, nothing downloaded
    assert fake_hub.count() == 0
    path = hub.fetch(entry, trust_on_first_use=True)
    assert path.read_bytes() == data and path.suffix == ".pth"  # as published: no conversion
    assert not (tmp_path / "realsr-cache" / "converted").exists()
    assert hub.trusted_sha256(entry) == sha256(data)
    assert fake_hub.count("GET") == 1
    assert hub.fetch(entry) == path and hub.cached_path(entry) == path
    fake_hub.stop()
    assert hub.fetch(entry, offline=True) == path and fake_hub.count() == 1
    assert hub.verify(entry) == (True, sha256(data))
    got = read_vgg_state_dict(path)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_torch_hub_name_prefix_is_checked(tmp_path, fake_hub):
    data, _ = tiny_vgg_bytes(tmp_path)
    good = fake_hub.add_plain(f"vgg16-{sha256(data)[:8]}.pth", data)
    bad = fake_hub.add_plain("vgg16-00000000.pth", data)
    cat = load_catalog(write_catalog(tmp_path / "w.toml", [
        aux_dict(source={"url": good}), aux_dict(id="vgg16-bad", source={"url": bad}),
    ]))
    ok = hub.fetch(cat.get("vgg16-tiny", allow_aux=True), trust_on_first_use=True)
    assert ok.read_bytes() == data
    entry = cat.get("vgg16-bad", allow_aux=True)
    with pytest.raises(ChecksumError, match="does not start with the 00000000"):
        hub.fetch(entry, trust_on_first_use=True)
    assert hub.trusted_sha256(entry) is None and hub.cached_path(entry) is None
    assert not list((tmp_path / "realsr-cache" / "downloads" / "vgg16-bad").rglob("*.pth"))


# --------------------------------------------------------------------------- training config


def test_training_config_resolves_a_registry_id(served_vgg, fake_hub):
    data, sd, entry = served_vgg
    loss = ReconstructionLossConfig(vgg16_weights="vgg16-tiny", vgg_base_width=WIDTH)
    check_vgg_inputs(loss, {"vgg16": "perceptual loss"})  # known id: accepted without a download
    assert fake_hub.count() == 0
    vgg = VGGFeatureExtractor("vgg16", ("relu3_3",), base_width=WIDTH)
    with pytest.raises(WeightsError, match="no recorded sha256") as info:
        load_vgg_weights(vgg, loss, purpose="perceptual loss")
    assert "realsr models download vgg16-tiny --trust" in info.value.hint
    path = hub.fetch(entry, trust_on_first_use=True)  # what `realsr models download ID --trust` does
    load_vgg_weights(vgg, loss, purpose="perceptual loss")
    assert vgg.pretrained and torch.equal(vgg.features[0].weight, sd["features.0.weight"])
    assert fake_hub.count("GET") == 1
    fake_hub.stop()  # cached: resolving again never touches the network
    assert resolve_vgg_weights("vgg16-tiny", "vgg16") == path
    assert resolve_vgg_weights(str(path), "vgg16") == path  # a path stays a path


def test_training_config_offline_and_not_cached(served_vgg, fake_hub, monkeypatch):
    _, _, entry = served_vgg
    hub.fetch(entry, trust_on_first_use=True)
    for p in hub.cache_root().joinpath("downloads").rglob("*.pth"):
        p.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the cache") as info:
        resolve_vgg_weights("vgg16-tiny", "vgg16")
    assert "realsr models download vgg16-tiny" in info.value.hint
    assert fake_hub.count("GET") == 1


def test_training_config_refuses_unknown_or_mismatched_ids(served_vgg, fake_hub):
    with pytest.raises(ConfigError, match="neither an existing file nor a registry id") as info:
        check_vgg_inputs(ReconstructionLossConfig(vgg16_weights="vgg16-nope"), {"vgg16": "perceptual loss"})
    assert "vgg16-imagenet" in info.value.hint and "vgg16-tiny" in info.value.hint
    with pytest.raises(ConfigError, match="names vgg19 weights, not vgg16") as info:
        resolve_vgg_weights("vgg19-imagenet", "vgg16")
    assert "loss.vgg16_weights" in info.value.message
    with pytest.raises(ConfigError, match="names a super-resolution model"):
        resolve_vgg_weights("femasr-x4", "vgg19")
    with pytest.raises(WeightsError, match="VGG weights not found"):  # a missing path: as before
        load_vgg_weights(VGGFeatureExtractor("vgg16", ("relu1_2",), base_width=WIDTH),
                         ReconstructionLossConfig(vgg16_weights="missing/vgg16.pth"), purpose="perceptual loss")
    assert fake_hub.count() == 0


def test_missing_vgg_hint_names_the_registry_id():
    with pytest.raises(ConfigError) as info:
        check_vgg_inputs(ReconstructionLossConfig(), {"vgg19": "semantic guidance"})
    assert 'loss.vgg19_weights = "vgg19-imagenet"' in info.value.hint
    assert "realsr models download vgg19-imagenet --trust" in info.value.hint
