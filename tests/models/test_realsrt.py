"""RealSRT: official-checkpoint parity (../shared/parity/realsrt_*), module by module, plus config
inference, key layout, padding, attention and the upscale contract.

Parity follows the fixtures' recipe: every module is fed the *recorded* inputs (LR image, token
ids, masks), so a discrete choice that flips under float reordering cannot cascade. Continuous
outputs must agree within 1e-4 of the tensor's max magnitude; discrete choices (VQ codes, argmax
tokens, top-k re-masks) must agree except at positions whose recorded margin is within float noise,
and those exceptions are counted and bounded.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from realsr_cli._config import config_from_json, config_to_json, from_dict, to_dict
from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.realsrt import (
    TRAINING_ONLY_SUFFIXES,
    RealSRTConfig,
    RealSRTNet,
    TransformerConfig,
    VQGANConfig,
    adain_color_correction,
    config_from_state_dict,
    convert_official_state_dict,
    reduced_config,
)
from realsr_cli.models.realsrt.net import centred_reflect_pad
from realsr_cli.models.realsrt.transformer import Attention, sincos_2d_positions
from tests.parity import assert_close_rel, load_fixture

RTOL = 1e-4
#: official re-mask counts for T = 4 and 1024 tokens (fixture "schedule")
COUNTS_T4 = (512, 299, 137)
#: the fixture's training-only keys (EMA statistics of the tokenizer's codebook)
TRAINING_ONLY = {
    "vae.quantizer.codebooks.0.cluster_size_ema",
    "vae.quantizer.codebooks.0.embed_ema",
}


def _meta_state_dict(fx) -> dict[str, torch.Tensor]:
    """Shape-only tensors for every official key of a fixture."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {
        k: torch.empty(s, dtype=dtypes[d], device="meta") for k, s, d in fx.meta["state_dict_keys"]
    }


def _meta_net(config: RealSRTConfig) -> RealSRTNet:
    with torch.device("meta"):
        return RealSRTNet(config)


def _load(fx, official: dict[str, torch.Tensor]) -> RealSRTNet:
    sd = convert_official_state_dict(official)
    net = _meta_net(config_from_state_dict(sd, scale=4))
    net.load_state_dict(sd, strict=True, assign=True)
    return net.eval()


def _noise_tol(expected: torch.Tensor) -> float:
    """A decision between two values closer than this may flip under the allowed float error."""
    return 2 * RTOL * float(expected.abs().max())


def _check_flips(
    ours: torch.Tensor, expected: torch.Tensor, ambiguous: torch.Tensor, what: str
) -> int:
    """Discrete outputs agree wherever the recorded margin is not ambiguous; returns the flip count."""
    flips = ours != expected
    assert not (flips & ~ambiguous).any(), (
        f"{what}: {int((flips & ~ambiguous).sum())} decisions differ at clear margins"
    )
    n = int(flips.sum())
    assert n <= int(ambiguous.sum()), what
    return n


