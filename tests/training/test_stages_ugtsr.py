"""UGTSR training stages (``ugtsr-uncertainty``, ``ugtsr``) on tiny configs, CPU, seconds each."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import realsr_cli
from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models.femasr import FeMaSRNet
from realsr_cli.models.ugtsr import PRIOR_PREFIXES, UGTSRNet
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.losses import ud_loss
from realsr_cli.training.run import config_stage
from realsr_cli.training.stages.prior import hrp_config_for
from realsr_cli.training.stages.ugtsr import (
    UGTSRStage,
    UGTSRStageConfig,
    UGTSRUncertaintyStage,
    UGTSRUncertaintyStageConfig,
)
from tests.training.stage_helpers import CPU, smooth_images
from tests.training.test_stages_femasr import (
    CONFIGS,
    batches,
    mean,
    prior_state,
    roundtrip,
    train,
)

STEPS = 40
STAGES = {"ugtsr-uncertainty": UGTSRUncertaintyStage, "ugtsr": UGTSRStage}
#: the LR-encoder keys stage II takes from stage I
ENCODER_PREFIXES = ("multiscale_encoder.", "before_quant_group.")


def tiny(stage: str, *overrides: str):
    cfg = from_dict(STAGES[stage].config_cls, load_toml(str(CONFIGS / f"{stage}-tiny.toml")))
    return apply_overrides(cfg, list(overrides))


def clone_state(net: torch.nn.Module, prefixes: tuple[str, ...] = ("",)) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(prefixes)}


def assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def save(net: torch.nn.Module, arch: str, path: Path) -> Path:
    save_weights(path, arch=arch, config=net.config, state_dict=net.state_dict())
    return path


@pytest.fixture(scope="module")
def hrp_path(tmp_path_factory):
    """A (random) tiny FeMaSR HRP saved as a `femasr-hrp` export would be."""
    torch.manual_seed(1)
    hrp = FeMaSRNet(hrp_config_for(tiny("ugtsr").model))
    return save(hrp, "femasr", tmp_path_factory.mktemp("hrp") / "hrp.safetensors")


@pytest.fixture(scope="module")
def stage1_run(hrp_path, tmp_path_factory):
    """Stage I trained for STEPS steps on the HRP file, and its export saved."""
    torch.manual_seed(0)
    cfg = tiny(
        "ugtsr-uncertainty", f"inputs.hrp_weights='{hrp_path}'", "inputs.allow_random_hrp=false"
    )
    stage = UGTSRUncertaintyStage(cfg, CPU)
    stage.load_inputs()
    head = clone_state(stage.net("g"), ("uncertainty_head.", *ENCODER_PREFIXES))
    logs = train(stage, STEPS)
    export = stage.export({name: stage.net(name).state_dict() for name in stage.nets})
    path = tmp_path_factory.mktemp("stage1") / "ugtsr-uncertainty.safetensors"
    return stage, logs, head, export, path, roundtrip(export, path)


@pytest.fixture(scope="module")
def stage2_run(hrp_path, stage1_run, tmp_path_factory):
    """Stage II on the HRP and the stage-I export: state before, logs, state after, export."""
    stage1_path = stage1_run[4]
    torch.manual_seed(0)
    cfg = tiny(
        "ugtsr",
        f"inputs.hrp_weights='{hrp_path}'",
        f"inputs.uncertainty_weights='{stage1_path}'",
        "inputs.allow_random_hrp=false",
        "inputs.allow_random_uncertainty=false",
    )
    stage = UGTSRStage(cfg, CPU)
    stage.load_inputs()
    before = {"g": clone_state(stage.net("g")), "u": clone_state(stage.uncertainty)}
    logs = train(stage, STEPS)
    export = stage.export({"g": stage.net("g").state_dict()})
    path = tmp_path_factory.mktemp("stage2") / "ugtsr-x4.safetensors"
    return stage, before, logs, export, path, roundtrip(export, path)


def assert_drops(logs, key: str, factor: float = 0.85) -> None:
    first, last = mean(logs, key, slice(0, 5)), mean(logs, key, slice(-5, None))
    print(f"{key}: {first:.4f} -> {last:.4f} (mean of the first / last 5 steps)")
    assert last < factor * first, (key, first, last)


def assert_upscales(path: Path, stage) -> None:
    """``realsr_cli.load_model(path)`` (what `realsr upscale --weights --precision fp32` runs; auto
    may pick bf16 on this CPU) on a 13x17 image."""
    model = realsr_cli.load_model(str(path), precision="fp32")
    assert model.arch == "ugtsr" and model.scale == 4
    lq = torch.rand(1, 3, 13, 17)
    sr = model(lq)
    assert sr.shape == (1, 3, 52, 68) and torch.isfinite(sr).all()
    torch.testing.assert_close(sr, stage.predict(lq))


# -------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ugtsr*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cls = STAGES[config_stage(path.stem)].config_cls
    data = load_toml(str(path))
    cfg = from_dict(cls, data)
    assert cfg.model.scale == cfg.data.scale == cfg.net_config.scale
    if config_stage(path.stem) == path.stem:
        assert cfg == cls()  # the full TOML spells out the paper defaults
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(cls, {**data, "loss": {**data["loss"], "bogus": 1}})


def test_defaults_are_the_paper_values():
    s1, s2 = UGTSRUncertaintyStageConfig(), UGTSRStageConfig()
    for cfg in (s1, s2):
        assert (cfg.optim.lr, cfg.optim.lr_d, cfg.optim.betas) == (1e-4, 0.0, (0.9, 0.99))
        assert (cfg.data.batch_size, cfg.data.patch_size, cfg.data.pipeline) == (32, 256, "bsrgan")
        assert cfg.schedule.kind == "constant"
        loss = cfg.loss
        assert (loss.fema, loss.beta, loss.alpha, loss.perceptual) == (1.0, 0.25, 1.0, 1.0)
        assert (loss.adversarial, loss.perceptual_arch) == (0.1, "vgg19")
    assert (s1.loss.esu, s1.loss.l1, s2.loss.ud, s2.loss.l1) == (1.0, 0.0, 1.0, 1.0)
    n1, n2 = s1.net_config, s2.net_config
    assert (n1.uncertainty, n1.top_k, n1.align_attention) == (True, 1, False)
    assert (n2.uncertainty, n2.top_k, n2.align_attention) == (False, 3, True)


def test_config_validation():
    with pytest.raises(ConfigError, match="esu"):
        tiny("ugtsr-uncertainty", "loss.esu=0")
    with pytest.raises(ConfigError, match="top_k"):
        tiny("ugtsr", "top_k=64")  # the tiny codebook has 32 codes
    with pytest.raises(ConfigError, match="data.scale"):
        tiny("ugtsr", "data.scale=2")


# --------------------------------------------------------------------------------------- stage I
def test_stage1_trains_head_and_encoder_on_a_frozen_prior(stage1_run, hrp_path):
    stage, logs, head, *_ = stage1_run
    net = stage.net("g")
    assert isinstance(net, UGTSRNet) and set(stage.nets) == {"g", "d"}
    assert {"esu", "fema", "perceptual", "g_adv", "total", "match_acc", "d_loss"} <= set(logs[0])
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in logs)
    assert_drops(logs, "esu")
    assert_drops(logs, "total")
    hrp = load_weights(hrp_path)[2]
    assert_equal_states(prior_state(net), prior_state(hrp))  # HRP copied, never trained
    after = clone_state(net, ("uncertainty_head.", *ENCODER_PREFIXES))
    for prefix in ("uncertainty_head.", *ENCODER_PREFIXES):  # head and encoder both trained
        assert not all(torch.equal(v, after[k]) for k, v in head.items() if k.startswith(prefix))
    with torch.no_grad():
        out = net(next(batches(smooth_images(4, 64, seed=0), 4, 1, 2))["lq"])
    assert out.log_uncertainty.shape == out.image.shape  # one map per colour channel


def test_stage1_export_keeps_the_uncertainty_head(stage1_run):
    stage, _, _, export, path, (spec, config, loaded) = stage1_run
    assert export.arch == spec.name == "ugtsr"
    assert config == stage.config.net_config and config.uncertainty
    assert any(k.startswith("uncertainty_head.") for k in export.state_dict)
    assert set(export.state_dict) == set(UGTSRNet(config).state_dict())
    sr, s = loaded.upscale_with_uncertainty(torch.rand(1, 3, 13, 17))
    assert sr.shape == s.shape == (1, 3, 52, 68)
    assert_upscales(path, stage)


def test_stage1_encoder_starts_from_a_femasr_export(hrp_path, tmp_path):
    torch.manual_seed(2)
    cfg = tiny("ugtsr-uncertainty", f"inputs.hrp_weights='{hrp_path}'")
    femasr = FeMaSRNet(cfg.model)
    src = save(femasr, "femasr", tmp_path / "femasr.safetensors")
    stage = UGTSRUncertaintyStage(apply_overrides(cfg, [f"inputs.init_weights='{src}'"]), CPU)
    stage.load_inputs()
    net = stage.net("g")
    assert_equal_states(clone_state(net, ENCODER_PREFIXES), clone_state(femasr, ENCODER_PREFIXES))
    assert not torch.equal(  # the prior is the HRP's, not the FeMaSR file's
        net.quantizer.embedding.weight, femasr.quantizer.embedding.weight
    )
    bad = UGTSRUncertaintyStage(apply_overrides(cfg, [f"inputs.init_weights='{hrp_path}'"]), CPU)
    with pytest.raises(WeightsError, match="not a FeMaSR/UGTSR SR network"):
        bad.load_inputs()


# -------------------------------------------------------------------------------------- stage II
def test_stage2_starts_from_stage1_and_trains(stage2_run, stage1_run, hrp_path):
    stage, before, logs, *_ = stage2_run
    stage1_state = stage1_run[3].state_dict
    net = stage.net("g")
    assert isinstance(net, UGTSRNet) and net.fusion is not None and net.align is not None
    assert net.uncertainty_head is None
    # encoder initialised from stage I (those keys only: strict=False over the rest)
    encoder = clone_state(net, ENCODER_PREFIXES)
    assert_equal_states(
        {k: before["g"][k] for k in encoder},
        {k: v for k, v in stage1_state.items() if k.startswith(ENCODER_PREFIXES)},
    )
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in net.named_parameters():
        assert (id(p) in trainable) == (not name.startswith(PRIOR_PREFIXES)), name
    assert not any(id(p) in trainable for p in stage.uncertainty.parameters())
    assert {"ud", "l1", "fema", "perceptual", "g_adv", "total", "match_acc"} <= set(logs[0])
    assert_drops(logs, "l1")
    assert_drops(logs, "total")
    # frozen: the HRP prior and the whole stage-I network, bit for bit; the encoder moved
    assert_equal_states(prior_state(net), prior_state(load_weights(hrp_path)[2]))
    assert_equal_states(prior_state(net), {k: before["g"][k] for k in prior_state(net)})
    assert_equal_states(clone_state(stage.uncertainty), before["u"])
    assert_equal_states(before["u"], stage1_state)
    assert not stage.uncertainty.training
    assert not all(torch.equal(v, before["g"][k]) for k, v in encoder.items())


def test_stage2_export_is_an_upscaling_model(stage2_run):
    stage, before, _, export, path, (spec, config, loaded) = stage2_run
    assert export.arch == spec.name == "ugtsr"
    assert config == stage.config.net_config and config.top_k == 3 and not config.uncertainty
    assert not any(k.startswith("uncertainty_head.") for k in export.state_dict)
    assert set(export.state_dict) == set(UGTSRNet(config).state_dict())
    assert_equal_states(prior_state(loaded), {k: before["g"][k] for k in prior_state(loaded)})
    assert_upscales(path, stage)


def test_ud_is_weighted_by_the_frozen_stage1_network(stage1_run, hrp_path):
    stage1_path, stage1 = stage1_run[4], stage1_run[5][2]
    cfg = tiny(
        "ugtsr",
        f"inputs.hrp_weights='{hrp_path}'",
        f"inputs.uncertainty_weights='{stage1_path}'",
        "loss.adversarial=0",
    )
    torch.manual_seed(0)
    stage = UGTSRStage(cfg, CPU)
    stage.load_inputs()
    batch = next(batches(smooth_images(4, 64, seed=3), 4, 1, 2))
    with torch.no_grad():
        out = stage.net("g")(batch["lq"])
        ud = stage.extra_terms(batch, out)["ud"]
        s = stage1.eval()(batch["lq"]).log_uncertainty
        torch.testing.assert_close(ud, ud_loss(out.image, batch["hq"], s))
        stage.uncertainty.uncertainty_head[2].bias.add_(torch.tensor([0.0, 1.0, 2.0]))
        changed = stage.extra_terms(batch, out)["ud"]
    assert not torch.allclose(ud, changed)


# ---------------------------------------------------------------------------- missing inputs
def test_stage2_without_stage1_weights_names_the_stage_to_run(hrp_path):
    cfg = tiny("ugtsr", f"inputs.hrp_weights='{hrp_path}'", "inputs.allow_random_uncertainty=false")
    with pytest.raises(ConfigError) as err:
        UGTSRStage(cfg, CPU)
    assert "uncertainty_weights" in str(err.value) and "ugtsr-uncertainty" in err.value.hint


@pytest.mark.parametrize("stage", ["ugtsr-uncertainty", "ugtsr"])
def test_missing_hrp_names_femasr_hrp(stage):
    with pytest.raises(ConfigError) as err:
        STAGES[stage](tiny(stage, "inputs.allow_random_hrp=false"), CPU)
    assert "hrp_weights" in str(err.value) and "femasr-hrp" in err.value.hint


def test_stage2_refuses_a_file_that_is_not_a_stage1_export(hrp_path):
    cfg = tiny(
        "ugtsr", f"inputs.hrp_weights='{hrp_path}'", f"inputs.uncertainty_weights='{hrp_path}'"
    )
    stage = UGTSRStage(cfg, CPU)
    with pytest.raises(WeightsError, match="uncertainty head") as err:
        stage.load_inputs()
    assert "ugtsr-uncertainty" in err.value.hint


def test_stage2_tune_decoder_trains_the_decoder_and_keeps_the_codebook(hrp_path, stage1_run):
    """``inputs.tune_decoder``: the prior's decoder joins the optimiser; the codebook (and the
    rest of the prior) stays the HRP's, bit for bit; the export carries the tuned decoder."""
    torch.manual_seed(0)
    cfg = tiny("ugtsr", f"inputs.hrp_weights='{hrp_path}'", f"inputs.uncertainty_weights='{stage1_run[4]}'",
               "inputs.tune_decoder=true")
    stage = UGTSRStage(cfg, CPU)
    stage.load_inputs()
    net = stage.net("g")
    decoder = ("after_quant_group.", "decoder_group.", "out_conv.")
    before = clone_state(net, decoder)
    assert before, "the prior has no decoder modules"
    trainable = {id(p) for p in stage.param_groups()["g"]}
    for name, p in net.named_parameters():
        want = name.startswith(decoder) or not name.startswith(PRIOR_PREFIXES)
        assert (id(p) in trainable) == want, name
    train(stage, 10)
    export = stage.export({"g": net.state_dict()})
    assert not all(torch.equal(export.state_dict[k], v) for k, v in before.items())  # the decoder moved
    hrp = prior_state(load_weights(hrp_path)[2])
    untouched = {k: v for k, v in hrp.items() if not k.startswith(decoder)}
    assert untouched and any("codebook" in k or "quantize" in k for k in untouched)
    assert_equal_states({k: export.state_dict[k] for k in untouched}, untouched)


