"""Top-k candidate fusion of UGTSR (Sec. III-B, Eq. 6-8), built from Restormer's transformer block.

UGTSR Eq. 6-8 (top-3 as the example)::

    c_1, c_2, c_3 = topk_{c in Z} -||z - c||^2      (Eq. 6: the k nearest codes of z)
    z' = F(z, c_1, c_2, c_3)                        (Eq. 7: the fusion module)
    z_q = q[z'] = argmin_{c in Z} ||z' - c||^2      (Eq. 8: nearest-code quantization)

The paper says only that F "employs the attention layer design from Restormer". Our F, for
features (B,n_z,h,w) and candidate codes (B,k,n_z,h,w), all float, unbounded:

1. ``proj_in``: 1x1 conv of the channel concatenation [z; c_1; ...; c_k] ((k+1) n_z channels) to
   ``fusion_dim``.
2. ``blocks``: ``fusion_blocks`` Restormer transformer blocks (Zamir et al., "Restormer: Efficient
   Transformer for High-Resolution Image Restoration", CVPR 2022, Sec. 3.1-3.2):
   ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``. MDTA (Restormer Eq. 1) computes Q, K, V with a
   1x1 conv followed by a 3x3 depth-wise conv, L2-normalises Q and K over the spatial positions and
   attends across *channels*: per head, ``V Softmax(K^T Q / alpha)`` with a learnable temperature
   alpha (stored as its inverse, ``temperature``, one per head). The attention map is (C/heads)^2,
   independent of h*w, so the cost is linear in the number of positions and in k. GDFN (Restormer
   Eq. 2) is the gated depth-wise conv feed-forward ``W_0 (GELU(W_1^d W_1 x) * W_2^d W_2 x)``.
3. ``proj_out``: 1x1 conv back to n_z, **zero-initialised**, added to z: ``z' = z + proj_out(...)``.
   An untrained fusion therefore returns z itself, so ``q[z']`` starts as FeMaSR's
   nearest-neighbour match and a FeMaSR (or stage-I) encoder fine-tunes from a known state.

Channel attention pools over every position of the map it sees, so the fused features of one tile
depend (weakly) on the whole tile — like FeMaSR's GroupNorm, which also normalises over the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ChannelLayerNorm", "MDTA", "GDFN", "RestormerBlock", "TopKFusion"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every position of a (B,C,H,W) map (Restormer's "WithBias").

    Keys ``weight``, ``bias`` (C,). eps 1e-5. (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer Sec. 3.1, Eq. 1).

    ``qkv`` (1x1), ``qkv_dwconv`` (3x3 depth-wise), ``project_out`` (1x1), all without bias, and
    ``temperature`` (heads,1,1), initialised to 1. (B,dim,H,W) -> (B,dim,H,W).
    The attention logits are computed in float32 (the L2 norms run over H*W positions).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"MDTA width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        shape = (b, self.heads, c // self.heads, h * w)
        q = F.normalize(q.reshape(shape).float(), dim=-1)
        k = F.normalize(k.reshape(shape).float(), dim=-1)
        # (b, heads, d, d): channel-to-channel affinities, d = c / heads
        attn = (q @ k.transpose(-2, -1)) * self.temperature.float()
        attn = attn.softmax(dim=-1).to(v.dtype)
        out = attn @ v.reshape(shape)
        return self.project_out(out.reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer Sec. 3.2, Eq. 2); ``hidden`` channels.

    ``project_in`` (1x1, dim -> 2 hidden), ``dwconv`` (3x3 depth-wise), ``project_out``
    (1x1, hidden -> dim), no biases. (B,dim,H,W) -> (B,dim,H,W).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class RestormerBlock(nn.Module):
    """``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))`` (no GDFN when ``hidden == 0``).

    Keys ``norm1``, ``attn``, ``norm2``, ``ffn``. (B,dim,H,W) -> (B,dim,H,W).
    """

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = MDTA(dim, heads)
        self.norm2: ChannelLayerNorm | None = ChannelLayerNorm(dim) if hidden else None
        self.ffn: GDFN | None = GDFN(dim, hidden) if hidden else None

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        if self.ffn is not None and self.norm2 is not None:
            x = x + self.ffn(self.norm2(x))
        return x


class TopKFusion(nn.Module):
    """The fusion module F of UGTSR Eq. 7: ``z' = z + proj_out(blocks(proj_in([z; c_1..c_k])))``.

    Keys ``proj_in`` (1x1, (k+1) code_dim -> dim, with bias), ``blocks.{i}``
    (:class:`RestormerBlock`), ``proj_out`` (1x1, dim -> code_dim, with bias, zero-initialised so
    that an untrained module is the identity on z).
    """

    def __init__(
        self, code_dim: int, top_k: int, dim: int, heads: int, blocks: int, hidden: int
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.proj_in = nn.Conv2d((top_k + 1) * code_dim, dim, 1)
        self.blocks = nn.ModuleList(RestormerBlock(dim, heads, hidden) for _ in range(blocks))
        self.proj_out = nn.Conv2d(dim, code_dim, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, z: Tensor, codes: Tensor) -> Tensor:
        """Fuse features with their candidate codes.

        ``z`` (B,n_z,h,w) LR features (after FeMaSR's ``before_quant`` conv); ``codes``
        (B,k,n_z,h,w) the k nearest codebook rows, nearest first. Returns z' (B,n_z,h,w).
        """
        b, k, c, h, w = codes.shape
        if k != self.top_k or z.shape != (b, c, h, w):
            raise ValueError(
                f"expected z (B,C,h,w) and {self.top_k} codes (B,{self.top_k},C,h,w), got "
                f"{tuple(z.shape)} and {tuple(codes.shape)}"
            )
        x = self.proj_in(torch.cat([z, codes.reshape(b, k * c, h, w)], dim=1))
        for block in self.blocks:
            x = block(x)
        return z + self.proj_out(x)
