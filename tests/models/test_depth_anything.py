"""Depth Anything (models/depth): parity with Transformers on a tiny random model, the published
Small checkpoint's key layout and size, the resize rule, and the SSR depth-estimator adapter.

The fixture (tests/fixtures/depth_anything_tiny/) is written by tools/make_depth_fixture.py with
Transformers; nothing here needs Transformers or the network.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.depth import (
    DepthAnythingConfig,
    DepthAnythingEstimator,
    DepthAnythingNet,
    disparity_to_depth,
    dpt_input_size,
)
from realsr_cli.registry.loader import load_state_dict_strict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "depth_anything_tiny"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.fixture(scope="module")
def tiny_net() -> DepthAnythingNet:
    cfg = DepthAnythingConfig.from_transformers(json.loads((FIXTURE / "config.json").read_text()))
    net = DepthAnythingNet(cfg).eval()
    load_state_dict_strict(net, load_file(str(FIXTURE / "model.safetensors")), what="fixture")
    return net


def _meta_net(cfg: DepthAnythingConfig) -> DepthAnythingNet:
    with torch.device("meta"):
        return DepthAnythingNet(cfg)


# --------------------------------------------------------------------------- parity


def test_fixture_config_is_the_tiny_preset():
    cfg = json.loads((FIXTURE / "config.json").read_text())
    assert DepthAnythingConfig.from_transformers(cfg) == DepthAnythingConfig.tiny()


@pytest.mark.parametrize("case", ["a", "b"])  # a: interpolated 6x5 position grid; b: native 4x4
def test_parity_with_transformers(tiny_net, case):
    io = load_file(str(FIXTURE / "io.safetensors"))
    x, ref = io[f"input_{case}"], io[f"output_{case}"]
    with torch.no_grad():
        out = tiny_net(x)
    assert out.shape == ref.shape == (x.shape[0], x.shape[2], x.shape[3])
    assert (ref > 0).float().mean() > 0.5  # the reference is not a dead ReLU map
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_every_fixture_tensor_matters(tiny_net):
    """Perturbing any single published tensor changes the output (nothing is silently unused),
    except the two that the published network never runs."""
    x = load_file(str(FIXTURE / "io.safetensors"))["input_a"][:1, :, :42, :42]
    net = DepthAnythingNet(tiny_net.config).eval()
    net.load_state_dict(tiny_net.state_dict())
    unused = []
    with torch.no_grad():
        base = net(x)
        for key, tensor in net.state_dict(keep_vars=True).items():
            saved = tensor.detach().clone()
            tensor.add_(0.05)
            if torch.equal(net(x), base):
                unused.append(key)
            tensor.copy_(saved)
        assert torch.equal(net(x), base)
    assert sorted(unused) == [
        "backbone.embeddings.mask_token",
        "neck.fusion_stage.layers.0.residual_layer1.convolution1.bias",
        "neck.fusion_stage.layers.0.residual_layer1.convolution1.weight",
        "neck.fusion_stage.layers.0.residual_layer1.convolution2.bias",
        "neck.fusion_stage.layers.0.residual_layer1.convolution2.weight",
    ]


def test_strict_load_refuses_other_layouts(tiny_net):
    sd = load_file(str(FIXTURE / "model.safetensors"))
    renamed = {k.replace("attention.attention.query", "attention.q_proj"): v for k, v in sd.items()}
    with pytest.raises(WeightsError, match="missing key"):
        load_state_dict_strict(DepthAnythingNet(tiny_net.config), renamed, what="renamed")
    wider = DepthAnythingNet(dataclasses.replace(tiny_net.config, fusion_hidden_size=10))
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_state_dict_strict(wider, sd, what="fixture")


# --------------------------------------------------------------------------- published sizes


def test_small_matches_the_published_checkpoint(reference):
    net = _meta_net(DepthAnythingConfig.preset("v2-small"))
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == reference["small_keys"]  # names and shapes, 1:1
    n = sum(p.numel() for p in net.parameters())
    assert n == reference["small_params"] and round(n / 1e6, 1) == 24.8


@pytest.mark.parametrize("variant, millions", [("v2-base", 97.5), ("v2-large", 335.3)])
def test_larger_presets_match_published_sizes(variant, millions):
    net = _meta_net(DepthAnythingConfig.preset(variant))
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions


def test_config_validation_and_transformers_mapping():
    with pytest.raises(ConfigError, match="no Depth Anything preset"):
        DepthAnythingConfig.preset("v3-huge")
    with pytest.raises(ConfigError, match="same length"):
        DepthAnythingConfig(out_indices=(3, 6, 9))
    with pytest.raises(ConfigError, match="out_indices"):
        DepthAnythingConfig(out_indices=(3, 6, 9, 13))
    with pytest.raises(ConfigError, match="integer or 1/integer"):
        DepthAnythingConfig(reassemble_factors=(4, 2, 1, 0.4))
    cfg = json.loads((FIXTURE / "config.json").read_text())
    for key, value in (("use_swiglu_ffn", True), ("apply_layernorm", False), ("hidden_act", "silu")):
        bad = {**cfg, "backbone_config": {**cfg["backbone_config"], key: value}}
        with pytest.raises(ConfigError, match=key):
            DepthAnythingConfig.from_transformers(bad)
    features_only = {k: v for k, v in cfg["backbone_config"].items() if k != "out_indices"}
    got = DepthAnythingConfig.from_transformers({**cfg, "backbone_config": features_only})
    assert got.out_indices == (1, 2, 3, 4)  # from out_features ["stage1", ...]


# --------------------------------------------------------------------------- SSR adapter


def test_resize_rule_matches_the_published_processor(reference):
    for h, w, out_h, out_w in reference["resize"]:
        assert dpt_input_size(h, w, 518) == (out_h, out_w), (h, w)
    assert dpt_input_size(64, 96, 266) == (182, 266)  # smaller input sizes: same rule
    assert dpt_input_size(1, 1, 5) == (14, 14)  # never below one patch


def test_disparity_to_depth_convention():
    disp = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(0))
    disp[1] = 3.0 * disp[0] + 7.0  # same scene, another scale and shift
    depth = disparity_to_depth(disp)
    assert depth.shape == disp.shape and depth.min() >= 0 and depth.max() <= 1
    torch.testing.assert_close(depth[0], depth[1])  # affine-invariant, per image
    near = disp[0].flatten().argmax()
    far = disp[0].flatten().argmin()
    assert depth[0].flatten()[near] == 0 and depth[0].flatten()[far] == 1  # 0 = near, 1 = far
    order = disp[0].flatten().argsort()
    assert torch.all(depth[0].flatten()[order].diff() <= 0)  # monotone, reversed
    assert torch.all(disparity_to_depth(torch.full((1, 1, 4, 4), 2.5)) == 0.5)


def test_estimator_contract(tiny_net):
    est = DepthAnythingEstimator(tiny_net, input_size=70, label="tiny (test)", sha256="ab" * 32)
    img = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        depth = est(img)
        assert depth.shape == (2, 1, 37, 45) and depth.dtype == img.dtype
        x = est.network_input(img)
        assert x.shape[-2:] == dpt_input_size(37, 45, 70) == (56, 70)
        # the pipeline by hand: PIL-style bicubic, ImageNet normalisation, net, bilinear back
        resized = F.interpolate(img, size=(56, 70), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(x, (resized - mean) / std)
        disp = F.interpolate(tiny_net(x).unsqueeze(1), size=(37, 45), mode="bilinear")
        torch.testing.assert_close(depth, disparity_to_depth(disp))
        # per image: the nearest point is 0 and the farthest 1; out-of-range input is clamped
        assert torch.allclose(depth.amin(dim=(1, 2, 3)), torch.zeros(2))
        assert torch.allclose(depth.amax(dim=(1, 2, 3)), torch.ones(2))
        torch.testing.assert_close(est(img * 3 - 1), est((img * 3 - 1).clamp(0, 1)))
    assert est.manifest_label == "tiny (test)" and est.manifest_sha256 == "ab" * 32
    with pytest.raises(ValueError, match="relative"):
        metric = DepthAnythingNet(dataclasses.replace(tiny_net.config, depth_type="metric"))
        DepthAnythingEstimator(metric)


def test_ssr_runs_with_the_injected_estimator(tiny_net):
    from realsr_cli.models.ssr import SSRConfig, SSRNet

    est = DepthAnythingEstimator(tiny_net, input_size=56, label="tiny (test)", sha256="cd" * 32)
    torch.manual_seed(0)
    model = SSRNet(dataclasses.replace(SSRConfig.tiny(), depth_head=False), depth_estimator=est).eval()
    seen = []
    est.register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    lq = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(2))
    depth, kernels = model.auxiliary(lq)
    assert depth.shape == (1, 1, 12, 16) and 0 <= depth.min() <= depth.max() <= 1
    assert len(seen) == model.config.svkr_iterations  # DE on I_0 and every x4 estimate but the last
    assert seen[1] == ((1, 3, 48, 64), (1, 1, 48, 64))  # an x4 estimate of the (padded) LR image
    assert model.manifest_extra() == {
        "depth_estimator": "tiny (test)",
        "depth_estimator_sha256": "cd" * 32,
    }
    assert all(k.startswith("depth_estimator.net.") for k in model.state_dict() if "backbone" in k)
