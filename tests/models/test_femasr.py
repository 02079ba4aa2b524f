"""FeMaSR: official-checkpoint parity (../shared/parity/femasr_*), config inference, padding, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from realsr_cli._config import config_from_json, config_to_json, from_dict, to_dict
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks.swin import SwinBlock, shifted_window_mask
from realsr_cli.models._blocks.vq import VectorQuantizer
from realsr_cli.models.femasr import (
    PRIOR_PREFIXES,
    TRAINING_ONLY_PREFIXES,
    FeMaSRConfig,
    FeMaSRNet,
    config_from_state_dict,
    convert_official_state_dict,
)
from realsr_cli.models.femasr.net import mirror_pad
from tests.parity import assert_close_rel, load_fixture

#: a code choice may flip under float reordering only where (2nd - 1st distance) / 1st distance is
#: below this (the fixture's own ``vq_margin_stats`` use the same relative margin)
MARGIN_NOISE = 1e-5

#: the configuration of the ``*_reduced`` fixtures (see their ``reduced_overrides``)
REDUCED = dict(
    channels=(64, 64, 32, 32), codebook_size=256, codebook_dim=64, swin_dim=64, swin_depth=2
)


def _tags(fx) -> list[str]:
    return sorted({key.split(".", 1)[0] for key in fx.io})


def _meta_state_dict(fx) -> dict[str, torch.Tensor]:
    """Shape-only tensors for every official key of a fixture (no memory, no weights)."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {
        k: torch.empty(shape, dtype=dtypes[dt], device="meta")
        for k, shape, dt in fx.meta["state_dict_keys"]
    }


def _check_parity(net: FeMaSRNet, fx) -> None:
    """Run the official ``test()`` path on every input of a fixture and compare all saved tensors."""
    for tag in _tags(fx):
        io = {k.split(".", 1)[1]: v for k, v in fx.io.items() if k.startswith(tag + ".")}
        with torch.no_grad():
            padded = net.pad_lq(io["lr"])
            out = net.encode_and_decode(padded)
            sr = net.upscale(io["lr"])
            dist, _ = net.quantizer.nearest(out.feat_to_quant, k=2)
        assert torch.equal(padded, io["lr_padded"]), f"{tag}: padded input differs"
        assert_close_rel(out.feat_to_quant, io["feat_to_quant"], what=f"{tag}.feat_to_quant")
        assert_close_rel(out.z_quant, io["z_quant"], what=f"{tag}.z_quant")
        assert_close_rel(out.image, io["dec_padded"], what=f"{tag}.dec_padded")
        assert_close_rel(sr, io["out"], what=f"{tag}.out")

        # discrete choices: equal wherever the official margin is above float32 noise
        rel_margin = io["vq_margin"] / dist[:, :1].clamp_min(1e-12)
        decided = rel_margin > MARGIN_NOISE
        n_excluded = int((~decided).sum())
        assert n_excluded == fx.meta["vq_margin_stats"][tag]["n_positions_rel_margin_lt_1e-5"] == 0
        assert out.indices.shape == io["indices"].shape and out.indices.dtype == torch.int64
        assert torch.equal(out.indices[decided], io["indices"][decided]), (
            f"{tag}: code indices differ"
        )
        # our margins are the official ones up to float noise (same distance, same definition)
        assert torch.allclose(dist[:, 1:] - dist[:, :1], io["vq_margin"], rtol=0, atol=1e-3)
        expected_min = fx.meta["vq_margin_stats"][tag]["min_rel_margin"]
        assert float(rel_margin.min()) == pytest.approx(expected_min, rel=0.01)


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", ["femasr_x4_reduced", "femasr_x2_reduced"])
def test_reduced_fixture_parity(name):
    fx = load_fixture(name)
    state = convert_official_state_dict(fx.weights)
    config = config_from_state_dict(state, None)
    assert config == FeMaSRConfig(scale=fx.meta["scale"], **REDUCED)
    net = FeMaSRNet(config).eval()
    assert list(net.state_dict()) == [k for k, _, _ in fx.meta["state_dict_keys"]]
    # structural buffers computed by our constructor equal the official ones
    fresh = net.state_dict()
    for key in state:
        if key.endswith(("relative_position_index", "attn_mask")):
            assert torch.equal(fresh[key], state[key]), key
    net.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in net.parameters()) == fx.meta["model_num_parameters"]
    _check_parity(net, fx)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["femasr_x4_full", "femasr_x2_full"])
def test_full_fixture_parity(name):
    fx = load_fixture(name)
    net = FeMaSRNet(FeMaSRConfig.released(fx.meta["scale"])).eval()
    # `official` tensors (index buffers, shifted-window masks) come from our constructor and are
    # checked against the recipe's checksums
    state = fx.recipe_state_dict(official=net.state_dict())
    assert config_from_state_dict(state, fx.meta["scale"]) == net.config
    net.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in net.parameters()) == fx.meta["model_num_parameters"]
    _check_parity(net, fx)


