"""FeMaSRConfig: the frozen, JSON-round-trippable description of one FeMaSR network.

Chen et al., "Real-World Blind Super-Resolution via Feature Matching with Implicit High-Resolution
Priors", ACM MM 2022. Defaults are the released x4 model (``FeMaSR_SRX4_model_g.pth``:
``FeMaSRNet(codebook_params=[[32, 1024, 512]], LQ_stage=True, scale_factor=4)``).

How the official constructor maps onto these fields:

- ``channel_query_dict`` (feature width per resolution) -> ``channels``: only the widths on the
  pyramid the network actually uses, from the codebook grid (``gt_resolution / 2**max_depth``, 32
  in every official config) up to ``gt_resolution``. Released: {32: 256, 64: 256, 128: 128,
  256: 64} -> ``(256, 256, 128, 64)``.
- ``codebook_params = [[32, K, C]]`` -> ``codebook_size = K``, ``codebook_dim = C`` (the codebook
  resolution follows from ``gt_resolution`` and ``len(channels)``; one codebook scale only, which is
  what every released model and training option uses).
- ``SwinLayers(embed_dim, blk_depth, num_heads, window_size)`` with 4 RSTBs on a (32, 32)
  reference resolution -> ``swin_dim``, ``swin_depth``, ``swin_heads``, ``swin_window``,
  ``swin_blocks``, ``swin_input_resolution`` (the latter only fixes the stored ``attn_mask``).
- ``scale_factor``, ``LQ_stage``, ``in_channel``, ``gt_resolution``, ``norm_type``, ``act_type``,
  ``use_residual``, ``use_quantize`` keep their meaning (``scale`` is 1 for the HQ stage).
- ``use_semantic_loss`` is training-only (a conv head + VGG19, Eq. 4) and lives in training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from realsr_cli.errors import ConfigError
from realsr_cli.models._blocks.conv import ACT_TYPES, GROUPNORM_GROUPS, NORM_TYPES

__all__ = ["FeMaSRConfig"]


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class FeMaSRConfig:
    """Architecture of a FeMaSR network (Stage II SR model, or the Stage I VQGAN with ``lq_stage=False``).

    Fields:
        scale: SR factor S_up (paper Sec. 3.3: S_up = S_down x 8); 1 for the HQ stage.
        lq_stage: True for the SR network (LR encoder E_l with Swin layers and residual shortcuts,
            Sec. 3.3); False for the HR-prior VQGAN (encoder E, Sec. 3.2).
        in_channel: input image channels.
        gt_resolution: HR training patch size; with ``channels`` it fixes the resolution labels.
        channels: feature widths from the codebook grid (coarsest) up to ``gt_resolution``; the
            decoder G has ``len(channels) - 1`` x2 upsampling stages.
        codebook_size, codebook_dim: K and n_z of the codebook Z (Eq. 1).
        swin_dim, swin_depth, swin_heads, swin_window, swin_blocks, swin_mlp_ratio: the deep
            feature extractor of E_l (``swin_blocks`` RSTBs of ``swin_depth`` Swin blocks each).
        swin_input_resolution: side of the reference map the stored shifted-window masks are
            computed for (official: 32); other sizes recompute the identical mask on the fly.
        norm_type, act_type: normalisation / activation of every ResBlock (see ``_blocks.conv``).
        use_residual: add the multi-scale residual shortcuts of E_l to G (Eq. 8).
        use_quantize: feed the matched codes (True) or the raw features (False, an ablation) to G.
    """

    scale: int = 4
    lq_stage: bool = True
    in_channel: int = 3
    gt_resolution: int = 256
    channels: tuple[int, ...] = (256, 256, 128, 64)
    codebook_size: int = 1024
    codebook_dim: int = 512
    swin_dim: int = 256
    swin_depth: int = 6
    swin_heads: int = 8
    swin_window: int = 8
    swin_blocks: int = 4
    swin_mlp_ratio: float = 4.0
    swin_input_resolution: int = 32
    norm_type: str = "gn"
    act_type: str = "silu"
    use_residual: bool = True
    use_quantize: bool = True

    def __post_init__(self) -> None:
        # tuples may arrive as lists from hand-built configs; keep the dataclass hashable
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        self._validate()

    # ----------------------------------------------------------------- derived quantities
    @property
    def max_depth(self) -> int:
        """Number of x2 upsampling stages of the decoder G (3 for every official model)."""
        return len(self.channels) - 1

    @property
    def codebook_resolution(self) -> int:
        """Side of the codebook grid for an HR patch of ``gt_resolution`` (official: 32)."""
        return self.gt_resolution >> self.max_depth

    @property
    def encode_depth(self) -> int:
        """Stride-2 stages of the encoder: log2(gt_resolution / scale / codebook_resolution)."""
        return self.max_depth - (self.scale.bit_length() - 1)

    @property
    def pad_multiple(self) -> int:
        """LR side multiple that ``upscale`` pads to (official ``test()``: ``8 // scale * 8``)."""
        return 8 // self.scale * 8

    @classmethod
    def released(cls, scale: int = 4) -> FeMaSRConfig:
        """The configuration of the released FeMaSR checkpoints (x2 and x4)."""
        return cls(scale=scale)

    # ----------------------------------------------------------------- validation
    def _fail(self, message: str, hint: str | None = None) -> None:
        raise ConfigError(f"FeMaSRConfig: {message}", hint=hint)

    def _validate(self) -> None:
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            self._fail(f"channels must list >= 2 positive widths, got {self.channels}")
        if self.gt_resolution % (1 << self.max_depth):
            self._fail(
                f"gt_resolution {self.gt_resolution} is not divisible by 2**{self.max_depth}"
            )
        if self.norm_type not in NORM_TYPES:
            self._fail(
                f"norm_type {self.norm_type!r} unknown", hint=f"use one of {', '.join(NORM_TYPES)}"
            )
        if self.act_type not in ACT_TYPES:
            self._fail(
                f"act_type {self.act_type!r} unknown", hint=f"use one of {', '.join(ACT_TYPES)}"
            )
        if self.norm_type == "gn" and any(c % GROUPNORM_GROUPS for c in self.channels):
            self._fail(
                f"GroupNorm needs widths divisible by {GROUPNORM_GROUPS}, got {self.channels}"
            )
        if self.in_channel < 1 or self.codebook_size < 1 or self.codebook_dim < 1:
            self._fail("in_channel, codebook_size and codebook_dim must be positive")
        if not _is_pow2(self.scale):
            self._fail(f"scale must be a power of two, got {self.scale}")
        if not self.lq_stage:
            if self.scale != 1:
                self._fail("the HQ stage (lq_stage=false) reconstructs its input: scale must be 1")
            return
        if self.max_depth not in (2, 3):
            self._fail(
                f"the LR encoder feeds 2 residual shortcuts, so lq_stage needs 3 or 4 channel widths, "
                f"got {len(self.channels)}"
            )
        if self.encode_depth < 1:
            self._fail(
                f"scale {self.scale} leaves no stride-2 stage in the LR encoder",
                hint=f"scale must be at most {1 << (self.max_depth - 1)} for {len(self.channels)} widths",
            )
        if self.swin_dim != self.channels[0]:
            self._fail(
                f"swin_dim {self.swin_dim} must equal the codebook-grid width channels[0]={self.channels[0]}"
            )
        if self.swin_heads < 1 or self.swin_dim % self.swin_heads:
            self._fail(f"swin_dim {self.swin_dim} is not divisible by swin_heads {self.swin_heads}")
        if min(self.swin_window, self.swin_depth, self.swin_blocks, self.swin_input_resolution) < 1:
            self._fail(
                "swin_window, swin_depth, swin_blocks and swin_input_resolution must be positive"
            )
        if self.swin_mlp_ratio <= 0:
            self._fail(f"swin_mlp_ratio must be positive, got {self.swin_mlp_ratio}")
