"""The ``bicres`` stage (the default model's recipe): it starts at bicubic, L1 training improves on
it, the export loads strictly, and ``inputs.init_weights`` continues from an export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import realsr_cli
from realsr_cli._config import apply_overrides, from_dict, load_toml
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.registry.loader import load_weights, save_weights
from realsr_cli.training.stages.bicres import BicResStage, BicResStageConfig
from tests.training.stage_helpers import CPU, first_last, smooth_images, train_steps

CONFIGS = Path(realsr_cli.__file__).parent / "configs"


def _config(*overrides: str) -> BicResStageConfig:
    return apply_overrides(from_dict(BicResStageConfig, load_toml(str(CONFIGS / "bicres-tiny.toml"))), list(overrides))


def _batch() -> dict[str, torch.Tensor]:
    hq = smooth_images(4, 32, seed=0, grid=10)
    return {"hq": hq, "lq": F.interpolate(hq, scale_factor=0.25, mode="area")}


def test_starts_at_bicubic_and_l1_training_beats_it():
    torch.manual_seed(0)
    stage = BicResStage(_config("optim.lr=3e-3"), CPU)
    batch = _batch()
    bicubic = F.interpolate(batch["lq"], scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.equal(stage.predict(batch["lq"]), bicubic)
    bicubic_l1 = float((bicubic - batch["hq"]).abs().mean())
    losses = train_steps(stage, 60, batch, "pixel")
    assert losses[0] == pytest.approx(bicubic_l1, rel=1e-5)
    first, last = first_last(losses)
    assert last < 0.8 * bicubic_l1, (bicubic_l1, first, last)


def test_export_loads_strictly_and_init_weights_continues(tmp_path):
    torch.manual_seed(0)
    stage = BicResStage(_config(), CPU)
    train_steps(stage, 3, _batch(), "pixel")
    arch, config, sd = stage.export({"g": stage.net("g").state_dict()})
    path = tmp_path / "g.safetensors"
    save_weights(path, arch=arch, config=config, state_dict=sd)
    spec, loaded_cfg, net = load_weights(str(path))
    assert spec.name == "bicres" and loaded_cfg == stage.config.model
    lq = _batch()["lq"]
    torch.testing.assert_close(net.upscale(lq), stage.predict(lq))

    again = BicResStage(_config(f"inputs.init_weights={str(path)!r}"), CPU)
    again.load_inputs()
    torch.testing.assert_close(again.predict(lq), stage.predict(lq))
    other = BicResStage(_config(f"inputs.init_weights={str(path)!r}", "model.width=4"), CPU)
    with pytest.raises(WeightsError, match="not a bicres network of this run.s shape"):
        other.load_inputs()


@pytest.mark.parametrize("bad", ["data.scale=2", "loss.pixel_weight=0.0", "loss.pixel_weight=inf"])
def test_bad_configs(bad):
    with pytest.raises(ConfigError):
        _config(bad)
