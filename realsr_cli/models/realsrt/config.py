"""Frozen, closed configs for RealSRT (STYLE §4). Defaults are the released ``net_g_80000.pth``.

Peng et al., "Confidence-Based Iterative Generation for Real-World Image Super-Resolution", ECCV 2024.
The official ``RealSRT(use_critic=True, use_ccm=True)`` hard-codes every width; here they are fields:

- ``tokenizer``: the VQGAN of Sec. 3.1 (official ``VQGAN(quant_depth=1, embed_dim=256,
  n_embed=512)``, encoder/decoder widths ``[128, 128, 256, 256]``, 2 residual blocks per level,
  so f = 8 and K = 512).
- ``generator``: ``Transformer(dim=512, dim_out=512, seq_len=1024, enc_depth=4, dec_depth=16)``;
  ``critic``: the same with ``dim_out=1, dec_depth=12`` (Sec. 4.1: 16 + 4 and 12 + 4 layers; the
  "encoder" layers run self-attention over LR tokens, the "decoder" layers self-attention over HR
  tokens plus cross-attention from LR tokens). Heads 8 x 64, GEGLU feed-forward x4, attention
  logit scale 8 are fixed in the official code and fields here.
- ``ccm``: the conditional controlling module of Sec. 3.3 (a trainable copy of the tokenizer's
  encoder, ResBlock-Attn-ResBlock at width ``2 * embed_dim``, a zero-initialised 1x1 conv).

Inference works on 64 x 64 LR patches (``lr_patch``): bicubic x4 to 256 x 256, tokenised to a
32 x 32 grid, so ``seq_len`` = 1024. Whole images are cut into such patches with stride 32 and
blended with a Gaussian (Sec. 3.4) by the engine, not by the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from realsr_cli.diffusion.masking import MASK_SCHEDULES
from realsr_cli.errors import ConfigError

__all__ = [
    "CCMConfig",
    "GROUPNORM_GROUPS",
    "RealSRTConfig",
    "TransformerConfig",
    "VQGANConfig",
    "reduced_config",
]

#: GroupNorm group count of every VQGAN/CCM normalisation (official ``GroupNorm``, eps 1e-6)
GROUPNORM_GROUPS = 32


def _fail(where: str, message: str, hint: str | None = None) -> None:
    raise ConfigError(f"{where}: {message}", hint=hint)


@dataclass(frozen=True)
class VQGANConfig:
    """The image tokenizer (Sec. 3.1): encoder E, codebook e(k) (K x c), decoder D.

    Fields:
        image_channels: image channels (3).
        channels: feature width per resolution level, finest first; ``len - 1`` stride-2 stages,
            so the downsampling factor is ``f = 2 ** (len(channels) - 1)`` (released: 8).
        num_res_blocks: residual blocks per level (released: 2).
        embed_dim: codebook vector width c (released: 256).
        n_embed: codebook size K (released: 512); the id K is the mask token [M].
    """

    image_channels: int = 3
    channels: tuple[int, ...] = (128, 128, 256, 256)
    num_res_blocks: int = 2
    embed_dim: int = 256
    n_embed: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        where = "VQGANConfig"
        if not self.channels or any(c < 1 for c in self.channels):
            _fail(where, f"channels must list positive widths, got {self.channels}")
        if any(c % GROUPNORM_GROUPS for c in self.channels):
            _fail(
                where,
                f"GroupNorm needs widths divisible by {GROUPNORM_GROUPS}, got {self.channels}",
            )
        if min(self.image_channels, self.num_res_blocks, self.embed_dim, self.n_embed) < 1:
            _fail(where, "image_channels, num_res_blocks, embed_dim and n_embed must be positive")

    @property
    def downsample(self) -> int:
        """Spatial downsampling factor f of the encoder."""
        return 1 << (len(self.channels) - 1)


@dataclass(frozen=True)
class TransformerConfig:
    """A bidirectional token transformer (generator or critic, Sec. 3.2).

    Fields:
        dim: model width (released: 512).
        dim_out: output classes: K for the generator (token logits), 1 for the critic (logit that a
            token was masked, i.e. is fake).
        seq_len: tokens per sequence (the learned-free 2-D sin-cos position table has this length).
        enc_depth: layers over the LR tokens (self-attention + feed-forward).
        dec_depth: layers over the HR tokens (self-attention, cross-attention, feed-forward).
        heads, dim_head: attention heads and their width (inner width ``heads * dim_head``,
            independent of ``dim``).
        ff_mult: GEGLU hidden width is ``int(dim * ff_mult * 2 / 3)`` (1365 for dim 512).
        attn_scale: fixed logit scale applied to the dot products of the l2-normalised, per-dim
            scaled queries and keys (official: 8).
    """

    dim: int = 512
    dim_out: int = 512
    seq_len: int = 1024
    enc_depth: int = 4
    dec_depth: int = 16
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    attn_scale: float = 8.0

    def __post_init__(self) -> None:
        where = "TransformerConfig"
        if min(self.dim, self.dim_out, self.seq_len, self.heads, self.dim_head, self.ff_mult) < 1:
            _fail(where, "dim, dim_out, seq_len, heads, dim_head and ff_mult must be positive")
        if self.enc_depth < 0 or self.dec_depth < 1:
            _fail(
                where,
                f"need enc_depth >= 0 and dec_depth >= 1, got {self.enc_depth}, {self.dec_depth}",
            )
        if self.dim % 4:
            _fail(where, f"2-D sin-cos positions need dim divisible by 4, got {self.dim}")
        if self.attn_scale <= 0:
            _fail(where, f"attn_scale must be positive, got {self.attn_scale}")

    @property
    def ff_hidden(self) -> int:
        """Hidden width of the GEGLU feed-forward."""
        return int(self.dim * self.ff_mult * 2 / 3)

    @property
    def predicts_tokens(self) -> bool:
        """True for the generator (has the learned mask token), False for the critic."""
        return self.dim_out != 1


@dataclass(frozen=True)
class CCMConfig:
    """Conditional controlling module (Sec. 3.3).

    ``enabled=False`` decodes the tokens with the plain VQGAN decoder (the paper's ablation (b));
    the released model has it. Its widths follow from the tokenizer (the copied encoder has the
    tokenizer's architecture; the fusion blocks run at ``2 * embed_dim``).
    """

    enabled: bool = True


@dataclass(frozen=True)
class RealSRTConfig:
    """The whole RealSRT network: tokenizer, generator, critic, CCM and the decoding defaults.

    Fields:
        scale: SR factor; the LR patch is bicubic-upsampled by it before tokenisation (x4 only in
            the release).
        lr_patch: LR patch side the network runs on (64); the token grid is
            ``lr_patch * scale / f`` per side and must hold ``seq_len`` tokens.
        steps: default number T of decoding iterations (4).
        schedule: mask schedule gamma (``"sqrt"``: 1 - sqrt(r)).
    """

    scale: int = 4
    lr_patch: int = 64
    steps: int = 4
    schedule: str = "sqrt"
    tokenizer: VQGANConfig = field(default_factory=VQGANConfig)
    generator: TransformerConfig = field(default_factory=TransformerConfig)
    critic: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(dim_out=1, dec_depth=12)
    )
    ccm: CCMConfig = field(default_factory=CCMConfig)

    def __post_init__(self) -> None:
        where = "RealSRTConfig"
        if self.scale < 1 or self.lr_patch < 1 or self.steps < 1:
            _fail(where, "scale, lr_patch and steps must be positive")
        if self.schedule not in MASK_SCHEDULES:
            _fail(
                where,
                f"unknown schedule {self.schedule!r}",
                hint=f"use one of {sorted(MASK_SCHEDULES)}",
            )
        f = self.tokenizer.downsample
        if (self.lr_patch * self.scale) % f:
            _fail(
                where,
                f"lr_patch * scale = {self.lr_patch * self.scale} is not divisible by f = {f}",
            )
        n = self.grid**2
        for name, net in (("generator", self.generator), ("critic", self.critic)):
            if net.seq_len != n:
                _fail(where, f"{name}.seq_len {net.seq_len} != {self.grid}x{self.grid} token grid")
        if self.generator.dim_out != self.tokenizer.n_embed:
            _fail(
                where,
                f"generator.dim_out {self.generator.dim_out} != n_embed {self.tokenizer.n_embed}",
            )
        if self.critic.dim_out != 1:
            _fail(where, f"critic.dim_out must be 1, got {self.critic.dim_out}")
        if self.ccm.enabled and self.ccm_width % GROUPNORM_GROUPS:
            _fail(
                where,
                f"the CCM width 2 * embed_dim = {self.ccm_width} is not divisible by {GROUPNORM_GROUPS}",
            )

    @property
    def grid(self) -> int:
        """Token grid side for one LR patch (32)."""
        return self.lr_patch * self.scale // self.tokenizer.downsample

    @property
    def num_tokens(self) -> int:
        """Tokens per LR patch, N (1024)."""
        return self.grid**2

    @property
    def ccm_width(self) -> int:
        """Channel width of the CCM fusion blocks: post-quant features ++ copied-encoder features."""
        return 2 * self.tokenizer.embed_dim

    @property
    def mask_id(self) -> int:
        """Id of the mask token [M] (= K, one past the codebook)."""
        return self.tokenizer.n_embed


def reduced_config() -> RealSRTConfig:
    """The narrow configuration of the ``realsrt_reduced`` parity fixture (same code path)."""
    small = dict(dim=64, enc_depth=1, dec_depth=2)
    return RealSRTConfig(
        tokenizer=VQGANConfig(channels=(32, 32, 64, 64), embed_dim=64),
        generator=TransformerConfig(dim_out=512, **small),
        critic=TransformerConfig(dim_out=1, **small),
    )
