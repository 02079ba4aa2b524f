"""Stage 4, ``realsrt-ccm``: the conditional controlling module on frozen tokenizer and transformers (Sec. 3.3)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from realsr_cli.training.stage import Export, StepContext
from realsr_cli.training.stages.adversarial import build_discriminator
from realsr_cli.training.stages.helpers import scalars
from realsr_cli.training.stages.realsrt.config import RealSRTCCMStageConfig
from realsr_cli.training.stages.realsrt.parts import (
    CCMNet,
    FrozenBaseStage,
    adversarial_step,
    adversarial_terms,
    image_terms,
)
from realsr_cli.training.stages.reconstruction import (
    build_perceptual_loss,
    check_vgg_inputs,
    load_perceptual_weights,
)

log = logging.getLogger(__name__)

class RealSRTCCMStage(FrozenBaseStage):
    """Stage 4: the conditional controlling module (Sec. 3.3); tokenizer, generator and critic of
    ``inputs.critic_weights`` frozen.

    Nets: ``g`` (:class:`CCMNet`: E' initialised from the tokenizer's encoder, ``zero_out`` from
    zeros), ``d`` (when ``loss.adversarial > 0``). Per step: Y_LR from bicubic(``lq``); HR tokens by
    the frozen T-step iterative decoding (no gradients, float32); ``x^ = D(h + CCM(h, lr_up))``
    with ``h = post_quant_conv(e(Y))``; ``L = mse (+ l1) + perceptual + adversarial * w_adapt
    (-E[D(x^)])`` against ``hq`` (w_adapt on ``zero_out.weight``, as the official code), then the
    hinge D step. Validation: the full model's ``upscale`` with patch aggregation.
    """

    name = "realsrt-ccm"
    summary = "RealSRT 4/4: conditional controlling module, VQGAN and transformers frozen"
    config_cls = RealSRTCCMStageConfig
    _consumes = ("tokenizer", "generator", "critic")
    _producer = "realsrt-critic"

    def __init__(self, config: RealSRTCCMStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        loss = config.loss
        check_vgg_inputs(loss)
        self._register(CCMNet(self.base))
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def load_inputs(self) -> None:
        super().load_inputs()
        load_perceptual_weights(self.perceptual, self.config.loss)

    def frozen(self) -> Iterator[nn.Module]:
        yield from super().frozen()
        if self.perceptual is not None:
            yield self.perceptual

    @torch.no_grad()
    def hr_features(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """``(h, lr_up)``: post-quant features (B,c,g,g) of the frozen masked transformer's tokens
        for LR patches ``lq`` (``model.steps`` iterations), and the upsampled LR patch."""
        base, cfg = self.base, self.config.model
        lr_ids, _, lr_up = self.tokens(lq)
        ids = base.generate(lr_ids, cfg.steps).view(-1, cfg.grid, cfg.grid)
        return base.vae.post_quant_conv(base.vae.quantizer.embed(ids)), lr_up

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        h, lr_up = self.hr_features(batch["lq"])
        with ctx.autocast():
            sr = self.base.vae.decoder(self.nets["g"](h, lr_up))
            terms = image_terms(sr, hq, loss, self.perceptual)
            nll = torch.stack(list(terms.values())).sum()
            extra = adversarial_terms(
                self, ctx, sr, nll, loss, lambda: self.net("g").zero_out.weight
            )
        return scalars(adversarial_step(self, ctx, terms, extra, hq, sr))

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self.base.upscale, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export("", state)
