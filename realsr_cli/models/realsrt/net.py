"""RealSRTNet: tokenise, iteratively generate HR tokens, decode with the CCM, colour-correct.

Peng et al., "Confidence-Based Iterative Generation for Real-World Image Super-Resolution", ECCV
2024. One call processes one 64 x 64 LR patch per batch item, like the official
``RealSRT.forward_with_ccm`` followed by the AdaIN colour correction of ``inference_realsrt.py``:

1. ``lr_up = bicubic_x4(lq)`` (B,3,256,256); ``Y_LR = VQ(E(lr_up))`` (B,1024) (Sec. 3.2).
2. Iterative generation (Sec. 3.2), T steps from an all-mask canvas: the generator fills masked
   tokens with their argmax, the critic scores all tokens, the ``k_s`` least confident are masked
   again (:class:`~realsr_cli.diffusion.masking.MaskSchedule`; 512, 299, 137, 0 for T = 4).
3. CCM decoding (Sec. 3.3): ``h = post_quant_conv(e(Y_HR))``;
   ``h += zero_out(fuse_res2(fuse_attn(fuse_res1([h, E'(lr_up)]))))``; ``out = D(h)``.
4. AdaIN colour correction (Sec. 3.4): per image and channel, ``out``'s mean/std are replaced by
   the LR patch's (unbiased variance + 1e-5).

Whole images: the engine cuts the LR image into 64 x 64 patches with stride 32 (overlap 32) and
blends the x4 outputs with a centred Gaussian of variance 0.05 in normalised coordinates
(``exp(-((x - (n-1)/2) / n)^2 / (2 * 0.05))`` per axis, Eq. 3), then clamps. ``upscale`` accepts
smaller inputs too and pads them to 64 like the official whole-image padding (centred reflection).

Deterministic: argmax tokens and top-k re-masking draw no random numbers, so ``generator`` and
``noise`` are ignored; ``steps`` sets T (default ``config.steps`` = 4).

State dict: the official ``RealSRT`` keys 1:1 (``vae.*``, ``generator.*``, ``critic.*``,
``trainable_copy_encoder.*``, ``fuse_res1.*``, ``fuse_attn.*``, ``fuse_res2.*``, ``zero_out.*``)
minus the codebook's training-only EMA buffers (see :mod:`.convert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.diffusion.masking import MaskSchedule
from realsr_cli.errors import UsageError
from realsr_cli.models._blocks.reference import reference_enabled
from realsr_cli.models._blocks.upscaler import Sampling, Upscaler
from realsr_cli.models.realsrt.config import RealSRTConfig
from realsr_cli.models.realsrt.transformer import TokenTransformer
from realsr_cli.models.realsrt.vqgan import VQGAN, AttnBlock, Encoder, ResidualBlock

__all__ = [
    "ADAIN_EPS",
    "DecodeStep",
    "RealSRTNet",
    "adain_color_correction",
    "centred_reflect_pad",
]

#: epsilon added to the variances of the AdaIN colour correction (official ``calc_mean_std``)
ADAIN_EPS = 1e-5


def _mean_std(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-image, per-channel mean and sqrt(unbiased var + eps) of (B,C,H,W), as (B,C,1,1)."""
    flat = x.flatten(2)
    var, mean = torch.var_mean(flat, dim=2, correction=1)
    return mean[..., None, None], (var + eps).sqrt()[..., None, None]


def adain_color_correction(content: Tensor, style: Tensor, eps: float = ADAIN_EPS) -> Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017) used for colour correction.

    ``content`` (B,C,H,W) gets the per-channel mean and standard deviation of ``style``
    (B,C,h,w) (sizes may differ): ``(content - mu_c) / sigma_c * sigma_s + mu_s`` with
    ``sigma = sqrt(unbiased var + eps)``. RealSRT applies it to every HR patch against its LR
    patch (Sec. 3.4, following StableSR).
    """
    c_mean, c_std = _mean_std(content, eps)
    s_mean, s_std = _mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


def _reflect_pad_1d(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Reflect-pad one spatial dim, repeating the reflection when a pad exceeds ``size - 1``."""
    while before > 0 or after > 0:
        size = x.shape[dim]
        if size == 1:  # nothing to reflect: repeat the single pixel
            return F.pad(x, _pad_arg(before, after, dim), mode="replicate")
        b, a = min(before, size - 1), min(after, size - 1)
        x = F.pad(x, _pad_arg(b, a, dim), mode="reflect")
        before, after = before - b, after - a
    return x


