"""The architecture table: a literal dict, no decorators, no folder scanning (STYLE §3).

Each entry says how to build the pure model from its frozen config, how to infer that config from a
state_dict's shapes (so official checkpoints convert with only ``--arch``), how to map official keys
to ours, and what the engine must respect when it runs the model (size rule, tiling, precision).

Contract every model class satisfies (the engine relies on nothing else):
  ``net.upscale(lq, *, generator=None, steps=None, noise=None) -> sr``
  lq: (B,3,H,W) float in [0,1]; sr: (B,3,sH,sW) float, NOT clamped. ``upscale`` applies the method's
  official pre/post-processing (e.g. FeMaSR's mirrored pad + crop) so any H, W >= min_size works.
  Deterministic methods ignore generator/steps/noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realsr_cli.errors import UnknownModelError

if TYPE_CHECKING:  # keep `realsr models list` free of the torch import
    from torch import Tensor, nn

StateDict = dict[str, "Tensor"]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    title: str
    paper: str
    config_cls: type
    build: Callable[[Any], nn.Module]
    #: infer the config from a state dict already in our key layout (+ the scale when ambiguous)
    infer_config: Callable[[StateDict, int | None], Any]
    #: official keys -> ours: drop training-only keys, rename; returns a new dict
    convert_official: Callable[[StateDict], StateDict]
    #: scale of a config
    scale_of: Callable[[Any], int]
    #: LR-side size rule: the engine feeds tiles whose sides are multiples of this (after the
    #: model's own padding it can run any size, but tiles on this grid avoid wasted padding)
    tile_multiple: int = 1
    #: smallest LR side the model accepts
    min_size: int = 1
    #: can the image be cut into tiles and blended? (False: global models)
    tileable: bool = True
    #: default LR tile side for --tile auto upper bound and the tile overlap (LR pixels)
    default_tile: int = 256
    default_overlap: int = 16
    #: may run in fp16/bf16 on CUDA
    half_ok: bool = True
    #: ``--precision auto`` may pick bf16 on a CPU with native bf16: set only where measured safe
    #: (output PSNR vs fp32 and code/token agreement, docs/benchmarks.md "CPU fast path")
    cpu_bf16: bool = False
    #: a convolutional network that runs faster with channels-last weights and activations in
    #: half precision on the CPU (the engine converts the net once and feeds channels-last inputs;
    #: values equal NCHW to float tolerance). fp32 stays NCHW: thread-count-independent bits
    channels_last: bool = False
    #: fp32 activation bytes per output pixel for ``--tile auto``'s memory estimate, a number or a
    #: function of the config (None: the engine's default, ``runner.ACTIVATION_BYTES``); set from
    #: a measured peak (bench/bench_activation.py), with margin for half precision's fp32 parts
    activation_bytes: int | Callable[[Any], int] | None = None
    #: output depends on random noise (seed/steps matter)
    stochastic: bool = False
    #: number of official checkpoint files convert_checkpoint expects (UPSR: denoiser + g)
    official_files: int = 1
    #: several official files -> one state dict; None: registry/convert.py's default merge
    #: (file i's keys get official_file_prefixes[i]; clashing keys are errors)
    merge_official: Callable[[Sequence[StateDict]], StateDict] | None = None
    official_file_prefixes: tuple[str, ...] = ()
    #: Gaussian window width for tile blending in tile-side units (None: engine default);
    #: RealSRT Eq. 3 uses sqrt(0.05)
    tile_sigma: float | None = None
    #: LR pixels at interior tile edges given zero weight (None: overlap // 4)
    tile_margin: int | None = None
    #: config -> (tile_multiple, default_tile, default_overlap) when they depend on the config
    #: (RealSRT: fixed patches of ``lr_patch`` with stride ``lr_patch // 2``); the engine's
    #: LoadedModel applies it over the three fields above
    tile_rules: Callable[[Any], tuple[int, int, int]] | None = None
    #: --tile auto runs the whole image (when it fits in memory) up to this many times
    #: ``default_tile`` per side; 1.0: ``default_tile`` is a hard cap (RealSRT's fixed patches).
    #: Above 1 for models that run any size: tiling a side just over the tile costs up to 4x the
    #: pixels (overlapping tiles) for nothing when memory allows one pass.
    whole_image_up_to: float = 1.0


#: the run contract FeMaSR and UGTSR (FeMaSR's network plus fusion/alignment) share
_CODEBOOK_RUN: dict[str, Any] = dict(
    scale_of=lambda cfg: cfg.scale,
    # tiles on the 16-px grid keep the stride-2 encoder and the Swin windows in phase with the
    # whole image (an off-grid tile changes codes: 30 dB from untiled instead of 56 dB); x4 pads to
    # multiples of 16 LR px (x2: 32)
    tile_multiple=16,
    min_size=1,
    default_tile=192,
    default_overlap=16,
    half_ok=True,
    # bf16 runs the shortcut stages and the decoder; the code indices are decided in fp32
    # (DecidingParts: FeMaSR's encoder/projection/codebook, UGTSR's top-k fusion too), so they
    # equal fp32's: ugtsr-x4-cpu 100 % equal codes, 52.8 dB worst vs fp32 on 68 real images
    # (docs/benchmarks.md "CPU fast path")
    cpu_bf16=True,
    channels_last=True,
    # whole images (and auto tiles) up to 600 LR px per side when memory allows, like the
    # official inference script (whole images below 600x600, its --max_size)
    whole_image_up_to=3.125,
)


def _codebook_activation_bytes(femasr_config: Any) -> int:
    """FeMaSR-family peak activations scale with the decoder's width at HR resolution: measured
    (bench/bench_activation.py, whole images 64-512 LR px, CPU, two runs, docs/benchmarks.md)
    47-62 fp32 bytes per output pixel and HR channel at the released size (64 channels; bf16
    17-34), 36-54 for ugtsr-x4-cpu (16 channels, with UGTSR's fusion; bf16 18-36); 80 per channel
    keeps the estimate (halved for bf16) above every measured peak."""
    return 80 * femasr_config.channels[-1]


def _femasr() -> ArchSpec:
    from realsr_cli.models import femasr

    return ArchSpec(
        name="femasr",
        title="FeMaSR",
        paper="Chen et al., Real-World Blind Super-Resolution via Feature Matching with Implicit "
        "High-Resolution Priors, ACM MM 2022",
        config_cls=femasr.FeMaSRConfig,
        build=femasr.FeMaSRNet,
        infer_config=femasr.config_from_state_dict,
        convert_official=femasr.convert_official_state_dict,
        activation_bytes=_codebook_activation_bytes,
        **_CODEBOOK_RUN,
    )


def _ugtsr() -> ArchSpec:
    from realsr_cli.models import ugtsr

    return ArchSpec(
        name="ugtsr",
        title="UGTSR",
        paper="Incorporating Uncertainty-Guided and Top-k Codebook Matching for Real-World Blind "
        "Image Super-Resolution (UGTSR)",
        config_cls=ugtsr.UGTSRConfig,
        build=ugtsr.UGTSRNet,
        infer_config=ugtsr.config_from_state_dict,
        convert_official=ugtsr.convert_official_state_dict,  # none exists: raises WeightsError
        activation_bytes=lambda cfg: _codebook_activation_bytes(cfg.femasr),
        **_CODEBOOK_RUN,  # FeMaSR's network and padding; its top-k fusion also kept in fp32 in bf16
    )


def _realsrt() -> ArchSpec:
    from realsr_cli.models import realsrt

    return ArchSpec(
        name="realsrt",
        title="RealSRT",
        paper="Peng et al., Confidence-Based Iterative Generation for Real-World Image "
        "Super-Resolution (RealSRT)",
        config_cls=realsrt.RealSRTConfig,
        build=realsrt.RealSRTNet,
        infer_config=realsrt.config_from_state_dict,
        convert_official=realsrt.convert_official_state_dict,
        scale_of=lambda cfg: cfg.scale,
        # the paper's patch aggregation (Eq. 3): 64-px LR patches, stride 32, Gaussian var 0.05
        tile_multiple=32,
        default_tile=64,
        default_overlap=32,
        tile_rules=lambda cfg: (cfg.lr_patch // 2, cfg.lr_patch, cfg.lr_patch // 2),
        tile_sigma=0.05**0.5,
        tile_margin=0,
        half_ok=False,  # discrete token choices flip in fp16/bf16
        activation_bytes=8192,  # measured 5280-6341 B per output pixel of a 64-px patch, released size
    )


def _upsr() -> ArchSpec:
    from realsr_cli.models import upsr

    return ArchSpec(
        name="upsr",
        title="UPSR",
        paper="Zhang et al., Uncertainty-guided Perturbation for Image Super-Resolution Diffusion "
        "Model, CVPR 2025",
        config_cls=upsr.UPSRConfig,
        build=upsr.UPSRNet,
        infer_config=upsr.config_from_state_dict,
        convert_official=upsr.convert_official_state_dict,
        scale_of=lambda cfg: cfg.scale,
        tile_multiple=64,
        default_tile=128,
        default_overlap=16,
        half_ok=False,  # not yet validated in half precision
        activation_bytes=4096,  # measured 2566-3219 B per output pixel (64-128 LR px, released size)
        stochastic=True,
        official_files=2,
        merge_official=upsr.merge_official,
    )


def _ssr() -> ArchSpec:
    from realsr_cli.models import ssr

    return ArchSpec(
        name="ssr",
        title="SSR",
        paper="Lin et al., Adaptive Multi-modal Fusion of Spatially Variant Kernel Refinement with "
        "Diffusion Model for Blind Image Super-Resolution (SSR), 2024",
        config_cls=ssr.SSRConfig,
        build=ssr.SSRNet,
        infer_config=ssr.config_from_state_dict,
        convert_official=ssr.convert_official_state_dict,  # none exists: raises WeightsError
        scale_of=lambda cfg: cfg.scale,
        tile_multiple=8,  # the default UNet pads LR sides to multiples of 8 (3 downsamplings)
        default_tile=128,
        default_overlap=16,
        half_ok=False,  # not yet validated in half precision
        stochastic=True,
    )


def _bicres() -> ArchSpec:
    from realsr_cli.models import bicres

    return ArchSpec(
        name="bicres",
        title="BicRes",
        paper="realsr's own compact model: bicubic upsampling plus a learned residual from a plain "
        "3x3-conv stack at LR resolution (no paper; docs/models.md)",
        config_cls=bicres.BicResConfig,
        build=bicres.BicResNet,
        infer_config=bicres.config_from_state_dict,
        convert_official=bicres.convert_official_state_dict,  # none exists: raises WeightsError
        scale_of=lambda cfg: cfg.scale,
        tile_multiple=1,
        min_size=1,
        default_tile=512,
        # zero weight within 16 LR px of interior tile edges, 32 px overlap: tiled == untiled
        # (float rounding aside) for receptive radii up to 16 (depth <= 14)
        default_overlap=32,
        tile_margin=16,
        half_ok=True,
        channels_last=True,  # plain 3x3 convs: 1.4-1.7x over NCHW on a 2-core AVX512 CPU
        # bf16 output vs fp32 on 68 real LR images: worst 51.8 dB, max 3 8-bit levels (>= 45 dB:
        # safe); 2.5x over fp32 NCHW (bench/bench_cpu_fastpath.py, docs/benchmarks.md)
        cpu_bf16=True,
        whole_image_up_to=4.0,  # cheap activations: whole images up to 2048 LR px when memory allows
        # measured peak above the loaded model: 76 B per output px in fp32, 48 in bf16 (1024 px LR,
        # glibc default allocator; up to 1.5x that with the CLI's allocator setting)
        activation_bytes=128,
    )


# Literal table of architecture name -> factory (imports stay lazy so `realsr models list` is fast).
ARCHITECTURES: dict[str, Callable[[], ArchSpec]] = {
    "femasr": _femasr,
    "ugtsr": _ugtsr,
    "realsrt": _realsrt,
    "upsr": _upsr,
    "ssr": _ssr,
    "bicres": _bicres,
}


@dataclass(frozen=True)
class DepthSpec:
    """A monocular depth network that SSR can run as its depth estimator (DE of SSR Algorithm 1).

    Its weights are ``kind = "aux"`` catalog entries with ``arch = name`` and ids
    ``<name>-<variant>``; the published file loads as is (``strict=True``, no conversion).
    """

    name: str
    title: str
    paper: str
    #: a weights id's variant ("v2-small") -> the network's config (not stored in the file)
    config_for: Callable[[str], Any]
    #: config -> the bare network, state-dict keys as in the published file
    build: Callable[[Any], nn.Module]
    #: (network, input_size=, label=, sha256=) -> SSR's estimator: (B,3,H,W) [0,1] -> (B,1,H,W) [0,1]
    estimator: Callable[..., nn.Module]


def _depth_anything() -> DepthSpec:
    from realsr_cli.models import depth

    return DepthSpec(
        name="depth_anything",
        title="Depth Anything",
        paper="Yang et al., Depth Anything V2, NeurIPS 2024 (arXiv:2406.09414)",
        config_for=depth.DepthAnythingConfig.preset,
        build=depth.DepthAnythingNet,
        estimator=depth.DepthAnythingEstimator,
    )


#: Literal table of depth-estimator architectures (aux weights; see ``DepthSpec``).
DEPTH_ARCHITECTURES: dict[str, Callable[[], DepthSpec]] = {
    "depth_anything": _depth_anything,
}


def get_depth_arch(name: str) -> DepthSpec:
    try:
        factory = DEPTH_ARCHITECTURES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown depth-estimator architecture {name!r}",
            hint=f"known: {', '.join(sorted(DEPTH_ARCHITECTURES))}",
        ) from None
    return factory()


def get_arch(name: str) -> ArchSpec:
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}",
            hint=f"known architectures: {', '.join(sorted(ARCHITECTURES))}",
        ) from None
    return factory()
