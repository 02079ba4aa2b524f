"""Frozen, closed configs for Depth Anything (a DINOv2 ViT encoder + a DPT decoder).

Depth Anything V2 (Yang et al., "Depth Anything V2", NeurIPS 2024, arXiv:2406.09414) predicts
relative inverse depth (disparity) from one RGB image. The architecture is DPT (Ranftl et al.,
"Vision Transformers for Dense Prediction", ICCV 2021) on a DINOv2 backbone (Oquab et al.,
"DINOv2", TMLR 2024): a patch-14 ViT whose hidden states after four of its layers are
reassembled into a 4-level feature pyramid, fused top-down by RefineNet-style blocks and decoded
by a 3-convolution head.

Field names follow the published Transformers ``config.json`` where one exists, so
:meth:`DepthAnythingConfig.from_transformers` is a plain mapping. Presets: the three V2 relative
depth checkpoints (:meth:`DepthAnythingConfig.preset`) and :meth:`DepthAnythingConfig.tiny` for
tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realsr_cli.errors import ConfigError

__all__ = ["DINOv2Config", "DepthAnythingConfig", "PRESETS"]


@dataclass(frozen=True)
class DINOv2Config:
    """The DINOv2 ViT backbone (pre-norm blocks with LayerScale, GELU MLP, learned positions).

    ``image_size // patch_size`` is the side of the learned position-embedding grid (518 // 14 =
    37 for the published models); other input sizes interpolate it bicubically.
    """

    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 518
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if min(self.hidden_size, self.num_layers, self.num_heads, self.mlp_ratio) < 1:
            raise ConfigError("DINOv2 sizes must be positive")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.patch_size < 1 or self.image_size < self.patch_size:
            raise ConfigError("DINOv2 needs patch_size >= 1 and image_size >= patch_size")

    @property
    def grid(self) -> int:
        """Side of the learned position-embedding grid."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class DepthAnythingConfig:
    """Depth Anything: DINOv2 backbone + DPT neck and head.

    ``out_indices``: 1-based backbone layers whose outputs (after the final LayerNorm) feed the
    neck, shallow to deep; ``neck_hidden_sizes`` / ``reassemble_factors``: per level, the width
    after the 1x1 projection and the resize factor (4: 4x4 transposed conv, 2: 2x2 transposed
    conv, 1: none, 0.5: stride-2 3x3 conv); ``fusion_hidden_size``: width of the fusion blocks;
    ``head_hidden_size``: width of the head's second conv. ``depth_type`` "relative" ends in ReLU
    (disparity up to scale and shift), "metric" in a sigmoid times ``max_depth`` (metres).
    """

    backbone: DINOv2Config = field(default_factory=DINOv2Config)
    out_indices: tuple[int, ...] = (3, 6, 9, 12)
    neck_hidden_sizes: tuple[int, ...] = (48, 96, 192, 384)
    reassemble_factors: tuple[float, ...] = (4, 2, 1, 0.5)
    fusion_hidden_size: int = 64
    head_hidden_size: int = 32
    depth_type: str = "relative"
    max_depth: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.out_indices)
        if n < 1 or n != len(self.neck_hidden_sizes) or n != len(self.reassemble_factors):
            raise ConfigError(
                "out_indices, neck_hidden_sizes and reassemble_factors must have the same length"
            )
        if any(not 1 <= i <= self.backbone.num_layers for i in self.out_indices):
            raise ConfigError(f"out_indices must lie in 1..{self.backbone.num_layers}")
        for f in self.reassemble_factors:
            up_ok = f >= 1 and float(f).is_integer()
            down_ok = 0 < f < 1 and float(1 / f).is_integer()
            if not (up_ok or down_ok):
                raise ConfigError(f"reassemble factor {f} must be an integer or 1/integer")
        if self.fusion_hidden_size < 2 or self.fusion_hidden_size % 2:
            raise ConfigError("fusion_hidden_size must be even (the head halves it)")
        if min(self.neck_hidden_sizes) < 1 or self.head_hidden_size < 1:
            raise ConfigError("neck and head widths must be positive")
        if self.depth_type not in ("relative", "metric"):
            raise ConfigError(f"depth_type must be 'relative' or 'metric', got {self.depth_type!r}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, variant: str) -> DepthAnythingConfig:
        """A published relative-depth model: ``v2-small`` (24.8M parameters, Apache-2.0),
        ``v2-base`` (97.5M) or ``v2-large`` (335.3M; both CC-BY-NC-4.0); ``tiny`` for tests."""
        try:
            return PRESETS[variant]()
        except KeyError:
            raise ConfigError(
                f"no Depth Anything preset {variant!r}",
                hint=f"known presets: {', '.join(sorted(PRESETS))}",
            ) from None

    @classmethod
    def v2_small(cls) -> DepthAnythingConfig:
        return cls()

    @classmethod
    def v2_base(cls) -> DepthAnythingConfig:
        return cls(
            backbone=DINOv2Config(hidden_size=768, num_layers=12, num_heads=12),
            neck_hidden_sizes=(96, 192, 384, 768),
            fusion_hidden_size=128,
        )

    @classmethod
    def v2_large(cls) -> DepthAnythingConfig:
        return cls(
            backbone=DINOv2Config(hidden_size=1024, num_layers=24, num_heads=16),
            out_indices=(5, 12, 18, 24),
            neck_hidden_sizes=(256, 512, 1024, 1024),
            fusion_hidden_size=256,
        )

    @classmethod
    def tiny(cls) -> DepthAnythingConfig:
        """The test preset: 24 wide, 4 layers, a 4x4 position grid; same structure as V2."""
        return cls(
            backbone=DINOv2Config(hidden_size=24, num_layers=4, num_heads=2, image_size=56),
            out_indices=(1, 2, 3, 4),
            neck_hidden_sizes=(6, 12, 24, 24),
            fusion_hidden_size=8,
            head_hidden_size=4,
        )

    # ------------------------------------------------------------------ transformers
    @classmethod
    def from_transformers(cls, cfg: Mapping[str, Any]) -> DepthAnythingConfig:
        """Map a Transformers ``DepthAnythingConfig`` (its ``config.json`` as a dict) to ours.

        Missing keys take Transformers' defaults. Variants this implementation does not build
        (SwiGLU MLPs, no final LayerNorm on the features, another activation, another head input,
        mismatched patch sizes) raise :class:`ConfigError` instead of loading silently wrong.
        """
        bb: Mapping[str, Any] = cfg.get("backbone_config") or {
            "image_size": 518, "hidden_size": 384, "num_attention_heads": 6,
            "out_indices": [9, 10, 11, 12],
        }  # fmt: skip
        unsupported = {
            "use_swiglu_ffn": (bb.get("use_swiglu_ffn", False), False),
            "apply_layernorm": (bb.get("apply_layernorm", True), True),
            "hidden_act": (bb.get("hidden_act", "gelu"), "gelu"),
            "num_channels": (bb.get("num_channels", 3), 3),
            "head_in_index": (cfg.get("head_in_index", -1), -1),
            "backbone model_type": (bb.get("model_type", "dinov2"), "dinov2"),
        }
        for key, (got, want) in unsupported.items():
            if got != want:
                raise ConfigError(f"Depth Anything config: {key} = {got!r} is not supported")
        patch = int(bb.get("patch_size", 14))
        if int(cfg.get("patch_size", 14)) != patch:
            raise ConfigError("Depth Anything config: patch_size differs from the backbone's")
        layers = int(bb.get("num_hidden_layers", 12))
        out = bb.get("out_indices")
        if out is None:
            features = bb.get("out_features") or [f"stage{layers}"]
            out = [int(str(s).removeprefix("stage")) for s in features]
        hidden = int(bb.get("hidden_size", 768))
        if int(cfg.get("reassemble_hidden_size", 384)) != hidden:
            raise ConfigError("Depth Anything config: reassemble_hidden_size != backbone hidden_size")
        max_depth = cfg.get("max_depth")
        return cls(
            backbone=DINOv2Config(
                hidden_size=hidden,
                num_layers=layers,
                num_heads=int(bb.get("num_attention_heads", 12)),
                mlp_ratio=int(bb.get("mlp_ratio", 4)),
                patch_size=patch,
                image_size=int(bb.get("image_size", 224)),
                layer_norm_eps=float(bb.get("layer_norm_eps", 1e-6)),
                qkv_bias=bool(bb.get("qkv_bias", True)),
            ),
            out_indices=tuple(int(i) for i in out),
            neck_hidden_sizes=tuple(int(c) for c in cfg.get("neck_hidden_sizes", (48, 96, 192, 384))),
            reassemble_factors=tuple(cfg.get("reassemble_factors", (4, 2, 1, 0.5))),
            fusion_hidden_size=int(cfg.get("fusion_hidden_size", 64)),
            head_hidden_size=int(cfg.get("head_hidden_size", 32)),
            depth_type=str(cfg.get("depth_estimation_type", "relative")),
            max_depth=float(max_depth) if max_depth else 1.0,
        )


#: preset name (the variant of a ``depth_anything-<variant>`` weights id) -> config factory
PRESETS = {
    "v2-small": DepthAnythingConfig.v2_small,
    "v2-base": DepthAnythingConfig.v2_base,
    "v2-large": DepthAnythingConfig.v2_large,
    "tiny": DepthAnythingConfig.tiny,
}
