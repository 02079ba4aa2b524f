"""The training loop with toy stages: run folder, exact resume, GAN path, schedule, EMA, config.

The toy stages here (a tiny conv generator, plus a tiny discriminator with its own optimizer, and
a tiny FeMaSR that exports to the registry) are reused by test_ddp.py, test_checkpoint.py and
tests/cli/test_cli_train.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from realsr_cli._config import from_dict, load_toml
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.training.checkpoint import load_checkpoint
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    ValConfig,
)
from realsr_cli.training.ema import EMA
from realsr_cli.training.run import dumps_toml, resolve_config
from realsr_cli.training.schedule import LRSchedule
from realsr_cli.training.stage import Export, Stage, StepContext
from realsr_cli.training.trainer import Trainer, TrainHooks, TrainingInterrupted

# ----------------------------------------------------------------------------- toy stages


@dataclass(frozen=True)
class ToyModelConfig:
    width: int = 8


@dataclass(frozen=True)
class ToyConfig:
    run: RunConfig = RunConfig(max_steps=4, amp="off", log_every=1, checkpoint_every=2,
                               keep_checkpoints=2, device="cpu")
    data: DataConfig = DataConfig(patch_size=16, scale=2, pipeline="bsrgan", batch_size=2,
                                  num_workers=0)
    optim: OptimConfig = OptimConfig(lr=1e-3, lr_d=5e-4)
    schedule: ScheduleConfig = ScheduleConfig(kind="multistep", milestones=(3,), gamma=0.5)
    ema: EMAConfig = EMAConfig(decay=0.9)
    val: ValConfig = ValConfig(every=2, samples=1)
    model: ToyModelConfig = ToyModelConfig()


class ToyGenerator(nn.Module):
    """lq (B,3,h,w) -> (B,3,s*h,s*w): nearest upsampling plus a learned residual."""

    def __init__(self, scale: int, width: int) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(width, 3 * scale * scale, 3, padding=1))

    def forward(self, lq: Tensor) -> Tensor:
        up = F.interpolate(lq, scale_factor=self.scale, mode="nearest")
        return up + F.pixel_shuffle(self.body(lq), self.scale)


class ToyDiscriminator(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ToyStage(Stage):
    name = "toy"
    summary = "toy conv SR net (tests)"
    config_cls = ToyConfig

    def __init__(self, config: ToyConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets["g"] = ToyGenerator(config.data.scale, config.model.width).to(device)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.net("g").parameters())}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            sr = self.nets["g"](batch["lq"])
            loss = F.l1_loss(sr.float(), batch["hq"])
        ctx.backward_step(loss, "g")
        return {"l1": loss.item()}

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.net("g")(lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        raise NotImplementedError("the toy stage has no registry architecture")

    def extra_state(self) -> dict:
        return {"note": "toy", "counter": torch.tensor([1, 2])}


class ToyGANStage(ToyStage):
    """Generator + discriminator, two optimizers (the GAN path of the trainer)."""

    name = "toy-gan"
    summary = "toy conv SR net with a toy discriminator (tests)"

    def __init__(self, config: ToyConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets["d"] = ToyDiscriminator(config.model.width).to(device)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.net("g").parameters()), "d": list(self.net("d").parameters())}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        d = self.net("d")
        d.requires_grad_(False)
        sr = self.nets["g"](batch["lq"])
        l1 = F.l1_loss(sr, batch["hq"])
        l_gan = F.softplus(-self.nets["d"](sr)).mean()
        ctx.backward_step(l1 + 0.1 * l_gan, "g")
        d.requires_grad_(True)
        l_d = F.softplus(-self.nets["d"](batch["hq"])).mean() + F.softplus(self.nets["d"](sr.detach())).mean()
        ctx.backward_step(l_d, "d")
        return {"l1": l1.item(), "l_g_gan": l_gan.item(), "l_d": l_d.item()}


TINY_FEMASR = FeMaSRConfig(
    scale=4, gt_resolution=32, channels=(32, 32, 32, 32), codebook_size=8, codebook_dim=8,
    swin_dim=32, swin_depth=1, swin_heads=2, swin_window=4, swin_blocks=1, swin_input_resolution=4,
)


@dataclass(frozen=True)
class ToyFeMaSRConfig:
    run: RunConfig = RunConfig(max_steps=1, amp="off", log_every=1, checkpoint_every=0, device="cpu")
    data: DataConfig = DataConfig(patch_size=32, scale=4, pipeline="bsrgan", batch_size=1,
                                  num_workers=0)
    optim: OptimConfig = OptimConfig(lr=1e-3)
    schedule: ScheduleConfig = ScheduleConfig(kind="constant")
    ema: EMAConfig = EMAConfig(decay=0.5)
    val: ValConfig = ValConfig()
    model: FeMaSRConfig = TINY_FEMASR


class ToyFeMaSRStage(Stage):
    """A tiny FeMaSR x4 net trained with L1 only: exports to the registry's ``femasr`` arch."""

    name = "toy-femasr"
    summary = "tiny FeMaSR x4 with an L1 loss (tests)"
    config_cls = ToyFeMaSRConfig

    def __init__(self, config: ToyFeMaSRConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets["g"] = FeMaSRNet(config.model).to(device)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": [p for p in self.net("g").parameters() if p.requires_grad]}

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = F.l1_loss(self.nets["g"](batch["lq"]).image, batch["hq"])
        ctx.backward_step(loss, "g")
        return {"l1": loss.item()}

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.net("g").upscale(lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return Export("femasr", self.config.model, state["g"])


def make_images(folder: Path, n: int = 5, size: int = 24, seed: int = 0) -> Path:
    """``n`` smooth random RGB PNGs of ``size`` px (plus one 8 px image that is skipped)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.random((6, 6, 3))
        arr = np.kron(small, np.ones((size // 6 + 1, size // 6 + 1, 1)))[:size, :size]
        Image.fromarray((arr * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "tiny.png")
    return folder


def toy_config(hr_dir: Path, base: object | None = None, **sections):
    """``base`` (default ``ToyConfig()``) with data.hr_dir set and ``section={field: value}``."""
    cfg = ToyConfig() if base is None else base
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, hr_dir=str(hr_dir)))
    for name, changes in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes)})
    return cfg


def record_losses(store: dict[int, dict[str, float]], stop_at: int | None = None,
                  trainer_box: list | None = None) -> TrainHooks:
    def on_step(step: int, losses: dict[str, float]) -> None:
        store[step] = losses
        if stop_at is not None and step == stop_at:
            trainer_box[0].request_stop()

    return TrainHooks(on_step=on_step)


def final_weights(run_dir: Path) -> dict[str, Tensor]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return {f"{n}.{k}": v for n, sd in ckpt["nets"].items() for k, v in sd.items()}


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("hr"))


# ----------------------------------------------------------------------------- tests


def test_run_folder_metrics_checkpoints_config(tmp_path, hr_dir):
    cfg = toy_config(hr_dir, run={"max_steps": 5})
    seen: dict[int, dict[str, float]] = {}
    result = Trainer(ToyStage, cfg, tmp_path / "run", hooks=record_losses(seen)).run()
    run = tmp_path / "run"
    assert result.step == 5 and sorted(seen) == [1, 2, 3, 4, 5]
    assert result.checkpoint == run / "checkpoints" / "step_0000005.pt"
    # checkpoint_every=2, keep 2: step 4 and the final step 5 remain, plus last.pt
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000004.pt", "step_0000005.pt"]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True
    assert ckpt["step"] == 5 and ckpt["stage"] == "toy" and ckpt["ema"] is not None
    assert ckpt["stage_state"]["note"] == "toy" and ckpt["data"]["position"] == 10
    assert from_dict(ToyConfig, ckpt["config"]) == cfg
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["kind"] == "train" and math.isfinite(r["l1"]) for r in records)
    assert [r["lr"] for r in records] == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]  # milestone: 0-based step 3
    assert records[0]["l1"] == pytest.approx(seen[1]["l1"])
    # config.toml holds the resolved config and reads back into the same dataclass
    assert from_dict(ToyConfig, load_toml(str(run / "config.toml"))) == cfg


@pytest.mark.parametrize("stage_cls", [ToyStage, ToyGANStage])
def test_resume_is_exact(tmp_path, hr_dir, stage_cls):
    cfg = toy_config(hr_dir, run={"max_steps": 6, "checkpoint_every": 0})
    full: dict[int, dict[str, float]] = {}
    Trainer(stage_cls, cfg, tmp_path / "full", hooks=record_losses(full)).run()

    part: dict[int, dict[str, float]] = {}
    box: list = [None]
    box[0] = Trainer(stage_cls, cfg, tmp_path / "part", hooks=record_losses(part, 3, box))
    with pytest.raises(TrainingInterrupted) as info:
        box[0].run()
    assert info.value.step == 3 and info.value.checkpoint.name == "step_0000003.pt"
    assert isinstance(info.value, KeyboardInterrupt)
    # a new trainer object, as after a kill, resumes from the checkpoint
    resumed: dict[int, dict[str, float]] = {}
    Trainer(stage_cls, cfg, tmp_path / "part", resume_from=info.value.checkpoint,
            hooks=record_losses(resumed)).run()
    assert sorted(resumed) == [4, 5, 6]
    for step in (1, 2, 3):
        assert part[step] == full[step]
    for step in (4, 5, 6):
        for key, value in full[step].items():
            assert resumed[step][key] == pytest.approx(value, abs=1e-6), (step, key)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "part")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_gan_stage_uses_lr_d_and_logs_both_optimizers(tmp_path, hr_dir):
    cfg = toy_config(hr_dir, run={"max_steps": 2}, data={"scale": 1})
    Trainer(ToyGANStage, cfg, tmp_path / "run").run()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == 1e-3 and first["lr_d"] == 5e-4
    assert {"l1", "l_g_gan", "l_d"} <= set(first)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(ckpt["optimizers"]) == {"g", "d"} and set(ckpt["nets"]) == {"g", "d"}


def test_grad_clip_and_weight_decay_paths_run(tmp_path, hr_dir):
    cfg = toy_config(hr_dir, run={"max_steps": 1, "grad_clip": 1e-6}, optim={"weight_decay": 0.01},
                     ema={"decay": 0.0}, data={"scale": 1})
    trainer = Trainer(ToyStage, cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.stage.net("g").state_dict().items()}
    assert isinstance(trainer.optimizers["g"], torch.optim.AdamW) and trainer.ema is None
    trainer.run()
    after = trainer.stage.net("g").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_batch_not_divisible_by_world_is_config_error(tmp_path, hr_dir, monkeypatch):
    from realsr_cli.errors import ConfigError
    from realsr_cli.training import distributed

    monkeypatch.setattr(distributed, "setup", lambda name: (distributed.DistInfo(0, 0, 3), torch.device("cpu")))
    with pytest.raises(ConfigError, match="divisible"):
        Trainer(ToyStage, toy_config(hr_dir), tmp_path / "run")


def test_validation_metrics_and_samples(tmp_path, hr_dir):
    pytest.importorskip("realsr_cli.evaluation.metrics")
    lq_dir, hq_dir = tmp_path / "val_lq", tmp_path / "val_hq"
    make_images(hq_dir, n=2, size=16, seed=1)
    (hq_dir / "tiny.png").unlink()
    lq_dir.mkdir()
    for p in hq_dir.iterdir():
        Image.open(p).resize((8, 8), Image.BICUBIC).save(lq_dir / p.name)
    cfg = toy_config(hr_dir, run={"max_steps": 2}, val={"lq_dir": str(lq_dir), "hq_dir": str(hq_dir)})
    result = Trainer(ToyStage, cfg, tmp_path / "run").run()
    assert result.last_val is not None and result.last_val["images"] == 2
    assert math.isfinite(result.last_val["psnr"]) and 0 < result.last_val["ssim"] <= 1
    samples = sorted((tmp_path / "run" / "samples").rglob("*.png"))
    assert [p.parent.name for p in samples] == ["step_0000002"]  # samples=1 image per pass
    assert Image.open(samples[0]).size == (48, 16)  # LR | SR | HQ


def test_lr_schedule_kinds():
    multi = LRSchedule(ScheduleConfig(kind="multistep", milestones=(2, 4), gamma=0.5), 10)
    assert [multi.factor(s) for s in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    warm = LRSchedule(ScheduleConfig(kind="constant", warmup_steps=4), 10)
    assert [warm.factor(s) for s in range(5)] == [0.25, 0.5, 0.75, 1, 1]
    cos = LRSchedule(ScheduleConfig(kind="cosine", min_lr_ratio=0.1), 10)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(10) == pytest.approx(0.1)
    assert cos.factor(5) == pytest.approx(0.55)


def test_ema_math():
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.9, start_step=1)
    with torch.no_grad():
        net.weight.fill_(2.0)
    ema.update(net, 0)  # before start_step: follows the weights
    assert torch.equal(ema.module.weight, net.weight)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, 1)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 * 2 + 0.1 * 3))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_config_resolution_and_toml_writer(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = 2e-4\n[data]\npatch_size = 32\n')
    cfg = resolve_config(ToyConfig, config_file=path, overrides=["optim.lr=3e-4", "run.seed=7"],
                         data=tmp_path, max_steps=9)
    assert cfg.optim.lr == 3e-4 and cfg.data.patch_size == 32 and cfg.run.seed == 7
    assert cfg.run.max_steps == 9 and cfg.data.hr_dir == str(tmp_path)
    text = dumps_toml({"a": 1, "b": 'x"y\n\\', "c": [1.5, 1e-5, float("inf")], "d": {"e": True, "f": None},
                       "weird key": "v"})
    import tomllib

    back = tomllib.loads(text)
    assert back == {"a": 1, "b": 'x"y\n\\', "c": [1.5, 1e-5, float("inf")], "d": {"e": True},
                    "weird key": "v"}


class _DivergingStage(ToyStage):
    """The toy stage whose loss turns NaN from step 3 on (as with optim.lr = inf)."""

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        out = super().train_step(batch, ctx)
        return {"l1": float("nan")} if ctx.step >= 2 else out


def test_a_diverged_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, hr_dir):
    """Issue 18 (7): lr = inf trained 50 NaN steps and exited 0 "trained"."""
    from realsr_cli.errors import EXIT_USAGE
    from realsr_cli.training.trainer import MAX_NONFINITE_STEPS, TrainingDiverged

    cfg = toy_config(hr_dir, run={"max_steps": 100, "checkpoint_every": 2})
    with pytest.raises(TrainingDiverged, match="not finite") as info:
        Trainer(_DivergingStage, cfg, tmp_path / "run").run()
    assert info.value.exit_code == EXIT_USAGE and "step_0000002.pt" in (info.value.hint or "")
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["last.pt", "step_0000002.pt"]  # nothing saved after the loss went NaN
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert MAX_NONFINITE_STEPS + 2 < 100
