"""SSR's denoiser: an eps-prediction UNet in pixel space, conditioned through AMF (SSR Sec. 3.2).

The paper fine-tunes Stable Diffusion's latent UNet; no such backbone is available to us, so this is
our own compact UNet working in pixel space the way UPSR's does: the HR state x_t (B,3,4h,4w) is
moved to the PixelUnshuffle(4) layout (48 channels at LR resolution h, w), so every convolution runs
at LR resolution (16x fewer positions than HR pixel space, no autoencoder to train).

Blocks are UPSR's (:mod:`realsr_cli.models.upsr.unet`): guided-diffusion ResBlocks with scale-shift
time conditioning, strided-conv downsampling, nearest+conv upsampling, the sinusoidal timestep
embedding. Layout per level l (width ``model_channels * channel_mult[l]``): ``num_res_blocks``
ResBlocks -> AMFBlock (kernel, depth, LR features of that level) -> skip -> downsample; the middle
is ResBlock -> AMFBlock -> ResBlock; the decoder mirrors the encoder with one skip per level. The
head (GroupNorm, SiLU, 3x3 conv to 48 channels) is PixelShuffled back to (B,3,4h,4w).

The modality encoders live here too (``lr_encoder``, ``depth_encoder``, ``kernel_encoder``);
:meth:`SSRDenoiser.encode` runs them once per image, :meth:`SSRDenoiser.forward` once per step.
h and w must be multiples of ``2 ** (len(channel_mult) - 1)`` (:attr:`SSRDenoiser.size_multiple`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.unet import Downsample, ResBlock, Upsample, timestep_embedding
from realsr_cli.models.ssr.amf import (
    AMFBlock,
    ModalityEncoder,
    ModalityFeatures,
    depth_input,
    kernel_input,
)
from realsr_cli.models.ssr.config import SSRDenoiserConfig

__all__ = ["SSRDenoiser"]


class SSRDenoiser(nn.Module):
    """``SSRDenoiser(x_t, t, features, lq, sr) -> eps`` (or v, see ``schedule.prediction``).

    x_t (B,3,sh,sw) on the [-1,1] image scale; t int64 (B,); features from :meth:`encode` at the
    LR size (h,w); lq (B,3,h,w) on the [-1,1] scale (used when ``concat_lq``); sr (B,3,sh,sw) the
    SVKR estimate on the [-1,1] scale (used when ``concat_sr``) -> eps (B,3,sh,sw).
    """

    def __init__(self, config: SSRDenoiserConfig, kernel_size: int, scale: int = 4) -> None:
        super().__init__()
        cfg = self.config = config
        self.scale = scale
        mc = cfg.model_channels
        widths = tuple(mc * m for m in cfg.channel_mult)
        emb = 4 * mc
        lr_w = tuple(cfg.lr_width * m for m in cfg.channel_mult)
        aux_w = tuple(cfg.aux_width * m for m in cfg.channel_mult)
        self.lr_encoder = ModalityEncoder(3, lr_w, cfg.lr_blocks)
        self.depth_encoder = ModalityEncoder(1, aux_w, 1)
        self.kernel_encoder = ModalityEncoder(kernel_size**2, aux_w, 1, embed=cfg.kernel_embed)

        def amf(level: int, channels: int) -> AMFBlock:
            feats = (aux_w[level], aux_w[level], lr_w[level])
            return AMFBlock(channels, feats, cfg.amf_hidden, cfg.amf_norm)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        state = 3 * scale * scale
        in_channels = state + (3 if cfg.concat_lq else 0) + (state if cfg.concat_sr else 0)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        levels = len(widths)
        self.enc_blocks = nn.ModuleList()
        self.enc_amf = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = widths[0]
        for level, w in enumerate(widths):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, emb, w))
                ch = w
            self.enc_blocks.append(nn.ModuleList(blocks))
            self.enc_amf.append(amf(level, w))
            if level < levels - 1:
                self.downs.append(Downsample(w))

        self.mid1 = ResBlock(ch, emb)
        self.mid_amf = amf(levels - 1, ch)
        self.mid2 = ResBlock(ch, emb)

        self.dec_blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in range(levels - 1, -1, -1):
            w = widths[level]
            blocks = [ResBlock(ch + w, emb, w)]
            blocks += [ResBlock(w, emb) for _ in range(cfg.num_res_blocks - 1)]
            ch = w
            self.dec_blocks.append(nn.ModuleList(blocks))
            if level:
                self.ups.append(Upsample(w))
        self.out = nn.Sequential(
            nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, 3 * scale * scale, 3, padding=1)
        )

    @property
    def size_multiple(self) -> int:
        """The LR-grid sides h, w must be multiples of this."""
        return 2 ** (len(self.config.channel_mult) - 1)

    def encode(self, lq: Tensor, depth: Tensor, kernels: Tensor) -> ModalityFeatures:
        """Modality features (SSR's f_1..f_3): lq (B,3,h,w) on [-1,1], depth (B,1,h,w) in [0,1],
        kernels (B,k*k,h,w) -> :class:`ModalityFeatures` (one map per level + middle each)."""
        return ModalityFeatures(
            kernel=self.kernel_encoder(kernel_input(kernels)),
            depth=self.depth_encoder(depth_input(depth)),
            lr=self.lr_encoder(lq),
        )

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        features: ModalityFeatures,
        lq: Tensor | None = None,
        sr: Tensor | None = None,
    ) -> Tensor:
        s = self.scale
        h_lr, w_lr = x_t.shape[-2] // s, x_t.shape[-1] // s
        m = self.size_multiple
        if h_lr * s != x_t.shape[-2] or w_lr * s != x_t.shape[-1] or h_lr % m or w_lr % m:
            raise ValueError(
                f"x_t sides must be {s} x multiples of {m}, got {tuple(x_t.shape[-2:])}"
            )
        x = F.pixel_unshuffle(x_t, s)
        if self.config.concat_lq:
            if lq is None:
                raise ValueError("this denoiser concatenates the LR image: pass lq")
            x = torch.cat([x, lq], dim=1)
        if self.config.concat_sr:
            if sr is None or sr.shape != x_t.shape:
                raise ValueError("this denoiser concatenates the SR estimate: pass sr like x_t")
            x = torch.cat([x, F.pixel_unshuffle(sr, s)], dim=1)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h = self.conv_in(x)
        skips = []
        for level, blocks in enumerate(self.enc_blocks):
            for block in blocks:
                h = block(h, emb)
            h = self.enc_amf[level](h, *features.at(level))
            skips.append(h)
            if level < len(self.downs):
                h = self.downs[level](h)
        h = self.mid1(h, emb)
        h = self.mid_amf(h, *features.at(len(self.enc_blocks)))
        h = self.mid2(h, emb)
        for i, blocks in enumerate(self.dec_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            if i < len(self.ups):
                h = self.ups[i](h)
        return F.pixel_shuffle(self.out(h), s)
