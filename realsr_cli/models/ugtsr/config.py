"""UGTSRConfig: a FeMaSR network plus UGTSR's three additions, frozen and JSON-round-trippable.

UGTSR ("Incorporating Uncertainty-Guided and Top-k Codebook Matching for Real-World Blind Image
Super-Resolution") is FeMaSR (Chen et al., ACM MM 2022) with

- top-k feature matching (Sec. III-B, Eq. 6-8): ``top_k`` nearest codes fused with the LR feature
  by a Restormer MDTA block before the final nearest-code quantization (``fusion_*`` fields);
- Align-Attention (Sec. III-C, Eq. 9) at the decoder scales that receive LR-encoder shortcuts
  (``align_*`` fields; windowed cross-attention, see :mod:`realsr_cli.models.ugtsr.align`);
- an uncertainty head (Sec. III-A, Eq. 2) for the stage-I network that estimates the
  log-uncertainty map ``s`` used to weight the stage-II loss (Eq. 3).

No official code or checkpoint exists; every field is ours. The two networks of the paper's
recipe are :meth:`UGTSRConfig.stage1` (uncertainty estimator) and :meth:`UGTSRConfig.stage2`
(the SR model that inference runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from realsr_cli.errors import ConfigError
from realsr_cli.models.femasr.config import FeMaSRConfig

__all__ = ["UGTSRConfig", "UNCERTAINTY_CHANNELS"]

#: channels of the log-uncertainty map: one per colour channel of the SR image (as UDL, Ning et
#: al. NeurIPS 2021, whose variance branch predicts one map per colour channel)
UNCERTAINTY_CHANNELS = 3


@dataclass(frozen=True)
class UGTSRConfig:
    """Architecture of a UGTSR network.

    Fields:
        femasr: the underlying FeMaSR SR network (``lq_stage`` must be True). Its modules and
            state-dict keys are reused unchanged; the HR prior (codebook + decoder) is FeMaSR's.
        top_k: candidate codes per position (paper: 3). ``1`` is FeMaSR's nearest-neighbour
            matching: no fusion module is built and the indices/image equal FeMaSR's exactly.
        fusion_dim: width the concatenation [z; c_1..c_k] is projected to for the MDTA fusion.
        fusion_heads: MDTA heads (divide ``fusion_dim``); each has a learnable temperature.
        fusion_blocks: Restormer transformer blocks (MDTA + GDFN) in the fusion module.
        fusion_ffn_expansion: GDFN hidden width = round(fusion_dim * this) (Restormer: 2.66);
            0 drops the GDFN (attention only).
        align_attention: replace FeMaSR's additive shortcut fusion in the decoder by
            Align-Attention (needs ``femasr.use_residual``).
        align_window: side of the non-overlapping attention windows (decoder-feature pixels).
        align_heads: attention heads (divide the shortcut widths ``channels[1]``, ``channels[2]``).
        uncertainty: add the stage-I uncertainty head producing s = log(theta), (B,3,sH,sW).
    """

    femasr: FeMaSRConfig = field(default_factory=FeMaSRConfig)
    top_k: int = 3
    fusion_dim: int = 256
    fusion_heads: int = 8
    fusion_blocks: int = 1
    fusion_ffn_expansion: float = 2.66
    align_attention: bool = True
    align_window: int = 8
    align_heads: int = 8
    uncertainty: bool = False

    def __post_init__(self) -> None:
        self._validate()

    # ----------------------------------------------------------------- derived quantities
    @property
    def scale(self) -> int:
        """SR factor (the FeMaSR network's)."""
        return self.femasr.scale

    @property
    def pad_multiple(self) -> int:
        """LR side multiple that ``upscale`` pads to (FeMaSR's ``8 // scale * 8``)."""
        return self.femasr.pad_multiple

    @property
    def uses_fusion(self) -> bool:
        """Whether a fusion module exists (``top_k > 1``; 1 is FeMaSR's plain matching)."""
        return self.top_k > 1

    @property
    def fusion_hidden(self) -> int:
        """GDFN hidden width (0: no GDFN)."""
        if not self.fusion_ffn_expansion:
            return 0
        return max(1, round(self.fusion_dim * self.fusion_ffn_expansion))

    @property
    def align_levels(self) -> int:
        """Align-Attention modules: decoder scales fed an LR shortcut (2; 1 for 3 widths)."""
        if not (self.align_attention and self.femasr.use_residual):
            return 0
        return min(2, self.femasr.max_depth - 1)

    @property
    def align_widths(self) -> tuple[int, ...]:
        """Feature width of each Align-Attention module (``channels[1]``, ``channels[2]``)."""
        return tuple(self.femasr.channels[1 : 1 + self.align_levels])

    # ----------------------------------------------------------------- the paper's two networks
    @classmethod
    def stage1(cls, femasr: FeMaSRConfig) -> UGTSRConfig:
        """Stage I (Sec. III-A, IV-C): FeMaSR + uncertainty head; no top-k, no Align-Attention."""
        return cls(femasr=femasr, top_k=1, align_attention=False, uncertainty=True)

    @classmethod
    def stage2(
        cls,
        femasr: FeMaSRConfig,
        top_k: int = 3,
        *,
        fusion_dim: int = 256,
        fusion_heads: int = 8,
        align_window: int = 8,
        align_heads: int = 8,
    ) -> UGTSRConfig:
        """Stage II (Sec. III-B/C): top-k fusion + Align-Attention, no uncertainty head.

        This is the SR model inference runs; the sizes default to the paper-scale fields' defaults.
        """
        return cls(
            femasr=femasr,
            top_k=top_k,
            fusion_dim=fusion_dim,
            fusion_heads=fusion_heads,
            align_attention=True,
            align_window=align_window,
            align_heads=align_heads,
            uncertainty=False,
        )

    # ----------------------------------------------------------------- validation
    def _fail(self, message: str, hint: str | None = None) -> None:
        raise ConfigError(f"UGTSRConfig: {message}", hint=hint)

    def _validate(self) -> None:
        if not isinstance(self.femasr, FeMaSRConfig):
            self._fail(f"femasr must be a FeMaSRConfig, got {type(self.femasr).__name__}")
        fm = self.femasr
        if not fm.lq_stage:
            self._fail(
                "femasr.lq_stage must be true: UGTSR is the SR network, not the HR-prior VQGAN"
            )
        if not 1 <= self.top_k <= fm.codebook_size:
            self._fail(
                f"top_k must be in 1..codebook_size ({fm.codebook_size}), got {self.top_k}",
                hint="the paper uses top_k = 3; top_k = 1 is FeMaSR's nearest-neighbour matching",
            )
        if min(self.fusion_dim, self.fusion_heads, self.fusion_blocks) < 1:
            self._fail("fusion_dim, fusion_heads and fusion_blocks must be positive")
        if self.fusion_dim % self.fusion_heads:
            self._fail(
                f"fusion_dim {self.fusion_dim} is not divisible by fusion_heads {self.fusion_heads}"
            )
        if self.fusion_ffn_expansion < 0:
            self._fail(f"fusion_ffn_expansion must be >= 0, got {self.fusion_ffn_expansion}")
        if self.align_window < 1 or self.align_heads < 1:
            self._fail("align_window and align_heads must be positive")
        if self.align_attention and not fm.use_residual:
            self._fail(
                "align_attention fuses the LR-encoder shortcuts, but femasr.use_residual is false",
                hint="set align_attention = false or femasr.use_residual = true",
            )
        for width in self.align_widths:
            if width % self.align_heads:
                self._fail(
                    f"align_heads {self.align_heads} does not divide the shortcut width {width}"
                )
