"""SSR: config, DKENet kernels, SVKR update rule, AMF, denoiser, sampling contract, engine run and
the registry round trip. Tiny configs, CPU only."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from realsr_cli._config import config_from_json, config_to_json
from realsr_cli.engine.model import LoadedModel
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.ssr import (
    AMF,
    NBSR,
    AMFBlock,
    DKENet,
    SSRConfig,
    SSRNet,
    SSRScheduleConfig,
    blend_kernels,
    config_from_state_dict,
    convert_official_state_dict,
    kernel_variance,
    svkr,
)
from realsr_cli.registry.archs import ARCHITECTURES, get_arch
from realsr_cli.registry.loader import load_weights, save_weights

TINY = SSRConfig.tiny()
K = TINY.dkenet.kernel_size


def image(h: int, w: int, seed: int = 0, b: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def randomize_zero_inits(net: nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised AMF/SFT output layers random weights, so conditioning matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 0 and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def net() -> SSRNet:
    torch.manual_seed(0)
    model = SSRNet(TINY).eval()
    randomize_zero_inits(model)
    return model.requires_grad_(False)


# --------------------------------------------------------------------------- config
def test_config_presets_validation_and_json():
    assert SSRConfig().dkenet.kernel_size == 21 and SSRConfig().svkr_iterations == 3
    assert SSRConfig().svkr_gamma == 0.9 and SSRConfig().denoiser.amf_hidden == 128
    assert TINY.size_multiple == 2 and SSRConfig().size_multiple == 8
    for cfg in (TINY, SSRConfig()):
        assert config_from_json(SSRConfig, config_to_json(cfg)) == cfg
    bad = [
        dict(scale=2),
        dict(svkr_gamma=1.5),
        dict(dkenet=dataclasses.replace(TINY.dkenet, kernel_size=8)),
        dict(denoiser=dataclasses.replace(TINY.denoiser, model_channels=40)),
        dict(denoiser=dataclasses.replace(TINY.denoiser, amf_norm="ln")),
        dict(schedule=SSRScheduleConfig(num_timesteps=10, sampling_steps=11)),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            dataclasses.replace(TINY, **kw)


def test_denoiser_narrower_than_the_unshuffled_state_is_refused():
    """x_t enters the UNet as 3 * 4 * 4 = 48 channels; a 32-wide first level cannot carry it
    (a CPU run with it plateaued at eps-MSE 0.39 for every t and sampled noise)."""
    narrow = dataclasses.replace(TINY.denoiser, model_channels=32, channel_mult=(1, 2))
    with pytest.raises(ConfigError, match="narrower than the x4 state"):
        dataclasses.replace(TINY, denoiser=narrow)
    wide_enough = dataclasses.replace(TINY.denoiser, model_channels=64, channel_mult=(1, 2))
    assert dataclasses.replace(TINY, denoiser=wide_enough).denoiser.model_channels == 64


# --------------------------------------------------------------------------- DKENet / NBSR
def test_kernels_are_non_negative_and_sum_to_one(net):
    lr, depth = image(9, 11), torch.rand(1, 1, 9, 11)
    kernels = net.dkenet(lr, depth)
    assert kernels.shape == (1, K * K, 9, 11)
    assert bool((kernels >= 0).all())
    torch.testing.assert_close(kernels.sum(1), torch.ones(1, 9, 11))
    # depth matters (SFT), and a wrong depth size is refused
    assert not torch.allclose(kernels, net.dkenet(lr, torch.rand(1, 1, 9, 11)))
    with pytest.raises(ValueError, match="LR size"):
        net.dkenet(lr, torch.rand(1, 1, 8, 11))


def test_dkenet_and_nbsr_train():
    torch.manual_seed(0)
    dke, nbsr = DKENet(TINY.dkenet), NBSR(TINY.nbsr, kernel_size=K)
    lr, depth = image(6, 5), torch.rand(1, 1, 6, 5)
    kernels = dke(lr, depth)
    sr = nbsr(lr, kernels)
    assert sr.shape == (1, 3, 24, 20)
    sr.square().mean().backward()
    assert all(p.grad is not None for p in nbsr.parameters())
    assert dke.head.weight.grad is not None and dke.depth_branch.head.weight.grad is not None


def test_kernel_variance_is_the_fig4_heat_map():
    k = 9
    delta = torch.zeros(1, k * k, 2, 3)
    delta[:, (k * k) // 2] = 1
    assert torch.equal(kernel_variance(delta), torch.zeros(1, 1, 2, 3))
    ax = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    gy, gx = torch.meshgrid(ax, ax, indexing="ij")
    gauss = torch.exp(-(gx**2 + gy**2) / (2 * 1.0**2))
    gauss = (gauss / gauss.sum()).reshape(1, k * k, 1, 1)
    var = kernel_variance(gauss)
    assert var.shape == (1, 1, 1, 1) and abs(float(var) - 2.0) < 1e-3  # 2 sigma^2
    wide = torch.exp(-(gx**2 + gy**2) / (2 * 2.0**2))
    assert float(kernel_variance((wide / wide.sum()).reshape(1, -1, 1, 1))) > float(var)


# --------------------------------------------------------------------------- SVKR
class _Counter:
    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []


def test_svkr_update_rule_and_iterations():
    lr = image(4, 6)
    de, ke, sr = _Counter(), _Counter(), _Counter()
    produced: list[torch.Tensor] = []

    def depth_fn(img):
        de.calls.append(tuple(img.shape))
        return torch.full((img.shape[0], 1, *img.shape[-2:]), float(len(de.calls)))

    def kernel_fn(lr_in, depth):
        ke.calls.append(tuple(depth.shape))
        assert lr_in is lr and depth.shape[-2:] == lr.shape[-2:]
        new = torch.softmax(
            torch.randn(1, 9, 4, 6, generator=torch.Generator().manual_seed(len(ke.calls))), 1
        )
        produced.append(new)
        return new

    def sr_fn(lr_in, kernels):
        sr.calls.append(tuple(kernels.shape))
        return torch.nn.functional.interpolate(lr_in, scale_factor=4)

    out = svkr(lr, depth_fn=depth_fn, kernel_fn=kernel_fn, sr_fn=sr_fn, iterations=3, gamma=0.9)
    # KE: K_0 plus one per iteration; DE: D_0 (reused as D_1) plus DE(I_1), DE(I_2)
    assert len(ke.calls) == 4 and len(de.calls) == 3 and len(sr.calls) == 2
    assert de.calls == [(1, 3, 4, 6), (1, 3, 16, 24), (1, 3, 16, 24)]  # I_t is x4, then resized
    assert out.depth.shape == (1, 1, 4, 6) and bool((out.depth == 3).all())
    expected = produced[0]
    for new in produced[1:]:
        expected = 0.9 * new + 0.1 * expected
    torch.testing.assert_close(out.kernels, expected)
    torch.testing.assert_close(out.kernels.sum(1), torch.ones(1, 4, 6))
    assert torch.equal(
        blend_kernels(produced[1], produced[0], 0.9), 0.9 * produced[1] + 0.1 * produced[0]
    )
    # keep_estimates runs the last NBSR too
    sr.calls.clear()
    kept = svkr(
        lr, depth_fn=depth_fn, kernel_fn=kernel_fn, sr_fn=sr_fn, iterations=2, keep_estimates=True
    )
    assert len(sr.calls) == 2 and len(kept.estimates) == 2


def test_net_svkr_uses_config_iterations(net):
    calls = []
    hook = net.nbsr.register_forward_hook(lambda *a: calls.append(1))
    try:
        est = net.svkr(image(5, 7))
    finally:
        hook.remove()
    assert len(calls) == TINY.svkr_iterations - 1
    assert est.depth.shape == (1, 1, 5, 7) and est.kernels.shape == (1, K * K, 5, 7)
    assert bool(((est.depth >= 0) & (est.depth <= 1)).all())


# --------------------------------------------------------------------------- AMF
@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_amf_shapes_and_identity_at_zero_init(norm):
    torch.manual_seed(0)
    amf = AMF(64, 8, hidden=128, norm=norm)
    x, f = torch.randn(2, 64, 5, 6) * 3 + 1, torch.randn(2, 8, 5, 6)
    ref = amf.norm(x)
    out = amf(x, f)
    assert out.shape == x.shape and torch.equal(out, ref)
    assert amf.alpha[0].out_channels == 128 and isinstance(amf.alpha[1], nn.ReLU)
    amf.eval()  # bn: running statistics, batch-1 friendly
    one = amf(x[:1], f[:1])
    torch.testing.assert_close(one, amf.norm(x[:1]))
    # a modality feature at another resolution is resized; trained MLPs modulate
    with torch.no_grad():
        amf.alpha[2].weight.normal_()
        amf.beta[2].weight.normal_()
    moved = amf(x, torch.randn(2, 8, 3, 3))
    assert moved.shape == x.shape and not torch.allclose(moved, amf.norm(x))


def test_amf_block_chains_three_modalities():
    block = AMFBlock(32, (4, 4, 8), hidden=16)
    x = torch.randn(1, 32, 4, 4)
    fk, fd, fl = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), torch.randn(1, 8, 4, 4)
    out = block(x, fk, fd, fl)
    torch.testing.assert_close(out, block.kernel.norm(x), atol=1e-4, rtol=1e-4)
    gn = nn.GroupNorm(32, 32, affine=False)
    torch.testing.assert_close(out, gn(gn(gn(x))))


# --------------------------------------------------------------------------- denoiser
def test_denoiser_shapes_and_training_pieces():
    torch.manual_seed(0)
    model = SSRNet(TINY)
    lq = image(6, 8, b=2)
    cond = model.condition(lq)
    feats = cond.features
    levels = len(TINY.denoiser.channel_mult)
    assert len(feats.kernel) == len(feats.depth) == len(feats.lr) == levels + 1
    assert feats.lr[0].shape == (2, TINY.denoiser.lr_width, 6, 8)
    assert feats.depth[1].shape == (2, TINY.denoiser.aux_width, 3, 4)
    l1 = feats.l1()
    assert set(l1) == {"kernel", "depth", "lr"} and all(v.ndim == 0 for v in l1.values())
    sched = model.make_schedule()
    x0 = lq.repeat_interleave(4, -1).repeat_interleave(4, -2) * 2 - 1
    t = sched.sample_timesteps(2, generator=torch.Generator().manual_seed(0))
    eps = torch.randn_like(x0)
    pred = model.predict_eps(sched.add_noise(x0, eps, t), t, cond)
    assert pred.shape == x0.shape
    loss = (pred - eps).square().mean() + 1e-3 * sum(l1.values())
    loss.backward()
    enc = model.denoiser.enc_amf[0].lr.alpha[2].weight
    assert enc.grad is not None and bool(enc.grad.abs().sum() > 0)  # zero-init layer learns
    with pytest.raises(ValueError, match="multiples"):
        model.denoiser(torch.zeros(1, 3, 20, 20), t[:1], feats, cond.lq[:1])


# --------------------------------------------------------------------------- inference contract
def test_upscale_odd_size_seeded(net):
    lq = image(13, 17)
    a = net.upscale(lq, generator=torch.Generator().manual_seed(1))
    b = net.upscale(lq, generator=torch.Generator().manual_seed(1))
    c = net.upscale(lq, generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 3, 52, 68) and a.dtype == torch.float32
    assert bool(torch.isfinite(a).all())
    assert torch.equal(a, b) and not torch.allclose(a, c)
    noise = torch.randn(net.noise_shape(lq.shape), generator=torch.Generator().manual_seed(1))
    assert net.noise_shape(lq.shape) == (1, 3, 56, 72)
    assert torch.equal(net.upscale(lq, noise=noise), a)
    with pytest.raises(ValueError, match="padded HR shape"):
        net.upscale(lq, noise=torch.zeros(1, 3, 52, 68))


def test_steps_are_honoured(net):
    calls = []
    hook = net.denoiser.register_forward_hook(lambda *a: calls.append(1))
    try:
        net.upscale(image(4, 4), generator=torch.Generator().manual_seed(0), steps=3)
        assert len(calls) == 3
        calls.clear()
        net.upscale(image(4, 4), generator=torch.Generator().manual_seed(0))
        assert len(calls) == TINY.schedule.sampling_steps
    finally:
        hook.remove()


def test_auxiliary_outputs(net):
    lq = image(7, 9)
    depth, kernels = net.auxiliary(lq)
    assert depth.shape == (1, 1, 7, 9) and kernels.shape == (1, K * K, 7, 9)
    torch.testing.assert_close(kernels.sum(1), torch.ones(1, 7, 9))
    assert kernel_variance(kernels).shape == (1, 1, 7, 9)
    # the same maps upscale conditions on (computed on the padded image)
    cond = net.condition(lq)
    torch.testing.assert_close(cond.kernels[..., :7, :9], kernels)


def test_injected_depth_estimator():
    class Flat(nn.Module):
        def forward(self, img):
            return img.mean(1, keepdim=True)

    model = SSRNet(dataclasses.replace(TINY, depth_head=False), depth_estimator=Flat())
    seen = []
    model.depth_estimator.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    depth, _ = model.auxiliary(image(5, 6))
    # D_0 on the (padded) LR, then DE(I_t) on the x4 NBSR estimates, resized to the LR size
    assert seen == [(1, 3, 6, 6)] + [(1, 3, 24, 24)] * (TINY.svkr_iterations - 1)
    assert depth.shape == (1, 1, 5, 6)
    assert not any(k.startswith("depth_estimator.") for k in model.state_dict())
    with pytest.raises(ConfigError, match="no depth head"):
        SSRNet(dataclasses.replace(TINY, depth_head=False))


def test_engine_tiled_and_untiled(net):
    model = LoadedModel(
        spec=get_arch("ssr"), config=TINY, net=net, device=torch.device("cpu"), dtype=torch.float32
    )
    lq = image(12, 20)
    whole = run_model(model, lq, RunOptions(tile=0, seed=3, steps=2))
    again = run_model(model, lq, RunOptions(tile=0, seed=3, steps=2))
    tiled = run_model(model, lq, RunOptions(tile=8, tile_overlap=4, seed=3, steps=2))
    assert whole.tiles == 1 and tiled.tiles > 1 and whole.seed == 3
    assert whole.sr.shape == tiled.sr.shape == (1, 3, 48, 80)
    assert torch.equal(whole.sr, again.sr) and bool(torch.isfinite(tiled.sr).all())


# --------------------------------------------------------------------------- registry
def test_registry_entry():
    assert "ssr" in ARCHITECTURES
    spec = get_arch("ssr")
    assert spec.config_cls is SSRConfig and spec.build is SSRNet and spec.stochastic
    assert spec.scale_of(TINY) == 4 and spec.tileable
    with pytest.raises(WeightsError, match="no official checkpoint") as err:
        spec.convert_official({})
    assert "realsr train" in (err.value.hint or "")
    with pytest.raises(WeightsError):
        convert_official_state_dict({})


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        dataclasses.replace(
            TINY,
            denoiser=dataclasses.replace(
                TINY.denoiser, channel_mult=(1, 2, 2), amf_norm="bn", concat_lq=False, lr_blocks=2
            ),
            nbsr=dataclasses.replace(TINY.nbsr, num_blocks=2),
        ),
        dataclasses.replace(TINY, denoiser=dataclasses.replace(TINY.denoiser, concat_sr=True)),
        dataclasses.replace(
            TINY, denoiser=dataclasses.replace(TINY.denoiser, concat_sr=True, concat_lq=False)
        ),
    ],
)
def test_config_inference_from_shapes(cfg):
    state = SSRNet(cfg).state_dict()
    inferred = config_from_state_dict(state)
    assert inferred == dataclasses.replace(cfg, schedule=SSRScheduleConfig())
    SSRNet(inferred).load_state_dict(state, strict=True)
    with pytest.raises(WeightsError):
        config_from_state_dict(state, scale=2)
    with pytest.raises(WeightsError, match="incomplete"):
        config_from_state_dict({k: v for k, v in state.items() if not k.startswith("nbsr.")})


def test_residual_target_samples_around_the_svkr_estimate():
    """target = residual: the chain generates HR - I_T and adds I_T back. With the UNet head
    zeroed (v = 0) one DDIM step from t = T-1 gives x0_hat = sqrt(ab) x_T ~ 0, so the output is
    SVKR's estimate I_T = NBSR(LR, K_T) (exactly, from x_T = 0, at any step count); concat_sr
    feeds I_T to the UNet (48 more channels)."""
    cfg = dataclasses.replace(
        TINY,
        target="residual",
        denoiser=dataclasses.replace(TINY.denoiser, concat_sr=True),
        schedule=dataclasses.replace(TINY.schedule, prediction="v"),
    )
    torch.manual_seed(0)
    model = SSRNet(cfg).eval()
    assert model.denoiser.conv_in.in_channels == 48 + 3 + 48
    with torch.no_grad():
        for p in model.denoiser.out.parameters():
            p.zero_()
    lq = torch.rand(1, 3, 8, 10)
    estimate = model.svkr(lq, keep_estimates=True).estimates[-1]
    out = model.upscale(lq, generator=torch.Generator().manual_seed(0), steps=1)
    torch.testing.assert_close(out, estimate, rtol=0, atol=0.02)  # + sqrt(ab_19) x_T / 2
    x_T = torch.zeros(model.noise_shape(lq.shape))
    torch.testing.assert_close(model.upscale(lq, noise=x_T, steps=3), estimate)
    cond = model.condition(lq)
    assert cond.sr is not None and cond.sr.shape == (1, 3, 32, 40)
    with pytest.raises(ValueError, match="SR estimate"):
        model.denoiser(torch.zeros(1, 3, 32, 40), torch.tensor([3]), cond.features, cond.lq)
    with pytest.raises(ConfigError, match="target"):
        dataclasses.replace(TINY, target="latent")
    assert not TINY.uses_sr_estimate and cfg.uses_sr_estimate


def test_default_config_inference_on_meta():
    with torch.device("meta"):
        model = SSRNet(SSRConfig())
    assert config_from_state_dict(model.state_dict()) == SSRConfig()


def test_save_load_round_trip(tmp_path, net):
    path = save_weights(
        tmp_path / "ssr.safetensors", arch="ssr", config=TINY, state_dict=net.state_dict()
    )
    spec, config, loaded = load_weights(path)
    assert spec.name == "ssr" and config == TINY and isinstance(loaded, SSRNet)
    lq = image(13, 17)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    a = loaded.upscale(lq, generator=g(), steps=2)
    assert torch.equal(a, net.upscale(lq, generator=g(), steps=2))
