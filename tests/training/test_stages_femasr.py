"""FeMaSR training stages (``femasr-hrp``, ``femasr``) on tiny configs, CPU, a few seconds each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.models.femasr import PRIOR_PREFIXES, FeMaSRNet
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.losses import VGGFeatureExtractor
from realsr_cli.training.run import config_stage
from realsr_cli.training.stages import STAGES, get_stage
from realsr_cli.training.stages.femasr import (
    FeMaSRHRPStage,
    FeMaSRHRPStageConfig,
    FeMaSRStage,
    FeMaSRStageConfig,
)
from realsr_cli.training.stages.reconstruction import load_vgg_weights
from tests.training.stage_helpers import CPU, StepCtx, smooth_images

CONFIGS = Path(__file__).resolve().parents[2] / "realsr_cli" / "configs"
STEPS = 40


def tiny(stage: str, *overrides: str):
    cls = get_stage(stage)
    cfg = from_dict(cls.config_cls, load_toml(str(CONFIGS / f"{stage}-tiny.toml")))
    return apply_overrides(cfg, list(overrides))


def batches(hq_pool: torch.Tensor, scale: int, steps: int, batch: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        hq = hq_pool[torch.randint(len(hq_pool), (batch,), generator=g)]
        lq = hq if scale == 1 else F.interpolate(hq, scale_factor=1 / scale, mode="area")
        yield {"hq": hq, "lq": lq}


def train(stage, steps: int) -> list[dict[str, float]]:
    cfg = stage.config
    optim = cfg.optim
    ctx = StepCtx(stage, optim.lr, lr_d=optim.lr_d or optim.lr, betas=optim.betas)
    for net in stage.nets.values():
        net.train()
    for module in stage.frozen():
        module.eval()
    pool = smooth_images(4, cfg.data.patch_size, seed=0)
    logs = []
    for step, batch in enumerate(batches(pool, cfg.data.scale, steps, cfg.data.batch_size)):
        ctx.step = step
        logs.append(stage.train_step(batch, ctx))
    return logs


def mean(logs, key, part: slice) -> float:
    values = [row[key] for row in logs[part]]
    return sum(values) / len(values)


def roundtrip(export, path: Path):
    save_weights(path, arch=export.arch, config=export.config, state_dict=export.state_dict)
    return load_weights(path)


@pytest.fixture(scope="module")
def hrp_run(tmp_path_factory):
    """A tiny femasr-hrp stage trained for STEPS steps and its export saved as safetensors."""
    torch.manual_seed(0)
    stage = FeMaSRHRPStage(tiny("femasr-hrp"), CPU)
    stage.load_inputs()
    logs = train(stage, STEPS)
    path = tmp_path_factory.mktemp("hrp") / "hrp.safetensors"
    export = stage.export({name: stage.net(name).state_dict() for name in stage.nets})
    spec, config, net = roundtrip(export, path)
    return stage, logs, path, export, (spec, config, net)


# ------------------------------------------------------------------------------------ registry
def test_stage_table_is_lazy_and_complete():
    assert {"femasr-hrp", "femasr"} <= set(STAGES)
    assert get_stage("femasr-hrp") is FeMaSRHRPStage
    assert get_stage("femasr") is FeMaSRStage
    with pytest.raises(UsageError) as err:
        get_stage("femasr-x")
    assert "femasr-hrp" in err.value.hint and "femasr" in err.value.hint


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("femasr*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    stage = config_stage(path.stem)
    data = load_toml(str(path))
    cfg = from_dict(get_stage(stage).config_cls, data)
    assert cfg.model.scale == cfg.data.scale
    bad = {**data, "loss": {**data["loss"], "bogus": 1}}
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(get_stage(stage).config_cls, bad)


def test_defaults_are_the_paper_values():
    hrp, sr = FeMaSRHRPStageConfig(), FeMaSRStageConfig()
    for cfg in (hrp, sr):
        assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.lr_d) == (1e-4, (0.9, 0.99), 0.0)
        assert (cfg.data.batch_size, cfg.data.patch_size) == (16, 256)
        assert cfg.schedule.kind == "constant" and cfg.ema.decay == 0
        assert (cfg.loss.l1, cfg.loss.perceptual, cfg.loss.adversarial) == (1.0, 1.0, 0.1)
        assert cfg.loss.perceptual_arch == "vgg16"
    assert (hrp.data.scale, hrp.model.lq_stage, hrp.loss.beta, hrp.loss.semantic) == (
        1,
        False,
        0.25,
        0.1,
    )
    assert hrp.loss.semantic_layer == "relu4_4"
    assert (sr.data.scale, sr.model.lq_stage, sr.loss.beta, sr.loss.alpha) == (4, True, 0.25, 1.0)
    full = from_dict(FeMaSRStageConfig, load_toml(str(CONFIGS / "femasr.toml")))
    assert full == FeMaSRStageConfig()
    full_hrp = from_dict(FeMaSRHRPStageConfig, load_toml(str(CONFIGS / "femasr-hrp.toml")))
    assert full_hrp == FeMaSRHRPStageConfig()


# ------------------------------------------------------------------------------------ stage I
def test_hrp_stage_trains(hrp_run):
    stage, logs, *_ = hrp_run
    assert set(stage.nets) == {"g", "semantic", "d"}
    assert {"l1", "perceptual", "codebook", "semantic", "g_adv", "total", "d_loss"} <= set(logs[0])
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in logs)
    for key in ("l1", "total"):
        first, last = mean(logs, key, slice(0, 5)), mean(logs, key, slice(-5, None))
        assert last < 0.85 * first, (key, first, last)


def test_hrp_export_loads_strictly_without_the_semantic_head(hrp_run):
    stage, _, path, export, (spec, config, net) = hrp_run
    assert export.arch == "femasr" and spec.name == "femasr"
    assert config == stage.config.model and not config.lq_stage and config.scale == 1
    assert set(export.state_dict) == set(FeMaSRNet(config).state_dict())
    assert not any("semantic" in k or "vgg" in k for k in export.state_dict)
    lq = torch.rand(1, 3, 13, 17)
    sr = net.upscale(lq)
    assert sr.shape == (1, 3, 13, 17)
    torch.testing.assert_close(sr, stage.predict(lq))


def test_hrp_config_validation():
    with pytest.raises(ConfigError, match="data.scale must be 1"):
        tiny("femasr-hrp", "data.scale=2", "data.patch_size=64")
    with pytest.raises(ConfigError, match="stride"):
        tiny("femasr-hrp", "loss.semantic_layer='relu3_4'")
    with pytest.raises(ConfigError, match="multiple"):
        tiny("femasr-hrp", "data.patch_size=36")


def test_missing_vgg_weights_are_refused_early():
    cfg = tiny("femasr-hrp", "loss.allow_random_vgg=false")
    with pytest.raises(ConfigError) as err:
        FeMaSRHRPStage(cfg, CPU)
    assert "vgg16_weights" in err.value.hint and "allow_random_vgg" in err.value.hint


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg_weights_load_from_pth_or_safetensors(tmp_path, suffix):
    cfg = tiny("femasr-hrp").loss
    src = VGGFeatureExtractor("vgg19", ("relu4_4",), base_width=8)
    state = {f"features.{k}": v.clone() for k, v in src.features.state_dict().items()}
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    from dataclasses import replace

    loss = replace(cfg, vgg19_weights=str(path), allow_random_vgg=False)
    dst = VGGFeatureExtractor("vgg19", ("relu4_4",), base_width=8)
    load_vgg_weights(dst, loss, purpose="test")
    assert dst.pretrained
    for a, b in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------- stage II
def prior_state(net: FeMaSRNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(PRIOR_PREFIXES)}


def test_femasr_stage_trains_on_a_frozen_exported_hrp(hrp_run, tmp_path):
    _, _, hrp_path, hrp_export, _ = hrp_run
    torch.manual_seed(0)
    cfg = tiny("femasr", f"inputs.hrp_weights='{hrp_path}'", "inputs.allow_random_hrp=false")
    stage = FeMaSRStage(cfg, CPU)
    stage.load_inputs()
    net = stage.net("g")
    before = prior_state(net)
    for key, value in before.items():
        assert torch.equal(value, hrp_export.state_dict[key]), key
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in net.named_parameters():
        assert (id(p) in trainable) == (not name.startswith(PRIOR_PREFIXES)), name
    encoder = net.multiscale_encoder.in_conv.weight.clone()

    logs = train(stage, STEPS)
    assert {"fema", "l1", "perceptual", "g_adv", "total", "match_acc", "d_loss"} <= set(logs[0])
    for key in ("l1", "total"):
        first, last = mean(logs, key, slice(0, 5)), mean(logs, key, slice(-5, None))
        assert last < 0.85 * first, (key, first, last)
    after = prior_state(net)
    assert all(torch.equal(before[k], after[k]) for k in before), "the HRP prior changed"
    assert not torch.equal(encoder, net.multiscale_encoder.in_conv.weight)

    export = stage.export({"g": net.state_dict(), "d": stage.net("d").state_dict()})
    spec, config, loaded = roundtrip(export, tmp_path / "femasr.safetensors")
    assert spec.name == "femasr" and config == cfg.model and config.lq_stage
    for key, value in before.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    lq = torch.rand(1, 3, 13, 17)
    sr = loaded.upscale(lq)
    assert sr.shape == (1, 3, 52, 68)
    torch.testing.assert_close(sr, stage.predict(lq))


def test_femasr_export_keeps_the_exact_prior_under_ema():
    torch.manual_seed(0)
    stage = FeMaSRStage(tiny("femasr", "loss.adversarial=0"), CPU)
    stage.load_inputs()
    net = stage.net("g")
    ema = {k: v * 0.999 + v * 0.001 for k, v in net.state_dict().items()}  # rounding drift
    export = stage.export({"g": ema})
    for key, value in prior_state(net).items():
        assert torch.equal(export.state_dict[key], value)
    assert "d" not in stage.nets and "d" not in stage.param_groups()
    # a stage built only to export a checkpoint (no load_inputs) takes the prior from the state
    fresh = FeMaSRStage(tiny("femasr", "loss.adversarial=0"), CPU)
    export = fresh.export({"g": net.state_dict()})
    for key, value in net.state_dict().items():
        assert torch.equal(export.state_dict[key], value), key


def test_random_hrp_prior_is_copied_and_frozen():
    torch.manual_seed(0)
    stage = FeMaSRStage(tiny("femasr"), CPU)
    with pytest.raises(UsageError, match="load_inputs"):
        stage.train_step({"lq": torch.rand(1, 3, 16, 16), "hq": torch.rand(1, 3, 64, 64)}, None)
    stage.load_inputs()
    theirs = prior_state(stage.hrp)
    assert prior_state(stage.net("g")).keys() == theirs.keys()
    assert all(torch.equal(v, theirs[k]) for k, v in prior_state(stage.net("g")).items())
    assert not any(p.requires_grad for p in stage.hrp.parameters())


def test_femasr_without_hrp_weights_says_how_to_get_one():
    cfg = tiny("femasr", "inputs.allow_random_hrp=false")
    with pytest.raises(ConfigError) as err:
        FeMaSRStage(cfg, CPU)
    assert "hrp_weights" in str(err.value)
    assert "femasr-hrp" in err.value.hint and "realsr convert" in err.value.hint


def test_femasr_rejects_an_hrp_that_does_not_fit(hrp_run):
    _, _, hrp_path, _, _ = hrp_run
    cfg = tiny("femasr", f"inputs.hrp_weights='{hrp_path}'", "model.codebook_size=64")
    stage = FeMaSRStage(cfg, CPU)
    with pytest.raises(ConfigError, match="codebook_size") as err:
        stage.load_inputs()
    assert "model.codebook_size = 32" in err.value.hint


def test_femasr_config_validation():
    with pytest.raises(ConfigError, match="data.scale"):
        tiny("femasr", "data.scale=2")
    with pytest.raises(ConfigError, match="lq_stage"):
        tiny("femasr", "model.lq_stage=false", "model.scale=1", "data.scale=1")
    with pytest.raises(ConfigError, match="swin_window"):
        tiny("femasr", "data.patch_size=80")


def test_hrp_dead_code_restarts_reseed_unused_codes_from_features():
    stage = get_stage("femasr-hrp")(tiny("femasr-hrp", "loss.restart_dead_codes=3"), CPU)
    codebook = stage.net("g").quantize_group[0].embedding.weight
    k, c = codebook.shape
    before = codebook.detach().clone()
    feats = torch.randn(2, c, 4, 4, generator=torch.Generator().manual_seed(0)) * 3.0
    only_0_and_1 = torch.zeros(2, 1, 4, 4, dtype=torch.int64)
    only_0_and_1[0, 0, 0, 0] = 1
    for step in range(2):  # no restart before the 3rd step
        assert stage._restart_dead_codes(feats, only_0_and_1, step) == {"batch_codes": 2.0}
    assert torch.equal(codebook.detach(), before)
    stage._restart_dead_codes(feats, only_0_and_1, 2)
    after = codebook.detach()
    assert torch.equal(after[:2], before[:2])  # used codes are kept
    rows = feats.permute(0, 2, 3, 1).reshape(-1, c)
    nearest = torch.cdist(after[2:], rows).min(1).values  # each re-seeded code = a feature + 1% noise
    assert nearest.max() < 0.05 * rows.std() * c**0.5 * 2 and not torch.equal(after[2:], before[2:])
    # usage counting restarts after a restart: codes used since then are kept next time
    again = after.clone()
    stage._restart_dead_codes(feats, torch.arange(k).view(1, 1, 1, k)[..., :16].reshape(1, 1, 4, 4), 3)
    stage._restart_dead_codes(feats, torch.arange(16, 32).reshape(1, 1, 4, 4) % k, 4)
    stage._restart_dead_codes(feats, torch.zeros(1, 1, 4, 4, dtype=torch.int64), 5)
    assert torch.equal(codebook.detach(), again)  # all 32 codes used within the window
    logs = train(get_stage("femasr-hrp")(tiny("femasr-hrp", "loss.restart_dead_codes=2"), CPU), 2)
    assert all("batch_codes" in row for row in logs)
    off = get_stage("femasr-hrp")(tiny("femasr-hrp"), CPU)
    assert "batch_codes" not in train(off, 1)[0]  # off by default (the paper)
    with pytest.raises(ConfigError, match="restart_dead_codes"):
        tiny("femasr-hrp", "loss.restart_dead_codes=-1")
