"""RealSRT training stages (``realsrt-vqgan`` -> ``-generator`` -> ``-critic`` -> ``-ccm``) on the
tiny configs, CPU, chained through their exported files like a real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.models.realsrt import CCMConfig, RealSRTNet
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.run import config_stage
from realsr_cli.training.stages import realsrt as rs
from tests.training.stage_helpers import CPU, StepCtx, smooth_images

CONFIGS = Path(__file__).resolve().parents[2] / "realsr_cli" / "configs"
STEPS = 40
STAGES = {
    "realsrt-vqgan": rs.RealSRTVQGANStage,
    "realsrt-generator": rs.RealSRTGeneratorStage,
    "realsrt-critic": rs.RealSRTCriticStage,
    "realsrt-ccm": rs.RealSRTCCMStage,
}


def tiny_config(stage: str, *overrides: str):
    cfg = from_dict(STAGES[stage].config_cls, load_toml(str(CONFIGS / f"{stage}-tiny.toml")))
    return apply_overrides(cfg, list(overrides))


def run_steps(stage, steps: int = STEPS, lr: float = 1e-3) -> list[dict[str, float]]:
    cfg = stage.config
    ctx = StepCtx(stage, lr, betas=(0.5, 0.9))
    for net in stage.nets.values():
        net.train()
    for module in stage.frozen():
        module.eval()
    pool = smooth_images(6, cfg.data.patch_size, seed=0, grid=5)
    pick = torch.Generator().manual_seed(1)
    logs = []
    for step in range(steps):
        ctx.step = step
        hq = pool[torch.randint(len(pool), (cfg.data.batch_size,), generator=pick)]
        s = cfg.data.scale
        lq = hq if s == 1 else F.interpolate(hq, scale_factor=1 / s, mode="area")
        logs.append(stage.train_step({"hq": hq, "lq": lq}, ctx))
    return logs


def head_tail(logs, key: str) -> tuple[float, float]:
    first = [row[key] for row in logs[:5]]
    last = [row[key] for row in logs[-5:]]
    return sum(first) / 5, sum(last) / 5


def save_export(stage, path: Path):
    export = stage.export({name: stage.net(name).state_dict() for name in stage.nets})
    save_weights(path, arch=export.arch, config=export.config, state_dict=export.state_dict)
    return export


def snapshot(net: RealSRTNet, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(prefixes)}


FROZEN = {
    "realsrt-generator": ("vae.", "generator.token_emb."),
    "realsrt-critic": ("vae.", "generator.", "critic.token_emb."),
    "realsrt-ccm": ("vae.", "generator.", "critic."),
}


#: per stage: (steps, Adam lr, batch size) of the chained test runs
SCHEDULE = {
    "realsrt-vqgan": (40, 1e-3, 4),
    "realsrt-generator": (60, 2e-3, 8),
    "realsrt-critic": (60, 2e-4, 8),
    "realsrt-ccm": (40, 1e-3, 4),
}


@torch.no_grad()
def critic_eval_bce(stage) -> float:
    """The critic's BCE on a fixed held-out batch with fixed masks (32 samples: low variance)."""
    hq = smooth_images(32, stage.config.data.patch_size, seed=9, grid=5)
    lq = F.interpolate(hq, scale_factor=1 / stage.config.data.scale, mode="area")
    lr_ids, hr_ids, _ = stage.tokens(lq, hq)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        masked, mask = stage.mask_tokens(hr_ids)
        pred_ids = stage.critic_input(masked, lr_ids, mask)
    logits = stage.base.critic(pred_ids, lr_ids).squeeze(-1)
    return F.binary_cross_entropy_with_logits(logits, mask.float()).item()


