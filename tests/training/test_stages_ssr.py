"""SSR training stages (``ssr-kernel``, ``ssr-nbsr``, ``ssr``) with the tiny configs on CPU:
training lowers the loss, frozen parts stay bit-identical, the exports chain and round-trip
through the registry loader, resume state is exact, config errors are clear, every TOML loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import realsr_cli
from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.engine.device import make_generator
from realsr_cli.errors import ConfigError
from realsr_cli.models.ssr import SSRConfig
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.stages.ssr import (
    SSRKernelStage,
    SSRKernelStageConfig,
    SSRNBSRStage,
    SSRNBSRStageConfig,
    SSRStage,
    SSRStageConfig,
    build_seeded_model,
)
from tests.training.stage_helpers import CPU, first_last, smooth_images, train_steps

CONFIGS = Path(realsr_cli.__file__).parent / "configs"
STAGES = {
    "ssr-kernel": (SSRKernelStage, SSRKernelStageConfig),
    "ssr-nbsr": (SSRNBSRStage, SSRNBSRStageConfig),
    "ssr": (SSRStage, SSRStageConfig),
}


def _config(name: str, *overrides: str):
    cls = STAGES[name][1]
    config = from_dict(cls, load_toml(str(CONFIGS / f"{name}-tiny.toml")))
    return apply_overrides(config, list(overrides))


def _stage(name: str, *overrides: str):
    stage = STAGES[name][0](_config(name, *overrides), CPU)
    stage.load_inputs()
    return stage


def _hq(n: int = 2, size: int = 32, seed: int = 0) -> dict[str, Tensor]:
    """Smooth random HR patches (bilinear 8x8 -> size); the stages make the LR themselves."""
    return {"hq": smooth_images(n, size, seed, grid=8, mode="bilinear")}


def _train(stage, steps: int, key: str) -> list[float]:
    return train_steps(stage, steps, _hq(), key)


def _state(stage) -> dict[str, dict[str, Tensor]]:
    return {name: net.state_dict() for name, net in stage.nets.items()}


def _save(stage, path: Path) -> Path:
    export = stage.export(_state(stage))
    return save_weights(path, arch=export.arch, config=export.config, state_dict=export.state_dict)


def _equal(a: dict[str, Tensor], b: dict[str, Tensor], prefix: str = "") -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)


# --------------------------------------------------------------------------------- training
def test_kernel_stage_lowers_the_kernel_and_depth_loss():
    stage = _stage("ssr-kernel")
    assert SSRKernelStage.name == "ssr-kernel" and SSRKernelStage.ema_net == "kernel"
    assert set(stage.param_groups()) == {"kernel"}
    first, last = first_last(_train(stage, 30, "total"))
    assert last < 0.8 * first, (first, last)
    assert stage.predict(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_nbsr_stage_lowers_the_l1_loss_on_frozen_kernel_parts():
    stage = _stage("ssr-nbsr")
    assert SSRNBSRStage.name == "ssr-nbsr" and SSRNBSRStage.ema_net == "nbsr"
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    first, last = first_last(_train(stage, 30, "l1"))
    assert last < 0.9 * first, (first, last)
    after = stage.model.state_dict()
    assert _equal(before, after, "dkenet.") and _equal(before, after, "depth_estimator.")
    assert not _equal(before, after, "nbsr.")
    assert stage.predict(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_ssr_stage_lowers_the_loss_and_keeps_svkr_frozen():
    stage = _stage("ssr")
    assert SSRStage.name == "ssr" and SSRStage.ema_net == "denoiser"
    assert set(stage.param_groups()) == {"denoiser"}
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    first, last = first_last(_train(stage, 40, "total"))
    assert last < 0.95 * first, (first, last)
    after = stage.model.state_dict()
    for part in ("depth_estimator.", "dkenet.", "nbsr."):
        assert _equal(before, after, part), part
    frozen = [stage.model.depth_estimator, stage.model.dkenet, stage.model.nbsr]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())


def _one_step_target(stage, monkeypatch) -> dict[str, Tensor]:
    """Train one step recording the regression target of the loss and the denoiser's inputs
    (``x_t`` and ``sr``), then rewind the stage generator so the caller can replay that step's
    draws (degradation, t, noise)."""
    seen: dict[str, Tensor] = {}

    def fake_mse(pred, target):
        seen["target"] = target
        return (pred - target).pow(2).mean()

    net = stage.nets["denoiser"]
    forward = net.forward

    def recording_forward(x_t, t, lq, depth, kernels, sr=None):
        seen["x_t"], seen["sr"] = x_t.detach().clone(), sr
        return forward(x_t, t, lq, depth, kernels, sr)

    monkeypatch.setattr("realsr_cli.training.stages.ssr.mse_loss", fake_mse)
    monkeypatch.setattr(net, "forward", recording_forward)
    g_state = stage.generator.get_state()
    _train(stage, 1, "total")
    stage.generator.set_state(g_state)
    return seen


def test_v_prediction_regresses_v_and_samples_through_eps(monkeypatch):
    """``schedule.prediction = "v"``: the loss compares the denoiser with v, not eps; sampling
    converts the output with eps_from_v (an all-zero v gives eps = sqrt(1 - ab) x_t)."""
    stage = _stage("ssr", "model.schedule.prediction=v")
    seen = _one_step_target(stage, monkeypatch)  # then replays that step's draws
    hq = _hq()["hq"]
    stage.synthesise(hq)
    t = stage.schedule.sample_timesteps(hq.shape[0], generator=stage.generator)
    noise = torch.randn(hq.shape, generator=stage.generator)
    torch.testing.assert_close(seen["target"], stage.schedule.v_target(hq * 2 - 1, noise, t))
    assert not torch.allclose(seen["target"], noise)

    model = stage.model.eval()
    lq = torch.rand(1, 3, 8, 8)
    cond = model.condition(lq)
    x_t, tt = torch.randn(1, 3, 32, 32), torch.tensor([7])
    with torch.no_grad():
        for p in model.denoiser.out.parameters():
            p.zero_()
        eps = model.predict_eps(x_t, tt, cond)
    ab = float(model.make_schedule().alphas_cumprod[7])
    torch.testing.assert_close(eps, (1 - ab) ** 0.5 * x_t)
    assert model.upscale(lq, generator=make_generator(0)).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="prediction"):
        _config("ssr", "model.schedule.prediction=x0")


def test_residual_target_regresses_hr_minus_the_svkr_estimate(monkeypatch):
    stage = _stage("ssr", "model.target=residual", "model.denoiser.concat_sr=true")
    seen = _one_step_target(stage, monkeypatch)
    hq = _hq()["hq"]
    deg = stage.synthesise(hq)
    t = stage.schedule.sample_timesteps(hq.shape[0], generator=stage.generator)
    noise = torch.randn(hq.shape, generator=stage.generator)
    with torch.no_grad():
        sr = stage.model.svkr(deg.lq, keep_estimates=True).estimates[-1] * 2 - 1
    x0 = hq * 2 - 1 - sr
    a = stage.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    # eps-prediction: the target is the noise; the denoiser saw x_t built from the residual and
    # the SVKR estimate itself (concat_sr)
    torch.testing.assert_close(seen["target"], noise)
    torch.testing.assert_close(seen["x_t"], x_t)
    torch.testing.assert_close(seen["sr"], sr)


def test_generator_state_makes_resume_exact():
    a = _stage("ssr-nbsr")
    a.synthesise(_hq()["hq"])
    saved = a.extra_state()
    next_a = a.synthesise(_hq()["hq"])
    b = _stage("ssr-nbsr")
    b.load_extra_state(saved)
    next_b = b.synthesise(_hq()["hq"])
    assert torch.equal(next_a.lq, next_b.lq) and torch.equal(next_a.kernels, next_b.kernels)


# ------------------------------------------------------------------------------------ exports
def test_exports_chain_and_round_trip_through_the_loader(tmp_path):
    k_stage = _stage("ssr-kernel")
    _train(k_stage, 2, "total")
    k_path = _save(k_stage, tmp_path / "kernel.safetensors")
    _, k_config, k_net = load_weights(k_path)  # a complete ssr model, strict
    assert k_config == SSRConfig.tiny()
    k_sd = k_net.state_dict()
    fresh = build_seeded_model(SSRConfig.tiny(), 0).state_dict()
    assert _equal(k_sd, fresh, "denoiser.") and _equal(k_sd, fresh, "nbsr.")  # untrained: seeded
    assert not _equal(k_sd, fresh, "dkenet.")

    n_stage = _stage("ssr-nbsr", f"inputs.kernel_weights={str(k_path)!r}",
                     "inputs.allow_random_kernel=false")
    n_sd = n_stage.model.state_dict()
    assert _equal(n_sd, k_sd, "dkenet.") and _equal(n_sd, k_sd, "depth_estimator.")
    _train(n_stage, 2, "l1")
    n_path = _save(n_stage, tmp_path / "nbsr.safetensors")

    cfg = _config("ssr", f"inputs.nbsr_weights={str(n_path)!r}", "inputs.allow_random_nbsr=false")
    stage = SSRStage(cfg, CPU)
    stage.load_inputs()
    loaded = {k: v.clone() for k, v in stage.model.state_dict().items()}
    n_loaded = load_weights(n_path)[2].state_dict()
    for part in ("depth_estimator.", "dkenet.", "nbsr."):
        assert _equal(loaded, n_loaded, part), part
    _train(stage, 3, "total")
    for part in ("depth_estimator.", "dkenet.", "nbsr."):  # bit-identical after training
        assert _equal(loaded, stage.model.state_dict(), part), part

    state = _state(stage)
    export = stage.export(state)
    # `realsr train export` builds the stage without load_inputs: the checkpoint state suffices
    again = SSRStage(cfg, CPU).export(state)
    assert all(torch.equal(v, again.state_dict[k]) for k, v in export.state_dict.items())
    path = save_weights(tmp_path / "ssr.safetensors", arch=export.arch, config=export.config,
                        state_dict=export.state_dict)
    spec, config, net = load_weights(path)
    assert spec.name == "ssr" and config == cfg.model
    lq = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    seed = cfg.run.seed
    with torch.inference_mode():
        a = net.upscale(lq, generator=make_generator(seed))
        b = net.upscale(lq, generator=make_generator(seed))
    assert a.shape == (1, 3, 52, 68) and torch.equal(a, b)
    assert torch.allclose(stage.predict(lq), a, atol=1e-5)
    model = realsr_cli.load_model(str(path))
    assert torch.equal(model(lq, generator=make_generator(seed)), a)


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("name", "field", "producer"),
    [("ssr-nbsr", "kernel_weights", "ssr-kernel"), ("ssr", "nbsr_weights", "ssr-nbsr")],
)
def test_missing_upstream_weights_are_clear_errors(name, field, producer):
    random_flag = f"inputs.allow_random_{field.replace('_weights', '')}=false"
    with pytest.raises(ConfigError, match=field) as err:
        STAGES[name][0](_config(name, random_flag), CPU)
    assert producer in str(err.value) and producer in (err.value.hint or "")
    with pytest.raises(ConfigError, match="not found") as err:
        _stage(name, f"inputs.{field}='nope/x.safetensors'")
    assert producer in (err.value.hint or "")


def test_upstream_with_another_model_config_is_refused(tmp_path):
    k_stage = _stage("ssr-kernel", "model.dkenet.channels=4")
    path = _save(k_stage, tmp_path / "k4.safetensors")
    with pytest.raises(ConfigError, match="dkenet"):
        _stage("ssr-nbsr", f"inputs.kernel_weights={str(path)!r}")


def test_configs_load_and_check_the_data_section():
    for name, (_, cls) in STAGES.items():
        for suffix in ("", "-tiny"):
            config = from_dict(cls, load_toml(str(CONFIGS / f"{name}{suffix}.toml")))
            assert config.data.scale == 1
            assert config.model == (SSRConfig.tiny() if suffix else SSRConfig())
        with pytest.raises(ConfigError, match="data.scale"):
            _config(name, "data.scale=4")
    with pytest.raises(ConfigError, match="patch_size"):
        _config("ssr", "data.patch_size=36")  # LR 9: not a multiple of the UNet's 2


# ------------------------------------------------------------------------------- the trainer
def _write_images(folder: Path, size: int, count: int, seed: int) -> Path:
    import cv2

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        img = F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=size, mode="bilinear")
        arr = (img[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        cv2.imwrite(str(folder / f"img{i}.png"), arr)
    return folder


def test_trainer_resume_is_exact_and_the_checkpoint_exports(tmp_path):
    from realsr_cli.training.checkpoint import export_checkpoint
    from realsr_cli.training.trainer import Trainer, TrainHooks, TrainingInterrupted

    hr = _write_images(tmp_path / "hr", 40, 3, 0)
    val_hq = _write_images(tmp_path / "val_hq", 64, 1, 1)
    val_lq = _write_images(tmp_path / "val_lq", 16, 1, 1)
    cfg = _config("ssr", f"data.hr_dir={str(hr)!r}", "run.max_steps=4", "run.log_every=1",
                  "val.every=2", f"val.hq_dir={str(val_hq)!r}", f"val.lq_dir={str(val_lq)!r}")

    def hooks(store: dict, stop_at: int | None = None, box: list | None = None) -> TrainHooks:
        def on_step(step: int, losses: dict[str, float]) -> None:
            store[step] = losses
            if stop_at == step:
                box[0].request_stop()  # type: ignore[index]

        return TrainHooks(on_step=on_step)

    full: dict[int, dict[str, float]] = {}
    Trainer(SSRStage, cfg, tmp_path / "full", hooks=hooks(full)).run()
    part: dict[int, dict[str, float]] = {}
    box: list = [None]
    box[0] = Trainer(SSRStage, cfg, tmp_path / "part", hooks=hooks(part, 2, box))
    with pytest.raises(TrainingInterrupted) as info:
        box[0].run()
    resumed: dict[int, dict[str, float]] = {}
    Trainer(SSRStage, cfg, tmp_path / "part", resume_from=info.value.checkpoint,
            hooks=hooks(resumed)).run()
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        for key, value in full[step].items():
            assert resumed[step][key] == pytest.approx(value, abs=1e-6), (step, key)

    report = export_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt",
                               tmp_path / "ssr.safetensors", stage_cls=SSRStage)
    assert report.arch == "ssr" and report.ema
    model = realsr_cli.load_model(str(report.path))
    lq = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    assert model(lq, generator=make_generator(0)).shape == (1, 3, 52, 68)
