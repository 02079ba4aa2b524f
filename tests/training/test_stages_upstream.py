"""The pieces stages share: upstream inputs (RealSRT, SSR), the GAN step and optimizer groups."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from realsr_cli.errors import ConfigError
from realsr_cli.training.discriminators import UNetDiscriminatorConfig
from realsr_cli.training.stage import Stage
from realsr_cli.training.stages.adversarial import build_discriminator, gan_param_groups, gan_step
from realsr_cli.training.stages.realsrt.config import RealSRTCCMInputsConfig
from realsr_cli.training.stages.ssr import SSRNBSRInputsConfig
from realsr_cli.training.stages.upstream import config_differences

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("inputs", "field", "hint_start"),
    [
        (
            RealSRTCCMInputsConfig(),
            "critic_weights",
            "train `realsrt-critic` and pass its export (a realsrt .safetensors): set ",
        ),
        (
            SSRNBSRInputsConfig(),
            "kernel_weights",
            "train `ssr-kernel` and export it (`realsr train export RUN -o "
            "ssr-kernel.safetensors`), then set ",
        ),
    ],
)
def test_require_names_the_field_the_producer_and_the_escape(inputs, field, hint_start):
    with pytest.raises(ConfigError) as err:
        inputs.require("some-stage")
    producer = type(inputs).producer
    assert str(err.value) == (
        f"some-stage: inputs.{field} is not set; this stage builds on the output of the "
        f"`{producer}` stage"
    )
    part = field.replace("_weights", "")
    assert err.value.hint == (
        hint_start + f'inputs.{field} = "PATH" in the config or --set inputs.{field}=PATH '
        f"(inputs.allow_random_{part} = true is for smoke tests only)"
    )
    assert inputs.path() == ""


def test_require_passes_with_a_file_or_the_random_escape():
    assert RealSRTCCMInputsConfig(critic_weights="x.safetensors").path() == "x.safetensors"
    RealSRTCCMInputsConfig(critic_weights="x.safetensors").require("s")
    RealSRTCCMInputsConfig(allow_random_critic=True).require("s")
    SSRNBSRInputsConfig(allow_random_kernel=True).require("s")


def test_config_differences_keep_the_given_order():
    class Cfg:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    theirs, ours = Cfg(a=1, b=2, c=3), Cfg(a=1, b=5, c=4)
    assert config_differences(theirs, ours, ["c", "a", "b"]) == [
        "model.c: file 3, config 4",
        "model.b: file 2, config 5",
    ]


class _Ctx:
    """A StepContext that records the optimizers it stepped."""

    def __init__(self) -> None:
        self.stepped: list[str] = []

    def autocast(self):
        return contextlib.nullcontext()

    def backward_step(self, loss, optimizer: str) -> None:
        loss.backward()
        self.stepped.append(optimizer)


class _GANStage(Stage):
    name = "test-gan"

    def __init__(self, with_d: bool) -> None:
        super().__init__(None, CPU)
        self.nets["g"] = nn.Conv2d(3, 3, 1)
        if with_d:
            self.nets["d"] = build_discriminator(UNetDiscriminatorConfig(num_feat=4), CPU)

    def param_groups(self):
        return gan_param_groups(self, self.net("g").parameters())

    def train_step(self, batch, ctx):  # pragma: no cover - not used
        raise NotImplementedError

    def predict(self, lq):  # pragma: no cover - not used
        raise NotImplementedError

    def export(self, state):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.mark.parametrize("with_d", [False, True])
def test_gan_step_orders_the_logs_and_steps_g_then_d(with_d):
    stage = _GANStage(with_d)
    groups = stage.param_groups()
    assert list(groups) == (["g", "d"] if with_d else ["g"])
    real = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fake = stage.nets["g"](real)
    terms = {"l1": (fake - real).abs().mean(), "mse": (fake - real).square().mean()}
    ctx = _Ctx()
    logs = gan_step(stage, ctx, terms, real, fake, d_step=with_d, logs={"extra": 1.0})
    keys = ["l1", "mse", "total", "extra"] + (["d_loss", "d_real", "d_fake"] if with_d else [])
    assert list(logs) == keys
    assert torch.equal(logs["total"], terms["l1"] + terms["mse"])
    assert ctx.stepped == (["g", "d"] if with_d else ["g"])