def test_stage2_init_weights_starts_the_whole_network_from_a_stage2_export(
    stage2_run, stage1_run, hrp_path, tmp_path, caplog
):
    """``inputs.init_weights``: every tensor of ``g`` (encoder, fusion, Align-Attention and the
    tuned decoder) comes from the stage-II file, not from stage I; the frozen stage-I network and
    the HRP that encodes z_gt are unchanged; a file of another shape is refused by name."""
    src_path = stage2_run[4]
    src = load_weights(src_path)[2]
    with torch.no_grad():  # make the file's decoder differ from the HRP's, as a tuned one does
        for name, p in src.named_parameters():
            if name.startswith("decoder_group."):
                p.add_(0.01)
    tuned = save(src, "ugtsr", tmp_path / "tuned.safetensors")
    base = (f"inputs.hrp_weights='{hrp_path}'", f"inputs.uncertainty_weights='{stage1_run[4]}'")
    torch.manual_seed(5)
    stage = UGTSRStage(tiny("ugtsr", *base, f"inputs.init_weights='{tuned}'",
                            "inputs.tune_decoder=true"), CPU)
    stage.load_inputs()
    assert_equal_states(clone_state(stage.net("g")), clone_state(src))
    assert_equal_states(clone_state(stage.uncertainty), stage1_run[3].state_dict)
    hrp = load_weights(hrp_path)[2]
    assert_equal_states(prior_state(stage._prior()), prior_state(hrp))
    assert not torch.equal(next(stage.net("g").decoder_group.parameters()),
                           next(hrp.decoder_group.parameters()))
    # with the decoder frozen, a file whose prior is not the HRP's still loads, with a warning
    frozen = UGTSRStage(tiny("ugtsr", *base, f"inputs.init_weights='{tuned}'"), CPU)
    with caplog.at_level(logging.WARNING):
        frozen.load_inputs()
    assert "another prior than inputs.hrp_weights" in caplog.text
    assert_equal_states(clone_state(frozen.net("g")), clone_state(src))
    # another shape (top_k 1 instead of 3): refused, naming what must match
    other = UGTSRStage(tiny("ugtsr", *base, f"inputs.init_weights='{tuned}'", "top_k=1"), CPU)
    with pytest.raises(WeightsError, match="stage-II network of this run's shape") as err:
        other.load_inputs()
    assert "top_k" in err.value.hint
    # a stage-I file (uncertainty head) is not a stage-II network either
    bad = UGTSRStage(tiny("ugtsr", *base, f"inputs.init_weights='{stage1_run[4]}'"), CPU)
    with pytest.raises(WeightsError, match="stage-II network"):
        bad.load_inputs()
