"""UPSR's denoiser f(x_t, y, g(y), t): a Swin-UNet in pixel space (UPSR Sec. 3.4, Fig. 4).

The ResShift v3 UNet (guided-diffusion ResBlocks with scale-shift time conditioning, a Swin layer
after the first ResBlock of every level and in the middle) with UPSR's two changes: the input is the
PixelUnshuffle(4) of the HR state instead of a VQGAN latent, and the VQGAN decoder is replaced by a
nearest-neighbour x4 head (two nearest x2 upsamplings, each followed by a 3x3 conv). It predicts x0.

Layouts: ``x`` (B, in_channels, h, w) is the already-normalised state (``ResShiftSchedule.scale_input``
of x_t) in the PixelUnshuffle(scale) layout; ``lq`` (B, lq_channels, h, w) is
``PixelUnshuffle(scale)(cat[g(y), y_bicubic])``; ``t`` int64 (B,); output (B, out_channels, 4h, 4w),
the predicted x0 in HR pixels on the [-1,1] scale. h and w must be multiples of
``window_size * 2 ** (levels - 1)`` (64 for the release).

State-dict keys are the official ``UNetModelSwin`` keys, 1:1 (``time_embed.*``, ``input_blocks.*``,
``middle_block.*``, ``output_blocks.*``, ``conv_before_upsample.0``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``), including the int64 ``relative_position_index`` and the (unused)
float ``attn_mask`` buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import reference_enabled
from realsr_cli.models._blocks.unet import Downsample, ResBlock, Upsample, timestep_embedding
from realsr_cli.models.upsr.config import UPSRDenoiserConfig
from realsr_cli.models.upsr.swin import SwinLayer

__all__ = ["SwinUNet", "timestep_embedding"]


class _TimestepSequential(nn.Sequential):
    """A sequence whose ResBlocks also receive the time embedding (official ``TimestepEmbedSequential``)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _contiguous_state(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict
) -> None:
    """state_dict post-hook: channels-last weights are exported as plain contiguous tensors."""
    for key, value in state_dict.items():
        if (
            key.startswith(prefix)
            and not isinstance(value, nn.Parameter)
            and not value.is_contiguous()
        ):
            state_dict[key] = value.contiguous()


class SwinUNet(nn.Module):
    """The UPSR denoiser (official ``UNetModelSwin`` with ``cond_lq=True, lq_size=image_size``).

    ``forward(x, t, lq) -> x0`` with the layouts of the module docstring.
    """

    def __init__(self, config: UPSRDenoiserConfig) -> None:
        super().__init__()
        cfg = self.config = config
        if len(cfg.num_res_blocks) != len(cfg.channel_mult):
            raise ValueError("num_res_blocks and channel_mult must have the same length")
        mc = cfg.model_channels
        emb_dim = 4 * mc
        heads = cfg.swin_embed_dim // cfg.num_head_channels

        def swin(ch: int, res: int) -> SwinLayer:
            return SwinLayer(
                ch, cfg.swin_embed_dim, heads, cfg.window_size, cfg.swin_depth, res, cfg.mlp_ratio
            )

        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList(
            [_TimestepSequential(nn.Conv2d(cfg.in_channels + cfg.lq_channels, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        res = cfg.image_size
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if j == 0 and res in cfg.attention_resolutions:
                    layers.append(swin(ch, res))
                self.input_blocks.append(_TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(_TimestepSequential(Downsample(ch)))
                skip_channels.append(ch)
                res //= 2

        self.middle_block = _TimestepSequential(
            ResBlock(ch, emb_dim), swin(ch, res), ResBlock(ch, emb_dim)
        )

        self.output_blocks = nn.ModuleList()
        for level in range(last, -1, -1):
            mult = cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * mc)]
                ch = mult * mc
                if i == 0 and res in cfg.attention_resolutions:
                    layers.append(swin(ch, res))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(_TimestepSequential(*layers))

        nf = cfg.num_feat
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(ch, nf, 3, padding=1), nn.LeakyReLU(0.01)
        )
        self.conv_up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, cfg.out_channels, 3, padding=1)

        # Speed (CPU oneDNN, ~10%): conv weights and activations live channels-last. state_dict()
        # still hands out standard contiguous tensors, so saved files and key/shape checks see no change.
        self.to(memory_format=torch.channels_last)
        self.register_state_dict_post_hook(_contiguous_state)

    @property
    def size_multiple(self) -> int:
        """h and w of ``x`` must be multiples of this."""
        return self.config.window_size * 2 ** (len(self.config.channel_mult) - 1)

    def forward(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """x (B,in_channels,h,w) scaled state, t int64 (B,), lq (B,lq_channels,h,w) -> x0 (B,3,4h,4w)."""
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        # channels-last activations: ~10% faster oneDNN convolutions on CPU, same values (the
        # reference path keeps the official NCHW layout; its caller converts the weights back)
        h = torch.cat([x, lq], dim=1)
        if not reference_enabled():
            h = h.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self._head(h).contiguous()

    def _head(self, h: Tensor) -> Tensor:
        """Nearest-neighbour x4 reconstruction (replaces the VQGAN decoder, UPSR Sec. 3.4)."""
        h = self.conv_before_upsample(h)
        h = F.leaky_relu(self.conv_up1(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        h = F.leaky_relu(self.conv_up2(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(h), 0.2))
