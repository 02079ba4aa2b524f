"""Swin transformer layers: (shifted) window attention and the residual Swin transformer block (RSTB).

References: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021 (W-MSA / SW-MSA with relative position bias, Sec. 3.2); Liang et al., "SwinIR: Image
Restoration Using Swin Transformer", ICCVW 2021 (RSTB = Swin blocks + 3x3 conv + residual, Sec. 3.2).

Layout: the transformer blocks work on channels-last maps (B,H,W,C); :class:`RSTB` takes and returns
channels-first (B,C,H,W). H and W must be multiples of the window size (callers pad).

Parameter and buffer names follow SwinIR's, so SwinIR-derived checkpoints (FeMaSR, ...) load 1:1:
``residual_group.blocks.{i}.{norm1,attn.qkv,attn.proj,attn.relative_position_bias_table,
attn.relative_position_index,norm2,mlp.fc1,mlp.fc2,attn_mask}`` and ``conv``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import explicit_attention, reference_enabled

__all__ = [
    "MASK_VALUE",
    "window_partition",
    "window_merge",
    "relative_position_index",
    "shifted_window_mask",
    "WindowAttention",
    "window_attention",
    "SwinMlp",
    "SwinBlock",
    "SwinStage",
    "RSTB",
]

#: additive attention logit between tokens that come from different regions of a shifted window
MASK_VALUE = -100.0


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B,H,W,C) -> (B*nW, window_size**2, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    if h % window_size or w % window_size:
        raise ValueError(f"feature map {h}x{w} is not a multiple of the window size {window_size}")
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B*nW, window_size**2, C) -> (B,H,W,C)."""
    nh, nw = height // window_size, width // window_size
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window_size: int) -> Tensor:
    """(N, N) int64 index into the ((2w-1)**2, heads) bias table, N = window_size**2 (Swin eq. 4).

    Entry (i, j) encodes the offset of token i relative to token j as
    ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``.
    """
    # an integer table: always computed on the CPU (a meta-device build, as the loader's, must not
    # run meshgrid on meta, which imports torch._dynamo); loading replaces it with the file's
    ar = torch.arange(window_size, device="cpu")
    ys, xs = torch.meshgrid(ar, ar, indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


def shifted_window_mask(
    height: int,
    width: int,
    window_size: int,
    shift_size: int,
    *,
    device: torch.device | None = None,
) -> Tensor:
    """Additive mask (nW, N, N) float32 for SW-MSA on an H x W map: 0 inside a region, -100 across.

    After the cyclic shift by ``shift_size`` each window may hold tokens from up to 9 regions of the
    un-shifted image (3 row bands x 3 column bands); tokens attend only within their own region.
    Computed on the CPU unless ``device`` says otherwise (not on an ambient meta device, see
    :func:`relative_position_index`).
    """
    device = torch.device("cpu") if device is None else device
    region = torch.zeros(height, width, device=device)
    bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[rows, cols] = label
            label += 1
    labels = window_partition(region.view(1, height, width, 1), window_size).squeeze(-1)  # (nW, N)
    differs = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill(differs, MASK_VALUE)


def window_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + B + M) v`` over the windows of B images (Swin eq. 4).

    q, k, v (B*nW, heads, N, d); ``bias`` B (1, heads, N, N); ``mask`` M (nW, N, N) additive or
    None (windows of one image in the order of ``window_partition``). Returns (B*nW, heads, N, d).
    Fused ``scaled_dot_product_attention`` by default; under ``reference_mode()`` the official
    formulation (explicit logits, the mask added through a (B, nW, ...) view).
    """
    bw, heads, n, _ = q.shape
    if reference_enabled():
        if mask is None:
            return explicit_attention(q, k, v, bias.to(q.dtype))
        nw = mask.shape[0]
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias.to(q.dtype)
        attn = attn.view(bw // nw, nw, heads, n, n) + mask[None, :, None].to(q.dtype)
        return attn.view(bw, heads, n, n).softmax(dim=-1) @ v
    if mask is not None:
        bias = bias + mask.unsqueeze(1)  # nW, heads, N, N
        if bw != mask.shape[0]:  # several images: SDPA wants the batch dim spelled out
            bias = bias.repeat(bw // mask.shape[0], 1, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows with a learned relative position bias.

    ``softmax(q k^T / sqrt(d) + B + M) v`` (Swin eq. 4), B from ``relative_position_bias_table``,
    M the optional shifted-window mask. Input/output (B*nW, N, C) with N = window_size**2.
    """

    def __init__(
        self, dim: int, window_size: int, num_heads: int, *, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> Tensor:
        """(heads, N, N) relative position bias gathered from the table."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) additive or None. Returns (B*nW, N, C)."""
        bw, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = window_attention(q, k, v, self.position_bias().unsqueeze(0), mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    """Two-layer GELU MLP of a transformer block (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One Swin transformer block: ``x + W-MSA(LN(x))`` then ``x + MLP(LN(x))`` (Swin eq. 3).

    With ``shift_size > 0`` the map is cyclically shifted before windowing (SW-MSA) and the
    ``attn_mask`` buffer, precomputed for ``input_resolution``, keeps attention inside the original
    regions; other map sizes get their mask computed on the fly (same values). As in SwinIR, a
    ``input_resolution`` no larger than the window shrinks the window to it and disables the shift.
    (B,H,W,C) -> (B,H,W,C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int = 0,
        *,
        input_resolution: tuple[int, int],
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if min(input_resolution) <= window_size:
            window_size, shift_size = min(input_resolution), 0
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift {shift_size} must lie in [0, window size {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.input_resolution = tuple(input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))
        mask = (
            shifted_window_mask(*self.input_resolution, window_size, shift_size)
            if shift_size
            else None
        )
        self.register_buffer("attn_mask", mask)

    def _mask(self, height: int, width: int, device: torch.device) -> Tensor | None:
        if not self.shift_size:
            return None
        if (height, width) == self.input_resolution and self.attn_mask is not None:
            return self.attn_mask
        return shifted_window_mask(height, width, self.window_size, self.shift_size, device=device)

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift_size:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(y, self.window_size)
        windows = self.attn(windows, self._mask(h, w, x.device))
        y = window_merge(windows, self.window_size, h, w)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """Swin blocks applied in order, (B,H,W,C) -> same (keys ``blocks.{i}``; :class:`RSTB` builds
    them)."""

    def __init__(self, blocks: Iterable[SwinBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer Block (SwinIR Sec. 3.2): ``x + conv3x3(SwinStage(x))``, the stage
    ``depth`` Swin blocks alternating W-MSA and SW-MSA (shift = window // 2).

    ``input_resolution`` only fixes the shifted-window mask stored with the weights; any map whose
    sides are multiples of the window runs. (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        *,
        input_resolution: Sequence[int],
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        res = (int(input_resolution[0]), int(input_resolution[1]))
        self.residual_group = SwinStage(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=window_size // 2 if i % 2 else 0,
                input_resolution=res,
                mlp_ratio=mlp_ratio,
            )
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.residual_group(x.permute(0, 2, 3, 1))
        return x + self.conv(y.permute(0, 3, 1, 2))
