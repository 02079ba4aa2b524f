"""Checkpoints: atomic files and pruning, weights_only loading, RNG round trip, export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.registry.loader import load_weights, read_metadata
from realsr_cli.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_plain,
    export_checkpoint,
    find_checkpoint,
    has_checkpoints,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from realsr_cli.training.stage import Export
from realsr_cli.training.trainer import Trainer
from tests.training.test_trainer import (
    TINY_FEMASR,
    ToyFeMaSRConfig,
    ToyFeMaSRStage,
    ToyStage,
    make_images,
    toy_config,
)


def _state(step: int) -> dict:
    return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "step": step,
            "rng": [rng_state()], "w": torch.full((2,), float(step))}


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = rng_state()
    first = _draws()
    restore_rng_state(state)
    assert _draws() == first


def test_save_prunes_keeps_last_and_loads_weights_only(tmp_path):
    assert not has_checkpoints(tmp_path) and find_checkpoint(tmp_path) is None
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, _state(step), keep=2)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_0000020.pt", "step_0000030.pt"]
    assert find_checkpoint(tmp_path) == folder / "last.pt"
    last = load_checkpoint(folder / "last.pt")
    assert last["step"] == 30 and torch.equal(last["w"], torch.full((2,), 30.0))
    restore_rng_state(last["rng"][0])  # RNG states survive weights_only loading
    # without last.pt the newest step file is used
    (folder / "last.pt").unlink()
    assert find_checkpoint(tmp_path) == folder / "step_0000030.pt" and has_checkpoints(tmp_path)


def test_unreadable_or_foreign_checkpoints_are_usage_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="not a readable"):
        load_checkpoint(bad)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="not a realsr training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_check_plain_rejects_objects():
    check_plain({"a": [1, 2.0, "x", None, torch.zeros(1)], "b": (True,)})
    with pytest.raises(ConfigError, match=r"extra\['a'\]\[0\] is a object"):
        check_plain({"a": [object()]}, "extra")


@pytest.fixture(scope="module")
def femasr_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("femasr")
    hr = make_images(root / "hr", n=2, size=40)
    Trainer(ToyFeMaSRStage, toy_config(hr, ToyFeMaSRConfig()), root / "run").run()
    return root / "run"


def test_export_writes_registry_loadable_weights(femasr_run, tmp_path):
    ckpt = femasr_run / "checkpoints" / "last.pt"
    report = export_checkpoint(ckpt, tmp_path / "w.safetensors", stage_cls=ToyFeMaSRStage)
    assert report.arch == "femasr" and report.ema and report.step == 1
    meta = read_metadata(report.path)
    assert meta["arch"] == "femasr" and meta["stage"] == "toy-femasr" and meta["ema"] == "true"
    spec, config, net = load_weights(report.path)
    state = load_checkpoint(ckpt)
    assert config == ToyFeMaSRStage.config_cls().model
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state["ema"].items())
    raw = export_checkpoint(ckpt, tmp_path / "raw.safetensors", use_ema=False, stage_cls=ToyFeMaSRStage)
    _, _, raw_net = load_weights(raw.path)
    assert not raw.ema and all(torch.equal(raw_net.state_dict()[k], v) for k, v in state["nets"]["g"].items())
    with pytest.raises(UsageError, match="safetensors"):
        export_checkpoint(ckpt, tmp_path / "w.pt", stage_cls=ToyFeMaSRStage)


def test_export_of_a_stage_with_a_wrong_export_is_a_weights_error(tmp_path):
    class BadExport(ToyStage):
        def export(self, state):
            return Export("femasr", TINY_FEMASR, state["g"])

    hr = make_images(tmp_path / "hr", n=1)
    Trainer(BadExport, toy_config(hr, run={"max_steps": 1}, data={"scale": 1}), tmp_path / "run").run()
    with pytest.raises(WeightsError, match="does not match"):
        export_checkpoint(find_checkpoint(tmp_path / "run"), tmp_path / "w.safetensors", stage_cls=BadExport)
    assert not (tmp_path / "w.safetensors").exists()
