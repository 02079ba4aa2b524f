"""ATD, UPSR's auxiliary SR network g (real-world variant of the official ``atd_real_arch.py``).

"Transcending the Limit of Local Window: Advanced Super-Resolution Transformer with Adaptive Token
Dictionary" (Zhang, Zhang, Yu; CVPR 2024). Each transformer layer mixes three attentions over the
same normalised tokens (paper Sec. 3, Fig. 2), averaged with ``1/sqrt(3)``:

- SW-MSA: (shifted) window self-attention with a relative position bias (Swin);
- ATD-CA: cross-attention from the tokens to a learned token dictionary ``td`` (M tokens), cosine
  similarity scaled by ``1 + clamp(s, 0, 1) log M`` (paper Eq. 3);
- AC-MSA: tokens are grouped by their most similar dictionary entry (argmax of the ATD-CA map), sorted
  into groups of ``category_size`` and attend within a group (paper Eqs. 5-6);

then a ConvFFN (``fc1 -> GELU -> + depthwise conv -> fc2``), and the dictionary is refined from the
tokens with a sigmoid gate (adaptive token refinement, paper Eq. 4) for the next layer.

Official details reproduced: AC-MSA sorts the category ids with ``torch.sort(..., stable=False)``;
ties (thousands of them) are broken in an implementation-defined order, and a stable sort changes
the released model's output by ~1e-2, so we call the same unstable sort (results are reproducible on
one device type, CPU here). The last group is padded with the flipped tail of the sorted sequence.
AC-MSA scales logits by ``exp(min(logit_scale, log 100))`` without a 1/sqrt(d) factor.

Layouts: ``forward(x)``: x (B,3,H,W) in [0,1] -> (B,3,4H,4W) on the [0,1] scale (not clamped). H, W
are flip-padded bottom/right to a multiple of the window (16) and the output is cropped back. Inside,
tokens are (B, H*W, C), row-major. State-dict keys are the official ones, 1:1, including the int64
``relative_position_index_SA`` buffer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models._blocks.reference import explicit_attention, reference_enabled
from realsr_cli.models._blocks.swin import relative_position_index, window_attention
from realsr_cli.models.upsr.config import ATDConfig
from realsr_cli.models.upsr.swin import MaskCache

__all__ = ["ATD", "shifted_window_mask"]

_MASK_VALUE = -100.0


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """The standard Swin shifted-window mask (9 regions): float32 (nW, w^2, w^2), 0 or -100."""
    img = torch.zeros(height, width)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        for j, cols in enumerate(bands):
            img[rows, cols] = float(3 * i + j)
    ids = img.reshape(height // window, window, width // window, window).permute(0, 2, 1, 3)
    ids = ids.reshape(-1, window * window)
    differs = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(differs.shape).masked_fill_(differs, _MASK_VALUE)


def _flip_pad(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right up to a multiple by appending mirrored copies (edge pixel repeated)."""
    h, w = x.shape[-2:]
    th, tw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    while x.shape[-2] < th:
        x = torch.cat([x, x.flip(-2)], dim=-2)
    while x.shape[-1] < tw:
        x = torch.cat([x, x.flip(-1)], dim=-1)
    return x[..., :th, :tw]


