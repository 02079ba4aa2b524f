"""Frozen, closed configs for SSR (STYLE §4). No official code exists: every field is ours.

SSR ("Adaptive Multi-modal Fusion of Spatially Variant Kernel Refinement with Diffusion Model for
Blind Image Super-Resolution") has four trainable parts plus a depth estimator:

- ``dkenet``: the Depth-Informed Kernel Estimate Network (Fig. 3b) -> per-pixel 21x21 kernels;
- ``nbsr``: the RRDB non-blind SR network used inside SVKR (Algorithm 1);
- ``depth``: our small trainable depth head (a published estimator can be injected instead);
- ``denoiser``: the eps-prediction UNet with AMF (Eq. 3) at every level, and its modality encoders;
- ``schedule``: the DDPM training chain and the DDIM sampler.

:meth:`SSRConfig.tiny` is the preset the tests use; ``SSRConfig()`` is the paper-like default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from realsr_cli.errors import ConfigError

__all__ = [
    "DKENetConfig",
    "DepthHeadConfig",
    "NBSRConfig",
    "SSRConfig",
    "SSRDenoiserConfig",
    "SSRScheduleConfig",
]

#: GroupNorm groups of the UPSR ResBlocks the denoiser reuses (widths must be multiples)
_GN_GROUPS = 32


@dataclass(frozen=True)
class DKENetConfig:
    """DKENet (Fig. 3b). ``kernel_size``: side of the per-pixel kernels (paper: 21).

    ``channels``: width of the LR branch (even: MAConv splits it in halves); ``depth_channels``:
    width of the depth branch; ``maconv_reduction``: MAConv's affine-MLP width divisor.
    """

    kernel_size: int = 21
    channels: int = 64
    depth_channels: int = 32
    maconv_reduction: int = 4


@dataclass(frozen=True)
class NBSRConfig:
    """The lightweight RRDB non-blind SR network (ESRGAN RRDB, Wang et al. 2018).

    ``num_feat``: trunk width; ``growth``: dense-block growth channels; ``num_blocks``: RRDBs;
    ``kernel_feat``: width of the kernel-feature branch that drives the SFT layers.
    """

    num_feat: int = 64
    growth: int = 32
    num_blocks: int = 6
    kernel_feat: int = 64


@dataclass(frozen=True)
class DepthHeadConfig:
    """Our trainable monocular depth head: a 3-level conv encoder-decoder, sigmoid output."""

    channels: int = 32


@dataclass(frozen=True)
class SSRDenoiserConfig:
    """The eps-prediction UNet (pixel space, PixelUnshuffle(scale) layout at LR resolution).

    ``model_channels`` x ``channel_mult`` are the level widths (multiples of 32: UPSR's GroupNorm
    ResBlocks), ``num_res_blocks`` per level. AMF follows every encoder level and the middle
    block. Modality encoders: LR (the largest, ``lr_width`` x ``channel_mult``, ``lr_blocks`` per
    level), depth and kernel (``aux_width`` x ``channel_mult``, one conv pair per level);
    ``kernel_embed`` is the 1x1 projection of the k*k kernel taps. ``amf_hidden``: hidden width of
    M_alpha / M_beta (paper: 128). ``amf_norm``: ``gn`` (affine-free GroupNorm, batch-independent;
    default) or ``bn`` (affine-free BatchNorm, running statistics in eval mode).
    ``concat_lq``: also feed the LR image to the UNet input (our addition, see docs/models.md).
    ``concat_sr``: also feed SVKR's SR estimate I_T = NBSR(LR, K_T), PixelUnshuffled like x_t
    (our addition; costs one more NBSR call per image).
    """

    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    lr_width: int = 64
    lr_blocks: int = 2
    aux_width: int = 32
    kernel_embed: int = 32
    amf_hidden: int = 128
    amf_norm: str = "gn"
    concat_lq: bool = True
    concat_sr: bool = False


@dataclass(frozen=True)
class SSRScheduleConfig:
    """DDPM training chain + DDIM sampler (:class:`realsr_cli.diffusion.ddpm.DDPMSchedule`)."""

    num_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    #: default DDIM sampling steps (``upscale(steps=None)``)
    sampling_steps: int = 50
    #: DDIM eta: 0 is deterministic given the initial noise
    eta: float = 0.0
    #: clamp x0_hat to [-clip, clip] while sampling (images live in [-1, 1]); 0 disables
    clip_x0: float = 1.0
    #: what the denoiser outputs: ``eps`` (the paper's Eq. 5) or ``v`` (v-prediction, Salimans &
    #: Ho 2022; our option for small budgets: at low SNR the eps loss hardly rewards using the LR
    #: condition, so a short eps run samples noise, see docs/models.md). Sampling is DDIM either way.
    prediction: str = "eps"


@dataclass(frozen=True)
class SSRConfig:
    """The whole SSR x4 model.

    ``svkr_iterations`` (T) and ``svkr_gamma`` are Algorithm 1's (paper: 3 and 0.9).
    ``depth_head``: build our trainable depth head (False: a depth estimator must be injected).
    ``target``: what the diffusion generates: ``image`` (the HR image, the paper) or ``residual``
    (HR minus SVKR's estimate I_T = NBSR(LR, K_T); our option, see docs/models.md).
    """

    scale: int = 4
    svkr_iterations: int = 3
    svkr_gamma: float = 0.9
    depth_head: bool = True
    target: str = "image"
    dkenet: DKENetConfig = field(default_factory=DKENetConfig)
    nbsr: NBSRConfig = field(default_factory=NBSRConfig)
    depth: DepthHeadConfig = field(default_factory=DepthHeadConfig)
    denoiser: SSRDenoiserConfig = field(default_factory=SSRDenoiserConfig)
    schedule: SSRScheduleConfig = field(default_factory=SSRScheduleConfig)

    def __post_init__(self) -> None:
        d = self.denoiser
        if self.scale != 4:
            raise ConfigError(f"SSR is an x4 model; scale {self.scale} is not supported")
        if self.svkr_iterations < 1 or not 0.0 <= self.svkr_gamma <= 1.0:
            raise ConfigError("svkr_iterations must be >= 1 and svkr_gamma in [0, 1]")
        if self.dkenet.kernel_size < 1 or self.dkenet.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {self.dkenet.kernel_size}")
        if self.dkenet.channels % 2 or self.dkenet.channels < 2:
            raise ConfigError("dkenet.channels must be even (MAConv splits it in halves)")
        if not d.channel_mult or d.num_res_blocks < 1:
            raise ConfigError("denoiser needs at least one level and one ResBlock per level")
        if any((d.model_channels * m) % _GN_GROUPS for m in d.channel_mult):
            raise ConfigError(
                f"denoiser level widths must be multiples of {_GN_GROUPS}",
                hint="pick model_channels as a multiple of 32",
            )
        state = 3 * self.scale * self.scale
        if d.model_channels * d.channel_mult[0] < state:
            # Every input value reaches the output through conv_in's first-level width (the skips
            # start there). Narrower than the PixelUnshuffle'd state, the UNet cannot even pass
            # the noise through: eps-prediction plateaus at an MSE of about 1 - width/state at
            # every t (a 32-channel CPU run sat at 0.39 and sampled pure noise).
            raise ConfigError(
                f"denoiser first level ({d.model_channels * d.channel_mult[0]} channels) is "
                f"narrower than the x{self.scale} state it denoises ({state} channels after "
                "PixelUnshuffle): it cannot carry x_t through, and eps-prediction cannot converge",
                hint=f"set model_channels * channel_mult[0] >= {state} (e.g. model_channels = 64)",
            )
        if d.amf_norm not in ("gn", "bn"):
            raise ConfigError(f"amf_norm must be 'gn' or 'bn', got {d.amf_norm!r}")
        if self.target not in ("image", "residual"):
            raise ConfigError(f"target must be 'image' or 'residual', got {self.target!r}")
        s = self.schedule
        if s.prediction not in ("eps", "v"):
            raise ConfigError(f"schedule.prediction must be 'eps' or 'v', got {s.prediction!r}")
        if not 1 <= s.sampling_steps <= s.num_timesteps:
            raise ConfigError("schedule.sampling_steps must be in [1, num_timesteps]")

    @property
    def uses_sr_estimate(self) -> bool:
        """Whether sampling needs SVKR's final SR estimate I_T (residual target or concat_sr)."""
        return self.target == "residual" or self.denoiser.concat_sr

    @property
    def size_multiple(self) -> int:
        """LR sides are padded to multiples of this (the UNet's downsamplings)."""
        return 2 ** (len(self.denoiser.channel_mult) - 1)

    @classmethod
    def tiny(cls) -> SSRConfig:
        """The test preset ("tiny"): narrow everywhere, 7x7 kernels, 20-step cosine chain, 4 DDIM steps."""
        return cls(
            svkr_iterations=3,
            dkenet=DKENetConfig(kernel_size=7, channels=8, depth_channels=4, maconv_reduction=2),
            nbsr=NBSRConfig(num_feat=8, growth=4, num_blocks=1, kernel_feat=8),
            depth=DepthHeadConfig(channels=4),
            denoiser=SSRDenoiserConfig(
                model_channels=64,
                channel_mult=(1, 1),
                num_res_blocks=1,
                lr_width=8,
                lr_blocks=1,
                aux_width=4,
                kernel_embed=4,
                amf_hidden=8,
            ),
            schedule=SSRScheduleConfig(num_timesteps=20, beta_schedule="cosine", sampling_steps=4),
        )
