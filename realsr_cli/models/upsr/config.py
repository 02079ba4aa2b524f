"""Frozen, closed configs for UPSR (STYLE §4). Defaults are the released ``001_UPSR_RealSR_x4.yml``.

``UPSRConfig`` nests one config per part:
- ``denoiser``: the Swin-UNet ``f(x_t, t, y, g(y))`` (official ``network_g``, ``UNetModelSwin``),
- ``aux``: the auxiliary SR network ``g`` (official ``network_mse``, ATD real-world variant),
- ``diffusion``: the residual-shifting schedule, the uncertainty weight and the sampler.

Options the release never varies (dims=2, scale-shift norm on, conv resampling, no dropout, ATD's
``pixelshuffledirect`` upsampler with a ``1conv`` residual) are fixed by the modules, not configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UPSRDenoiserConfig", "ATDConfig", "UPSRDiffusionConfig", "UPSRConfig", "reduced_config"]


@dataclass(frozen=True)
class UPSRDenoiserConfig:
    """The Swin-UNet denoiser (official names in brackets where they differ).

    ``in_channels`` is the PixelUnshuffle(scale) layout of the 3-channel HR state (48 for x4),
    ``lq_channels`` the conditioning ``PixelUnshuffle(cat[g(y), y_bicubic])`` (96; the official code
    hard-codes it). ``image_size`` is the training size of that layout: it decides which Swin blocks
    shift their windows (a block whose resolution is <= ``window_size`` never shifts).
    """

    image_size: int = 64
    in_channels: int = 48
    lq_channels: int = 96
    out_channels: int = 3
    model_channels: int = 160
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    #: feature resolutions (``image_size >> level``) whose first ResBlock is followed by a Swin layer
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0
    #: width of the nearest-neighbour x4 reconstruction head
    num_feat: int = 128


@dataclass(frozen=True)
class ATDConfig:
    """ATD ("Adaptive Token Dictionary", Zhang et al. CVPR 2024), UPSR's real-world variant of g.

    2.53M parameters as released. ``reduced_dim`` is the official ``reducted_dim``.
    """

    scale: int = 4
    in_channels: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (4, 4, 4, 4)
    window_size: int = 16
    category_size: int = 128
    num_tokens: int = 64
    reduced_dim: int = 8
    convffn_kernel_size: int = 7
    mlp_ratio: float = 1.0


@dataclass(frozen=True)
class UPSRDiffusionConfig:
    """Residual shifting + uncertainty-guided noise weighting + the sampler of ``sample_func``."""

    num_timesteps: int = 5
    kappa: float = 2.5
    min_noise_level: float = 0.2
    etas_end: float = 0.99
    power: float = 0.2
    #: the hard-coded ``var_un`` of the network-input normalisation
    input_var: float = 0.3
    #: ``psi_max`` of the uncertainty weight (official option ``un``)
    psi_max: float = 0.1
    #: ``b_u``, the weight of certain pixels (official option ``min_noise``)
    min_weight: float = 0.4
    #: ResShift DDIM ``ddim_eta``; 0 (the release) is deterministic given the prior noise
    ddim_eta: float = 0.0


@dataclass(frozen=True)
class UPSRConfig:
    """The whole UPSR x4 model: denoiser + auxiliary network g + schedule.

    ``pad_multiple`` is the official ``desired_min_size``: the LR input is reflect-padded
    bottom/right to a multiple of it (64) before anything else, and the output is cropped back.
    """

    scale: int = 4
    pad_multiple: int = 64
    denoiser: UPSRDenoiserConfig = field(default_factory=UPSRDenoiserConfig)
    aux: ATDConfig = field(default_factory=ATDConfig)
    diffusion: UPSRDiffusionConfig = field(default_factory=UPSRDiffusionConfig)


def reduced_config() -> UPSRConfig:
    """The narrow denoiser of the ``upsr_*_reduced`` parity fixtures (full-size g)."""
    return UPSRConfig(
        denoiser=UPSRDenoiserConfig(model_channels=32, swin_embed_dim=64, num_feat=32),
    )