def train_stage(name: str, tmp: Path, upstream: Path | None):
    torch.manual_seed(0)
    steps, lr, batch = SCHEDULE[name]
    overrides = [f"data.batch_size={batch}"]
    if upstream is not None:
        field = {"realsrt-generator": "vqgan", "realsrt-critic": "generator",
                 "realsrt-ccm": "critic"}[name]
        overrides += [f"inputs.{field}_weights='{upstream}'", f"inputs.allow_random_{field}=false"]
    stage = STAGES[name](tiny_config(name, *overrides), CPU)
    stage.load_inputs()
    before = snapshot(stage.base, FROZEN[name]) if name in FROZEN else {}
    run = {"stage": stage, "before": before}
    if name == "realsrt-critic":
        run["eval_before"] = critic_eval_bce(stage)
    run["logs"] = run_steps(stage, steps, lr)
    if name == "realsrt-critic":
        run["eval_after"] = critic_eval_bce(stage)
    run["path"] = tmp / f"{name}.safetensors"
    run["export"] = save_export(stage, run["path"])
    return run


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Every stage trained (see SCHEDULE) on the previous stage's exported file."""
    tmp = tmp_path_factory.mktemp("realsrt")
    runs: dict[str, dict] = {}
    upstream = None
    for name in STAGES:
        runs[name] = train_stage(name, tmp, upstream)
        upstream = runs[name]["path"]
    return runs


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("realsrt-*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    stage = config_stage(path.stem)
    data = load_toml(str(path))
    cfg = from_dict(STAGES[stage].config_cls, data)
    assert STAGES[stage].name == stage and STAGES[stage].config_cls is type(cfg)
    bad = {**data, "model": {**data["model"], "bogus": 1}}
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(STAGES[stage].config_cls, bad)


def test_full_configs_are_the_defaults_and_the_paper_values():
    for name, cls in STAGES.items():
        full = from_dict(cls.config_cls, load_toml(str(CONFIGS / f"{name}.toml")))
        assert full == cls.config_cls(), name
        model = full.model
        assert (model.tokenizer.downsample, model.tokenizer.n_embed, model.num_tokens) == (
            8, 512, 1024,
        )
        assert (model.schedule, model.steps, full.data.patch_size) == ("sqrt", 4, 256)
    vq, gen, critic, ccm = (cls.config_cls() for cls in STAGES.values())
    assert (vq.data.scale, vq.data.batch_size, vq.optim.lr, vq.ema.decay) == (1, 64, 4e-5, 0.0)
    assert (vq.loss.perceptual, vq.loss.beta, vq.loss.codebook_update) == (0.1, 0.25, "ema")
    for cfg in (gen, critic):
        assert (cfg.data.scale, cfg.data.batch_size, cfg.run.max_steps) == (4, 64, 800_000)
        assert (cfg.optim.lr, cfg.schedule.kind, cfg.ema.decay) == (1e-4, "cosine", 0.999)
        assert cfg.optim.weight_decay > 0  # AdamW
        assert cfg.optim.lr * cfg.schedule.min_lr_ratio == pytest.approx(1e-7)
    assert (gen.model.generator.dec_depth, gen.model.generator.enc_depth) == (16, 4)
    assert (critic.model.critic.dec_depth, critic.loss.tokens) == (12, "argmax")
    assert (ccm.data.batch_size, ccm.run.max_steps, ccm.optim.lr, ccm.ema.decay) == (
        8, 80_000, 4e-5, 0.999,
    )
    # Sec. 3.3: the CCM uses the VQGAN's losses and weighting factors
    for f in dataclasses.fields(rs.RealSRTImageLossConfig):
        assert getattr(ccm.loss, f.name) == getattr(vq.loss, f.name), f.name


def test_config_validation():
    with pytest.raises(ConfigError, match="data.scale must be 1"):
        tiny_config("realsrt-vqgan", "data.scale=4")
    with pytest.raises(ConfigError, match="not a multiple"):
        tiny_config("realsrt-vqgan", "data.patch_size=66")
    with pytest.raises(ConfigError, match="data.patch_size must be"):
        tiny_config("realsrt-generator", "data.patch_size=128")
    with pytest.raises(ConfigError, match="data.scale"):
        tiny_config("realsrt-critic", "data.scale=2", "data.patch_size=32")
    with pytest.raises(ConfigError, match="ccm.enabled"):
        tiny_config("realsrt-ccm", "model.ccm.enabled=false")
    with pytest.raises(ConfigError, match="temperature"):
        tiny_config("realsrt-critic", "loss.temperature=0")


@pytest.mark.parametrize(
    ("stage", "field", "producer"),
    [
        ("realsrt-generator", "vqgan", "realsrt-vqgan"),
        ("realsrt-critic", "generator", "realsrt-generator"),
        ("realsrt-ccm", "critic", "realsrt-critic"),
    ],
)
def test_missing_upstream_weights_name_the_producing_stage(stage, field, producer):
    cfg = tiny_config(stage, f"inputs.allow_random_{field}=false")
    with pytest.raises(ConfigError) as err:
        STAGES[stage](cfg, CPU)
    assert f"inputs.{field}_weights" in str(err.value)
    assert f"`{producer}`" in err.value.hint and f"allow_random_{field}" in err.value.hint


def test_upstream_file_that_does_not_fit_is_refused(chain):
    path = chain["realsrt-vqgan"]["path"]
    cfg = tiny_config(
        "realsrt-generator", f"inputs.vqgan_weights='{path}'", "model.tokenizer.n_embed=64",
        "model.generator.dim_out=64",
    )
    stage = rs.RealSRTGeneratorStage(cfg, CPU)
    with pytest.raises(ConfigError, match="model.tokenizer") as err:
        stage.load_inputs()
    assert "realsrt-vqgan" in err.value.hint


def test_vgg_weights_are_required_without_allow_random():
    with pytest.raises(ConfigError, match="vgg16_weights"):
        rs.RealSRTVQGANStage(tiny_config("realsrt-vqgan", "loss.allow_random_vgg=false"), CPU)


# ------------------------------------------------------------------------------- stage 1
def test_vqgan_trains_and_exports_a_complete_model(chain):
    run = chain["realsrt-vqgan"]
    stage, logs, export = run["stage"], run["logs"], run["export"]
    assert set(stage.nets) == {"g", "d"}
    assert {"mse", "perceptual", "commit", "g_adv", "adv_weight", "d_loss", "usage"} <= set(logs[0])
    first, last = head_tail(logs, "mse")
    assert last < 0.7 * first, (first, last)
    # the EMA codebook is no parameter of the optimizer, and it moved
    book = stage.net("g").vae.quantizer.codebook.weight
    assert not book.requires_grad and all(p is not book for p in stage.param_groups()["g"])

    spec, config, net = load_weights(run["path"])
    assert spec.name == "realsrt" and config == stage.config.model
    assert set(export.state_dict) == set(RealSRTNet(config).state_dict())
    trained = stage.net("g").vae.state_dict()
    for key, value in net.vae.state_dict().items():
        assert torch.equal(value, trained[key]), key
    k = config.tokenizer.n_embed
    for part in (net.generator, net.critic):
        assert torch.equal(part.token_emb.weight[:k], net.vae.quantizer.codebook.codes)
    assert torch.equal(
        net.trainable_copy_encoder.model[0].weight, net.vae.encoder.model[0].weight
    )
    assert not net.zero_out.weight.any() and not net.zero_out.bias.any()
    again = stage.export({name: stage.net(name).state_dict() for name in stage.nets})
    assert all(torch.equal(again.state_dict[k], v) for k, v in export.state_dict.items())

    lq = torch.rand(1, 3, 13, 22)
    assert stage.predict(lq).shape == (1, 3, 13, 22)


def test_vqgan_codebook_loss_mode_trains_the_codebook():
    torch.manual_seed(0)
    cfg = tiny_config("realsrt-vqgan", "loss.codebook_update='loss'", "loss.adversarial=0",
                      "loss.perceptual=0")
    stage = rs.RealSRTVQGANStage(cfg, CPU)
    stage.load_inputs()
    book = stage.net("g").vae.quantizer.codebook.weight
    assert any(p is book for p in stage.param_groups()["g"]) and "d" not in stage.nets
    start = book.detach().clone()
    logs = run_steps(stage, steps=3)
    assert {"mse", "commit", "codebook"} <= set(logs[0]) and "perceptual" not in logs[0]
    assert not torch.equal(start, book)


# ------------------------------------------------------------------------------- stage 2
def test_masking_follows_the_sqrt_schedule():
    stage = rs.RealSRTGeneratorStage(tiny_config("realsrt-generator"), CPU)
    n = stage.config.model.num_tokens
    hr_ids = torch.randint(0, 32, (4000, n))
    torch.manual_seed(3)
    masked, mask = stage.mask_tokens(hr_ids)
    assert torch.equal(masked[mask], torch.full_like(masked[mask], stage.config.model.mask_id))
    assert torch.equal(masked[~mask], hr_ids[~mask])
    ratio = mask.float().mean(dim=1)
    assert (mask.sum(dim=1) >= 1).all()
    # gamma(r) = 1 - sqrt(r), r ~ U(0,1): E = 1/3 and P(ratio <= x) = 1 - (1 - x)^2
    assert ratio.mean().item() == pytest.approx(1 / 3, abs=0.02)
    xs = torch.linspace(0.05, 0.95, 19)
    empirical = (ratio[None, :] <= xs[:, None] + 0.5 / n).float().mean(dim=1)
    assert (empirical - (1 - (1 - xs) ** 2)).abs().max() < 0.04


def test_generator_trains_on_the_frozen_tokenizer(chain):
    run = chain["realsrt-generator"]
    stage, logs = run["stage"], run["logs"]
    assert set(logs[0]) == {"ce", "acc", "mask_ratio"}
    first, last = head_tail(logs, "ce")
    assert last < 0.85 * first, (first, last)
    after = snapshot(stage.base, FROZEN["realsrt-generator"])
    assert all(torch.equal(v, after[k]) for k, v in run["before"].items())
    vqgan = chain["realsrt-vqgan"]["export"].state_dict
    assert all(torch.equal(v, vqgan[k]) for k, v in after.items() if k.startswith("vae."))
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in stage.base.named_parameters():
        wanted = name.startswith("generator.") and "token_emb" not in name
        assert (id(p) in trainable) == wanted, name
    lq = torch.rand(1, 3, 13, 21)
    sr = stage.predict(lq)
    assert sr.shape == (1, 3, 52, 84) and torch.isfinite(sr).all()


# ------------------------------------------------------------------------------- stage 3
def test_critic_trains_with_the_generator_frozen(chain):
    run = chain["realsrt-critic"]
    stage, logs = run["stage"], run["logs"]
    assert set(logs[0]) == {"bce", "acc", "replaced", "mask_ratio"}
    first, last = head_tail(logs, "bce")
    assert last < 0.95 * first, (first, last)
    assert run["eval_after"] < run["eval_before"] - 0.02, (run["eval_before"], run["eval_after"])
    after = snapshot(stage.base, FROZEN["realsrt-critic"])
    assert all(torch.equal(v, after[k]) for k, v in run["before"].items())
    gen = chain["realsrt-generator"]
    gen_sd = gen["export"].state_dict
    assert all(torch.equal(v, gen_sd[k]) for k, v in after.items() if k.startswith("generator."))
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in stage.base.named_parameters():
        assert (id(p) in trainable) == (name.startswith("critic.") and "token_emb" not in name)


def test_critic_input_argmax_and_sample():
    torch.manual_seed(0)
    stage = rs.RealSRTCriticStage(tiny_config("realsrt-critic", "loss.tokens='sample'"), CPU)
    stage.load_inputs()
    logs = run_steps(stage, steps=2)
    assert all(0 <= row["replaced"] <= 1 for row in logs)
    peaked = torch.full((2, 5, 7), -1e4)
    peaked[..., 3] = 0
    assert (rs.sample_tokens(peaked, 1.0) == 3).all()
    torch.manual_seed(0)
    draws = rs.sample_tokens(torch.zeros(1, 4000, 4), 1.0)
    counts = torch.bincount(draws.flatten(), minlength=4).float() / 4000
    assert (counts - 0.25).abs().max() < 0.03


# ------------------------------------------------------------------------------- stage 4
def test_ccm_trains_with_everything_else_frozen(chain):
    run = chain["realsrt-ccm"]
    stage, logs = run["stage"], run["logs"]
    assert {"mse", "perceptual", "g_adv", "adv_weight", "total", "d_loss"} <= set(logs[0])
    first, last = head_tail(logs, "mse")
    assert last < 0.9 * first, (first, last)
    after = snapshot(stage.base, FROZEN["realsrt-ccm"])
    assert all(torch.equal(v, after[k]) for k, v in run["before"].items())
    critic_sd = chain["realsrt-critic"]["export"].state_dict
    assert all(torch.equal(v, critic_sd[k]) for k, v in after.items())
    assert stage.base.zero_out.weight.abs().sum() > 0
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in stage.base.named_parameters():
        assert (id(p) in trainable) == name.startswith(rs.CCM_PREFIXES), name


def test_ccm_net_matches_the_model_decode(chain):
    net = chain["realsrt-ccm"]["stage"].base
    cfg = net.config
    ids = torch.randint(0, cfg.tokenizer.n_embed, (2, cfg.num_tokens))
    lr_up = torch.rand(2, 3, cfg.lr_patch * cfg.scale, cfg.lr_patch * cfg.scale)
    with torch.no_grad():
        h = net.vae.post_quant_conv(net.vae.quantizer.embed(ids.view(2, cfg.grid, cfg.grid)))
        ours = net.vae.decoder(rs.CCMNet(net)(h, lr_up))
        torch.testing.assert_close(ours, net.ccm_decode(ids, lr_up))


def test_final_export_round_trip_and_seeded_upscale(chain):
    import realsr_cli

    run = chain["realsrt-ccm"]
    stage, export, path = run["stage"], run["export"], run["path"]
    spec, config, net = load_weights(path)
    assert spec.name == "realsrt" and config == stage.config.model
    for key, value in net.state_dict().items():
        assert torch.equal(value, export.state_dict[key]), key
    model = realsr_cli.load_model(str(path))
    lq = smooth_images(1, 16, seed=5, grid=5)
    a = model(lq, generator=torch.Generator().manual_seed(7))
    b = model(lq, generator=torch.Generator().manual_seed(7))
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    torch.testing.assert_close(a, stage.predict(lq))
    big = stage.predict(smooth_images(1, 24, seed=6, grid=5))
    assert big.shape == (1, 3, 96, 96) and torch.isfinite(big).all()


@pytest.mark.parametrize("name", list(STAGES))
def test_export_from_a_fresh_stage_needs_only_the_checkpointed_nets(chain, name):
    """``realsr train export`` builds the stage anew without load_inputs() and exports the
    checkpoint's nets: the result must be the trained run's export, bit for bit."""
    run = chain[name]
    state = {n: {k: v.clone() for k, v in run["stage"].net(n).state_dict().items()}
             for n in run["stage"].nets}
    torch.manual_seed(1234)  # a different init: nothing may leak from it
    fresh = STAGES[name](run["stage"].config, CPU)
    assert set(fresh.nets) == set(state)
    export = fresh.export(state)
    assert export.state_dict.keys() == run["export"].state_dict.keys()
    for key, value in run["export"].state_dict.items():
        assert torch.equal(export.state_dict[key], value), key


def test_ema_export_keeps_frozen_tensors_bit_exact(chain):
    from realsr_cli.training.ema import EMA

    stage = chain["realsrt-generator"]["stage"]
    net = stage.net("g")
    ema = EMA(net, 0.999)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.01)
    ema.update(net, 0)
    state = {"g": ema.state_dict(), "frozen": stage.net("frozen").state_dict()}
    export = stage.export(state)
    live = stage.base.state_dict()
    for key in live:
        if key.startswith(("vae.", "critic.", "generator.token_emb.")):
            assert torch.equal(export.state_dict[key], live[key]), key
    for key, value in ema.state_dict().items():
        assert torch.equal(export.state_dict["generator." + key], value), key
    assert not torch.equal(export.state_dict["generator.to_logits.weight"],
                           live["generator.to_logits.weight"])


