"""BicRes (realsr's own default architecture): an untrained network is bicubic exactly, the config
reads back from the tensors, tiles blend seamlessly, and the network is purely local."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from realsr_cli.engine.io import resize
from realsr_cli.engine.tiling import tiled_forward
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.bicres import (
    BicResConfig,
    BicResNet,
    config_from_state_dict,
    convert_official_state_dict,
)
from realsr_cli.registry.archs import get_arch


def _lq(h: int = 23, w: int = 31, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _trained(config: BicResConfig) -> BicResNet:
    """A network whose tail is no longer zero (as after training)."""
    torch.manual_seed(3)
    net = BicResNet(config).eval()
    with torch.no_grad():
        for p in net.tail.parameters():
            p.normal_(0.0, 0.05)
    return net


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_untrained_network_is_bicubic_exactly(scale):
    net = BicResNet(BicResConfig(scale=scale, width=8, depth=2)).eval()
    lq = _lq()
    with torch.no_grad():
        sr = net.upscale(lq)
    ref = F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)
    assert sr.shape == (1, 3, 23 * scale, 31 * scale)
    assert torch.equal(sr, ref)
    # the same bicubic a user gets from OpenCV (engine.io.resize), to float tolerance
    cv = resize(lq[0].permute(1, 2, 0).numpy(), (23 * scale, 31 * scale), filter="bicubic")
    np.testing.assert_allclose(sr[0].permute(1, 2, 0).numpy(), cv, atol=1e-5)


def test_nearest_base_and_residual_add_up():
    net = _trained(BicResConfig(scale=2, width=8, depth=1, base="nearest"))
    lq = _lq(9, 11)
    with torch.no_grad():
        sr = net(lq)
        base = F.interpolate(lq, scale_factor=2, mode="nearest")
        torch.testing.assert_close(sr, base + net.residual(lq))
        assert float((sr - base).abs().max()) > 1e-3


@pytest.mark.parametrize("act", ["prelu", "relu"])
def test_config_reads_back_from_tensors(act):
    cfg = BicResConfig(scale=3, width=12, depth=5, act=act)
    sd = BicResNet(cfg).state_dict()
    got = config_from_state_dict(sd)
    assert (got.scale, got.width, got.depth) == (3, 12, 5)
    assert got.act == ("prelu" if act == "prelu" else "lrelu")  # relu/lrelu: no tensor tells them apart
    with pytest.raises(WeightsError, match="scale"):
        config_from_state_dict(sd, scale=4)
    with pytest.raises(WeightsError, match="head.weight"):
        config_from_state_dict({"tail.weight": sd["tail.weight"]})


def test_no_official_format():
    with pytest.raises(WeightsError, match="own architecture"):
        convert_official_state_dict({})


@pytest.mark.parametrize("bad", [{"width": 0}, {"depth": 65}, {"scale": True}, {"act": "gelu"},
                                 {"base": "lanczos"}, {"width": 1 << 20}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        BicResConfig(**bad)


def test_receptive_field_is_local():
    """An output pixel far from a change in the input does not move: radius = depth + 2 LR px."""
    cfg = BicResConfig(scale=2, width=8, depth=3)
    net = _trained(cfg)
    lq = _lq(40, 40)
    bumped = lq.clone()
    bumped[..., 20, 20] += 0.5
    with torch.no_grad():
        diff = (net(bumped) - net(lq)).abs().sum(1)[0]
    rows = torch.nonzero(diff.sum(1) > 0).flatten()
    r = cfg.receptive_radius
    assert rows.min() >= 2 * (20 - r) and rows.max() < 2 * (20 + r + 1)
    assert rows.min() < 2 * (20 - r + 1)  # the radius is not overstated by more than a pixel


def test_tiled_equals_untiled_with_the_arch_tiling_rule():
    spec = get_arch("bicres")
    cfg = BicResConfig(scale=4, width=8, depth=10)
    assert cfg.receptive_radius <= spec.tile_margin <= spec.default_overlap // 2
    net = _trained(cfg)
    lq = _lq(150, 97)
    with torch.inference_mode():
        ref = net(lq)
        out = tiled_forward(lambda x, t: net(x), lq, scale=4, tile=64, overlap=spec.default_overlap,
                            margin=spec.tile_margin, batch=2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_channels_last_matches():
    net = _trained(BicResConfig(scale=4, width=8, depth=2))
    lq = _lq()
    with torch.no_grad():
        ref = net(lq)
        out = net.to(memory_format=torch.channels_last)(lq.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
