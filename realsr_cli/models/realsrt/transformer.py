"""RealSRT's masked token transformers: the generator and the critic (Sec. 3.2, Fig. 2 bottom).

Both networks read the LR tokens ``Y_LR`` and the (partly masked) HR tokens and differ only in
depth and output head:

    enc = LN(EncLayers(enc_in(emb(Y_LR)) + P))                       LR tokens, self-attention
    dec = dec_in(emb(Y_HR));  dec[m] = [M]  (generator only)
    dec = LN(DecLayers(dec + P, context=enc))                        HR tokens: self-attn, cross-attn
    out = to_logits(dec)                                             (B,N,K) or (B,N,1)

``emb`` is a copy of the VQGAN codebook (``token_emb``, (K+1, c)), ``P`` the 2-D sine-cosine
position table (``pos_emb``, (1, N, dim): built once at construction, never trained, but part of the
official state dict and therefore used as loaded), ``[M]`` the learned ``mask_token``. The
generator's logits give p_theta of Eq. 1; the critic's logit is the probability (after a
sigmoid) that a token was masked, Eq. 2, so a *large* critic logit means *low* confidence.

Attention (official ``Attention``, details that checkpoints depend on):

- LayerNorm (learned gamma, fixed beta) on the layer input only. In self-attention the normalised
  input feeds q, k and v; in cross-attention it feeds q only and k, v come from the (already
  ``enc_norm``-ed) LR context as is.
- A learned null key/value per head (``null_kv``, (2, heads, 1, dim_head)) is prepended to k, v.
- q and k (the null key included) are l2-normalised per head, multiplied by learned per-dim scales
  ``q_scale``/``k_scale`` (dim_head,), and the dot products by a fixed ``attn_scale`` = 8 (no
  1/sqrt(d)); no attention mask at inference. This is exactly SDPA with ``scale=8``.

Feed-forward: LN, Linear(dim, 2h), GEGLU (``gelu(first half) * second half``), LN(h), Linear(h, dim);
no biases anywhere in the attention or feed-forward linears.

Layout: token ids (B,N) int64 in row-major grid order, N = ``seq_len``; features (B,N,dim).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import explicit_attention, reference_enabled
from realsr_cli.models.realsrt.config import TransformerConfig

#: precomputed cross-attention keys and values of one layer, see :meth:`Attention.keys_values`
KeysValues = tuple[Tensor, Tensor]

__all__ = [
    "Attention",
    "DecoderLayer",
    "EncoderLayer",
    "FeedForward",
    "GEGLU",
    "KeysValues",
    "LayerNorm",
    "TokenTransformer",
    "sincos_2d_positions",
]


@functools.lru_cache(maxsize=8)
def _sincos_table(dim: int, grid_h: int, grid_w: int) -> Tensor:
    quarter = dim // 4
    f64 = dict(dtype=torch.float64, device="cpu")  # never a meta/cuda default device in the cache
    omega = 1.0 / 10000 ** (torch.arange(quarter, **f64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, **f64), torch.arange(grid_w, **f64), indexing="ij"
    )

    def embed_axis(pos: Tensor) -> Tensor:  # (H*W,) -> (H*W, dim/2): [sin | cos]
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE convention: the first half encodes the column (x), the second half the row (y)
    return torch.cat([embed_axis(cols), embed_axis(rows)], dim=1).float()


def sincos_2d_positions(dim: int, grid_h: int, grid_w: int | None = None) -> Tensor:
    """Fixed 2-D sine-cosine positions (Vaswani et al.; MAE layout), (H*W, dim) float32.

    For the token at row r, column c (index r*W + c): ``[sin(c w), cos(c w), sin(r w), cos(r w)]``
    with ``w_i = 10000^(-i / (dim/4))``, i < dim/4, computed in float64 and rounded once, as the
    official numpy code does. Cached per (dim, grid); returns a fresh copy.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need dim divisible by 4, got {dim}")
    return _sincos_table(dim, grid_h, grid_h if grid_w is None else grid_w).clone()


