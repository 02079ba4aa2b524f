"""Stage 2, ``realsrt-generator``: the masked token generator on frozen tokenizer tokens (Sec. 3.2, Eq. 1)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.models.realsrt import adain_color_correction
from realsr_cli.models.realsrt.net import centred_reflect_pad
from realsr_cli.training.stage import Export, StepContext
from realsr_cli.training.stages.helpers import scalars
from realsr_cli.training.stages.realsrt.config import GENERATOR_PREFIX, RealSRTGeneratorStageConfig
from realsr_cli.training.stages.realsrt.parts import (
    FrozenBaseStage,
    generate_with_generator_confidence,
)

log = logging.getLogger(__name__)

class RealSRTGeneratorStage(FrozenBaseStage):
    """Stage 2: the generator (Sec. 3.2, Eq. 1) on the frozen tokenizer of ``inputs.vqgan_weights``.

    Net ``g`` = the generator (:class:`TokenTransformer`; token embedding frozen). Per step:
    Y_HR = tokens of ``hq``, Y_LR = tokens of bicubic(``lq``); mask ``round(gamma(r) N)`` random
    HR tokens; ``L_g = CE(generator(Y~_HR, Y_LR)[M], Y_HR[M])`` over the masked tokens. Logs ``ce``,
    ``acc`` (argmax accuracy on masked tokens) and ``mask_ratio``.
    Validation decodes with the generator's own confidences (ablation (a)) and the plain decoder.
    """

    name = "realsrt-generator"
    summary = "RealSRT 2/4: token generator (masked-token cross-entropy) on the frozen VQGAN"
    config_cls = RealSRTGeneratorStageConfig
    _consumes = ("tokenizer",)
    _producer = "realsrt-vqgan"

    def __init__(self, config: RealSRTGeneratorStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self._register(self.base.generator)
        self.base.generator.token_emb.requires_grad_(False)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        lr_ids, hr_ids, _ = self.tokens(batch["lq"], batch["hq"])
        assert hr_ids is not None
        masked_ids, mask = self.mask_tokens(hr_ids)
        with ctx.autocast():
            logits = self.nets["g"](masked_ids, lr_ids, mask)
        target = hr_ids[mask]
        masked_logits = logits[mask].float()
        ce = F.cross_entropy(masked_logits, target)
        ctx.backward_step(ce, "g")
        acc = (masked_logits.detach().argmax(dim=-1) == target).float().mean()
        return scalars({"ce": ce, "acc": acc, "mask_ratio": mask.float().mean()})

    @torch.no_grad()
    def _patch_sr(self, lq: Tensor) -> Tensor:
        base, cfg = self.base, self.config.model
        s, g = cfg.scale, cfg.grid
        h, w = lq.shape[-2:]
        patch, (top, left) = centred_reflect_pad(lq, cfg.lr_patch)
        lr_ids, _, _ = self.tokens(patch)
        schedule = base.schedule(cfg.steps)
        ids = generate_with_generator_confidence(base.generator, lr_ids, schedule, cfg.mask_id)
        sr = adain_color_correction(base.vae.decode_ids(ids.view(-1, g, g)), patch)
        return sr[..., top * s : (top + h) * s, left * s : (left + w) * s]

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self._patch_sr, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export(GENERATOR_PREFIX, state)
