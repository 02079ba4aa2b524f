"""``inputs.init_from``: UGTSR stage I and II start from a FeMaSR SR network (issue 17.5).

The FeMaSR network is the reduced official fixture (``femasr_x4_reduced``: official key names,
outputs of the official code): given as FeMaSR's released ``.pth`` layout, as our converted
safetensors, and as a registry id served by the local fake hub. Before the first step the UGTSR
network's SR image must be FeMaSR's — bit for bit against our FeMaSR, and to the parity tolerance
against the official code's recorded output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.femasr import FeMaSRNet
from realsr_cli.models.femasr.convert import config_from_state_dict, convert_official_state_dict
from realsr_cli.registry.catalog import load_catalog
from realsr_cli.registry.loader import save_weights
from realsr_cli.training.stages.ugtsr import (
    UGTSRStage,
    UGTSRUncertaintyStage,
)
from tests.parity import load_fixture
from tests.registry.conftest import entry_dict, sha256, write_catalog

CPU = torch.device("cpu")
CONFIGS = Path(__file__).resolve().parents[2] / "realsr_cli" / "configs"
STAGES = {"ugtsr-uncertainty": UGTSRUncertaintyStage, "ugtsr": UGTSRStage}


@pytest.fixture(scope="module")
def femasr():
    """(official state dict, our FeMaSRNet with it, the fixture) of the reduced x4 fixture."""
    fx = load_fixture("femasr_x4_reduced")
    state = convert_official_state_dict(fx.weights)
    net = FeMaSRNet(config_from_state_dict(state)).eval()
    net.load_state_dict(state, strict=True)
    return fx.weights, net, fx


def _model_overrides(net: FeMaSRNet) -> list[str]:
    out = []
    for f in dataclasses.fields(net.config):
        v = getattr(net.config, f.name)
        if isinstance(v, tuple):
            v = "[" + ",".join(str(x) for x in v) + "]"
        elif isinstance(v, bool):
            v = str(v).lower()
        elif isinstance(v, str):
            v = repr(v)
        out.append(f"model.{f.name}={v}")
    return out


def _config(stage: str, net: FeMaSRNet, *overrides: str):
    cls = STAGES[stage].config_cls
    cfg = from_dict(cls, load_toml(str(CONFIGS / f"{stage}-tiny.toml")))
    extra = ["inputs.allow_random_hrp=true", "fusion_heads=2", "align_heads=2"] if stage == "ugtsr" else [
        "inputs.allow_random_hrp=true"]
    if stage == "ugtsr":
        extra.append("inputs.allow_random_uncertainty=true")
    return apply_overrides(cfg, _model_overrides(net) + extra + list(overrides))


def _official_pth(tmp_path, weights) -> str:
    path = tmp_path / "FeMaSR_SRX4_model_g.pth"
    torch.save({"params": dict(weights)}, path)
    return str(path)


def _started(stage: str, net: FeMaSRNet, value: str) -> torch.nn.Module:
    torch.manual_seed(3)
    s = STAGES[stage](_config(stage, net, f"inputs.init_from='{value}'"), CPU)
    s.load_inputs()
    return s.net("g").eval()


@pytest.mark.parametrize("stage", list(STAGES))
def test_untrained_ugtsr_from_official_pth_is_femasr(stage, femasr, tmp_path):
    weights, net, fx = femasr
    g = _started(stage, net, _official_pth(tmp_path, weights))
    for tag in ("a", "b"):
        lr = fx.io[f"{tag}.lr"]
        ours = g.upscale(lr)
        assert torch.equal(ours, net.upscale(lr)), tag  # bit for bit: our FeMaSR
        # the official code's output, to the parity tests' tolerance
        assert torch.allclose(ours, fx.io[f"{tag}.out"], rtol=1e-4, atol=1e-4), tag
    if stage == "ugtsr":  # the additions are there (neutral), not missing
        assert g.fusion is not None and g.align is not None


def test_init_from_our_safetensors_and_mismatched_model(femasr, tmp_path):
    weights, net, fx = femasr
    path = tmp_path / "femasr.safetensors"
    save_weights(path, arch="femasr", config=net.config, state_dict=net.state_dict())
    g = _started("ugtsr-uncertainty", net, str(path))
    lr = fx.io["a.lr"]
    assert torch.equal(g.upscale(lr), net.upscale(lr))
    wrong = UGTSRUncertaintyStage(
        _config("ugtsr-uncertainty", net, f"inputs.init_from='{path}'", "model.swin_depth=1"), CPU)
    with pytest.raises(ConfigError, match="swin_depth") as exc:
        wrong.load_inputs()
    assert "--set model.swin_depth=2" in exc.value.hint


def test_init_from_refuses_bad_values(femasr, tmp_path):
    _, net, _ = femasr
    with pytest.raises(ConfigError, match="neither a file nor a model id"):
        _started("ugtsr-uncertainty", net, str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="not FeMaSR"):
        _started("ugtsr-uncertainty", net, "bicres")
    hrp = FeMaSRNet(dataclasses.replace(net.config, lq_stage=False, scale=1))
    path = tmp_path / "hrp.safetensors"
    save_weights(path, arch="femasr", config=hrp.config, state_dict=hrp.state_dict())
    with pytest.raises(WeightsError, match="not a FeMaSR SR network"):
        _started("ugtsr-uncertainty", net, str(path))
    with pytest.raises(ConfigError, match="both name a starting network"):
        _config("ugtsr", net, f"inputs.init_from='{path}'", f"inputs.init_weights='{path}'")


def test_init_from_registry_id_downloads_converts_and_caches(femasr, tmp_path, fake_hub, monkeypatch):
    weights, net, fx = femasr
    data = open(_official_pth(tmp_path, weights), "rb").read()
    url = fake_hub.add_plain("FeMaSR_SRX4_model_g.pth", data)
    cat = write_catalog(tmp_path / "extra.toml", [entry_dict(
        id="femasr-x4-reduced", arch="femasr", scale=4, format="pth", source={"url": url},
        sha256=sha256(data), license="CC-BY-NC-SA-4.0")])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(cat))
    assert load_catalog().get("femasr-x4-reduced").arch == "femasr"
    g = _started("ugtsr", net, "femasr-x4-reduced")
    lr = fx.io["b.lr"]
    assert torch.equal(g.upscale(lr), net.upscale(lr))
    assert fake_hub.count("GET") == 1
    fake_hub.stop()  # cached (converted once): a second start never touches the network
    g = _started("ugtsr-uncertainty", net, "femasr-x4-reduced")
    assert torch.equal(g.upscale(lr), net.upscale(lr))