def _check_parity(net: RealSRTNet, fx) -> dict[str, int]:
    """Compare every recorded module output; returns the discrete flip counts per decision."""
    io, meta = fx.io, fx.meta
    flips: dict[str, int] = {}
    lr, lr_up = io["lr01"], io["lr_upsample"]
    assert [net.schedule(4).num_masked(s) for s in range(3)] == list(COUNTS_T4)
    assert ", ".join(map(str, COUNTS_T4)) in meta["schedule"]

    with torch.no_grad():
        # --- tokenizer: upsample, encode, quantize
        assert_close_rel(net.upsample(lr), lr_up, what="lr_upsample")
        feat = net.vae.encoder(lr_up)
        assert_close_rel(feat, io["vae_encoder_out"], what="vae_encoder_out")
        z_e = net.vae.quant_conv(feat)
        assert_close_rel(z_e, io["z_e"], what="z_e")
        dist = net.vae.quantizer.codebook.distances(io["z_e"])
        top2 = dist.topk(2, dim=-1, largest=False).values
        margin = top2[..., 1] - top2[..., 0]
        tol = 1e-5 * float(meta["decision_margins"]["vq_dist_median"])
        assert torch.allclose(margin, io["vq_margin"], rtol=0, atol=tol), "VQ margins differ"
        assert float(margin.min()) == pytest.approx(
            meta["decision_margins"]["vq_min_margin"], rel=0.05
        )
        lr_ids = net.tokenize(lr_up)
        flips["lr_ids"] = _check_flips(
            lr_ids, io["lr_ids"], (io["vq_margin"] < tol).flatten(1), "lr_ids"
        )

        # --- each decoding step, fed the recorded ids
        lr_ids = io["lr_ids"]
        # the per-layer cross-attention keys/values that generate() computes once per patch
        gen_ctx, critic_ctx = net.generator.context(lr_ids), net.critic.context(lr_ids)
        schedule = net.schedule(4)
        for s in range(4):
            ids, mask = io[f"step{s}.gen_in_ids"], io[f"step{s}.mask"]
            assert torch.equal(schedule.is_masked(ids), mask)
            logits = net.generator.decode(ids, gen_ctx, mask)
            ref_logits = io[f"step{s}.gen_logits"]
            assert_close_rel(logits, ref_logits, what=f"step{s}.gen_logits")
            if s == 0:  # the official call path (LR context re-encoded) computes the same numbers
                assert torch.equal(net.generator(ids, lr_ids, mask), logits)
            top2 = ref_logits.topk(2, dim=-1).values
            gap = top2[..., 0] - top2[..., 1]
            pred = torch.where(mask, logits.argmax(-1), ids)
            flips[f"step{s}.argmax"] = _check_flips(
                pred,
                io[f"step{s}.critic_in_ids"],
                mask & (gap < _noise_tol(ref_logits)),
                f"step{s}.argmax",
            )
            gap_min = meta["decision_margins"][f"step{s}.gen_argmax_min_margin"]
            assert float(gap.min()) == pytest.approx(gap_min, rel=1e-3, abs=1e-6)  # over all tokens

            crit_in = io[f"step{s}.critic_in_ids"]
            scores = net.critic.decode(crit_in, critic_ctx)
            ref_scores = io[f"step{s}.critic_scores"]
            assert_close_rel(scores, ref_scores, what=f"step{s}.critic_scores")
            if s == 3:
                assert torch.equal(schedule.step(crit_in, scores, s), crit_in)
                continue
            k = COUNTS_T4[s]
            ref = ref_scores.squeeze(-1)
            sorted_ref = ref.sort(dim=-1, descending=True).values
            boundary = (sorted_ref[:, k - 1] + sorted_ref[:, k])[:, None] / 2
            near = (ref - boundary).abs() < _noise_tol(ref_scores)
            gap = float((sorted_ref[:, k - 1] - sorted_ref[:, k]).min())
            assert gap == pytest.approx(
                meta["decision_margins"][f"step{s}.critic_topk_boundary_gap(k={k})"], rel=1e-3
            )
            nxt = schedule.step(crit_in, scores, s)
            assert int(schedule.is_masked(nxt).sum(1).unique()) == k
            flips[f"step{s}.remask"] = _check_flips(
                nxt, io[f"step{s + 1}.gen_in_ids"], near, f"step{s}.remask"
            )

        # --- whole generation from the recorded LR ids (discrete chain equal when nothing flipped)
        if not any(flips.values()):
            trace = []
            final = net.generate(lr_ids, trace=trace)
            assert torch.equal(final.view_as(io["final_ids"]), io["final_ids"])
            for s, st in enumerate(trace):
                assert torch.equal(st.in_ids, io[f"step{s}.gen_in_ids"]), s
                assert torch.equal(st.pred_ids, io[f"step{s}.critic_in_ids"]), s
                assert_close_rel(st.logits, io[f"step{s}.gen_logits"], what=f"trace{s}.logits")
                assert_close_rel(
                    st.scores, io[f"step{s}.critic_scores"].squeeze(-1), what=f"trace{s}.scores"
                )

        # --- CCM decode of the recorded final ids
        seen: dict[str, torch.Tensor] = {}
        hooks = [
            module.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out))
            for name, module in [
                ("post_quant_conv_out", net.vae.post_quant_conv),
                ("ccm_copy_encoder_out", net.trainable_copy_encoder),
                ("ccm_fuse_res2_out", net.fuse_res2),
                ("ccm_zero_out_out", net.zero_out),
            ]
        ]
        try:
            out = net.ccm_decode(io["final_ids"].flatten(1), lr_up)
        finally:
            for h in hooks:
                h.remove()
        for name, value in seen.items():
            assert_close_rel(value, io[name], what=name)
        assert_close_rel(out, io["out"], what="out")

        # --- AdaIN colour correction, and the whole per-patch pipeline
        assert_close_rel(
            adain_color_correction(io["out"], lr), io["out_color_corrected"], what="adain"
        )
        if not any(flips.values()):
            assert_close_rel(net.upscale(lr), io["out_color_corrected"], what="upscale")
    return flips


# --------------------------------------------------------------------------- parity
def test_reduced_fixture_parity():
    fx = load_fixture("realsrt_reduced")
    net = _load(fx, fx.weights)
    assert net.config == reduced_config()
    flips = _check_parity(net, fx)
    assert flips == dict.fromkeys(flips, 0), flips