def test_stage_contract_without_inputs():
    stage = rs.RealSRTCCMStage(tiny_config("realsrt-ccm", "loss.adversarial=0"), CPU)
    assert set(stage.nets) == {"g", "frozen"} and set(stage.param_groups()) == {"g"}
    assert not any(p.requires_grad for p in stage.net("frozen").parameters())
    assert {name for name, _ in stage.net("frozen").named_children()} == {
        "vae", "generator", "critic",
    }
    without = dataclasses.replace(stage.config.model, ccm=CCMConfig(enabled=False))
    with pytest.raises(UsageError, match="no CCM"):
        rs.CCMNet(RealSRTNet(without))


def test_tiny_export_tiles_on_its_own_patch_side(tmp_path):
    """A non-default ``lr_patch`` (16) sets the engine's tile grid: 16-px tiles, stride 8."""
    from realsr_cli.engine.api import load_model
    from realsr_cli.engine.runner import RunOptions, run_model
    from realsr_cli.registry.archs import get_arch
    from realsr_cli.registry.loader import save_weights

    cfg = tiny_config("realsrt-vqgan").model
    torch.manual_seed(0)
    net = get_arch("realsrt").build(cfg)
    path = save_weights(tmp_path / "t.safetensors", arch="realsrt", config=cfg,
                        state_dict=net.state_dict())
    model = load_model(str(path))
    assert (model.spec.default_tile, model.spec.tile_multiple) == (16, 8)
    lq = smooth_images(1, 37, seed=3, grid=5)
    result = run_model(model, lq, RunOptions(steps=1))
    assert result.sr.shape[-2:] == (37 * cfg.scale, 37 * cfg.scale)
    assert result.tiles > 1