# --------------------------------------------------------------------------- keys, config inference
@pytest.mark.parametrize(
    "name", ["femasr_x4_full", "femasr_x2_full", "femasr_x4_reduced", "femasr_x2_reduced"]
)
def test_keys_shapes_and_config_inference_match_fixture(name):
    fx = load_fixture(name)
    shapes = _meta_state_dict(fx)
    config = config_from_state_dict(shapes, None)
    expected = FeMaSRConfig.released(fx.meta["scale"])
    if name.endswith("_reduced"):
        expected = dataclasses.replace(expected, **REDUCED)
    assert config == expected
    assert config_from_state_dict(shapes, fx.meta["scale"]) == expected
    with torch.device("meta"):
        net = FeMaSRNet(config)
    ours = [
        (k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()
    ]
    assert ours == [tuple(e) for e in fx.meta["state_dict_keys"]]
    assert len(ours) == fx.meta["state_dict_num_tensors"]


def test_config_defaults_are_the_released_x4_model():
    config = FeMaSRConfig()
    assert (
        config.scale == 4
        and config.lq_stage
        and config.codebook_size == 1024
        and config.codebook_dim == 512
    )
    assert config.channels == (256, 256, 128, 64) and config.codebook_resolution == 32
    assert config.pad_multiple == 16 and FeMaSRConfig(scale=2).pad_multiple == 32


@pytest.mark.parametrize(
    "config",
    [
        FeMaSRConfig(),
        FeMaSRConfig(scale=2, **REDUCED),
        FeMaSRConfig(
            scale=1, lq_stage=False, channels=(64, 32, 32, 32), codebook_size=16, codebook_dim=8
        ),
        FeMaSRConfig(
            scale=2,
            gt_resolution=128,
            channels=(32, 32, 32),
            swin_dim=32,
            swin_heads=4,
            norm_type="bn",
            act_type="prelu",
        ),
    ],
)
def test_config_round_trips_through_json_and_state_dict(config):
    assert from_dict(FeMaSRConfig, to_dict(config)) == config
    assert config_from_json(FeMaSRConfig, config_to_json(config)) == config
    with torch.device("meta"):
        state = FeMaSRNet(config).state_dict()
    assert config_from_state_dict(state, None) == config


@pytest.mark.parametrize(
    "changes",
    [
        dict(swin_dim=128),  # must equal channels[0]
        dict(lq_stage=False),  # HQ stage with scale 4
        dict(norm_type="layer"),
        dict(act_type="tanh"),
        dict(scale=3),
        dict(scale=8),  # no stride-2 stage left
        dict(channels=(256, 256, 128, 64, 32)),  # LR encoder has two shortcut stages
        dict(channels=(256, 256, 100, 64)),  # GroupNorm(32)
        dict(swin_heads=7),
    ],
)
def test_invalid_configs_are_config_errors(changes):
    with pytest.raises(ConfigError):
        FeMaSRConfig(**changes)


def test_config_from_state_dict_errors():
    fx = load_fixture("femasr_x4_reduced")
    shapes = _meta_state_dict(fx)
    with pytest.raises(WeightsError) as exc:
        config_from_state_dict(shapes, 2)
    assert "x4" in str(exc.value) and "--scale 4" in exc.value.hint
    with pytest.raises(WeightsError):
        config_from_state_dict({"conv.weight": torch.empty(3, 3, 3, 3)}, 4)
    no_encoder_blocks = {
        k: v for k, v in shapes.items() if not k.startswith("multiscale_encoder.blocks.")
    }
    with pytest.raises(WeightsError) as exc:
        config_from_state_dict(no_encoder_blocks, None)
    assert "--scale" in exc.value.hint


def test_convert_official_drops_training_only_keys():
    fx = load_fixture("femasr_x2_reduced")
    official = dict(fx.weights)
    extra = {
        "sft_fusion_group.0.scale.weight": torch.zeros(2),
        "multiscale_encoder.upsampler.0.1.weight": torch.zeros(2),
        "conv_semantic.0.weight": torch.zeros(2),
        "vgg_feat_extractor.vgg_net.0.weight": torch.zeros(2),
    }
    assert all(k.startswith(TRAINING_ONLY_PREFIXES) for k in extra)
    released_like = {**official, **extra}
    converted = convert_official_state_dict(released_like)
    assert converted.keys() == official.keys()
    assert len(released_like) == len(official) + len(extra)  # input left untouched
    assert convert_official_state_dict(converted) == converted  # idempotent on our layout
    FeMaSRNet(config_from_state_dict(converted)).load_state_dict(converted, strict=True)


# --------------------------------------------------------------------------- behaviour
@pytest.fixture(scope="module")
def reduced_x4() -> FeMaSRNet:
    fx = load_fixture("femasr_x4_reduced")
    state = convert_official_state_dict(fx.weights)
    net = FeMaSRNet(config_from_state_dict(state)).eval()
    net.load_state_dict(state, strict=True)
    return net


def test_mirror_pad_matches_official_concat_flip():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    ref = torch.cat([x, x.flip(2)], 2)[:, :, :9]
    ref = torch.cat([ref, ref.flip(3)], 3)[:, :, :, :12]
    assert torch.equal(mirror_pad(x, 9, 12), ref)
    # longer than the image: the symmetric reflection continues periodically
    row = torch.tensor([[[[1.0, 2.0]]]])
    assert mirror_pad(row, 1, 7).flatten().tolist() == [1, 2, 2, 1, 1, 2, 2]


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (16, 16), (17, 31), (33, 8)])
def test_odd_input_sizes(reduced_x4, size):
    h, w = size
    lq = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    padded = reduced_x4.pad_lq(lq)
    m = reduced_x4.pad_multiple
    assert padded.shape[-2] % m == 0 and padded.shape[-1] % m == 0
    assert 1 <= padded.shape[-2] - h <= m and 1 <= padded.shape[-1] - w <= m
    sr = reduced_x4.upscale(lq)
    assert sr.shape == (1, 3, 4 * h, 4 * w) and sr.dtype == torch.float32
    assert torch.isfinite(sr).all()


