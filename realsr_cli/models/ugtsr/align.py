"""Align-Attention of UGTSR (Sec. III-C, Eq. 9): LR shortcut features query the decoder features.

UGTSR Eq. 9: ``AA(F_lq, F_hq) = softmax(Q K^T / sqrt(d_k)) V`` with ``Q = F_lq W_q``,
``K = F_hq W_k``, ``V = F_hq W_v``. ``F_lq`` is the LR-encoder shortcut H_up^i of FeMaSR (Eq. 8 of
FeMaSR), ``F_hq`` the decoder features of the matched codes at the same scale.

Design choices (the paper gives neither the attention extent nor the residual):

- **Windowed spatial attention**, not channel-transposed attention. Eq. 9 is token attention: each
  LR position gathers decoder features from the positions that match it, which is what aligning
  misplaced HQ detail needs; channel-transposed attention (Restormer's MDTA) mixes channels and
  cannot move content between positions. Full attention over all h*w positions is quadratic, so
  tokens attend only within non-overlapping ``window x window`` windows anchored at the top-left
  (maps are zero-padded at the bottom/right to a window multiple; padded keys are masked out,
  padded queries cropped). The logits take ``B * nW * heads * window^4`` values with
  ``nW = ceil(h / window) * ceil(w / window)``, i.e. ``~ B * h * w * heads * window^2``: linear in
  the image area. The operation is local (an output depends only on its own window) and, having no
  position bias (Eq. 9 has none), equivariant to any permutation of the positions of a window.
- **Residual = FeMaSR's sum**: ``out = F_hq + F_lq + W_o AA(LN(F_lq), LN(F_hq))`` with a
  zero-initialised output projection ``W_o``. The module replaces FeMaSR's plain ``F_hq + F_lq``
  by an aligned fusion whose untrained state *is* that sum, so a FeMaSR or stage-I network
  fine-tunes from its own outputs. Q, K and V see channel-LayerNormed inputs; projections are 1x1
  convolutions (per-position linear maps W_q, W_k, W_v).

Tensors: (B,C,H,W) float feature maps, unbounded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.ugtsr.fusion import ChannelLayerNorm

__all__ = ["AlignAttention", "window_attention", "to_windows", "from_windows"]


def to_windows(x: Tensor, heads: int, window: int) -> Tensor:
    """(B,C,H,W), H and W multiples of ``window`` -> (B*nW, heads, window^2, C/heads).

    Windows in row-major order per image; tokens row-major inside a window; channel ``c`` of the
    map is feature ``c % (C/heads)`` of head ``c // (C/heads)``.
    """
    b, c, h, w = x.shape
    nh, nw, d = h // window, w // window, c // heads
    x = x.view(b, heads, d, nh, window, nw, window)
    return x.permute(0, 3, 5, 1, 4, 6, 2).reshape(b * nh * nw, heads, window * window, d)


def from_windows(x: Tensor, batch: int, height: int, width: int, window: int) -> Tensor:
    """Inverse of :func:`to_windows`: (B*nW, heads, window^2, d) -> (B, heads*d, height, width)."""
    _, heads, _, d = x.shape
    nh, nw = height // window, width // window
    x = x.view(batch, nh, nw, heads, window, window, d)
    return x.permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, heads * d, height, width)


def window_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` per window and head (UGTSR Eq. 9).

    ``q``, ``k``, ``v`` (N, heads, T, d) with N = B * windows and T = window^2 tokens; ``key_mask``
    (N, 1, 1, T) bool, True where a key takes part (None: all). Returns (N, heads, T, d).
    The (N, heads, T, T) logits are the only quadratic term, and only in the window size.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)


class AlignAttention(nn.Module):
    """One Align-Attention module at a decoder scale of width ``dim``.

    Keys ``norm_lq``, ``norm_hq`` (:class:`ChannelLayerNorm`), ``to_q`` (1x1, dim -> dim),
    ``to_kv`` (1x1, dim -> 2 dim: K then V), ``proj_out`` (1x1, dim -> dim, zero-initialised).
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Align-Attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.window = window
        self.norm_lq = ChannelLayerNorm(dim)
        self.norm_hq = ChannelLayerNorm(dim)
        self.to_q = nn.Conv2d(dim, dim, 1)
        self.to_kv = nn.Conv2d(dim, dim * 2, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _key_mask(
        self, h: int, w: int, hp: int, wp: int, batch: int, device: torch.device
    ) -> Tensor:
        """(B*nW, 1, 1, window^2) bool: True on real (unpadded) positions."""
        valid = torch.zeros(1, 1, hp, wp, dtype=torch.bool, device=device)
        valid[..., :h, :w] = True
        mask = to_windows(valid, 1, self.window)  # (nW, 1, T, 1)
        return mask.reshape(1, -1, 1, 1, mask.shape[2]).expand(batch, -1, -1, -1, -1).flatten(0, 1)

    def attend(self, lq: Tensor, hq: Tensor) -> Tensor:
        """The attention term AA(LN(F_lq), LN(F_hq)) of Eq. 9 before ``proj_out``: (B,dim,H,W)."""
        b, _, h, w = hq.shape
        q = self.to_q(self.norm_lq(lq))
        k, v = self.to_kv(self.norm_hq(hq)).chunk(2, dim=1)
        ws = self.window
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        mask = None
        if (hp, wp) != (h, w):
            pad = (0, wp - w, 0, hp - h)
            q, k, v = (F.pad(t, pad) for t in (q, k, v))
            mask = self._key_mask(h, w, hp, wp, b, hq.device)
        out = window_attention(*(to_windows(t, self.heads, ws) for t in (q, k, v)), mask)
        return from_windows(out, b, hp, wp, ws)[..., :h, :w]

    def forward(self, lq: Tensor, hq: Tensor) -> Tensor:
        """Fuse the LR shortcut ``lq`` into the decoder features ``hq``, both (B,dim,H,W).

        Returns ``hq + lq + proj_out(attend(lq, hq))`` (B,dim,H,W): FeMaSR's sum plus the aligned
        term.
        """
        if lq.shape != hq.shape:
            raise ValueError(
                f"shortcut {tuple(lq.shape)} and decoder features {tuple(hq.shape)} differ"
            )
        return hq + lq + self.proj_out(self.attend(lq, hq))