@pytest.mark.slow
def test_full_fixture_parity():
    fx = load_fixture("realsrt_full")
    fresh = _meta_net(RealSRTConfig())
    t0 = time.perf_counter()
    official = fx.recipe_state_dict(official=fresh.state_dict())
    net = _load(fx, official)
    assert net.config == RealSRTConfig()
    t1 = time.perf_counter()
    flips = _check_parity(net, fx)
    t2 = time.perf_counter()
    print(f"\nrealsrt_full: weights {t1 - t0:.1f}s, parity {t2 - t1:.1f}s, flips {flips}")
    assert flips == dict.fromkeys(flips, 0), flips


# --------------------------------------------------------------------------- layout and config
@pytest.mark.parametrize("name", ["realsrt_full", "realsrt_reduced"])
def test_official_keys_one_to_one(name):
    fx = load_fixture(name)
    official = _meta_state_dict(fx)
    ours = convert_official_state_dict(official)
    assert set(official) - set(ours) == TRAINING_ONLY
    assert convert_official_state_dict(ours) == ours  # idempotent
    config = config_from_state_dict(ours)
    assert config == (RealSRTConfig() if name.endswith("full") else reduced_config())
    net_sd = _meta_net(config).state_dict()
    assert set(net_sd) == set(ours)
    assert {k: tuple(v.shape) for k, v in net_sd.items()} == {
        k: tuple(v.shape) for k, v in ours.items()
    }
    n_params = sum(v.numel() for v in ours.values())
    n_dropped = sum(official[k].numel() for k in TRAINING_ONLY)
    assert n_params + n_dropped == fx.meta["state_dict_num_params"]


def test_training_only_suffixes_cover_fixture_keys():
    assert all(k.endswith(TRAINING_ONLY_SUFFIXES) for k in TRAINING_ONLY)


def test_config_round_trip_and_validation():
    for config in (RealSRTConfig(), reduced_config()):
        assert from_dict(RealSRTConfig, to_dict(config)) == config
        assert config_from_json(RealSRTConfig, config_to_json(config)) == config
    c = RealSRTConfig()
    assert (c.grid, c.num_tokens, c.mask_id, c.ccm_width, c.tokenizer.downsample) == (
        32,
        1024,
        512,
        512,
        8,
    )
    assert c.generator.ff_hidden == 1365 and c.critic.dec_depth == 12
    with pytest.raises(ConfigError):
        RealSRTConfig(lr_patch=48)  # 48 px -> 24x24 grid != seq_len 1024
    with pytest.raises(ConfigError):
        VQGANConfig(channels=(48, 64))
    with pytest.raises(ConfigError):
        RealSRTConfig(schedule="nope")
    with pytest.raises(ConfigError):
        RealSRTConfig(critic=TransformerConfig(dim_out=2))
    with pytest.raises(ConfigError):
        from_dict(RealSRTConfig, {"tokenizer": {"widths": [1]}})


def test_config_inference_errors():
    fx = load_fixture("realsrt_reduced")
    sd = convert_official_state_dict(_meta_state_dict(fx))
    with pytest.raises(WeightsError):
        config_from_state_dict({k: v for k, v in sd.items() if not k.startswith("critic.")})
    with pytest.raises(WeightsError):
        config_from_state_dict(sd, scale=3)
    no_ccm = {
        k: v for k, v in sd.items() if not k.startswith(("trainable_copy", "fuse_", "zero_out"))
    }
    cfg = config_from_state_dict(no_ccm)
    assert not cfg.ccm.enabled
    assert set(_meta_net(cfg).state_dict()) == set(no_ccm)


# --------------------------------------------------------------------------- building blocks
def test_sincos_positions_layout():
    pos = sincos_2d_positions(8, 4)
    assert pos.shape == (16, 8) and pos.dtype == torch.float32
    r, c = 1, 2  # token 6: first half encodes the column, second half the row
    w = torch.tensor([1.0, 1e-2], dtype=torch.float64)
    expected = torch.cat([(c * w).sin(), (c * w).cos(), (r * w).sin(), (r * w).cos()]).float()
    assert torch.allclose(pos[r * 4 + c], expected, atol=1e-7)
    net = RealSRTNet(reduced_config())
    assert torch.equal(net.generator.pos_emb[0], sincos_2d_positions(64, 32))
    pos.zero_()  # callers get copies; the cache is untouched
    assert sincos_2d_positions(8, 4).abs().sum() > 0


