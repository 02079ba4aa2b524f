"""Stage 1, ``realsrt-vqgan``: the image tokenizer (VQGAN) on HR patches (Sec. 3.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.realsrt.vqgan import VQGAN
from realsr_cli.training.losses import mse_loss
from realsr_cli.training.stage import Export, Stage, StepContext
from realsr_cli.training.stages.adversarial import (
    build_discriminator,
    gan_param_groups,
)
from realsr_cli.training.stages.helpers import net_state_dict, scalars
from realsr_cli.training.stages.realsrt.config import (
    ARCH,
    TOKENIZER_PREFIX,
    RealSRTVQGANStageConfig,
)
from realsr_cli.training.stages.realsrt.parts import (
    VQGANTrainingNet,
    adversarial_step,
    adversarial_terms,
    assemble_state_dict,
    image_terms,
)
from realsr_cli.training.stages.reconstruction import (
    build_perceptual_loss,
    check_vgg_inputs,
    load_perceptual_weights,
)

log = logging.getLogger(__name__)

class RealSRTVQGANStage(Stage):
    """Stage 1: the VQGAN tokenizer (Sec. 3.1).

    Nets: ``g`` (:class:`VQGANTrainingNet` around a fresh tokenizer), ``d`` (U-Net discriminator,
    when ``loss.adversarial > 0``). Per step, with x = ``batch["hq"]`` and x^ its reconstruction:
    ``L = mse |x^ - x|^2 (+ l1) + perceptual + beta ||z_e - sg[e]||^2 (+ codebook ||sg[z_e] - e||^2)
    + adversarial * w_adapt * (-E[D(x^)])``, then the hinge D step. Logs ``usage``: the share of
    the K codes used in the batch.
    Export: a complete ``realsrt`` network (:func:`assemble_state_dict`).
    """

    name = "realsrt-vqgan"
    summary = "RealSRT 1/4: VQGAN image tokenizer (f=8, K=512) on HR patches"
    config_cls = RealSRTVQGANStageConfig
    ema_net = "g"

    def __init__(self, config: RealSRTVQGANStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        loss = config.loss
        check_vgg_inputs(loss)
        ema = loss.codebook_decay if loss.codebook_update == "ema" else None
        self.nets["g"] = VQGANTrainingNet(
            VQGAN(config.model.tokenizer), ema_decay=ema, restart_unused=loss.restart_unused_codes
        ).to(device)
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def load_inputs(self) -> None:
        load_perceptual_weights(self.perceptual, self.config.loss)

    def frozen(self) -> Iterator[nn.Module]:
        return iter([self.perceptual] if self.perceptual is not None else [])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return gan_param_groups(self, (p for p in self.net("g").parameters() if p.requires_grad))

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        with ctx.autocast():
            out = self.nets["g"](hq)
            terms = image_terms(out.image, hq, loss, self.perceptual)
            nll = torch.stack(list(terms.values())).sum()
            z_e, codes = out.z_e.float(), out.codes.float()
            terms["commit"] = loss.beta * mse_loss(z_e, codes.detach())
            if loss.codebook_update == "loss":
                terms["codebook"] = loss.codebook * mse_loss(z_e.detach(), codes)
            extra = adversarial_terms(
                self, ctx, out.image, nll, loss, lambda: self.net("g").last_layer
            )
        k = self.config.model.tokenizer.n_embed
        usage = {"usage": out.ids.unique().numel() / k}
        return scalars(adversarial_step(self, ctx, terms, extra, hq, out.image, logs=usage))

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        """Reconstruction of ``lq`` (scale 1), edge-padded to a multiple of f and cropped back."""
        vae = self.net("g").vae
        f = self.config.model.tokenizer.downsample
        h, w = lq.shape[-2:]
        x = F.pad(lq, (0, -w % f, 0, -h % f), mode="replicate") if h % f or w % f else lq
        return vae(x)[..., :h, :w]

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        theirs = net_state_dict(self.net("g"), state["g"], what=self.name)
        n = len(TOKENIZER_PREFIX)
        vae = {k[n:]: v for k, v in theirs.items() if k.startswith(TOKENIZER_PREFIX)}
        sd = assemble_state_dict(self.config.model, vae, seed=self.config.run.seed)
        return Export(ARCH, self.config.model, sd)
