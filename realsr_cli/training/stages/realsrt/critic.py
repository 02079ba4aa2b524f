"""Stage 3, ``realsrt-critic``: the token critic on the frozen generator's fills (Sec. 3.2, Eq. 2)."""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from realsr_cli.training.stage import Export, StepContext
from realsr_cli.training.stages.helpers import scalars
from realsr_cli.training.stages.realsrt.config import CRITIC_PREFIX, RealSRTCriticStageConfig
from realsr_cli.training.stages.realsrt.parts import FrozenBaseStage, sample_tokens

log = logging.getLogger(__name__)

class RealSRTCriticStage(FrozenBaseStage):
    """Stage 3: the critic (Sec. 3.2, Eq. 2); tokenizer and generator of
    ``inputs.generator_weights`` frozen.

    Net ``g`` = the critic (token embedding frozen). Per step: mask HR tokens as in stage 2, let
    the frozen generator fill the masked positions (``loss.tokens``: argmax or a sample), keep the
    others; ``L_c = BCE(critic(Y^_HR, Y_LR), M)`` averaged over all tokens. Logs ``bce``, ``acc``
    (logit > 0 vs. mask), ``replaced`` (share of masked tokens the generator got wrong) and
    ``mask_ratio``. Validation runs the full iterative decoding (the CCM adds nothing yet).
    """

    name = "realsrt-critic"
    summary = "RealSRT 3/4: token critic (BCE on masked/replaced tokens), generator frozen"
    config_cls = RealSRTCriticStageConfig
    _consumes = ("tokenizer", "generator")
    _producer = "realsrt-generator"

    def __init__(self, config: RealSRTCriticStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self._register(self.base.critic)
        self.base.critic.token_emb.requires_grad_(False)

    @torch.no_grad()
    def critic_input(
        self, masked_ids: Tensor, lr_ids: Tensor, mask: Tensor, ctx: StepContext | None = None
    ) -> Tensor:
        """Y^_HR (B,N): the frozen generator's tokens at the masked positions, ``masked_ids`` (the
        ground truth) elsewhere."""
        with ctx.autocast() if ctx is not None else contextlib.nullcontext():
            logits = self.base.generator(masked_ids, lr_ids, mask)
        loss = self.config.loss
        if loss.tokens == "sample":
            pred = sample_tokens(logits, loss.temperature)
        else:
            pred = logits.float().argmax(dim=-1)
        return torch.where(mask, pred, masked_ids)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        lr_ids, hr_ids, _ = self.tokens(batch["lq"], batch["hq"])
        assert hr_ids is not None
        masked_ids, mask = self.mask_tokens(hr_ids)
        pred_ids = self.critic_input(masked_ids, lr_ids, mask, ctx)
        with ctx.autocast():
            logits = self.nets["g"](pred_ids, lr_ids).squeeze(-1)
        labels = mask.float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        ctx.backward_step(bce, "g")
        acc = ((logits.detach() > 0) == mask).float().mean()
        replaced = (pred_ids != hr_ids)[mask].float().mean()
        return scalars(
            {"bce": bce, "acc": acc, "replaced": replaced, "mask_ratio": labels.mean()}
        )

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self.base.upscale, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export(CRITIC_PREFIX, state)
