"""FeMaSR network: LR encoder E_l, codebook Z, decoder G (and the Stage I VQGAN with the same class).

Chen et al., "Real-World Blind Super-Resolution via Feature Matching with Implicit High-Resolution
Priors", ACM MM 2022 (https://github.com/chaofengc/FeMaSR). Module and parameter names follow the
official ``FeMaSRNet`` so its state dict loads 1:1 (after :func:`convert_official_state_dict`):

=========================  ==================================================================
``multiscale_encoder``     E_l (Sec. 3.3) when ``lq_stage``: shallow conv head + stride-2
                           stages (S_down), Swin feature extraction H_F (Eq. 6), upsampling
                           shortcut blocks H_up (Eq. 8). E (Sec. 3.2) for the HQ stage.
``before_quant_group.0``   1x1 conv to the codebook width n_z: produces z-hat (Eq. 1, 6)
``quantize_group.0``       codebook Z and nearest-code matching q[.] (Eq. 1, 5)
``after_quant_group.0``    3x3 conv from n_z back to the decoder width (first layer of G)
``decoder_group``          x2 upsampling stages G_up^i of the decoder G (Eq. 2, 8)
``out_conv``               3x3 conv to RGB (last layer of G)
=========================  ==================================================================

The high-resolution prior (HRP) of the paper is ``quantize_group`` + ``after_quant_group`` +
``decoder_group`` + ``out_conv`` (:data:`PRIOR_PREFIXES`, frozen in Stage II; see
:meth:`FeMaSRNet.prior_modules`).

Tensors: images (B,3,H,W) float, nominally in [0,1] (no mean/std normalisation), outputs not
clamped; features (B,C,h,w) with h = H * scale / 2**max_depth on the padded grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from realsr_cli.models._blocks.conv import DownBlock, UpBlock
from realsr_cli.models._blocks.pad import mirror_pad
from realsr_cli.models._blocks.swin import RSTB
from realsr_cli.models._blocks.tracing import tracing_overrides
from realsr_cli.models._blocks.upscaler import DeterministicUpscaler
from realsr_cli.models._blocks.vq import Quantized, VectorQuantizer
from realsr_cli.models.femasr.config import FeMaSRConfig

__all__ = [
    "PRIOR_PREFIXES",
    "FeMaSROutput",
    "FeMaSRNet",
    "MultiScaleEncoder",
    "SwinLayers",
    "mirror_pad",
]

#: state-dict prefixes of the HR prior (codebook Z + decoder G), frozen during Stage II training
PRIOR_PREFIXES = ("quantize_group.", "after_quant_group.", "decoder_group.", "out_conv.")


@dataclass
class FeMaSROutput:
    """Everything one pass of :meth:`FeMaSRNet.encode_and_decode` produces.

    ``image``: (B,3,S*H,S*W) decoded image for the (already padded) input, float, unclamped.
    ``feat_to_quant``: (B,n_z,h,w) encoder features z-hat before matching (Eq. 6; the feature
    matching loss Eq. 9 compares them with the ground-truth codes).
    ``z_quant``: (B,n_z,h,w) what the decoder received: matched codes with straight-through
    gradients (or ``feat_to_quant`` itself when ``use_quantize`` is off).
    ``codes``: (B,n_z,h,w) the matched codebook rows, differentiable w.r.t. the codebook (Eq. 3).
    ``indices``: (B,1,h,w) int64 code ids.
    """

    image: Tensor
    feat_to_quant: Tensor
    z_quant: Tensor
    codes: Tensor
    indices: Tensor


class SwinLayers(nn.Module):
    """Deep feature extraction H_F of E_l: ``swin_blocks`` RSTBs (SwinIR-style; keys ``swin_blks.{i}``).

    (B,swin_dim,h,w) -> same; h, w multiples of ``swin_window``.
    """

    def __init__(self, config: FeMaSRConfig) -> None:
        super().__init__()
        res = (config.swin_input_resolution, config.swin_input_resolution)
        self.swin_blks = nn.ModuleList(
            RSTB(
                config.swin_dim,
                config.swin_depth,
                config.swin_heads,
                config.swin_window,
                input_resolution=res,
                mlp_ratio=config.swin_mlp_ratio,
            )
            for _ in range(config.swin_blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.swin_blks:
            x = block(x)
        return x


class MultiScaleEncoder(nn.Module):
    """Encoder E (HQ stage, Sec. 3.2) or LR encoder E_l (LQ stage, Sec. 3.3).

    ``in_conv`` is a 4x4 conv with padding 1 (one pixel smaller output, as in the official code),
    ``blocks`` hold ``encode_depth`` stride-2 :class:`DownBlock` stages; in the LQ stage they are
    followed by :class:`SwinLayers` and two :class:`UpBlock` shortcut stages H_up^1, H_up^2 (Eq. 8).
    """

    def __init__(self, config: FeMaSRConfig) -> None:
        super().__init__()
        ch, norm, act = config.channels, config.norm_type, config.act_type
        depth = config.encode_depth
        self.lq_stage = config.lq_stage
        self.in_conv = nn.Conv2d(config.in_channel, ch[depth], 4, padding=1)
        blocks: list[nn.Module] = [
            DownBlock(ch[lvl], ch[lvl - 1], norm, act) for lvl in range(depth, 0, -1)
        ]
        if config.lq_stage:
            blocks.append(SwinLayers(config))
            blocks += [UpBlock(ch[0], ch[1], norm, act), UpBlock(ch[1], ch[2], norm, act)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B,in_channel,H,W) -> features coarsest first.

        LQ stage: ``[H_F(x), H_up^1, H_up^2]`` on the codebook grid and its x2, x4 upsamplings;
        HQ stage: the stride-2 outputs, deepest (codebook grid) first.
        """
        outputs = []
        x = self.in_conv(x)
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs[-3:] if self.lq_stage else outputs[::-1]


