"""UGTSR: config, FeMaSR equivalence at k=1, top-k fusion, Align-Attention, uncertainty head,
inference contract (padding, tiling) and the registry round trip. Tiny configs, CPU only."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import realsr_cli
from realsr_cli._config import config_from_json, config_to_json, from_dict, to_dict
from realsr_cli.engine.model import LoadedModel
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.errors import ConfigError, ModelError, WeightsError
from realsr_cli.models.femasr import PRIOR_PREFIXES, FeMaSRConfig, FeMaSRNet
from realsr_cli.models.femasr import config_from_state_dict as femasr_config_from_state_dict
from realsr_cli.models.ugtsr import (
    UGTSR_PREFIXES,
    AlignAttention,
    TopKFusion,
    UGTSRConfig,
    UGTSRNet,
    UGTSROutput,
    config_from_state_dict,
    convert_official_state_dict,
)
from realsr_cli.models.ugtsr import align as align_mod
from realsr_cli.models.ugtsr.fusion import MDTA
from realsr_cli.registry.archs import ARCHITECTURES, get_arch
from realsr_cli.registry.loader import load_weights, save_weights

#: tiny x2 FeMaSR: codebook grid = LR side (pad multiple 32), decoder 2 stages, 1 shortcut;
#: 16-wide BatchNorm layers keep the HR-size decoder cheap on a shared 2-core CPU
FM_X2 = FeMaSRConfig(
    scale=2,
    gt_resolution=32,
    channels=(16, 16, 16),
    codebook_size=16,
    codebook_dim=8,
    swin_dim=16,
    swin_depth=1,
    swin_heads=2,
    swin_window=4,
    swin_blocks=1,
    norm_type="bn",
)
#: tiny x4 FeMaSR: decoder 3 stages, 2 shortcuts (the released layout, narrower); GroupNorm
FM_X4 = dataclasses.replace(
    FM_X2, scale=4, gt_resolution=64, channels=(32, 32, 32, 32), swin_dim=32, norm_type="gn"
)
#: x4 like FM_X4 but 16 wide with BatchNorm, for the passes that run many HR-size decodes
FM_X4_SMALL = dataclasses.replace(FM_X2, scale=4, gt_resolution=64, channels=(16, 16, 16, 16))
TINY = dict(fusion_dim=16, fusion_heads=2, align_window=4, align_heads=2)


def tiny(fm: FeMaSRConfig = FM_X4, **kw) -> UGTSRConfig:
    return UGTSRConfig(**{"femasr": fm, **TINY, **kw})


def build(config: UGTSRConfig, seed: int = 0) -> UGTSRNet:
    torch.manual_seed(seed)
    return UGTSRNet(config).eval()


def randomize_zero_inits(net: UGTSRNet, seed: int = 1) -> None:
    """Give the zero-initialised output projections random weights (trained-network stand-in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".proj_out." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def image(h: int, w: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- config
def test_defaults_and_stage_constructors():
    cfg = UGTSRConfig()
    assert cfg.femasr == FeMaSRConfig() and cfg.top_k == 3 and cfg.align_attention
    assert not cfg.uncertainty and cfg.scale == 4 and cfg.pad_multiple == 16
    assert cfg.align_widths == (256, 128) and cfg.fusion_hidden == round(256 * 2.66)
    s1 = UGTSRConfig.stage1(FM_X4)
    assert (s1.top_k, s1.align_attention, s1.uncertainty) == (1, False, True)
    assert not s1.uses_fusion and s1.align_levels == 0
    s2 = UGTSRConfig.stage2(FM_X2, top_k=5)
    assert (s2.top_k, s2.align_attention, s2.uncertainty) == (5, True, False)
    assert s2.align_levels == 1 and s2.scale == 2  # 3 widths: one decoder shortcut


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(top_k=0), "top_k"),
        (dict(top_k=17), "top_k"),
        (dict(fusion_dim=18, fusion_heads=4), "fusion_heads"),
        (dict(fusion_blocks=0), "positive"),
        (dict(fusion_ffn_expansion=-1.0), "fusion_ffn_expansion"),
        (dict(align_window=0), "positive"),
        (dict(align_heads=3), "align_heads"),
        (dict(femasr=dataclasses.replace(FM_X4, use_residual=False)), "use_residual"),
        (dict(femasr=FeMaSRConfig(scale=1, lq_stage=False)), "lq_stage"),
        (dict(femasr=to_dict(FM_X4)), "FeMaSRConfig"),
    ],
)
def test_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**kw)


