"""RealSRT's image tokenizer: a VQGAN (Esser et al., CVPR 2021) with f = 8 and K = 512 (Sec. 3.1).

The encoder E maps an image (B,3,H,W) to features (B,c,H/f,W/f); ``quant_conv`` (1x1) gives
``z_e``; every position is replaced by its nearest codebook vector

    y_i = argmin_k ||z_e,i - e(k)||^2,       k in 0 .. K-1

(the token ids, (B,H/f,W/f) int64, row-major); ``post_quant_conv`` (1x1) and the decoder D map
``e(y)`` back to an image. The same encoder architecture is copied into the CCM (Sec. 3.3).

Module layout and names follow the official ``vqgan_arch.py`` because state-dict keys are public
API (STYLE §2): ``encoder.model.<i>``, ``decoder.model.<i>`` (``nn.Sequential`` indices),
``ResidualBlock.block.{0,2,3,5}`` + ``channel_up``, ``GroupNorm.gn``, and the quantizer as a
depth-1 residual-quantisation bottleneck, ``quantizer.codebooks.0.weight`` of shape (K + 1, c):
row K is an unused padding row of the official ``nn.Embedding(K + 1, c, padding_idx=K)``. The
codebook's training-time EMA buffers are dropped on conversion.

Layouts: images and feature maps (B,C,H,W); any float dtype, except that code distances are
always computed in float32 so half-precision inference picks the codes float32 would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import explicit_attention, reference_enabled
from realsr_cli.models.realsrt.config import GROUPNORM_GROUPS, VQGANConfig

__all__ = [
    "AttnBlock",
    "Codebook",
    "Decoder",
    "DownSample",
    "Encoder",
    "GroupNorm",
    "Quantizer",
    "ResidualBlock",
    "UpSample",
    "VQGAN",
]


class GroupNorm(nn.Module):
    """GroupNorm with 32 groups, eps 1e-6, affine; the parameters live one level down (``gn.*``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=1e-6, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.gn(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(gn(conv(silu(gn(x))))))``.

    When the width changes the shortcut is a 1x1 conv (``channel_up``) instead of the identity.
    ``block`` indices 0..5 are GN, SiLU, conv3x3, GN, SiLU, conv3x3 (keys ``block.{0,2,3,5}``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            GroupNorm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        )
        self.channel_up = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.channel_up is None else self.channel_up(x)
        return shortcut + self.block(x)


class DownSample(nn.Module):
    """Halve H and W: zero-pad one pixel at the bottom/right, then a stride-2 3x3 conv (no padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class UpSample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual (taming-transformers ``AttnBlock``).

    ``x + proj_out(softmax(q^T k / sqrt(C)) v)`` with q, k, v 1x1 convs of ``gn(x)``, over all
    H*W positions. Used by the CCM (``fuse_attn``). Runs as one fused SDPA call.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B,C,H,W) -> (B,1,HW,C): one head over all positions
        q, k, v = (
            t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (self.q(y), self.k(y), self.v(y))
        )
        attend = explicit_attention if reference_enabled() else F.scaled_dot_product_attention
        out = attend(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


def _resolution_stack(config: VQGANConfig, *, reverse: bool) -> list[tuple[int, int, bool]]:
    """(in width, out width, resample after?) of every residual block level by level.

    The encoder walks ``channels`` finest->coarsest and downsamples after every level but the last;
    the decoder walks coarsest->finest and upsamples after every level but the finest.
    """
    widths = list(config.channels)
    levels = list(reversed(range(len(widths)))) if reverse else list(range(len(widths)))
    plan = []
    current = widths[levels[0]] if reverse else widths[0]
    for n, level in enumerate(levels):
        for j in range(config.num_res_blocks):
            last = j == config.num_res_blocks - 1
            plan.append((current, widths[level], last and n < len(levels) - 1))
            current = widths[level]
    return plan


class Encoder(nn.Module):
    """VQGAN encoder E: image (B,3,H,W) -> features (B,embed_dim,H/f,W/f).

    ``model``: conv3x3 in; per level ``num_res_blocks`` residual blocks and (except the coarsest) a
    :class:`DownSample`; two more residual blocks; GN, SiLU, conv3x3 out (released: 17 entries,
    indices 0..16).
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        widths = config.channels
        layers: list[nn.Module] = [nn.Conv2d(config.image_channels, widths[0], 3, 1, 1)]
        for c_in, c_out, down in _resolution_stack(config, reverse=False):
            layers.append(ResidualBlock(c_in, c_out))
            if down:
                layers.append(DownSample(c_out))
        layers += [
            ResidualBlock(widths[-1], widths[-1]),
            ResidualBlock(widths[-1], widths[-1]),
            GroupNorm(widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], config.embed_dim, 3, 1, 1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Decoder(nn.Module):
    """VQGAN decoder D: features (B,embed_dim,h,w) -> image (B,3,f*h,f*w), unbounded.

    ``model``: conv3x3 in; two residual blocks; per level (coarsest first) ``num_res_blocks``
    residual blocks and (except the finest) an :class:`UpSample`; GN, SiLU, conv3x3 out.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        widths = config.channels
        layers: list[nn.Module] = [
            nn.Conv2d(config.embed_dim, widths[-1], 3, 1, 1),
            ResidualBlock(widths[-1], widths[-1]),
            ResidualBlock(widths[-1], widths[-1]),
        ]
        for c_in, c_out, up in _resolution_stack(config, reverse=True):
            layers.append(ResidualBlock(c_in, c_out))
            if up:
                layers.append(UpSample(c_out))
        layers += [
            GroupNorm(widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], config.image_channels, 3, 1, 1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Codebook(nn.Module):
    """The codebook e(k), k < K, stored as ``weight`` (K + 1, c); row K is an unused padding row.

    Only rows ``0..K-1`` take part in the nearest-neighbour search.
    """

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.n_embed = n_embed
        self.weight = nn.Parameter(torch.empty(n_embed + 1, embed_dim).normal_())

    @property
    def codes(self) -> Tensor:
        """(K, c) the searchable codebook vectors."""
        return self.weight[: self.n_embed]

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances ||z_i - e(k)||^2: z (B,c,h,w) -> (B,h,w,K) float32.

        Evaluated as ``|z|^2 + |e|^2 - 2 z.e`` in one ``addmm`` like the official code, so the
        margins between nearest codes match it to float32 rounding.
        """
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.codes.float()
        base = flat.pow(2).sum(dim=1, keepdim=True) + codes.pow(2).sum(dim=1)[None, :]
        return torch.addmm(base, flat, codes.t(), alpha=-2.0).view(b, h, w, -1)

    def nearest(self, z: Tensor) -> Tensor:
        """Token ids (B,h,w) int64 of the nearest codes to z (B,c,h,w)."""
        return self.distances(z).argmin(dim=-1)

    def embed(self, ids: Tensor) -> Tensor:
        """Code vectors of ids (B,h,w) -> (B,c,h,w) in the codebook's dtype."""
        return F.embedding(ids, self.weight).permute(0, 3, 1, 2).contiguous()


class Quantizer(nn.Module):
    """The official depth-1 residual-quantisation bottleneck: a list holding one :class:`Codebook`."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.codebooks = nn.ModuleList([Codebook(n_embed, embed_dim)])

    @property
    def codebook(self) -> Codebook:
        return self.codebooks[0]

    def forward(self, z: Tensor) -> Tensor:
        """Token ids (B,h,w) int64 of z_e (B,c,h,w)."""
        return self.codebook.nearest(z)

    def embed(self, ids: Tensor) -> Tensor:
        """e(ids): (B,h,w) int64 -> (B,c,h,w)."""
        return self.codebook.embed(ids)


class VQGAN(nn.Module):
    """Tokenizer: ``encoder``, ``quant_conv``, ``quantizer``, ``post_quant_conv``, ``decoder``."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(c, c, 1)
        self.quantizer = Quantizer(config.n_embed, c)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor) -> Tensor:
        """z_e = quant_conv(E(x)): image (B,3,H,W) -> (B,c,H/f,W/f)."""
        return self.quant_conv(self.encoder(x))

    def tokenize(self, x: Tensor) -> Tensor:
        """Token ids (B,H/f,W/f) int64 of an image (B,3,H,W)."""
        return self.quantizer(self.encode(x))

    def decode_ids(self, ids: Tensor) -> Tensor:
        """D(post_quant_conv(e(ids))): ids (B,h,w) -> image (B,3,f*h,f*w)."""
        return self.decoder(self.post_quant_conv(self.quantizer.embed(ids)))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction D(e(y(x))) of an image (B,3,H,W), H and W multiples of f."""
        return self.decode_ids(self.tokenize(x))