def _pad_arg(before: int, after: int, dim: int) -> tuple[int, int, int, int]:
    return (before, after, 0, 0) if dim == -1 else (0, 0, before, after)


def centred_reflect_pad(x: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad (B,C,h,w) with h, w <= size to (B,C,size,size), centred.

    The official whole-image padding for an image no larger than one patch: top/left get
    ``(size - h) // 2``, bottom/right the rest. Pads the reflection would not cover (sides below
    half the patch, where the official ``F.pad`` fails) reflect repeatedly. Returns the padded
    tensor and the (top, left) offsets of the original pixels.
    """
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    x = _reflect_pad_1d(x, top, size - h - top, dim=-2)
    x = _reflect_pad_1d(x, left, size - w - left, dim=-1)
    return x, (top, left)


@dataclass
class DecodeStep:
    """What one iteration of :meth:`RealSRTNet.generate` saw and did (all (B,N) unless noted).

    ``in_ids``: generator input (mask id where masked); ``mask``: bool, masked positions;
    ``logits``: (B,N,K) generator logits; ``pred_ids``: argmax filled in at masked positions
    (the critic input); ``scores``: critic logits (large = unconfident); ``out_ids``: ids after
    re-masking (the next step's ``in_ids``; the final tokens after the last step).
    """

    in_ids: Tensor
    mask: Tensor
    logits: Tensor
    pred_ids: Tensor
    scores: Tensor
    out_ids: Tensor


class RealSRTNet(Upscaler):
    """RealSRT (Fig. 2): VQGAN tokenizer, generator, critic, conditional controlling module."""

    def __init__(self, config: RealSRTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RealSRTConfig()
        tok = config.tokenizer
        self.vae = VQGAN(tok)
        self.generator = TokenTransformer(
            config.generator, embed_dim=tok.embed_dim, n_embed=tok.n_embed
        )
        self.critic = TokenTransformer(config.critic, embed_dim=tok.embed_dim, n_embed=tok.n_embed)
        if config.ccm.enabled:
            width = config.ccm_width
            self.trainable_copy_encoder = Encoder(tok)
            self.fuse_res1 = ResidualBlock(width, width)
            self.fuse_attn = AttnBlock(width)
            self.fuse_res2 = ResidualBlock(width, width)
            self.zero_out = nn.Conv2d(width, tok.embed_dim, 1)
            nn.init.zeros_(self.zero_out.weight)
            nn.init.zeros_(self.zero_out.bias)
            # the official CCM starts as a copy of the pretrained encoder
            self.trainable_copy_encoder.load_state_dict(self.vae.encoder.state_dict())
        # the token embeddings start as copies of the codebook (the official constructor does so)
        with torch.no_grad():
            for net in (self.generator, self.critic):
                net.token_emb.weight[: tok.n_embed].copy_(self.vae.quantizer.codebook.codes)

    # ----------------------------------------------------------------- stages
    def upsample(self, lq: Tensor) -> Tensor:
        """Bicubic x``scale`` of the LR patch (B,3,h,w) -> (B,3,sh,sw), the tokenizer's input."""
        return F.interpolate(
            lq, scale_factor=self.config.scale, mode="bicubic", align_corners=False
        )

    def tokenize(self, lr_up: Tensor) -> Tensor:
        """LR tokens Y_LR (B,N) int64, row-major, of the upsampled LR patch (B,3,256,256)."""
        return self.vae.tokenize(lr_up).flatten(1)

    def schedule(self, steps: int) -> MaskSchedule:
        """The mask schedule for T = ``steps`` over this network's N tokens."""
        cfg = self.config
        schedule = MaskSchedule(cfg.num_tokens, mask_id=cfg.mask_id, schedule=cfg.schedule)
        return schedule.set_timesteps(steps)

    def generate(
        self, lr_ids: Tensor, steps: int | None = None, *, trace: list[DecodeStep] | None = None
    ) -> Tensor:
        """Confidence-based iterative generation (Sec. 3.2): LR ids (B,N) -> HR ids (B,N).

        Starts from all mask ids; at step s the generator predicts every masked token (argmax),
        unmasked tokens are copied, the critic scores all tokens and the ``num_masked(s)`` with
        the largest critic logits are masked for step s + 1. The LR context of both networks (and
        its cross-attention keys/values) is computed once, not per step. With ``trace``, one
        :class:`DecodeStep` per step is appended to it.
        """
        steps = self.config.steps if steps is None else steps
        schedule = self.schedule(steps)
        # the reference path (``_blocks.reference``) re-encodes the LR tokens every step, as the
        # official loop does
        reference = reference_enabled()
        gen_context = None if reference else self.generator.context(lr_ids)
        critic_context = None if reference else self.critic.context(lr_ids)
        ids = torch.full_like(lr_ids, schedule.mask_id)
        for step in range(steps):
            mask = schedule.is_masked(ids)
            if reference:
                logits = self.generator(ids, lr_ids, mask)
            else:
                logits = self.generator.decode(ids, gen_context, mask)
            pred_ids = torch.where(mask, logits.argmax(dim=-1), ids)
            if reference:
                scores = self.critic(pred_ids, lr_ids).squeeze(-1)
            else:
                scores = self.critic.decode(pred_ids, critic_context).squeeze(-1)
            out_ids = schedule.step(pred_ids, scores, step)
            if trace is not None:
                trace.append(DecodeStep(ids, mask, logits, pred_ids, scores, out_ids))
            ids = out_ids
        return ids

    def ccm_decode(self, ids: Tensor, lr_up: Tensor) -> Tensor:
        """Decode HR ids (B,N) or (B,h,w) to the image (B,3,256,256) under LR control (Sec. 3.3).

        Without a CCM (``config.ccm.enabled=False``) this is the plain VQGAN decoder.
        """
        grid = self.config.grid
        z_q = self.vae.quantizer.embed(ids.reshape(ids.shape[0], grid, grid))
        h = self.vae.post_quant_conv(z_q)
        if self.config.ccm.enabled:
            r = torch.cat([h, self.trainable_copy_encoder(lr_up)], dim=1)
            r = self.fuse_res2(self.fuse_attn(self.fuse_res1(r)))
            h = h + self.zero_out(r)
        return self.vae.decoder(h)

    def forward(self, lq: Tensor, steps: int | None = None) -> Tensor:
        """The official ``forward_with_ccm``: LR patches (B,3,64,64) in [0,1] -> (B,3,256,256).

        No colour correction (see :meth:`upscale`); values unbounded.
        """
        self._check_patch(lq, exact=True)
        lr_up = self.upsample(lq)
        ids = self.generate(self.tokenize(lr_up), steps)
        return self.ccm_decode(ids, lr_up)

    # ----------------------------------------------------------------- model contract
    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        """:meth:`upscale`'s part: one LR patch per item, ``lq`` (B,3,h,w) in [0,1], h, w <= 64.

        Returns ``sr`` (B,3,4h,4w) float, NOT clamped: :meth:`forward` then AdaIN colour
        correction against the (padded) LR patch, exactly the official per-patch processing.
        Inputs smaller than 64 are reflect-padded, centred, and the result cropped. Larger
        images must be tiled by the engine (64 px tiles, overlap 32, Gaussian variance 0.05).
        Deterministic: ``generator`` and ``noise`` are ignored; ``steps`` is T (default 4).
        """
        self._check_patch(lq, exact=False)
        size, s = self.config.lr_patch, self.config.scale
        h, w = lq.shape[-2:]
        patch, (top, left) = centred_reflect_pad(lq, size)
        sr = adain_color_correction(self(patch, sampling.steps), patch)
        return sr[..., top * s : (top + h) * s, left * s : (left + w) * s]

    def _check_patch(self, lq: Tensor, *, exact: bool) -> None:
        size = self.config.lr_patch
        if lq.dim() != 4 or lq.shape[1] != self.config.tokenizer.image_channels:
            raise UsageError(f"RealSRT expects (B,3,H,W) LR patches, got {tuple(lq.shape)}")
        h, w = lq.shape[-2:]
        if (exact and (h, w) != (size, size)) or h > size or w > size:
            raise UsageError(
                f"RealSRT runs on {size}x{size} LR patches, got {h}x{w}",
                hint=f"tile the image: tile {size}, overlap {size // 2}, Gaussian blending (variance 0.05)",
            )