def test_no_residual_is_fine_without_align_attention():
    cfg = tiny(femasr=dataclasses.replace(FM_X4, use_residual=False), align_attention=False)
    assert cfg.align_levels == 0


@pytest.mark.parametrize(
    "cfg", [tiny(), UGTSRConfig(), UGTSRConfig.stage1(FM_X2), tiny(fusion_ffn_expansion=0.0)]
)
def test_json_round_trip(cfg):
    text = config_to_json(cfg)
    assert config_from_json(UGTSRConfig, text) == cfg
    data = to_dict(cfg)
    assert isinstance(data["femasr"], dict) and data["femasr"]["channels"] == list(
        cfg.femasr.channels
    )
    assert from_dict(UGTSRConfig, data) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(UGTSRConfig, {**data, "topk": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(UGTSRConfig, {**data, "femasr": {**data["femasr"], "bogus": 1}})


# --------------------------------------------------------------------------- FeMaSR equivalence
@pytest.mark.parametrize("fm", [FM_X2, FM_X4])
def test_k1_is_femasr_bit_for_bit(fm):
    femasr = FeMaSRNet(fm).eval()
    net = UGTSRNet(tiny(fm, top_k=1, align_attention=False)).eval()
    assert list(net.state_dict()) == list(femasr.state_dict())  # no added keys at all
    net.load_state_dict(femasr.state_dict(), strict=True)
    assert net.fusion is None and net.align is None and net.uncertainty_head is None
    x = image(fm.pad_multiple, fm.pad_multiple, b=2)
    with torch.no_grad():
        ref, out = femasr(x), net(x)
    assert isinstance(out, UGTSROutput)
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.candidates, ref.indices)
    assert torch.equal(out.image, ref.image) and torch.equal(out.feat_to_quant, ref.feat_to_quant)
    assert torch.equal(out.fused, ref.feat_to_quant) and out.log_uncertainty is None
    lq = image(13, 21)
    assert torch.equal(net.upscale(lq), femasr.upscale(lq))
    ours, theirs = net.match_indices(x, 3), femasr.match_indices(x, 3)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_femasr_checkpoint_loads_non_strictly_and_untrained_additions_are_identity():
    femasr = FeMaSRNet(FM_X4).eval()
    net = build(tiny(top_k=3))
    missing, unexpected = net.load_state_dict(femasr.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(UGTSR_PREFIXES) for k in missing)
    assert {k.split(".", 1)[0] for k in missing} == {"fusion", "align"}
    # the HR prior keeps FeMaSR's keys
    prior = {k for k in net.state_dict() if k.startswith(PRIOR_PREFIXES)}
    assert prior == {k for k in femasr.state_dict() if k.startswith(PRIOR_PREFIXES)}
    assert set(net.prior_modules()) == {p.rstrip(".") for p in PRIOR_PREFIXES}
    assert set(net.added_modules()) == {"fusion", "align"}
    # zero-initialised output projections: z' = z and the aligned fusion is FeMaSR's sum
    x = image(16, 32)
    with torch.no_grad():
        ref, out = femasr(x), net(x)
    assert torch.equal(out.fused, out.feat_to_quant)
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.image, ref.image)


# --------------------------------------------------------------------------- top-k matching
def test_candidates_are_the_quantizer_top_k_and_chosen_is_the_fused_match():
    net = build(tiny(top_k=3))
    randomize_zero_inits(net)
    x = image(16, 16, b=2)
    with torch.no_grad():
        out = net(x)
        dist, ids = net.quantizer.nearest(out.feat_to_quant, 3)
        _, fused_nearest = net.quantizer.nearest(out.fused, 1)
    assert out.candidates.shape == (2, 3, 8, 8) and out.candidates.dtype == torch.int64
    assert torch.equal(out.candidates, ids)
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())  # nearest first
    assert not torch.equal(out.fused, out.feat_to_quant)  # the fusion acts once trained
    assert torch.equal(out.indices, fused_nearest)
    assert torch.equal(out.codes, net.quantizer.lookup(out.indices))
    assert torch.allclose(out.z_quant, out.codes, atol=1e-6)  # straight-through value
    chosen, cand5 = net.match_indices(x, k=5)
    assert torch.equal(chosen, out.indices) and cand5.shape == (2, 5, 8, 8)
    assert torch.equal(cand5[:, :3], out.candidates)


