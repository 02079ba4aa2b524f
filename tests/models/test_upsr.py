"""UPSR: official keys 1:1, config inference, and parity with the official implementation.

Fast: ``upsr_atd_g_full`` (ships weights), ``upsr_unet_reduced``, ``upsr_sampler_reduced`` (reduced
denoiser + the full g), plus key/shape checks of the full sizes on the meta device.
Slow (``-m slow``): ``upsr_unet_full`` and ``upsr_sampler_full`` with recipe-rebuilt weights.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from realsr_cli.models.upsr import (
    ATD,
    ATDConfig,
    SwinUNet,
    UPSRConfig,
    UPSRDenoiserConfig,
    UPSRNet,
    config_from_state_dict,
    convert_official_state_dict,
    merge_official,
    reduced_config,
)
from realsr_cli.models.upsr.swin import row_region_mask
from tests.parity import assert_close_rel, load_fixture, shared_dir

RTOL = 1e-4


def _shapes(entries) -> dict[str, tuple[int, ...]]:
    return {key: tuple(shape) for key, shape, _dtype in entries}


def _meta_state_dict(entries, prefix: str = "") -> dict[str, torch.Tensor]:
    """Shape-only tensors for the keys listed in a fixture.json (for config inference)."""
    return {prefix + key: torch.empty(shape, device="meta") for key, shape, _dtype in entries}


def _official_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def atd_fx():
    return load_fixture("upsr_atd_g_full")


@pytest.fixture(scope="module")
def unet_fx():
    return load_fixture("upsr_unet_reduced")


@pytest.fixture(scope="module")
def reduced_net(atd_fx, unet_fx) -> UPSRNet:
    sd = merge_official([atd_fx.weights, unet_fx.weights])
    net = UPSRNet(config_from_state_dict(sd, 4)).eval()
    net.load_state_dict(sd, strict=True)
    return net


# ---------------------------------------------------------------------------- ATD (g)
def test_atd_keys_and_buffers_match_official(atd_fx):
    model = ATD(ATDConfig())
    assert _official_shapes(model) == _shapes(atd_fx.meta["state_dict_keys"])
    assert sum(p.numel() for p in model.parameters()) == atd_fx.meta["model_num_parameters"]
    official = atd_fx.weights
    assert torch.equal(
        model.state_dict()["relative_position_index_SA"], official["relative_position_index_SA"]
    )


def test_atd_parity(atd_fx):
    model = ATD(ATDConfig()).eval()
    model.load_state_dict(atd_fx.weights, strict=True)
    with torch.inference_mode():
        for tag in ("a", "b"):  # 32x32 (a multiple of the window) and 20x36 (flip-padded, cropped)
            out = model(atd_fx.io[f"{tag}.lr01"])
            assert_close_rel(out, atd_fx.io[f"{tag}.out01"], RTOL, what=f"{tag}.out01")


# ---------------------------------------------------------------------------- denoiser
def test_unet_reduced_keys_and_buffers(unet_fx):
    model = SwinUNet(reduced_config().denoiser)
    official = unet_fx.weights
    assert _official_shapes(model) == {k: tuple(v.shape) for k, v in official.items()}
    assert sum(p.numel() for p in model.parameters()) == unet_fx.meta["model_num_parameters"]
    ours = model.state_dict()
    buffers = [k for k in official if k.endswith(("attn_mask", "relative_position_index"))]
    assert any(k.endswith("attn_mask") for k in buffers)
    for key in buffers:  # the stored (never read) masks carry the official row-only quirk
        assert torch.equal(ours[key], official[key]), key


def test_row_region_mask_quirk():
    mask = row_region_mask(32, 32, 8, 4)
    assert mask.shape == (16, 64, 64)
    assert not mask[:12].any()  # only the bottom row of windows is masked ...
    tokens = torch.arange(64)
    left = (tokens % 8) < 4  # ... and there by the token's column inside the window
    expected = torch.where(left[:, None] == left[None, :], 0.0, -100.0)
    for w in range(12, 16):
        assert torch.equal(mask[w], expected)


def test_unet_reduced_parity(unet_fx):
    model = SwinUNet(reduced_config().denoiser).eval()
    model.load_state_dict(unet_fx.weights, strict=True)
    io = unet_fx.io
    with torch.inference_mode():
        out = model(io["x"], io["timesteps"], io["lq"])
    assert_close_rel(out, io["out"], RTOL, what="out")


def test_full_keys_and_shapes_on_meta():
    with torch.device("meta"):
        net = UPSRNet(UPSRConfig())
    sd = net.state_dict()
    unet = _shapes(load_fixture("upsr_unet_full").meta["state_dict_keys"])
    atd = _shapes(load_fixture("upsr_atd_g_full").meta["state_dict_keys"])
    expected = {"denoiser." + k: v for k, v in unet.items()} | {
        "aux." + k: v for k, v in atd.items()
    }
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sum(p.numel() for p in net.denoiser.parameters()) == 119_418_319
    assert sum(p.numel() for p in net.aux.parameters()) == 2_532_360


def test_body_shares_resshift_v3_keys():
    """UPSR keeps ResShift v3's UNet body key for key; only the input width and the head differ."""
    keys_file = shared_dir() / "parity" / "resshift_unet_v3_full" / "keys.json"
    resshift = _shapes(json.loads(keys_file.read_text())["state_dict_keys"])
    with torch.device("meta"):
        ours = _official_shapes(SwinUNet(UPSRDenoiserConfig(in_channels=3, lq_channels=3)))
    head = {"conv_before_upsample.0", "conv_up1", "conv_up2", "conv_hr", "conv_last"}
    assert {k for k in ours.keys() - resshift.keys()} == {
        f"{m}.{p}" for m in head for p in ("weight", "bias")
    }
    assert {k for k in resshift.keys() - ours.keys()} == {
        "out.0.weight",
        "out.0.bias",
        "out.2.weight",
        "out.2.bias",
    }
    assert all(ours[k] == resshift[k] for k in ours.keys() & resshift.keys())


