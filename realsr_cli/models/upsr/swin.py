"""Swin transformer layers of the UPSR/ResShift denoiser (channel-first, GroupNorm, 1x1-conv MLP).

These differ from SwinIR's RSTB blocks (``models/_blocks/swin.py``): features stay (B,C,H,W), the norms
are ``GroupNorm(32, C)``, the MLP is made of 1x1 convolutions, and there is no residual conv around
the group. Window attention itself (Liu et al., ICCV 2021, Eq. 4) is standard:

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B + M) V

with a learned relative position bias ``B`` and, for shifted windows, a mask ``M`` (0 / -100).

Official quirks reproduced here (they change outputs, so official checkpoints need them): the mask
builder indexes a (1,1,H,W) image as if it were (1,H,W,1), so the shifted-window regions are split
along **rows only** (rows ``[0, H-w)``, ``[H-w, H-s)``, ``[H-s, H)``; wrapped-around columns are never
separated); and it flattens each window column-major while attention flattens tokens row-major, so
the region of token ``(r, c)`` is looked up at in-window row ``c``. Net effect: only the bottom row of
windows is masked, and there tokens with in-window column ``< w - s`` and ``>= w - s`` cannot attend
to each other. The official block also stores its mask as a buffer but never reads it (it always
recomputes the mask for the actual input size); we keep the buffer so official state dicts load with
``strict=True`` and compute the identical mask once per (H, W), cached.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import reference_enabled
from realsr_cli.models._blocks.swin import WindowAttention, relative_position_index

__all__ = [
    "MaskCache",
    "SwinLayer",
    "SwinBlock",
    "WindowAttention",
    "relative_position_index",
    "row_region_mask",
]

_MASK_VALUE = -100.0


def row_region_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """The official shifted-window mask (both quirks of the module docstring): float32 (nW, w^2, w^2).

    Regions are row bands ``[0, H-window)``, ``[H-window, H-shift)``, ``[H-shift, H)``; inside each
    window the region ids are read column-major. Pairs of tokens in different regions get -100.
    Windows are ordered row-major, as in the attention. Computed on the CPU whatever the default
    device (on the meta device, building a network for loading, ``masked_fill_`` would go through
    torch's reference decompositions, whose first use imports torch._dynamo: ~800 modules, 85 MB).
    """
    region = torch.zeros(height, device="cpu")
    region[height - window : height - shift] = 1.0
    region[height - shift :] = 2.0
    ids = region[:, None].expand(height, width)
    # (H/w, w, W/w, w) -> (H/w, W/w, w_col, w_row): windows row-major, each window read column-major
    ids = ids.reshape(height // window, window, width // window, window).permute(0, 2, 3, 1)
    ids = ids.reshape(-1, window * window)
    differs = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(differs.shape, device="cpu").masked_fill_(differs, _MASK_VALUE)


class MaskCache:
    """The few most recently used attention masks, keyed by size/device/dtype.

    Masks depend only on the input size, so they are built once per size instead of once per call;
    the cache is bounded because a mask for a large untiled input can take hundreds of MB.
    """

    def __init__(self, capacity: int = 4) -> None:
        self._items: dict[tuple, Tensor] = {}
        self._capacity = capacity

    def get(self, key: tuple, build: Callable[[], Tensor]) -> Tensor:
        mask = self._items.pop(key, None)
        if mask is None:
            mask = build()
        self._items[key] = mask  # most recent last
        while len(self._items) > self._capacity:
            self._items.pop(next(iter(self._items)))
        return mask


class _ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv on (B,C,H,W). Keys ``fc1``, ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on (B,C,H,W) features.

    ``resolution`` is the training feature size: when it is <= ``window`` the block uses one window of
    that size and never shifts (as the official constructor decides). Shifted blocks carry the
    ``attn_mask`` buffer (nW, N, N) of the official checkpoint; it is never read.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, shift: int, resolution: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        self.window, self.shift = window, shift
        self.norm1 = nn.GroupNorm(32, dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.GroupNorm(32, dim)
        self.mlp = _ConvMlp(dim, int(dim * mlp_ratio))
        stored = row_region_mask(resolution, resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", stored)
        self._masks = MaskCache()

    def _mask(self, height: int, width: int, like: Tensor) -> Tensor | None:
        if self.shift == 0:
            return None
        if reference_enabled():  # the official block rebuilds its mask on every call
            mask = row_region_mask(height, width, self.window, self.shift)
            return mask.to(like.device, like.dtype)
        key = (height, width, like.device, like.dtype, torch.is_inference_mode_enabled())
        return self._masks.get(
            key,
            lambda: row_region_mask(height, width, self.window, self.shift).to(
                like.device, like.dtype
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,H,W), H and W multiples of the window -> (B,C,H,W) (channels-last friendly)."""
        b, c, h, w = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x).permute(0, 2, 3, 1)  # B,H,W,C (a free view when x is channels-last)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        # (B,H,W,C) -> (B*nW, ws*ws, C): windows row-major, tokens row-major inside a window
        windows = y.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        windows = self.attn(windows, self._mask(h, w, x))
        y = windows.view(b, h // ws, w // ws, ws, ws, c).transpose(2, 3).reshape(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.permute(0, 3, 1, 2)
        return x + self.mlp(self.norm2(x))


class _Pointwise(nn.Module):
    """A 1x1 convolution under the attribute ``proj`` (official PatchEmbed/PatchUnEmbed, patch size 1)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """The official ``BasicLayer``: 1x1 embed -> ``depth`` blocks (every other one shifted) -> 1x1 unembed.

    (B, channels, H, W) -> (B, channels, H, W); there is no residual around the layer. Keys:
    ``patch_embed.proj``, ``blocks.{i}.*``, ``patch_unembed.proj``.
    """

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        num_heads: int,
        window: int,
        depth: int,
        resolution: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.patch_embed = _Pointwise(channels, embed_dim)
        self.blocks = nn.ModuleList(
            SwinBlock(
                embed_dim,
                num_heads,
                window,
                0 if i % 2 == 0 else window // 2,
                resolution,
                mlp_ratio,
            )
            for i in range(depth)
        )
        self.patch_unembed = _Pointwise(embed_dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)