def test_fusion_shapes_and_gradients_reach_every_fusion_parameter():
    net = build(tiny(top_k=3, fusion_blocks=2)).train()
    randomize_zero_inits(net)
    out = net(image(16, 16))
    out.image.square().mean().backward()
    assert net.fusion is not None
    for name, p in net.fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the encoder is trained through the fusion (straight-through estimator of Eq. 8)
    assert net.before_quant_group[0].weight.grad.abs().sum() > 0


def test_fusion_module_contract():
    torch.manual_seed(0)
    fusion = TopKFusion(code_dim=8, top_k=3, dim=16, heads=4, blocks=1, hidden=24)
    z, codes = torch.randn(2, 8, 5, 7), torch.randn(2, 3, 8, 5, 7)
    assert torch.equal(fusion(z, codes), z)  # zero-initialised: identity on z
    assert fusion.blocks[0].attn.temperature.shape == (4, 1, 1)
    with pytest.raises(ValueError, match="codes"):
        fusion(z, codes[:, :2])
    mdta = MDTA(16, 4)
    y = mdta(torch.randn(1, 16, 9, 11))
    assert y.shape == (1, 16, 9, 11)
    keys = set(mdta.state_dict())
    assert keys == {"temperature", "qkv.weight", "qkv_dwconv.weight", "project_out.weight"}
    assert mdta.qkv_dwconv.groups == 48  # depth-wise


# --------------------------------------------------------------------------- Align-Attention
def _reference_window(attn: AlignAttention, lq, hq, rows: slice, cols: slice) -> torch.Tensor:
    """Eq. 9 on the positions of one window only, with explicit softmax(QK^T / sqrt(d)) V."""
    q = attn.to_q(attn.norm_lq(lq))[..., rows, cols]
    k, v = (t[..., rows, cols] for t in attn.to_kv(attn.norm_hq(hq)).chunk(2, dim=1))
    b, c, h, w = q.shape
    d = c // attn.heads
    q, k, v = (t.reshape(b, attn.heads, d, h * w).transpose(-1, -2) for t in (q, k, v))
    out = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    return out.transpose(-1, -2).reshape(b, c, h, w)


