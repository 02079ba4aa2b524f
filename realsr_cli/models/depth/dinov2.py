"""The DINOv2 ViT backbone of Depth Anything (Oquab et al., "DINOv2: Learning Robust Visual
Features without Supervision", TMLR 2024; ViT: Dosovitskiy et al., ICLR 2021).

Tokens: a patch-``p`` convolution embeds (B,3,H,W) into ``(H//p) * (W//p)`` patch tokens; a
learned CLS token is prepended and learned position embeddings are added. The embeddings were
trained on a ``g x g`` grid (``g = image_size // p``); other grids interpolate the patch part
bicubically (``align_corners=False``, in float32), the CLS position is kept.

Each of the ``num_layers`` pre-norm blocks computes (LayerScale: Touvron et al., CaiT, ICCV 2021)::

    x = x + gamma_1 * Attn(LN_1(x))        x = x + gamma_2 * MLP(LN_2(x))

with multi-head softmax attention (scale ``d_head^-1/2``) and a GELU MLP of width
``mlp_ratio * C``. :meth:`DINOv2Backbone.forward` returns the outputs of the requested layers,
each passed through the final LayerNorm (B, 1+N, C), as Depth Anything uses them.

State-dict keys are the published Transformers checkpoints' (``embeddings.cls_token``,
``encoder.layer.{i}.attention.attention.query.weight``, ``encoder.layer.{i}.layer_scale1.lambda1``,
``layernorm.weight`` ...). ``embeddings.mask_token`` (masked-image-modelling pre-training only)
is kept so those files load strictly; inference never uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.models.depth.config import DINOv2Config

__all__ = ["DINOv2Backbone", "DINOv2Embeddings", "DINOv2Layer"]


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        p = cfg.patch_size
        self.projection = nn.Conv2d(3, cfg.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        """(B,3,H,W) -> (B, (H//p)*(W//p), C), row-major patches."""
        return self.projection(x).flatten(2).transpose(1, 2)


class DINOv2Embeddings(nn.Module):
    """Patch embedding + CLS token + (interpolated) learned position embeddings."""

    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        c, g = cfg.hidden_size, cfg.grid
        self.patch_size = cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))  # pre-training only; see module doc
        self.position_embeddings = nn.Parameter(torch.zeros(1, g * g + 1, c))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def positions(self, grid_h: int, grid_w: int) -> Tensor:
        """Position embeddings (1, 1 + grid_h*grid_w, C) for a ``grid_h x grid_w`` patch grid."""
        table = self.position_embeddings
        n = table.shape[1] - 1
        side = round(n**0.5)
        if (grid_h, grid_w) == (side, side):
            return table
        c = table.shape[-1]
        patch = table[:, 1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
        patch = F.interpolate(
            patch.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False
        ).to(table.dtype)
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, c)
        return torch.cat([table[:, :1], patch], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B,3,H,W) -> tokens (B, 1 + (H//p)*(W//p), C)."""
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embeddings(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions(gh, gw)


class _SelfAttention(nn.Module):
    """The q/k/v projections (keys ``query``, ``key``, ``value``)."""

    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        c = cfg.hidden_size
        self.query = nn.Linear(c, c, bias=cfg.qkv_bias)
        self.key = nn.Linear(c, c, bias=cfg.qkv_bias)
        self.value = nn.Linear(c, c, bias=cfg.qkv_bias)


class _SelfOutput(nn.Module):
    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class _Attention(nn.Module):
    """Multi-head softmax self-attention: ``softmax(q k^T / sqrt(d)) v``, then ``output.dense``."""

    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.attention = _SelfAttention(cfg)
        self.output = _SelfOutput(cfg)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        a = self.attention

        def split(t: Tensor) -> Tensor:  # (B,N,C) -> (B,heads,N,d)
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(a.query(x)), split(a.key(x)), split(a.value(x)))
        return self.output.dense(out.transpose(1, 2).reshape(b, n, c))


class _LayerScale(nn.Module):
    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(cfg.hidden_size))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lambda1


class _MLP(nn.Module):
    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        hidden = cfg.hidden_size * cfg.mlp_ratio
        self.fc1 = nn.Linear(cfg.hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DINOv2Layer(nn.Module):
    """One pre-norm transformer block with LayerScale (module docstring)."""

    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        c, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.norm1 = nn.LayerNorm(c, eps=eps)
        self.attention = _Attention(cfg)
        self.layer_scale1 = _LayerScale(cfg)
        self.norm2 = nn.LayerNorm(c, eps=eps)
        self.mlp = _MLP(cfg)
        self.layer_scale2 = _LayerScale(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class _Encoder(nn.Module):
    def __init__(self, cfg: DINOv2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(DINOv2Layer(cfg) for _ in range(cfg.num_layers))


class DINOv2Backbone(nn.Module):
    """``backbone(x, out_indices)``: (B,3,H,W) normalised image -> list of (B, 1+N, C) tokens.

    ``x`` is ImageNet-normalised; H and W are cut down to multiples of the patch size by the
    patch convolution. ``out_indices`` are 1-based layer numbers (layer ``i``'s output); each
    returned state is ``layernorm(.)`` of it. Layers past the deepest index are not run.
    """

    def __init__(self, config: DINOv2Config | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DINOv2Config()
        self.embeddings = DINOv2Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, out_indices: Sequence[int]) -> list[Tensor]:
        wanted = set(out_indices)
        h = self.embeddings(x)
        outs: dict[int, Tensor] = {}
        for i, layer in enumerate(self.encoder.layer[: max(wanted)], start=1):
            h = layer(h)
            if i in wanted:
                outs[i] = self.layernorm(h)
        return [outs[i] for i in out_indices]
