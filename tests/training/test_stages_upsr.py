"""UPSR training stages (``upsr-g``, ``upsr``) with the tiny configs on CPU: training lowers the
loss, g stays frozen, x_t is Algorithm 1's, exports round-trip through the registry loader, config
errors are clear, and every shipped TOML loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import realsr_cli
from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.diffusion.resshift import ResShiftSchedule
from realsr_cli.engine.device import make_generator
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.upsr import ATD
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.stages.upsr import (
    LPIPSStyleLoss,
    UPSRGStage,
    UPSRGStageConfig,
    UPSRStage,
    UPSRStageConfig,
)
from tests.training.stage_helpers import CPU, first_last, smooth_images, train_steps

CONFIGS = Path(realsr_cli.__file__).parent / "configs"


def _config(cls, name: str, *overrides: str):
    config = from_dict(cls, load_toml(str(CONFIGS / f"{name}.toml")))
    return apply_overrides(config, list(overrides))


def _stage(cls, config, seed: int = 0):
    torch.manual_seed(seed)
    stage = cls(config, CPU)
    stage.load_inputs()
    return stage


def _smooth_batch(n: int = 2, size: int = 64, seed: int = 0) -> dict[str, Tensor]:
    """Smooth random HR patches (bilinear 8x8 -> size) and their x4 area-downsampled LR."""
    hq = smooth_images(n, size, seed, grid=8, mode="bilinear")
    return {"hq": hq, "lq": F.interpolate(hq, scale_factor=0.25, mode="area")}


# --------------------------------------------------------------------------------- training
def test_upsr_g_training_lowers_the_l1_loss():
    stage = _stage(UPSRGStage, _config(UPSRGStageConfig, "upsr-g-tiny"))
    assert UPSRGStage.name == "upsr-g" and stage.ema_net == "aux"
    first, last = first_last(train_steps(stage, 30, _smooth_batch(), "pixel"))
    assert last < 0.6 * first, (first, last)
    sr = stage.predict(_smooth_batch(1)["lq"])
    assert sr.shape == (1, 3, 64, 64)


def test_upsr_training_lowers_the_loss_and_keeps_g_frozen():
    stage = _stage(UPSRStage, _config(UPSRStageConfig, "upsr-tiny"))
    assert UPSRStage.name == "upsr" and stage.ema_net == "denoiser"
    assert set(stage.param_groups()) == {"denoiser"}
    g_before = {k: v.clone() for k, v in stage.model.aux.state_dict().items()}
    losses = train_steps(stage, 30, _smooth_batch(), "total")
    first, last = first_last(losses)
    assert last < 0.7 * first, (first, last)
    g_after = stage.model.aux.state_dict()
    assert all(torch.equal(g_before[k], g_after[k]) for k in g_before)
    assert not any(p.requires_grad for p in stage.model.aux.parameters())
    # a random g is a function of run.seed only (the same in every process and in the export)
    other = UPSRStage(stage.config, CPU).model.aux.state_dict()
    assert all(torch.equal(g_before[k], other[k]) for k in g_before)


# ------------------------------------------------------------------------------- Algorithm 1
class _FixedG(nn.Module):
    """A stand-in g returning a fixed x4 image on the [0,1] scale."""

    def __init__(self, out: Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: Tensor) -> Tensor:
        return self.out.expand(x.shape[0], -1, -1, -1)


def test_x_t_is_residual_shifting_with_uncertainty_weighted_noise():
    stage = _stage(UPSRStage, _config(UPSRStageConfig, "upsr-tiny"))
    hq = torch.full((1, 3, 64, 64), 0.8)  # x0 = 0.6 on the [-1,1] scale
    lq = torch.full((1, 3, 16, 16), 0.3)  # y0 = y = -0.4
    # g(y0) on [0,1]: 0.3 -> psi 0 (w 0.4), 0.35 -> psi 0.05 (w 0.7), 0.5 -> psi 0.2 (w 1.0)
    g01 = torch.full((1, 3, 64, 64), 0.3)
    g01[..., 20:40] = 0.35
    g01[..., 40:] = 0.5
    stage.model.aux = _FixedG(g01)
    t = torch.tensor([2])
    inp = stage.diffusion_inputs(hq, lq, t=t, noise=torch.ones(1, 3, 64, 64))
    # eta_2 = 0.40183903506707586, kappa sqrt(eta_2) = 2.5 * 0.6339077496505906 (fixture values):
    # x_t = 0.6 + eta_2 (-0.4 - 0.6) + 1.5847693741264765 w
    expected = ((slice(0, 20), 0.4, 0.83206871), (slice(20, 40), 0.7, 1.30749953),
                (slice(40, 64), 1.0, 1.78293034))
    for cols, w, x_t in expected:
        assert torch.allclose(inp.un[..., cols], torch.tensor(w), atol=1e-6)
        assert torch.allclose(inp.x_t[..., cols], torch.tensor(x_t), atol=1e-5)

    # the same through ResShiftSchedule.add_noise in the official PixelUnshuffle layout
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    inp = stage.diffusion_inputs(hq, lq, t=t, noise=noise)
    sched = ResShiftSchedule(5, kappa=2.5, min_noise_level=0.2, etas_end=0.99, power=0.2)

    def unshuffled(x: Tensor) -> Tensor:
        return F.pixel_unshuffle(x, 4)

    x_t = sched.add_noise(
        unshuffled(inp.x0), unshuffled(inp.y_bicubic), t, unshuffled(noise), un=unshuffled(inp.un)
    )
    assert torch.allclose(F.pixel_shuffle(x_t, 4), inp.x_t, atol=1e-6)
    assert torch.allclose(inp.x_in, x_t / (0.40183903506707586 * 2.5**2 * 0.3 + 0.25) ** 0.5)
    assert inp.lq_cond.shape == (1, 96, 16, 16)


def test_timesteps_and_noise_come_from_the_seeded_stage_generator():
    cfg = _config(UPSRStageConfig, "upsr-tiny")
    batch = _smooth_batch(4)
    a = _stage(UPSRStage, cfg).diffusion_inputs(batch["hq"], batch["lq"])
    b = _stage(UPSRStage, cfg).diffusion_inputs(batch["hq"], batch["lq"])
    assert torch.equal(a.t, b.t) and torch.equal(a.noise, b.noise)
    assert a.t.dtype == torch.int64 and 0 <= int(a.t.min()) and int(a.t.max()) < 5


# ------------------------------------------------------------------------------------ exports
def test_exports_round_trip_through_the_registry_loader(tmp_path):
    g_stage = _stage(UPSRGStage, _config(UPSRGStageConfig, "upsr-g-tiny"))
    train_steps(g_stage, 1, _smooth_batch(), "pixel")
    g_export = g_stage.export({"aux": g_stage.net("aux").state_dict()})
    assert g_export.arch == "upsr" and all(k.startswith("aux.") for k in g_export.state_dict)
    g_path = save_weights(tmp_path / "g.safetensors", arch=g_export.arch,
                          config=g_export.config, state_dict=g_export.state_dict)
    with pytest.raises(WeightsError, match="missing"):  # g alone is no runnable upsr model
        load_weights(g_path)

    cfg = _config(UPSRStageConfig, "upsr-tiny", f"inputs.aux_weights={str(g_path)!r}",
                  "inputs.allow_random_aux=false")
    stage = _stage(UPSRStage, cfg, seed=1)
    g_sd = g_stage.net("aux").state_dict()
    assert all(torch.equal(v, g_sd[k]) for k, v in stage.model.aux.state_dict().items())
    train_steps(stage, 1, _smooth_batch(), "total")

    state = {"denoiser": stage.net("denoiser").state_dict()}
    export = stage.export(state)
    # `realsr train export` builds the stage without load_inputs: g is read from the file again
    again = UPSRStage(cfg, CPU).export(state)
    assert all(torch.equal(v, again.state_dict[k]) for k, v in export.state_dict.items())
    path = save_weights(tmp_path / "upsr.safetensors", arch=export.arch, config=export.config,
                        state_dict=export.state_dict)
    spec, config, net = load_weights(path)  # strict
    assert spec.name == "upsr" and config == cfg.model
    lq = torch.rand(1, 3, 13, 21, generator=torch.Generator().manual_seed(0))
    seed = cfg.run.seed  # the validation seed of stage.predict
    with torch.inference_mode():
        a = net.upscale(lq, generator=make_generator(seed))
        b = net.upscale(lq, generator=make_generator(seed))
    assert a.shape == (1, 3, 52, 84) and torch.equal(a, b)
    assert torch.allclose(stage.predict(lq), a, atol=1e-6)
    model = realsr_cli.load_model(str(path))
    assert torch.equal(model(lq, generator=make_generator(seed)), a)


def test_aux_weights_accepts_the_official_atd_checkpoint_layout(tmp_path):
    cfg = _config(UPSRStageConfig, "upsr-tiny")
    torch.manual_seed(5)
    official = ATD(cfg.model.aux).state_dict()
    torch.save({"params": {}, "params_ema": {"module." + k: v for k, v in official.items()}},
               tmp_path / "atd_real.pth")
    good = apply_overrides(cfg, [f"inputs.aux_weights={str(tmp_path / 'atd_real.pth')!r}"])
    stage = _stage(UPSRStage, good)
    assert all(torch.equal(v, official[k]) for k, v in stage.model.aux.state_dict().items())

    denoiser_only = {"params_ema": stage.net("denoiser").state_dict()}
    torch.save(denoiser_only, tmp_path / "upsr.pth")
    bad = apply_overrides(cfg, [f"inputs.aux_weights={str(tmp_path / 'upsr.pth')!r}"])
    with pytest.raises(WeightsError, match="no g"):
        _stage(UPSRStage, bad)


# ----------------------------------------------------------------------------- config errors
def test_missing_or_mismatched_aux_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="aux_weights") as err:
        UPSRStage(_config(UPSRStageConfig, "upsr-tiny", "inputs.allow_random_aux=false"), CPU)
    assert "upsr-g" in (err.value.hint or "")

    missing = _config(UPSRStageConfig, "upsr-tiny", "inputs.aux_weights='nope/g.safetensors'")
    with pytest.raises(ConfigError, match="not found"):
        _stage(UPSRStage, missing)

    g_stage = _stage(UPSRGStage, _config(UPSRGStageConfig, "upsr-g-tiny", "model.num_tokens=16"))
    g_export = g_stage.export({"aux": g_stage.net("aux").state_dict()})
    g_path = save_weights(tmp_path / "g16.safetensors", arch="upsr", config=g_export.config,
                          state_dict=g_export.state_dict)
    other = _config(UPSRStageConfig, "upsr-tiny", f"inputs.aux_weights={str(g_path)!r}")
    with pytest.raises(ConfigError, match="num_tokens"):
        _stage(UPSRStage, other)

    no_vgg = _config(UPSRStageConfig, "upsr-tiny", "loss.allow_random_vgg=false")
    with pytest.raises(ConfigError, match="vgg16_weights"):
        UPSRStage(no_vgg, CPU)
    _stage(UPSRStage, apply_overrides(no_vgg, ["loss.lpips=0.0"]))  # no LPIPS term: no VGG


def test_config_validation():
    with pytest.raises(ConfigError, match="multiple of model.pad_multiple"):
        _config(UPSRStageConfig, "upsr-tiny", "data.patch_size=96")
    with pytest.raises(ConfigError, match="x4"):
        _config(UPSRGStageConfig, "upsr-g-tiny", "model.scale=2", "data.scale=2")
    with pytest.raises(ConfigError, match="loss.mse"):
        _config(UPSRStageConfig, "upsr-tiny", "loss.mse=0.0", "loss.lpips=0.0")


@pytest.mark.parametrize("name", ["upsr-g", "upsr-g-tiny", "upsr", "upsr-tiny"])
def test_shipped_tomls_load(name):
    cls = UPSRGStageConfig if name.startswith("upsr-g") else UPSRStageConfig
    cfg = from_dict(cls, load_toml(str(CONFIGS / f"{name}.toml")))
    if not name.endswith("tiny"):
        assert cfg == cls()  # the full files spell out the defaults (paper/official values)


# ------------------------------------------------------------------------------ LPIPS-style
def test_lpips_style_loss_refuses_random_vgg_and_loads_heads():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(WeightsError, match="VGG-16"):
        LPIPSStyleLoss(base_width=8)(x, y)
    torch.manual_seed(0)
    loss = LPIPSStyleLoss(base_width=8, allow_random_weights=True)
    assert loss(x, x).item() == 0.0 and loss(x, y).item() > 0
    heads = {f"lin{i}.model.1.weight": torch.zeros(1, c, 1, 1) for i, c in
             enumerate((8, 16, 32, 64, 64))}
    loss.load_heads(heads)
    assert loss(x, y).item() == 0.0
    with pytest.raises(WeightsError):
        loss.load_heads({"lin0.weight": torch.zeros(8)})