def test_upscale_is_deterministic_and_ignores_noise_arguments(reduced_x4):
    lq = torch.rand(2, 3, 20, 12, generator=torch.Generator().manual_seed(0))
    first = reduced_x4.upscale(lq)
    again = reduced_x4.upscale(
        lq, generator=torch.Generator().manual_seed(5), steps=3, noise=torch.randn(1)
    )
    assert torch.equal(first, again)
    single = reduced_x4.upscale(lq[1:])
    assert_close_rel(first[1:], single, rtol=1e-5, what="batch vs single")


def test_hq_stage_vqgan_and_prior_parts():
    config = FeMaSRConfig(
        scale=1, lq_stage=False, channels=(32, 32, 32, 32), codebook_size=16, codebook_dim=8
    )
    torch.manual_seed(0)
    net = FeMaSRNet(config)
    hq = torch.rand(2, 3, 64, 64)
    out = net(hq)
    assert out.image.shape == hq.shape
    assert out.indices.shape == (2, 1, 8, 8) and out.z_quant.shape == out.codes.shape == (
        2,
        8,
        8,
        8,
    )
    assert torch.allclose(out.z_quant, out.codes, atol=1e-6)
    # straight-through: the reconstruction loss reaches the encoder; the codes reach the codebook
    out.image.mean().backward(retain_graph=True)
    assert net.multiscale_encoder.in_conv.weight.grad is not None
    assert net.quantizer.codebook.grad is None
    out.codes.square().mean().backward()
    assert net.quantizer.codebook.grad is not None
    decoded = net.decode_indices(out.indices)
    assert decoded.shape == hq.shape
    prior = net.prior_modules()
    assert tuple(f"{name}." for name in prior) == PRIOR_PREFIXES
    encoder_side = ("multiscale_encoder.", "before_quant_group.")
    assert all(k.startswith(PRIOR_PREFIXES + encoder_side) for k in net.state_dict())


# --------------------------------------------------------------------------- blocks
def test_vector_quantizer_distances_topk_and_chunking():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 6)
    z = torch.randn(2, 6, 5, 7)
    d = vq.distances(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 6)
    brute = torch.cdist(flat.double(), vq.codebook.double()).square()
    assert torch.allclose(d.permute(0, 2, 3, 1).reshape(-1, 32).double(), brute, atol=1e-4)
    dist, idx = vq.nearest(z, k=3)
    assert idx.shape == (2, 3, 5, 7) and (dist[:, 1:] >= dist[:, :-1]).all()
    assert torch.equal(idx[:, :1], d.argmin(1, keepdim=True))
    q = vq(z)
    assert torch.equal(q.indices, idx[:, :1]) and torch.equal(q.codes, vq.lookup(q.indices))
    vq.chunk_rows = 4  # chunked evaluation gives the same answer
    assert torch.equal(vq.nearest(z, k=3)[1], idx)


def test_shifted_window_mask_buffer_matches_on_the_fly():
    block = SwinBlock(32, 4, 8, shift_size=4, input_resolution=(32, 32))
    assert torch.equal(block.attn_mask, shifted_window_mask(32, 32, 8, 4))
    assert block.attn_mask.shape == (16, 64, 64)
    x = torch.randn(1, 24, 40, 32)
    assert block(x).shape == x.shape  # other sizes recompute the mask
