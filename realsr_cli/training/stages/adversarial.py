"""The hinge GAN pieces of FeMaSR-style stages: :func:`build_discriminator`,
:func:`gan_param_groups` (optimizers ``g`` and ``d``), :func:`generator_adversarial_loss`
(generator side), :func:`discriminator_step` (the D step through ``ctx.backward_step(loss, "d")``)
and :func:`gan_step` (the G step on the summed terms, then the D step).

DDP note (see :mod:`realsr_cli.training.stage`): the generator-side loss calls the *unwrapped*
discriminator with its parameters frozen, so the discriminator's DDP reducer only ever sees the
discriminator step (one forward on ``cat([real, fake])``, one backward)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from realsr_cli.training.discriminators import UNetDiscriminatorConfig, UNetDiscriminatorSN
from realsr_cli.training.losses import hinge_d_loss, hinge_g_loss
from realsr_cli.training.stage import Stage, StepContext
from realsr_cli.training.stages.helpers import params_frozen

__all__ = [
    "build_discriminator",
    "discriminator_step",
    "gan_param_groups",
    "gan_step",
    "generator_adversarial_loss",
]


def build_discriminator(config: UNetDiscriminatorConfig, device: torch.device) -> nn.Module:
    """Real-ESRGAN's U-Net discriminator with spectral norm (FeMaSR Sec. 3.4) on ``device``."""
    return UNetDiscriminatorSN(config).to(device)


def gan_param_groups(
    stage: Stage, generator_params: Iterable[nn.Parameter]
) -> dict[str, list[nn.Parameter]]:
    """Optimizer groups ``{"g": generator_params}``, plus ``"d"`` (all of the discriminator's
    parameters) when the stage has a net ``d``."""
    groups = {"g": list(generator_params)}
    if "d" in stage.nets:
        groups["d"] = list(stage.net("d").parameters())
    return groups


def generator_adversarial_loss(stage: Stage, fake: Tensor, name: str = "d") -> Tensor:
    """Unweighted hinge generator loss ``-E[D(fake)]`` (FeMaSR Eq. 11 without lambda_adv).

    Runs the unwrapped discriminator ``stage.net(name)`` with its parameters frozen, so gradients
    reach only the generator and the discriminator's DDP wrapper is not involved. Call it inside
    ``ctx.autocast()``.
    """
    disc = stage.net(name)
    with params_frozen(disc):
        return hinge_g_loss(disc(fake).float())


def discriminator_step(
    stage: Stage, ctx: StepContext, real: Tensor, fake: Tensor, name: str = "d"
) -> dict[str, Tensor]:

    """One hinge discriminator step on ``real`` and (detached) ``fake`` (B,3,H,W).

    Both batches go through ``stage.nets[name]`` in a single forward; the loss
    ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]`` is stepped with ``ctx.backward_step(., name)``.
    Returns detached ``{"d_loss", "d_real", "d_fake"}`` (the last two: mean logits).
    """
    with ctx.autocast():
        logits = stage.nets[name](torch.cat([real, fake.detach()]).to(real.dtype))
    real_logits, fake_logits = logits.float().split([real.shape[0], fake.shape[0]])
    loss = hinge_d_loss(real_logits, fake_logits)
    ctx.backward_step(loss, name)
    return {
        "d_loss": loss.detach(),
        "d_real": real_logits.detach().mean(),
        "d_fake": fake_logits.detach().mean(),
    }


def gan_step(
    stage: Stage,
    ctx: StepContext,
    terms: dict[str, Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    d_step: bool,
    logs: Mapping[str, Tensor | float] | None = None,
) -> dict[str, Tensor | float]:
    """The generator step on ``total`` = the sum of the weighted ``terms`` (``ctx.backward_step(.,
    "g")``), then, when ``d_step``, one :func:`discriminator_step` on ``real`` and ``fake``.

    Returns what a stage logs, in this order: the terms, ``total``, the extra ``logs``, and the D
    step's ``d_loss``, ``d_real``, ``d_fake``.
    """
    total = torch.stack(list(terms.values())).sum()
    ctx.backward_step(total, "g")
    out: dict[str, Tensor | float] = {**terms, "total": total, **(logs or {})}
    if d_step:
        out.update(discriminator_step(stage, ctx, real, fake))
    return out