def _take_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for x (B,N,C) and index (B,N) -- a row copy, faster than an expanded gather."""
    b, n, c = x.shape
    if reference_enabled():  # the official ``feature_shuffle``: a gather with an expanded index
        return torch.gather(x, 1, index[..., None].expand(b, n, c))
    flat = (index + torch.arange(b, device=index.device)[:, None] * x.shape[1]).reshape(-1)
    return x.reshape(-1, c).index_select(0, flat).view(b, n, c)


class _WindowAttention(nn.Module):
    """SW-MSA on pre-projected qkv windows. Keys ``relative_position_bias_table``, ``proj``."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.proj = nn.Linear(dim, dim)

    def forward(self, qkv: Tensor, rpi: Tensor, mask: Tensor | None) -> Tensor:
        """qkv (B*nW, N, 3C), rpi int64 (N, N), mask (nW, N, N) or None -> (B*nW, N, C)."""
        bw, n, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv.view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)  # 1, heads, N, N
        out = window_attention(q, k, v, bias, mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class _DictionaryCrossAttention(nn.Module):
    """ATD-CA (paper Eq. 3): tokens attend to the token dictionary. Keys ``scale``, ``wq``, ``wk``, ``wv``."""

    def __init__(self, dim: int, num_tokens: int, reduced_dim: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.wq = nn.Linear(dim, reduced_dim)
        self.wk = nn.Linear(dim, reduced_dim)
        self.wv = nn.Linear(dim, dim)
        self.scale = nn.Parameter(torch.full((num_tokens,), 0.5))

    def forward(self, x: Tensor, td: Tensor) -> tuple[Tensor, Tensor]:
        """x (B,N,C), td (B,M,C) -> (out (B,N,C), similarity (B,N,M), softmax over M)."""
        q = F.normalize(self.wq(x), dim=-1)
        k = F.normalize(self.wk(td), dim=-1)
        attn = q @ k.transpose(-2, -1)
        attn = attn * (1 + self.scale.clamp(0, 1) * math.log(self.num_tokens))
        attn = attn.softmax(dim=-1)
        return attn @ self.wv(td), attn


class _CategoryAttention(nn.Module):
    """AC-MSA (paper Eqs. 5-6): attention inside groups of tokens sharing a dictionary category.

    Keys ``logit_scale`` (1,1), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, category_size: int) -> None:
        super().__init__()
        self.num_heads, self.category_size = num_heads, category_size
        # log(10) as a constant: torch.log on the meta device (loading) imports torch._dynamo
        self.logit_scale = nn.Parameter(torch.full((1, 1), math.log(10.0)))  # == torch.log(10.0) in fp32
        self.proj = nn.Linear(dim, dim)

    def forward(self, qkv: Tensor, sim: Tensor) -> Tensor:
        """qkv (B,N,3C), sim (B,N,M) -> (B,N,C)."""
        b, n, c3 = qkv.shape
        c, heads = c3 // 3, self.num_heads
        gs = min(n, self.category_size)
        ng = -(-n // gs)
        pad = ng * gs - n
        category = sim.argmax(dim=-1)
        # unstable on purpose: the official tie order (module docstring)
        order = torch.sort(category, dim=-1, stable=False).indices
        positions = torch.arange(n, device=order.device)
        inverse = torch.empty_like(order).scatter_(1, order, positions.expand(b, n))
        grouped = _take_rows(qkv, order)
        if pad:
            grouped = torch.cat([grouped, grouped[:, n - pad :].flip(1)], dim=1)
        q, k, v = grouped.view(b * ng, gs, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        logit_scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        attend = explicit_attention if reference_enabled() else F.scaled_dot_product_attention
        out = attend(q * logit_scale, k, v, scale=1.0)  # B*ng,heads,gs,d
        out = out.transpose(1, 2).reshape(b, ng * gs, c)[:, :n]
        out = _take_rows(out, inverse)
        return self.proj(out)


class _DepthwiseConv(nn.Module):
    """Depthwise kxk conv + GELU on tokens. Key ``depthwise_conv.0``."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim), nn.GELU()
        )

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        y = self.depthwise_conv(x.transpose(1, 2).reshape(b, c, *size))
        return y.flatten(2).transpose(1, 2)


class _ConvFFN(nn.Module):
    """``fc1 -> GELU -> (+ depthwise conv) -> fc2`` on tokens. Keys ``fc1``, ``dwconv``, ``fc2``."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DepthwiseConv(hidden, kernel)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = F.gelu(self.fc1(x))
        return self.fc2(x + self.dwconv(x, size))


class _ATDLayer(nn.Module):
    """One ATD transformer layer; all but the last of a group refine the dictionary (``norm3``, ``sigma``)."""

    def __init__(self, cfg: ATDConfig, num_heads: int, shift: int, is_last: bool) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.window, self.shift, self.num_heads = cfg.window_size, shift, num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.is_last = is_last
        if not is_last:
            self.norm3 = nn.InstanceNorm1d(cfg.num_tokens, affine=True)
            self.sigma = nn.Parameter(torch.zeros(cfg.num_tokens, 1))
        self.wqkv = nn.Linear(dim, 3 * dim)
        self.attn_win = _WindowAttention(dim, cfg.window_size, num_heads)
        self.attn_atd = _DictionaryCrossAttention(dim, cfg.num_tokens, cfg.reduced_dim)
        self.attn_aca = _CategoryAttention(dim, num_heads, cfg.category_size)
        self.convffn = _ConvFFN(dim, int(dim * cfg.mlp_ratio), cfg.convffn_kernel_size)

    def _window_branch(
        self, qkv: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor | None
    ) -> Tensor:
        b, n, c3 = qkv.shape
        (h, w), ws, s = size, self.window, self.shift
        grid = qkv.view(b, h, w, c3)
        if s:
            grid = torch.roll(grid, shifts=(-s, -s), dims=(1, 2))
        windows = (
            grid.view(b, h // ws, ws, w // ws, ws, c3)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(-1, ws * ws, c3)
        )
        out = self.attn_win(windows, rpi, mask if s else None)
        c = c3 // 3
        out = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out.reshape(b, n, c)

    def forward(
        self, x: Tensor, td: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """x (B,N,C) tokens, td (B,M,C) dictionary -> updated (x, td)."""
        y = self.norm1(x)
        qkv = self.wqkv(y)
        x_atd, sim = self.attn_atd(y, td)
        x_aca = self.attn_aca(qkv, sim)
        x_win = self._window_branch(qkv, size, rpi, mask)
        x = x + (x_win + x_atd + x_aca) / math.sqrt(3.0)
        x = x + self.convffn(self.norm2(x), size)
        if not self.is_last:
            weights = self.norm3(sim.transpose(1, 2)).softmax(dim=-1)  # B, M, N
            gate = torch.sigmoid(self.sigma)
            td = gate * td + (1 - gate) * (weights @ x)
        return x, td


class _LayerGroup(nn.Module):
    """The official ``BasicBlock``: ``depth`` layers sharing a learned dictionary ``td`` (M, C)."""

    def __init__(self, cfg: ATDConfig, depth: int, num_heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _ATDLayer(cfg, num_heads, 0 if i % 2 == 0 else cfg.window_size // 2, i == depth - 1)
            for i in range(depth)
        )
        self.td = nn.Parameter(torch.empty(cfg.num_tokens, cfg.embed_dim).normal_())  # == randn, meta-safe

    def forward(self, x: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        td = self.td.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            x, td = layer(x, F.normalize(td, dim=-1), size, rpi, mask)
        return x


class _TokenNorm(nn.Module):
    """LayerNorm of (B,C,H,W) features as (B,HW,C) tokens (official PatchEmbed with norm). Key ``norm``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class _ATDBlock(nn.Module):
    """ATDB: layer group -> 3x3 conv on the image grid -> token LayerNorm, plus a residual."""

    def __init__(self, cfg: ATDConfig, depth: int, num_heads: int) -> None:
        super().__init__()
        self.patch_embed = _TokenNorm(cfg.embed_dim)
        self.residual_group = _LayerGroup(cfg, depth, num_heads)
        self.conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        y = self.residual_group(x, size, rpi, mask)
        y = y.transpose(1, 2).reshape(x.shape[0], -1, *size)
        return self.patch_embed(self.conv(y)) + x


class ATD(nn.Module):
    """ATD x``scale`` with the ``pixelshuffledirect`` head: (B,3,H,W) in [0,1] -> (B,3,sH,sW), [0,1] scale."""

    def __init__(self, config: ATDConfig) -> None:
        super().__init__()
        cfg = self.config = config
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError("depths and num_heads must have the same length")
        dim = cfg.embed_dim
        self.conv_first = nn.Conv2d(cfg.in_channels, dim, 3, padding=1)
        self.patch_embed = _TokenNorm(dim)
        self.register_buffer("relative_position_index_SA", relative_position_index(cfg.window_size))
        self.layers = nn.ModuleList(
            _ATDBlock(cfg, d, h) for d, h in zip(cfg.depths, cfg.num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(dim, cfg.scale**2 * cfg.in_channels, 3, padding=1), nn.PixelShuffle(cfg.scale)
        )
        self._masks = MaskCache()

    def _mask(self, h: int, w: int, like: Tensor) -> Tensor:
        ws = self.config.window_size
        if reference_enabled():  # the official forward rebuilds the mask on every call
            return shifted_window_mask(h, w, ws, ws // 2).to(like.device, like.dtype)
        key = (h, w, like.device, like.dtype, torch.is_inference_mode_enabled())
        return self._masks.get(
            key, lambda: shifted_window_mask(h, w, ws, ws // 2).to(like.device, like.dtype)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B,3,H,W) in [0,1] -> (B,3,sH,sW) on the [0,1] scale, not clamped."""
        h0, w0 = x.shape[-2:]
        x = _flip_pad(x, self.config.window_size)
        b, _, h, w = x.shape
        size = (h, w)
        x = self.conv_first((x - 0.5) / 0.5)
        mask, rpi = self._mask(h, w, x), self.relative_position_index_SA
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, size, rpi, mask)
        feats = self.norm(tokens).transpose(1, 2).reshape(b, -1, h, w)
        out = self.upsample(self.conv_after_body(feats) + x)
        s = self.config.scale
        return (out * 0.5 + 0.5)[..., : h0 * s, : w0 * s]