class LayerNorm(nn.Module):
    """LayerNorm over the last dim, eps 1e-5, with a learned ``gamma`` and a *buffer* ``beta``.

    ``beta`` is a persistent buffer (zeros at init, never trained) because the official module
    registers it so; it is part of the state dict and loaded like any other tensor.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): ``(a, b) = x.chunk(2)`` -> ``gelu(a) * b`` (exact erf GELU)."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=-1)
        return F.gelu(a) * b


class FeedForward(nn.Sequential):
    """``LN -> Linear(dim, 2h) -> GEGLU -> LN(h) -> Linear(h, dim)``, no biases (keys ``0,1,3,4``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(
            LayerNorm(dim),
            nn.Linear(dim, 2 * hidden, bias=False),
            GEGLU(),
            LayerNorm(hidden),
            nn.Linear(hidden, dim, bias=False),
        )


class Attention(nn.Module):
    """Multi-head attention with cosine-similarity logits and a learned null key/value.

    ``x`` (B,N,dim) attends to itself (``context=None``) or, for ``cross=True``, to ``context``
    (B,M,dim); returns (B,N,dim) (the caller adds the residual). See the module docstring.
    """

    def __init__(
        self, dim: int, *, heads: int, dim_head: int, scale: float, cross: bool = False
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = scale
        self.cross = cross
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.empty(2, heads, 1, dim_head).normal_())
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, t: Tensor) -> Tensor:  # (B,N,h*d) -> (B,h,N,d)
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values over ``source`` (B,M,dim): two (B,heads,1+M,dim_head) tensors.

        The null pair comes first; keys are l2-normalised and scaled by ``k_scale``. In
        cross-attention they depend on the LR context only, so iterative decoding computes them
        once per patch (:meth:`TokenTransformer.context`).
        """
        k, v = (self._split(t) for t in self.to_kv(source).chunk(2, dim=-1))
        null_k, null_v = (t.to(k.dtype).expand(k.shape[0], -1, -1, -1) for t in self.null_kv)
        k = torch.cat([null_k, k], dim=2)
        v = torch.cat([null_v, v], dim=2)
        return F.normalize(k, dim=-1) * self.k_scale, v

    def forward(self, x: Tensor, context: Tensor | KeysValues | None = None) -> Tensor:
        """``x`` (B,N,dim) -> (B,N,dim); ``context`` (B,M,dim) or its :meth:`keys_values`."""
        if (context is not None) != self.cross:
            raise ValueError("cross-attention needs a context; self-attention takes none")
        x = self.norm(x)
        if isinstance(context, tuple):
            k, v = context
        else:
            k, v = self.keys_values(x if context is None else context)
        q = F.normalize(self._split(self.to_q(x)), dim=-1) * self.q_scale
        attend = explicit_attention if reference_enabled() else F.scaled_dot_product_attention
        out = attend(q, k, v, scale=self.scale)
        return self.to_out(out.transpose(1, 2).flatten(2))


class EncoderLayer(nn.ModuleList):
    """Pre-norm layer over the LR tokens: ``[Attention, FeedForward]`` (keys ``0.*``, ``1.*``)."""

    def __init__(self, config: TransformerConfig) -> None:
        c = config
        super().__init__(
            [
                Attention(c.dim, heads=c.heads, dim_head=c.dim_head, scale=c.attn_scale),
                FeedForward(c.dim, c.ff_hidden),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        attn, ff = self
        x = x + attn(x)
        return x + ff(x)


class DecoderLayer(nn.ModuleList):
    """Pre-norm layer over the HR tokens: ``[self-Attention, cross-Attention, FeedForward]``."""

    def __init__(self, config: TransformerConfig) -> None:
        c = config
        kw = dict(heads=c.heads, dim_head=c.dim_head, scale=c.attn_scale)
        super().__init__(
            [
                Attention(c.dim, **kw),
                Attention(c.dim, cross=True, **kw),
                FeedForward(c.dim, c.ff_hidden),
            ]
        )

    def forward(self, x: Tensor, context: Tensor | KeysValues) -> Tensor:
        self_attn, cross_attn, ff = self
        x = x + self_attn(x)
        x = x + cross_attn(x, context)
        return x + ff(x)


class TokenTransformer(nn.Module):
    """Generator (``dim_out = K``) or critic (``dim_out = 1``) of Sec. 3.2.

    Args:
        config: widths and depths.
        embed_dim, n_embed: codebook width c and size K of the tokenizer (``token_emb`` is
            (K + 1, c); row K, the mask id, is never read at inference: the generator overwrites
            masked positions with ``mask_token`` and the critic only sees predicted tokens).

    ``forward(ids, lr_ids, mask)`` is the official call; :meth:`context` + :meth:`decode` split it
    so iterative decoding encodes the (unchanging) LR tokens, and projects them to every layer's
    cross-attention keys/values, once per patch instead of once per step.
    """

    def __init__(self, config: TransformerConfig, *, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.config = config
        c = config
        self.token_emb = nn.Embedding(n_embed + 1, embed_dim)
        if c.predicts_tokens:
            # randn == empty().normal_() bit for bit, and in-place ops: on the meta device (loading)
            # randn imports sympy and `* 0.02` torch._dynamo (~800 modules); a skipped fill does not
            self.mask_token = nn.Parameter(torch.empty(1, 1, c.dim).normal_().mul_(0.02))
        else:
            self.mask_token = None
        grid = math.isqrt(c.seq_len)
        if grid * grid != c.seq_len:
            raise ValueError(f"seq_len must be a square token grid, got {c.seq_len}")
        self.register_buffer("pos_emb", sincos_2d_positions(c.dim, grid)[None])
        self.enc_in = nn.Linear(embed_dim, c.dim)
        self.enc_blocks = nn.ModuleList([EncoderLayer(c) for _ in range(c.enc_depth)])
        self.enc_norm = LayerNorm(c.dim)
        self.dec_in = nn.Linear(embed_dim, c.dim)
        self.dec_blocks = nn.ModuleList([DecoderLayer(c) for _ in range(c.dec_depth)])
        self.dec_norm = LayerNorm(c.dim)
        self.to_logits = nn.Linear(c.dim, c.dim_out, bias=False)

    def _positions(self, n: int) -> Tensor:
        if n != self.pos_emb.shape[1]:
            raise ValueError(f"expected {self.pos_emb.shape[1]} tokens (the trained grid), got {n}")
        return self.pos_emb

    def encode(self, lr_ids: Tensor) -> Tensor:
        """LR context: ids (B,N) int64 -> (B,N,dim) after ``enc_norm``."""
        x = self.enc_in(self.token_emb(lr_ids)) + self._positions(lr_ids.shape[1])
        for layer in self.enc_blocks:
            x = layer(x)
        return self.enc_norm(x)

    def context(self, lr_ids: Tensor) -> list[KeysValues]:
        """The LR condition in its reusable form: per decoder layer, the cross-attention keys and
        values of :meth:`encode` (each (B,heads,1+N,dim_head)). Iterative decoding computes this
        once per patch; :meth:`decode` gives the same logits for it as for the plain context.
        """
        enc = self.encode(lr_ids)
        return [cross_attn.keys_values(enc) for _, cross_attn, _ in self.dec_blocks]

    def decode(
        self, ids: Tensor, context: Tensor | Sequence[KeysValues], mask: Tensor | None = None
    ) -> Tensor:
        """Logits (B,N,dim_out) for HR ids (B,N) given the LR context.

        ``context``: (B,N,dim) from :meth:`encode`, or the per-layer keys/values from
        :meth:`context`. ``mask`` (B,N) bool marks the positions whose embedding is replaced by
        ``mask_token`` (generator only; the critic ignores it, as in the official code where it
        gets none).
        """
        if isinstance(context, Tensor):
            per_layer: Sequence[Tensor | KeysValues] = [context] * len(self.dec_blocks)
        else:
            per_layer = context
        x = self.dec_in(self.token_emb(ids))
        if mask is not None and self.mask_token is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = x + self._positions(ids.shape[1])
        for layer, layer_context in zip(self.dec_blocks, per_layer, strict=True):
            x = layer(x, layer_context)
        return self.to_logits(self.dec_norm(x))

    def forward(self, ids: Tensor, lr_ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits (B,N,dim_out) of HR ids (B,N) conditioned on LR ids (B,N)."""
        return self.decode(ids, self.encode(lr_ids), mask)
