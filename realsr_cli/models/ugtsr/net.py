"""UGTSR network: FeMaSR + top-k fusion matching + Align-Attention (+ the stage-I uncertainty head).

UGTSR ("Incorporating Uncertainty-Guided and Top-k Codebook Matching for Real-World Blind Image
Super-Resolution"; no official code). :class:`UGTSRNet` subclasses :class:`FeMaSRNet`: every
FeMaSR module and state-dict key is inherited unchanged (so a FeMaSR checkpoint's encoder, codebook
and decoder load into it with ``strict=False`` and :data:`PRIOR_PREFIXES` still name the HR prior),
and the additions live under their own prefixes (:data:`UGTSR_PREFIXES`):

=====================  ======================================================================
``fusion.``            :class:`TopKFusion`, F of Eq. 7 (only when ``top_k > 1``)
``align.{i}.``         :class:`AlignAttention` at decoder stage i+1 (Eq. 9; ``align_attention``)
``uncertainty_head.``  log-uncertainty branch s of Eq. 2 (stage-I network; ``uncertainty``)
=====================  ======================================================================

Matching (Sec. III-B, Eq. 6-8): ``z = before_quant(H_F(E_l(lq)))`` (FeMaSR's z-hat), its ``top_k``
nearest codes c_1..c_k (L2, nearest first), ``z' = F(z, c_1..c_k)``, then the nearest code of z'
with FeMaSR's straight-through estimator ``z' + sg[q[z'] - z']``. With ``top_k == 1`` there is no
fusion: ``z' = z`` and the indices and image are FeMaSR's, bit for bit.

Uncertainty (Sec. III-A, Eq. 2): ``uncertainty_head`` maps the last decoder features (the input of
``out_conv``) to ``s = log(theta)``, (B,3,sH,sW), one map per colour channel, next to the SR mean
``out_conv(.)``: 3x3 conv (width kept), FeMaSR's activation, 3x3 conv to 3 channels, unbounded.

Tensors: images (B,3,H,W) float nominally in [0,1], outputs not clamped; features (B,C,h,w) on the
codebook grid h = H * scale / 2**max_depth of the (padded) input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from realsr_cli.models._blocks.conv import Activation
from realsr_cli.models._blocks.vq import Quantized
from realsr_cli.models.femasr.config import FeMaSRConfig
from realsr_cli.models.femasr.net import PRIOR_PREFIXES, FeMaSRNet, FeMaSROutput
from realsr_cli.models.ugtsr.align import AlignAttention
from realsr_cli.models.ugtsr.config import UNCERTAINTY_CHANNELS, UGTSRConfig
from realsr_cli.models.ugtsr.fusion import TopKFusion

__all__ = [
    "PRIOR_PREFIXES",
    "UGTSR_PREFIXES",
    "TopKMatch",
    "UGTSROutput",
    "UGTSRNet",
    "UncertaintyHead",
]

#: state-dict prefixes of the modules UGTSR adds to FeMaSR (present according to the config)
UGTSR_PREFIXES = ("fusion.", "align.", "uncertainty_head.")


@dataclass
class TopKMatch:
    """Result of :meth:`UGTSRNet.match` on z (B,n_z,h,w).

    ``candidates``: (B,k,h,w) int64 ids of the k nearest codes of z, nearest first (Eq. 6).
    ``fused``: (B,n_z,h,w) z' = F(z, c_1..c_k) (Eq. 7); z itself when ``top_k == 1``.
    ``quantized``: nearest-code quantization of z' (Eq. 8): ``z_q`` (straight-through),
    ``codes`` (differentiable w.r.t. the codebook), ``indices`` (B,1,h,w) int64.
    """

    candidates: Tensor
    fused: Tensor
    quantized: Quantized


@dataclass
class UGTSROutput(FeMaSROutput):
    """Everything one pass of :meth:`UGTSRNet.encode_and_decode` produces.

    FeMaSR's fields keep their meaning: ``image`` (B,3,S*H,S*W) the SR mean, unclamped;
    ``feat_to_quant`` (B,n_z,h,w) the LR feature z before matching (the paper's z_lq of the
    feature-matching loss, Eq. 13); ``z_quant`` what the decoder received (quantized z' with
    straight-through gradients); ``codes`` (B,n_z,h,w) the chosen codebook rows; ``indices``
    (B,1,h,w) int64 the chosen ids (the *fused* match). Added:

    ``fused``: (B,n_z,h,w) z', the vector that was quantized (``feat_to_quant`` when top_k == 1).
    ``candidates``: (B,top_k,h,w) int64 the top-k code ids of z, nearest first.
    ``log_uncertainty``: (B,3,S*H,S*W) s = log(theta) of Eq. 2, float, unbounded; None unless
    ``config.uncertainty`` (and not skipped).
    """

    fused: Tensor
    candidates: Tensor
    log_uncertainty: Tensor | None = None


class UncertaintyHead(nn.Sequential):
    """Log-uncertainty branch: 3x3 conv, activation, 3x3 conv to one channel per colour channel.

    Keys ``0`` (conv, width kept), ``1`` (activation; parameters only for PReLU), ``2`` (conv).
    (B,C,H,W) last decoder features -> (B,3,H,W) s, unbounded.
    """

    def __init__(self, channels: int, act_type: str) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1),
            Activation(channels, act_type),
            nn.Conv2d(channels, UNCERTAINTY_CHANNELS, 3, padding=1),
        )


class UGTSRNet(FeMaSRNet):
    """UGTSR: FeMaSR's encoder/codebook/decoder plus top-k fusion, Align-Attention, uncertainty.

    ``upscale(lq)`` is FeMaSR's inference path (mirror pad, one pass, crop) returning the SR mean.
    ``forward(x)`` is the training entry (no padding) returning :class:`UGTSROutput`.
    Built from a :class:`UGTSRConfig` only; pure (no I/O, no device moves).
    """

    def __init__(self, config: UGTSRConfig | None = None) -> None:
        config = config or UGTSRConfig()
        super().__init__(config.femasr)
        self.config: UGTSRConfig = config  # type: ignore[assignment]  # FeMaSR's is config.femasr
        fm = config.femasr
        self.fusion: TopKFusion | None = None
        self.align: nn.ModuleList | None = None
        self.uncertainty_head: UncertaintyHead | None = None
        if config.uses_fusion:
            self.fusion = TopKFusion(
                fm.codebook_dim,
                config.top_k,
                config.fusion_dim,
                config.fusion_heads,
                config.fusion_blocks,
                config.fusion_hidden,
            )
        if config.align_levels:
            self.align = nn.ModuleList(
                AlignAttention(width, config.align_heads, config.align_window)
                for width in config.align_widths
            )
        if config.uncertainty:
            self.uncertainty_head = UncertaintyHead(fm.channels[-1], fm.act_type)

    # ------------------------------------------------------------------ parts
    @property
    def femasr_config(self) -> FeMaSRConfig:
        """The :class:`FeMaSRConfig` of the underlying FeMaSR network."""
        return self.config.femasr

    def added_modules(self) -> dict[str, nn.Module]:
        """The modules UGTSR adds to FeMaSR, by state-dict prefix (only those the config builds)."""
        found = {
            "fusion": self.fusion,
            "align": self.align,
            "uncertainty_head": self.uncertainty_head,
        }
        return {name: module for name, module in found.items() if module is not None}

    def match(self, feat_to_quant: Tensor, candidates: Tensor | None = None) -> TopKMatch:
        """Top-k matching of z (B,n_z,h,w): Eq. 6 (candidates), 7 (fusion), 8 (quantization).

        ``candidates`` (B,>=top_k,h,w) int64 may be passed when already computed (nearest first).
        """
        k = self.config.top_k
        if self.fusion is None:  # top_k == 1: FeMaSR's nearest-neighbour matching, unchanged
            q = self.quantizer(feat_to_quant)
            return TopKMatch(candidates=q.indices, fused=feat_to_quant, quantized=q)
        if candidates is None:
            candidates = self.quantizer.nearest(feat_to_quant, k)[1]
        candidates = candidates[:, :k]
        # (B,k,h,w) ids -> (B,k,h,w,n_z) rows -> (B,k,n_z,h,w)
        codes = self.quantizer.embedding(candidates).permute(0, 1, 4, 2, 3)
        fused = self.fusion(feat_to_quant, codes.to(feat_to_quant.dtype))
        return TopKMatch(candidates=candidates, fused=fused, quantized=self.quantizer(fused))

    def decode_features(self, z_quant: Tensor, shortcuts: Sequence[Tensor] = ()) -> Tensor:
        """Decoder G up to (not including) ``out_conv``: (B,n_z,h,w) -> (B,channels[-1],Sh,Sw).

        At stage i >= 1 the shortcut ``shortcuts[i-1]`` (B,channels[i],2**i h,2**i w) is fused
        into the decoder features: by Align-Attention when configured (Eq. 9), else by FeMaSR's
        addition (FeMaSR Eq. 8).
        """
        x = self.after_quant_group[0](z_quant)
        for i, stage in enumerate(self.decoder_group):
            if 0 < i <= len(shortcuts):
                if self.align is not None and i <= len(self.align):
                    x = self.align[i - 1](shortcuts[i - 1], x)
                else:
                    x = x + shortcuts[i - 1]
            x = stage(x)
        return x

    def decode(self, z_quant: Tensor, shortcuts: Sequence[Tensor] = ()) -> Tensor:
        """Decoder G with shortcut fusion: (B,n_z,h,w) -> (B,3,2**max_depth h,...), unclamped."""
        return self.out_conv(self.decode_features(z_quant, shortcuts))

    def fp32_parts(self) -> list[nn.Module]:
        """FeMaSR's deciding parts plus the top-k fusion, which chooses the code UGTSR decodes."""
        return super().fp32_parts() + ([self.fusion] if self.fusion is not None else [])

    # ------------------------------------------------------------------ passes
    def encode_and_decode(self, x: Tensor, *, uncertainty: bool = True) -> UGTSROutput:
        """One full pass on an input whose size is already valid (no padding, no crop).

        ``x`` (B,3,H,W) in [0,1], H and W multiples of :attr:`pad_multiple`. ``uncertainty=False``
        skips the uncertainty head (``log_uncertainty`` is then None).
        """
        fm = self.config.femasr
        feats = self.encode(x)
        feat_to_quant = self.before_quant_group[0](feats[0])
        m = self.match(feat_to_quant)
        q = m.quantized
        z_quant = q.z_q if fm.use_quantize else m.fused
        features = self.decode_features(z_quant, feats[1:] if fm.use_residual else ())
        log_uncertainty = None
        if uncertainty and self.uncertainty_head is not None:
            log_uncertainty = self.uncertainty_head(features)
        return UGTSROutput(
            image=self.out_conv(features),
            feat_to_quant=feat_to_quant,
            z_quant=z_quant,
            codes=q.codes,
            indices=q.indices,
            fused=m.fused,
            candidates=m.candidates,
            log_uncertainty=log_uncertainty,
        )

    def forward(self, x: Tensor) -> UGTSROutput:
        """Training entry point: :meth:`encode_and_decode` with every configured head."""
        return self.encode_and_decode(x)

    @torch.no_grad()
    def match_indices(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """Codebook matching of an already padded input (for the matching-accuracy metric).

        Returns ``(chosen, candidates)``: ``chosen`` (B,1,h,w) int64 the fused match the decoder
        receives (Eq. 8); ``candidates`` (B,k,h,w) int64 the k nearest codes of z, nearest first
        (k may differ from ``config.top_k``; the fusion always uses ``top_k`` of them).
        """
        feat_to_quant = self.before_quant_group[0](self.encode(x)[0])
        nearest = self.quantizer.nearest(feat_to_quant, max(k, self.config.top_k))[1]
        m = self.match(feat_to_quant, nearest)
        return m.quantized.indices, nearest[:, :k]

    def _upscale_lq(self, lq: Tensor) -> Tensor:
        """:meth:`upscale`'s part: the SR mean (B,3,sH,sW), FeMaSR's mirror padding and crop."""
        sr, _ = self.upscale_with_uncertainty(lq, uncertainty=False)
        return sr

    @torch.no_grad()
    def upscale_with_uncertainty(
        self, lq: Tensor, *, uncertainty: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Like :meth:`upscale`, also returning the cropped log-uncertainty s (B,3,sH,sW) or None.

        s is None when the network has no uncertainty head or ``uncertainty`` is False.
        """
        h, w = lq.shape[-2:]
        s = self.config.scale
        out = self.encode_and_decode(self.pad_lq(lq), uncertainty=uncertainty)
        log_u = out.log_uncertainty
        return out.image[..., : h * s, : w * s], (
            None if log_u is None else log_u[..., : h * s, : w * s]
        )
