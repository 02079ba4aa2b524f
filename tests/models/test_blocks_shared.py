"""Shared model pieces in ``models/_blocks``: the ``upscale`` contract (``upscaler``), the diffusion
samplers' helpers (``sampling``), state-dict reading (``state_dict``) and the norm/activation tables
(``conv``)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks import sampling
from realsr_cli.models._blocks.conv import ACT_TYPES, NORM_TYPES, Activation, Norm2d
from realsr_cli.models._blocks.state_dict import key_indices, key_shape, no_official_checkpoint
from realsr_cli.models._blocks.swin import RSTB
from realsr_cli.models._blocks.upscaler import DeterministicUpscaler, Sampling, Upscaler
from realsr_cli.models.bicres import BicResConfig, BicResNet
from realsr_cli.models.femasr import FeMaSRNet
from realsr_cli.models.realsrt import RealSRTNet
from realsr_cli.models.ssr import SSRNet
from realsr_cli.models.ugtsr import UGTSRNet
from realsr_cli.models.upsr import UPSRNet


class _Recorder(Upscaler):
    """Doubles lq through a parameter and remembers what ``upscale`` handed it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1,), 2.0))
        self.seen: list[Sampling] = []

    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        self.seen.append(sampling)
        return lq * self.weight


class _Doubler(DeterministicUpscaler):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1,), 2.0))

    def _upscale_lq(self, lq: Tensor) -> Tensor:
        return lq * self.weight


def test_every_model_has_the_one_upscale():
    for cls in (BicResNet, FeMaSRNet, UGTSRNet):
        assert issubclass(cls, DeterministicUpscaler)
    for cls in (RealSRTNet, UPSRNet, SSRNet):
        assert issubclass(cls, Upscaler) and not issubclass(cls, DeterministicUpscaler)
        assert "_upscale" in vars(cls)
    for cls in (BicResNet, FeMaSRNet, UGTSRNet, RealSRTNet, UPSRNet, SSRNet):
        assert cls.upscale is Upscaler.upscale


def test_upscale_passes_sampling_and_runs_without_autograd():
    net, lq = _Recorder(), torch.rand(1, 3, 4, 5)
    g, noise = torch.Generator(), torch.zeros(1)
    out = net.upscale(lq, generator=g, steps=3, noise=noise)
    assert torch.equal(out, lq * 2) and not out.requires_grad and torch.is_grad_enabled()
    seen = net.seen[-1]
    assert seen.generator is g and seen.steps == 3 and seen.noise is noise
    net.upscale(lq)
    assert net.seen[-1] == Sampling()
    with torch.inference_mode():
        out = net.upscale(lq)
    assert out.is_inference() and not out.requires_grad


def test_deterministic_upscaler_ignores_sampling():
    net, lq = _Doubler(), torch.rand(2, 3, 3, 3)
    a = net.upscale(lq)
    b = net.upscale(lq, generator=torch.Generator().manual_seed(1), steps=7, noise=torch.ones(1))
    assert torch.equal(a, b) and torch.equal(a, lq * 2) and not a.requires_grad


def test_a_real_model_through_the_contract():
    net = BicResNet(BicResConfig(scale=2, width=8, depth=1)).eval()
    lq = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(lq)
    out = net.upscale(lq, steps=4)
    assert out.shape == (1, 3, 10, 14) and torch.equal(out, expected) and not out.requires_grad


def test_sampling_helpers():
    assert sampling.padded_size(21, 64, 8) == (24, 64)
    assert sampling.noise_shape((2, 3, 21, 19), 8, 4) == (2, 3, 96, 96)
    lq = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
    drawn = sampling.initial_noise(lq, (1, 3, 4, 4), Sampling(torch.Generator().manual_seed(3)))
    ref = torch.randn((1, 3, 4, 4), generator=torch.Generator().manual_seed(3))
    assert drawn.dtype == torch.float64 and torch.equal(drawn, ref.double())
    given = torch.ones(1, 3, 4, 4)
    assert torch.equal(sampling.initial_noise(lq, (1, 3, 4, 4), Sampling(noise=given)), given.double())
    with pytest.raises(ValueError, match=r"padded HR shape \(1, 3, 4, 4\), got \(1, 3, 2, 2\)"):
        sampling.initial_noise(lq, (1, 3, 4, 4), Sampling(noise=torch.ones(1, 3, 2, 2)))
    batches = list(sampling.timestep_batches(torch.tensor([4, 2, 0]), torch.zeros(2, 3, 1, 1)))
    assert [b.tolist() for b in batches] == [[4, 4], [2, 2], [0, 0]]
    assert all(b.dtype == torch.long for b in batches)


def test_state_dict_helpers():
    sd = {k: torch.zeros(2, 3) for k in ("a.0.w", "a.2.w", "a.2.b", "a.x.w", "b.1.w")}
    assert key_indices(sd, "a.") == [0, 2] and key_indices(sd, "c.") == []
    assert key_shape(sd, "a.0.w", model="M", hint="h") == (2, 3)
    with pytest.raises(WeightsError, match="M state dict lacks 'nope'") as exc:
        key_shape(sd, "nope", model="M", hint="the hint")
    assert exc.value.hint == "the hint"
    with pytest.raises(WeightsError, match=r"^X has no official checkpoint to convert \(the auth"):
        no_official_checkpoint("X", "train it")


def test_norm_and_activation_tables():
    assert NORM_TYPES == ("gn", "bn", "in", "none")
    assert ACT_TYPES == ("silu", "relu", "leakyrelu", "prelu", "gelu", "none")
    assert isinstance(Norm2d(32, "GN").norm, nn.GroupNorm)
    assert isinstance(Norm2d(8, "bn").norm, nn.BatchNorm2d)
    assert Activation(6, "prelu").func.weight.shape == (6,)
    assert Activation(6, "leakyrelu").func.negative_slope == 0.2
    with pytest.raises(ConfigError, match="GroupNorm needs a channel count divisible by 32, got 30"):
        Norm2d(30, "gn")
    with pytest.raises(ConfigError, match="unknown norm type 'ln'") as exc:
        Norm2d(8, "LN")
    assert exc.value.hint == "use one of gn, bn, in, none"
    with pytest.raises(ConfigError, match="unknown activation 'tanh'") as exc:
        Activation(8, "tanh")
    assert exc.value.hint == "use one of silu, relu, leakyrelu, prelu, gelu, none"


def test_rstb_alternates_shifted_windows():
    block = RSTB(8, 3, 2, 4, input_resolution=(8, 8))
    shifts = [b.shift_size for b in block.residual_group.blocks]
    assert shifts == [0, 2, 0]
    assert {k.split(".")[0] for k in block.state_dict()} == {"residual_group", "conv"}
    assert block(torch.rand(1, 8, 8, 12)).shape == (1, 8, 8, 12)