class DecoderBlock(nn.Module):
    """One x2 stage G_up^i of the decoder (keys ``block.{1,2,3}``)."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, act_type: str) -> None:
        super().__init__()
        self.block = UpBlock(in_channels, out_channels, norm_type, act_type)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class PostQuantConv(nn.Module):
    """3x3 conv from the codebook width back to the decoder width (key ``conv``)."""

    def __init__(self, code_dim: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(code_dim, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(z)


class FeMaSRNet(DeterministicUpscaler):
    """FeMaSR: SR by matching LR features to a pretrained HR codebook, decoded by its VQGAN decoder.

    ``upscale(lq)`` is the official ``test()``: mirror-pad, :meth:`encode_and_decode`, crop.
    Built from a :class:`FeMaSRConfig` only; pure (no I/O, no device moves).
    """

    def __init__(self, config: FeMaSRConfig | None = None) -> None:
        super().__init__()
        config = config or FeMaSRConfig()
        self.config = config
        ch, norm, act = config.channels, config.norm_type, config.act_type
        self.multiscale_encoder = MultiScaleEncoder(config)
        self.decoder_group = nn.ModuleList(
            DecoderBlock(ch[i], ch[i + 1], norm, act) for i in range(config.max_depth)
        )
        self.out_conv = nn.Conv2d(ch[-1], 3, 3, padding=1)
        self.quantize_group = nn.ModuleList(
            [VectorQuantizer(config.codebook_size, config.codebook_dim)]
        )
        self.before_quant_group = nn.ModuleList([nn.Conv2d(ch[0], config.codebook_dim, 1)])
        self.after_quant_group = nn.ModuleList([PostQuantConv(config.codebook_dim, ch[0])])

    # ------------------------------------------------------------------ parts
    @property
    def quantizer(self) -> VectorQuantizer:
        """The codebook Z and its nearest-code matching (Eq. 1)."""
        return self.quantize_group[0]

    def prior_modules(self) -> dict[str, nn.Module]:
        """The HR prior (codebook Z + decoder G) by state-dict prefix; frozen in Stage II."""
        return {
            "quantize_group": self.quantize_group,
            "after_quant_group": self.after_quant_group,
            "decoder_group": self.decoder_group,
            "out_conv": self.out_conv,
        }

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features, coarsest first (see :meth:`MultiScaleEncoder.forward`).

        ``x`` (B,in_channel,H,W) in [0,1]: LR (LQ stage) or HR (HQ stage), sides multiples of
        :attr:`pad_multiple` (what :meth:`pad_lq` produces).
        """
        return self.multiscale_encoder(x)

    def quantize(self, feat: Tensor) -> tuple[Tensor, Quantized]:
        """Project codebook-grid features to n_z and match them to Z (Eq. 1/5).

        (B,channels[0],h,w) -> (z-hat (B,n_z,h,w), :class:`Quantized`).
        """
        feat_to_quant = self.before_quant_group[0](feat)
        return feat_to_quant, self.quantizer(feat_to_quant)

    def decode(self, z_quant: Tensor, shortcuts: Sequence[Tensor] = ()) -> Tensor:
        """Decoder G (Eq. 2) with optional residual shortcuts (Eq. 8).

        ``z_quant`` (B,n_z,h,w); ``shortcuts[i-1]`` (B,channels[i],2**i h,2**i w) is added to the
        features entering stage i (i >= 1): f_i = G_up^i(f_{i-1}) + H_up^i(...). Returns
        (B,3,2**max_depth h,2**max_depth w), unclamped.
        """
        x = self.after_quant_group[0](z_quant)
        for i, stage in enumerate(self.decoder_group):
            if 0 < i <= len(shortcuts):
                x = x + shortcuts[i - 1]
            x = stage(x)
        return self.out_conv(x)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Decode code ids (B,1,h,w) with the prior alone, G(Z[indices]) (paper Sec. 5.1, Fig. 3)."""
        return self.decode(self.quantizer.lookup(indices))

    # ------------------------------------------------------------------ passes
    def encode_and_decode(self, x: Tensor) -> FeMaSROutput:
        """One full pass (official ``encode_and_decode``) on an input whose size is already valid.

        ``x`` (B,in_channel,H,W) in [0,1]; LQ stage: H, W multiples of :attr:`pad_multiple`.
        """
        feats = self.encode(x)
        feat_to_quant, q = self.quantize(feats[0])
        z_quant = q.z_q if self.config.use_quantize else feat_to_quant
        use_shortcuts = self.config.lq_stage and self.config.use_residual
        image = self.decode(z_quant, feats[1:] if use_shortcuts else ())
        return FeMaSROutput(
            image=image,
            feat_to_quant=feat_to_quant,
            z_quant=z_quant,
            codes=q.codes,
            indices=q.indices,
        )

    @torch.no_grad()
    def match_indices(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """Codebook matching of an already padded input (for the matching-accuracy metric).

        ``x`` (B,in_channel,H,W) as for :meth:`encode_and_decode`. Returns ``(chosen, candidates)``:
        ``chosen`` (B,1,h,w) int64 the code ids the decoder receives; ``candidates`` (B,k,h,w)
        int64 the k nearest codes of the encoder features, nearest first (FeMaSR: chosen is
        ``candidates[:, :1]``; UGTSR overrides ``chosen`` with its fused match).
        """
        feat_to_quant, _ = self.quantize(self.encode(x)[0])
        _, candidates = self.quantizer.nearest(feat_to_quant, k)
        return candidates[:, :1], candidates

    def forward(self, x: Tensor) -> FeMaSROutput:
        """Training entry point: :meth:`encode_and_decode` (no padding, no crop)."""
        return self.encode_and_decode(x)

    @property
    def pad_multiple(self) -> int:
        """LR sides are padded to a multiple of this (official ``wsz = 8 // scale * 8``)."""
        return self.config.pad_multiple

    # ------------------------------------------------------------------ capabilities
    # CodebookMatching and ExportOverrides (registry/capabilities.py)
    @property
    def codebook_size(self) -> int:
        return self.quantize_group[0].embedding.num_embeddings

    @property
    def lq_stage(self) -> bool:
        return self.multiscale_encoder.lq_stage

    @staticmethod
    def pad_to(x: Tensor, height: int, width: int) -> Tensor:
        """Mirror-pad (B,C,H,W) at the bottom/right to (height, width), as :meth:`pad_lq`."""
        return mirror_pad(x, height, width)

    def export_overrides(self) -> list[tuple[nn.Module, str, object]]:
        return tracing_overrides(self)

    # DecidingParts: what the code indices depend on — the encoder up to the codebook-grid
    # features (LQ stage: not its two UpBlock shortcut stages, which only feed the decoder), the
    # projection and the codebook. The shortcuts and the decoder may run in half precision.
    def fp32_parts(self) -> list[nn.Module]:
        enc = self.multiscale_encoder
        deciding = list(enc.blocks)[:-2] if enc.lq_stage else list(enc.blocks)
        return [enc.in_conv, *deciding, self.before_quant_group, self.quantize_group]

    def pad_lq(self, lq: Tensor) -> Tensor:
        """Official ``test()`` padding: bottom/right by ``(h // m + 1) * m - h`` (1..m px), mirrored.

        (B,C,H,W) -> (B,C,H',W'), H' and W' the next multiples of :attr:`pad_multiple` strictly above.
        """
        m = self.pad_multiple
        h, w = lq.shape[-2:]
        return mirror_pad(lq, (h // m + 1) * m, (w // m + 1) * m)

    def _upscale_lq(self, lq: Tensor) -> Tensor:
        """:meth:`upscale`'s part: :meth:`pad_lq`, :meth:`encode_and_decode`, crop (B,3,sH,sW)."""
        h, w = lq.shape[-2:]
        s = self.config.scale
        image = self.encode_and_decode(self.pad_lq(lq)).image
        return image[..., : h * s, : w * s]