@pytest.mark.parametrize("size", [(8, 12), (10, 13)])  # exact windows; padded + masked windows
def test_align_attention_is_exact_windowed_cross_attention(size):
    torch.manual_seed(0)
    attn = AlignAttention(dim=8, heads=2, window=4)
    lq, hq = torch.randn(2, 8, *size), torch.randn(2, 8, *size)
    with torch.no_grad():
        got = attn.attend(lq, hq)
        assert got.shape == (2, 8, *size)
        h, w = size
        for r in range(0, h, 4):
            for c in range(0, w, 4):
                rows, cols = slice(r, min(r + 4, h)), slice(c, min(c + 4, w))
                ref = _reference_window(attn, lq, hq, rows, cols)
                torch.testing.assert_close(got[..., rows, cols], ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(attn(lq, hq), hq + lq)  # zero-initialised proj_out


def test_align_attention_locality_and_permutation_equivariance():
    torch.manual_seed(0)
    attn = AlignAttention(dim=8, heads=2, window=4)
    randomize_zero_inits(attn)  # type: ignore[arg-type]
    lq, hq = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        base = attn(lq, hq)
        # locality: changing the decoder features in the top-left window changes only that window
        hq2 = hq.clone()
        hq2[..., 1, 2] += 5.0
        diff = (attn(lq, hq2) - base).abs().amax(dim=1)[0]
        assert diff[:4, :4].amax() > 0 and diff[4:, :].amax() == 0 and diff[:, 4:].amax() == 0
        # equivariance: permuting the positions of one window (both inputs) permutes the output
        perm = torch.randperm(16)

        def shuffle(t):
            t = t.clone()
            win = t[..., 4:8, 0:4].reshape(1, 8, 16)[..., perm]
            t[..., 4:8, 0:4] = win.reshape(1, 8, 4, 4)
            return t

        torch.testing.assert_close(attn(shuffle(lq), shuffle(hq)), shuffle(base))


def test_align_attention_memory_is_linear_on_a_large_map(monkeypatch):
    """1x64x128x128, window 8: the logits are bounded by windows * heads * window^4."""
    seen = []
    original = align_mod.window_attention

    def spy(q, k, v, key_mask=None):
        seen.append((tuple(q.shape), tuple(k.shape)))
        return original(q, k, v, key_mask)

    monkeypatch.setattr(align_mod, "window_attention", spy)
    torch.manual_seed(0)
    attn = AlignAttention(dim=64, heads=4, window=8)
    lq, hq = torch.randn(1, 64, 128, 128), torch.randn(1, 64, 128, 128)
    with torch.no_grad():
        out = attn(lq, hq)
    assert out.shape == (1, 64, 128, 128) and bool(torch.isfinite(out).all())
    ((q_shape, k_shape),) = seen
    n_windows = (128 // 8) ** 2
    assert q_shape == k_shape == (n_windows, 4, 64, 16)
    logits = q_shape[0] * q_shape[1] * q_shape[2] * k_shape[2]  # (N, heads, T, T)
    assert logits == 128 * 128 * 4 * 8 * 8  # = h * w * heads * window^2: linear in the area
    assert logits * 64 <= (128 * 128) ** 2  # 64x below a single head of full attention


def test_align_gradients_and_net_wiring():
    net = build(tiny(top_k=1)).train()  # align only
    assert net.align is not None and len(net.align) == 2
    assert [m.to_q.in_channels for m in net.align] == list(FM_X4.channels[1:3])
    randomize_zero_inits(net)
    net(image(16, 16)).image.mean().backward()
    for name, p in net.align.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- uncertainty
def test_uncertainty_head_stage1():
    net = build(UGTSRConfig.stage1(FM_X4_SMALL))
    assert set(net.added_modules()) == {"uncertainty_head"}
    x = image(16, 32, b=2)
    with torch.no_grad():
        out = net(x)
        skipped = net.encode_and_decode(x, uncertainty=False)
    assert out.log_uncertainty is not None
    assert out.log_uncertainty.shape == out.image.shape == (2, 3, 64, 128)
    assert skipped.log_uncertainty is None and torch.equal(skipped.image, out.image)
    lq = image(13, 21)
    sr, s = net.upscale_with_uncertainty(lq)
    assert sr.shape == s.shape == (1, 3, 52, 84)
    assert torch.equal(sr, net.upscale(lq))
    # stage I is FeMaSR's SR mean: loading the FeMaSR part reproduces FeMaSR's image
    femasr = FeMaSRNet(FM_X4_SMALL).eval()
    missing, _ = net.load_state_dict(femasr.state_dict(), strict=False)
    assert all(k.startswith("uncertainty_head.") for k in missing)
    assert torch.equal(net.upscale(lq), femasr.upscale(lq))
    # stage II network has no head
    assert build(UGTSRConfig.stage2(FM_X4_SMALL, top_k=3)).upscale_with_uncertainty(lq)[1] is None


# --------------------------------------------------------------------------- inference contract
@pytest.mark.parametrize("fm", [FM_X2, FM_X4_SMALL])
@pytest.mark.parametrize("size", [(13, 21), (5, 3)])
def test_upscale_odd_sizes(fm, size):
    net = build(tiny(fm, uncertainty=True))
    randomize_zero_inits(net)
    sr = net.upscale(image(*size))
    assert sr.shape == (1, 3, fm.scale * size[0], fm.scale * size[1])
    assert sr.dtype == torch.float32 and bool(torch.isfinite(sr).all())


def test_tiled_and_untiled_engine_runs():
    cfg = tiny(FM_X4_SMALL)
    net = build(cfg)
    randomize_zero_inits(net)
    net.requires_grad_(False)
    model = LoadedModel(
        spec=get_arch("ugtsr"), config=cfg, net=net, device=torch.device("cpu"), dtype=torch.float32
    )
    lq = image(24, 40)
    whole = run_model(model, lq, RunOptions(tile=0))
    tiled = run_model(model, lq, RunOptions(tile=16, tile_overlap=4))
    assert whole.tiles == 1 and tiled.tiles > 1 and tiled.tile == 16
    assert whole.sr.shape == tiled.sr.shape == (1, 3, 96, 160)
    assert bool(torch.isfinite(tiled.sr).all())
    # the whole-image run is the network's own upscale
    assert torch.allclose(whole.sr, net.upscale(lq), atol=1e-6)


# --------------------------------------------------------------------------- registry
def test_registry_entry():
    assert "ugtsr" in ARCHITECTURES
    spec = get_arch("ugtsr")
    assert spec.config_cls is UGTSRConfig and spec.build is UGTSRNet
    assert spec.scale_of(tiny(FM_X2)) == 2 and spec.tileable and spec.tile_multiple == 16
    with pytest.raises(WeightsError, match="no official checkpoint") as err:
        spec.convert_official({})
    assert isinstance(err.value, ModelError) and "realsr train export" in (err.value.hint or "")
    with pytest.raises(WeightsError):
        convert_official_state_dict({})


def test_convert_command_refuses_with_the_export_hint(tmp_path):
    from safetensors.torch import save_file

    from realsr_cli.registry.convert import convert_checkpoint

    src = tmp_path / "ugtsr_official.safetensors"
    save_file({k: v.contiguous() for k, v in UGTSRNet(tiny()).state_dict().items()}, str(src))
    with pytest.raises(WeightsError, match="no official checkpoint") as err:
        convert_checkpoint(src, tmp_path / "out.safetensors", arch="ugtsr")
    assert "realsr train export" in (err.value.hint or "")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    "cfg",
    [
        tiny(),
        tiny(FM_X2, top_k=5, fusion_blocks=2, fusion_ffn_expansion=0.0),
        UGTSRConfig.stage1(FM_X4),
        tiny(top_k=2, fusion_ffn_expansion=2.66, uncertainty=True),
    ],
)
def test_config_inference_from_shapes(cfg):
    net = UGTSRNet(cfg)
    inferred = config_from_state_dict(net.state_dict())
    # window and heads of Align-Attention are stored in no tensor: the defaults come back; the
    # FeMaSR part is what FeMaSR's own inference reads (e.g. gt_resolution is only a label)
    expected = dataclasses.replace(
        cfg,
        femasr=femasr_config_from_state_dict(FeMaSRNet(cfg.femasr).state_dict()),
        align_window=UGTSRConfig.align_window,
        align_heads=UGTSRConfig.align_heads,
        **({} if cfg.uses_fusion else dict(fusion_dim=256, fusion_heads=8, fusion_blocks=1)),
    )
    if cfg.uses_fusion:
        assert inferred.fusion_hidden == cfg.fusion_hidden
        expected = dataclasses.replace(expected, fusion_ffn_expansion=inferred.fusion_ffn_expansion)
    else:
        expected = dataclasses.replace(expected, fusion_ffn_expansion=2.66)
    assert inferred == expected
    UGTSRNet(inferred).load_state_dict(net.state_dict(), strict=True)
    with pytest.raises(WeightsError, match="x"):
        config_from_state_dict(net.state_dict(), scale=8)


def test_released_size_keys_and_inference_on_meta():
    with torch.device("meta"):
        net = UGTSRNet(UGTSRConfig())
    state = net.state_dict()
    assert config_from_state_dict(state) == UGTSRConfig()
    added = sum(v.numel() for k, v in state.items() if k.startswith(UGTSR_PREFIXES))
    total = sum(v.numel() for v in state.values())
    assert 0 < added < 0.25 * total  # few parameters on top of FeMaSR (paper Sec. III-B)


def test_save_load_round_trip(tmp_path):
    cfg = tiny(top_k=3, uncertainty=True)
    net = build(cfg)
    randomize_zero_inits(net)
    path = save_weights(
        tmp_path / "ugtsr.safetensors", arch="ugtsr", config=cfg, state_dict=net.state_dict()
    )
    spec, config, loaded = load_weights(path)
    assert spec.name == "ugtsr" and config == cfg and isinstance(loaded, UGTSRNet)
    lq = image(13, 21)
    assert torch.equal(loaded.upscale(lq), net.upscale(lq))
    model = realsr_cli.load_model(path)
    sr = model(lq)
    assert model.arch == "ugtsr" and model.scale == 4 and sr.shape == (1, 3, 52, 84)
    torch.testing.assert_close(sr, net.upscale(lq))