# ---------------------------------------------------------------------------- conversion / config
def test_config_inference_reduced_and_full(atd_fx, unet_fx):
    reduced = merge_official([unet_fx.weights, atd_fx.weights])
    assert config_from_state_dict(reduced, 4) == reduced_config()
    full = _meta_state_dict(load_fixture("upsr_unet_full").meta["state_dict_keys"], "denoiser.")
    full |= _meta_state_dict(atd_fx.meta["state_dict_keys"], "aux.")
    assert config_from_state_dict(full) == UPSRConfig()
    with pytest.raises(ValueError):
        config_from_state_dict(full, scale=2)


def test_convert_and_merge_official(atd_fx, unet_fx):
    unet, atd = unet_fx.weights, atd_fx.weights
    merged = merge_official(
        [{"params_ema": unet}, {"params": {"module." + k: v for k, v in atd.items()}}]
    )
    assert merged.keys() == merge_official([atd, unet]).keys()
    assert set(merged) == {"denoiser." + k for k in unet} | {"aux." + k for k in atd}
    assert convert_official_state_dict(merged) == merged  # already ours: passes through
    with pytest.raises(ValueError, match="missing"):
        merge_official([unet])
    with pytest.raises(ValueError):
        merge_official([unet, unet])
    with pytest.raises(ValueError):
        convert_official_state_dict({"foo.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------- sampler
def test_sampler_reduced_parity(reduced_net):
    fx = load_fixture("upsr_sampler_reduced")
    io = fx.io
    with torch.inference_mode():
        trace = reduced_net.trace(io["lq01"], noise=io["noise_hr"])
    names = [n for n in fx.meta["io_tensors"] if n not in ("lq01",)]
    assert set(names) <= set(trace), set(names) - set(trace)
    for name in names:
        assert_close_rel(trace[name], io[name], RTOL, what=name)
    with torch.inference_mode():
        out = reduced_net.upscale(io["lq01"], noise=io["noise_hr"])
    assert torch.equal(out, trace["out01"])


def _tiny_net() -> UPSRNet:
    torch.manual_seed(0)
    cfg = UPSRConfig(
        denoiser=UPSRDenoiserConfig(
            model_channels=32, channel_mult=(1, 1, 1, 1), swin_embed_dim=32, num_feat=32
        ),
        aux=ATDConfig(
            embed_dim=16, depths=(2,), num_heads=(2,), window_size=8, num_tokens=8, reduced_dim=4
        ),
    )
    return UPSRNet(cfg).eval()


def test_upscale_contract_odd_size_and_seeding():
    net = _tiny_net()
    lq = torch.rand(2, 3, 20, 36)
    with torch.inference_mode():
        shape = net.noise_shape(lq.shape)
        assert shape == (2, 3, 256, 256)  # padded to 64x64 LR
        a = net.upscale(lq, generator=torch.Generator().manual_seed(7))
        b = net.upscale(lq, generator=torch.Generator().manual_seed(7))
        c = net.upscale(lq, noise=torch.randn(shape, generator=torch.Generator().manual_seed(7)))
        d = net.upscale(lq, generator=torch.Generator().manual_seed(8))
        e = net.upscale(lq, generator=torch.Generator().manual_seed(7), steps=2)
    assert a.shape == (2, 3, 80, 144) and torch.isfinite(a).all()
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, d) and not torch.equal(a, e)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    with pytest.raises(ValueError):
        net.upscale(lq, noise=torch.zeros(2, 3, 80, 144))


def test_upscale_tiny_input_pads_beyond_reflect_limit():
    net = _tiny_net()
    with torch.inference_mode():
        out = net.upscale(torch.rand(1, 3, 5, 1), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 20, 4) and torch.isfinite(out).all()


def test_training_path_and_export_layout():
    """Gradients reach every kind of parameter; state_dict() stays plain-contiguous (safetensors)."""
    net = _tiny_net().train()
    x, lq = torch.randn(2, 48, 64, 64), torch.randn(2, 96, 64, 64)
    net.denoise(x, torch.tensor([1, 4]), lq).square().mean().backward()
    block = net.denoiser.input_blocks[1][1].blocks[1]  # a shifted Swin block
    assert block.attn.relative_position_bias_table.grad.abs().sum() > 0
    assert net.denoiser.conv_last.weight.grad.abs().sum() > 0
    net.aux(torch.rand(1, 3, 16, 16)).mean().backward()
    assert net.aux.layers[0].residual_group.layers[1].attn_aca.logit_scale.grad is not None
    assert all(v.is_contiguous() for v in net.state_dict().values())
    out = net.upscale(torch.rand(1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert not out.requires_grad


# ---------------------------------------------------------------------------- full size (slow)
@pytest.fixture(scope="module")
def full_denoiser_weights():
    fx = load_fixture("upsr_unet_full")
    fresh = SwinUNet(UPSRDenoiserConfig())
    return fx.recipe_state_dict(official=fresh.state_dict())


@pytest.mark.slow
def test_unet_full_parity(full_denoiser_weights):
    fx = load_fixture("upsr_unet_full")
    model = SwinUNet(UPSRDenoiserConfig()).eval()
    model.load_state_dict(full_denoiser_weights, strict=True)
    io = fx.io
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(io["x"], io["timesteps"], io["lq"])
        print(f"full denoiser call: {time.perf_counter() - start:.2f}s")
    assert_close_rel(out, io["out"], RTOL, what="out")


@pytest.mark.slow
def test_sampler_full_parity(full_denoiser_weights, atd_fx):
    fx = load_fixture("upsr_sampler_full")
    sd = merge_official([full_denoiser_weights, atd_fx.weights])
    net = UPSRNet(config_from_state_dict(sd)).eval()
    net.load_state_dict(sd, strict=True)
    io = fx.io
    with torch.inference_mode():
        start = time.perf_counter()
        trace = net.trace(io["lq01"], noise=io["noise_hr"])
        print(f"full 5-step sample, 64x64 LR: {time.perf_counter() - start:.2f}s")
    for name in fx.meta["io_tensors"]:
        if name != "lq01":
            assert_close_rel(trace[name], io[name], RTOL, what=name)