def _reference_attention(
    attn: Attention, x: torch.Tensor, context: torch.Tensor | None
) -> torch.Tensor:
    """The official arithmetic written out: einsum logits, softmax, no fused kernel."""
    h = attn.heads
    x = attn.norm(x)
    src = x if context is None else context
    q = attn.to_q(x)
    k, v = attn.to_kv(src).chunk(2, dim=-1)
    q, k, v = (t.view(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    nk, nv = (t[None].expand(x.shape[0], -1, -1, -1) for t in attn.null_kv)
    k, v = torch.cat([nk, k], 2), torch.cat([nv, v], 2)
    q = F.normalize(q, dim=-1) * attn.q_scale
    k = F.normalize(k, dim=-1) * attn.k_scale
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * attn.scale
    out = torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v)
    return attn.to_out(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_reference(cross):
    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=16, scale=8.0, cross=cross)
    with torch.no_grad():
        attn.q_scale.uniform_(0.5, 1.5)
        attn.k_scale.uniform_(0.5, 1.5)
        attn.norm.beta.normal_()
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 7, 32)
    context = ctx if cross else None
    with torch.no_grad():
        reference = _reference_attention(attn, x, context)
        assert_close_rel(attn(x, context), reference, rtol=1e-5)
        if cross:  # precomputed keys/values (what iterative decoding reuses) give the same result
            assert torch.equal(attn(x, attn.keys_values(ctx)), attn(x, ctx))
    with pytest.raises(ValueError):
        attn(x, None if cross else ctx)


def test_centred_reflect_pad_matches_official_padding():
    x = torch.rand(1, 3, 50, 40)
    padded, (top, left) = centred_reflect_pad(x, 64)
    assert padded.shape[-2:] == (64, 64) and (top, left) == (7, 12)
    assert torch.equal(padded, F.pad(x, (12, 12, 7, 7), mode="reflect"))
    tiny, offsets = centred_reflect_pad(torch.rand(1, 3, 5, 1), 64)
    assert tiny.shape[-2:] == (64, 64) and offsets == (29, 31)


def test_adain_color_correction():
    torch.manual_seed(0)
    content, style = torch.randn(2, 3, 32, 32) * 3 + 1, torch.rand(2, 3, 8, 8)
    out = adain_color_correction(content, style)
    assert torch.allclose(out.mean((2, 3)), style.mean((2, 3)), atol=1e-5)
    assert torch.allclose(out.flatten(2).var(-1), style.flatten(2).var(-1), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- upscale contract
@pytest.fixture(scope="module")
def reduced_net():
    fx = load_fixture("realsrt_reduced")
    return _load(fx, fx.weights), fx


def test_upscale_contract(reduced_net):
    net, fx = reduced_net
    lr = fx.io["lr01"][:1]
    sr = net.upscale(lr, generator=torch.Generator().manual_seed(1), noise=torch.zeros(1))
    assert sr.shape == (1, 3, 256, 256) and sr.dtype == torch.float32
    assert torch.equal(sr, net.upscale(lr))  # deterministic; generator/noise ignored
    small = net.upscale(lr[..., 5:45, 3:53])
    assert small.shape == (1, 3, 160, 200)
    two = net.upscale(lr, steps=2)
    assert two.shape == sr.shape and not torch.equal(two, sr)
    with pytest.raises(UsageError):
        net.upscale(torch.rand(1, 3, 65, 64))
    with pytest.raises(UsageError):
        net(torch.rand(1, 3, 60, 64))
    with pytest.raises(UsageError):
        net.upscale(torch.rand(3, 64, 64))


def test_generate_trace_and_steps(reduced_net):
    net, fx = reduced_net
    lr_ids = fx.io["lr_ids"]
    with torch.no_grad():
        for steps in (1, 2, 6):
            trace = []
            final = net.generate(lr_ids, steps, trace=trace)
            assert len(trace) == steps and final.shape == lr_ids.shape
            assert not (final == net.config.mask_id).any()
            assert trace[0].mask.all()
            expected = [net.schedule(steps).num_masked(s) for s in range(steps)]
            assert [int(t.out_ids.eq(net.config.mask_id).sum(1)[0]) for t in trace] == expected
            assert torch.equal(trace[-1].out_ids, final)


def test_inference_mode(reduced_net):
    net, fx = reduced_net
    lr = fx.io["lr01"][:1]
    with torch.inference_mode():
        sr = net.upscale(lr)
    assert_close_rel(sr, fx.io["out_color_corrected"][:1], what="inference_mode")


def test_zero_ccm_and_codebook_copies_at_init():
    net = RealSRTNet(reduced_config())
    assert not net.zero_out.weight.any() and not net.zero_out.bias.any()
    codes = net.vae.quantizer.codebook.codes
    assert torch.equal(net.generator.token_emb.weight[:512], codes)
    assert torch.equal(net.critic.token_emb.weight[:512], codes)
    enc, copy = net.vae.encoder.state_dict(), net.trainable_copy_encoder.state_dict()
    assert all(torch.equal(enc[k], copy[k]) for k in enc)
    assert net.critic.mask_token is None and net.generator.mask_token.shape == (1, 1, 64)
