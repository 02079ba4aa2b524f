"""SSR training stages (SSR: "Adaptive Multi-modal Fusion of Spatially Variant Kernel Refinement
with Diffusion Model for Blind Image Super-Resolution"). No official code exists; the paper gives
the model and Eq. 5, not a recipe, so every value below is our documented choice. Three stages, run
in this order:

1. ``ssr-kernel`` (:class:`SSRKernelStage`): DKENet and our depth head (the offline DE of
   Algorithm 1). Per step the stage degrades ``hq`` itself with the synthetic spatially variant blur
   of :mod:`realsr_cli.training.degradations.spatial` (depth-dependent anisotropic Gaussians, x4,
   noise, JPEG), which yields ground-truth per-pixel kernels K and the synthetic depth D. Loss::

       L = kernel * mean_pixels sum_taps |DKENet(lq, D_in) - K| + depth * mean |DE(lq) - D|

   (the per-pixel L1 distance between kernels, in [0, 2]; MANet-style kernel supervision).
   ``loss.kernel_depth`` picks D_in: ``synthetic`` (default, teacher forcing: DKENet learns the
   depth -> blur relation from clean depth) or ``estimated`` (DE(lq), as at inference; the kernel
   loss then also trains the head). The depth head learns the synthetic depth from blur cues only
   (that depth is random per image, not scene geometry); runs on real photos may inject a published
   estimator instead (``SSRNet(depth_estimator=...)``).
2. ``ssr-nbsr`` (:class:`SSRNBSRStage`): the RRDB non-blind SR network, ``L = l1 * |NBSR(lq, K) -
   hq|_1`` with ``loss.kernels`` = ``synthetic`` (default: the ground-truth kernels, the non-blind
   setting NBSR is defined by) or ``estimated`` (one frozen pass ``DKENet(lq, DE(lq))``).
   Depth head and DKENet come frozen from ``inputs.kernel_weights`` (an ``ssr-kernel`` export).
3. ``ssr`` (:class:`SSRStage`): the AMF denoiser and its modality encoders (Eq. 5)::

       D_T, K_T = SVKR(lq)                         (frozen DE, DKENet, NBSR; float32, no grad)
       x0 = 2 hq - 1,  t ~ U{0..T-1},  eps ~ N(0, I),  x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
       L = eps_weight * ||eps_theta(x_t, t | f) - eps||^2 + sum_i lambda_i * mean|f_i|

   With ``model.schedule.prediction = "v"`` (our option, not the paper's) the network regresses
   ``v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0`` instead (same MSE, logged as ``eps``); the
   eps-MSE weights x0 errors by the SNR ab_t / (1 - ab_t), nearly 0 at high t, so a short eps run
   never learns to use the LR condition there and its DDIM chains end in noise.
   With ``model.target = "residual"`` (ours too) x0 is ``2 hq - 1 - sr``, sr = 2 I_T - 1 the SVKR
   estimate (one more frozen NBSR call), and sampling adds sr back; ``model.denoiser.concat_sr``
   also feeds sr to the UNet.

   with f_1..f_3 the kernel, depth and LR features (``ModalityFeatures.l1()``: mean absolute
   value over all levels). The paper gives no lambda; we use 1e-4 each (``loss.sparsity_*``), small
   against the eps-MSE so the features are sparsified, not switched off. The frozen parts come from
   ``inputs.nbsr_weights`` (an ``ssr-nbsr`` export).

Data: every stage takes ``data.scale = 1`` (the trainer hands over ``batch["hq"]`` only) and makes
its LR/kernels/depth from ``hq`` with the stage's own CPU generator (seeded ``run.seed + 0x55A +
rank``; also draws timesteps and noise), saved in :meth:`extra_state` so a resume is exact.

Handoff (RealSRT's approach): every export is a *complete* ``ssr`` model (``Export("ssr",
config.model, ...)``, loading strictly into ``SSRNet(config.model)``): the trained parts plus the
frozen/untrained rest, the untrained parts a fresh initialisation seeded by ``run.seed`` (the
global RNG is left untouched). The next stage reads the parts it builds on from that file:

=========  ======================  ==========================================
stage      input (``[inputs]``)     parts taken from the file
=========  ======================  ==========================================
ssr-nbsr   ``kernel_weights``       ``depth_estimator.*``, ``dkenet.*``
ssr        ``nbsr_weights``         ``depth_estimator.*``, ``dkenet.*``, ``nbsr.*``
=========  ======================  ==========================================

The inputs are required unless ``inputs.allow_random_* = true`` (smoke tests); the config sections
of the parts taken must equal the file's. Checkpoints hold every other part as net ``frozen``, so
``realsr train export`` needs no input file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.engine.device import make_generator, randn
from realsr_cli.errors import ConfigError
from realsr_cli.models.ssr import SSRConfig, SSRNet
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfigBase,
    check_non_negative,
)
from realsr_cli.training.degradations.spatial import (
    SpatialBlurConfig,
    SpatialDegradation,
    SpatiallyVariantBlur,
)
from realsr_cli.training.losses import l1_loss, mse_loss
from realsr_cli.training.stage import Export, StepContext
from realsr_cli.training.stages.helpers import (
    SeededGeneratorStage,
    freeze,
    frozen_and_trained_state_dict,
    scalars,
)
from realsr_cli.training.stages.upstream import UpstreamInputs, load_upstream_parts

log = logging.getLogger(__name__)

__all__ = [
    "SSRInputsConfig",
    "SSRKernelLossConfig",
    "SSRKernelStage",
    "SSRKernelStageConfig",
    "SSRLossConfig",
    "SSRNBSRInputsConfig",
    "SSRNBSRLossConfig",
    "SSRNBSRStage",
    "SSRNBSRStageConfig",
    "SSRParts",
    "SSRStage",
    "SSRStageConfig",
    "build_seeded_model",
]

ARCH = "ssr"
#: added to run.seed for the stage's own generator (degradations, timesteps, noise)
_SEED_OFFSET = 0x55A
#: the parts of SSRNet, as its children
PARTS: tuple[str, ...] = ("depth_estimator", "dkenet", "nbsr", "denoiser")
#: config sections that fix the shapes of each part
_PART_FIELDS: dict[str, tuple[str, ...]] = {
    "depth_estimator": ("depth_head", "depth"),
    "dkenet": ("dkenet",),
    "nbsr": ("scale", "nbsr", "dkenet"),
}


# ------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SSRKernelLossConfig:
    """``ssr-kernel`` loss (module docstring). ``kernel``: weight of the per-pixel kernel L1;
    ``depth``: weight of the depth L1; ``kernel_depth``: the depth DKENet sees in training."""

    kernel: float = 1.0
    depth: float = 1.0
    kernel_depth: Literal["synthetic", "estimated"] = "synthetic"

    def __post_init__(self) -> None:
        check_non_negative("loss", kernel=self.kernel, depth=self.depth)
        if self.kernel + self.depth <= 0:
            raise ConfigError("loss: kernel and depth weights are both 0")


@dataclass(frozen=True)
class SSRNBSRLossConfig:
    """``ssr-nbsr`` loss: ``l1 * |NBSR(lq, K) - hq|_1``; ``kernels``: K is the ground truth
    (``synthetic``) or the frozen DKENet's estimate (``estimated``)."""

    l1: float = 1.0
    kernels: Literal["synthetic", "estimated"] = "synthetic"

    def __post_init__(self) -> None:
        if self.l1 <= 0:
            raise ConfigError(f"loss.l1 must be positive, got {self.l1}")


@dataclass(frozen=True)
class SSRLossConfig:
    """``ssr`` loss (Eq. 5): ``eps`` weight of the eps-prediction MSE; ``sparsity_kernel``,
    ``sparsity_depth``, ``sparsity_lr``: lambda_1..3 of the L1 terms on the kernel, depth and LR
    features (our choice 1e-4; the paper gives none)."""

    eps: float = 1.0
    sparsity_kernel: float = 1e-4
    sparsity_depth: float = 1e-4
    sparsity_lr: float = 1e-4

    def __post_init__(self) -> None:
        check_non_negative("loss", sparsity_kernel=self.sparsity_kernel,
                      sparsity_depth=self.sparsity_depth, sparsity_lr=self.sparsity_lr)
        if self.eps <= 0:
            raise ConfigError(f"loss.eps must be positive, got {self.eps}")

    def lambdas(self) -> dict[str, float]:
        """Modality name (``ModalityFeatures`` field) -> lambda."""
        return {"kernel": self.sparsity_kernel, "depth": self.sparsity_depth,
                "lr": self.sparsity_lr}


class _SSRUpstreamInputs(UpstreamInputs):
    export_hint = (
        "train `{producer}` and export it (`realsr train export RUN -o {producer}.safetensors`), "
        "then set "
    )


@dataclass(frozen=True)
class SSRNBSRInputsConfig(_SSRUpstreamInputs):
    """``kernel_weights``: an ``ssr-kernel`` export (any ``ssr`` file); its depth head and DKENet
    are loaded and frozen. ``allow_random_kernel``: random ones instead (tests only)."""

    weights_field = "kernel_weights"
    producer = "ssr-kernel"

    kernel_weights: str = ""
    allow_random_kernel: bool = False


@dataclass(frozen=True)
class SSRInputsConfig(_SSRUpstreamInputs):
    """``nbsr_weights``: an ``ssr-nbsr`` export (any ``ssr`` file); its depth head, DKENet and
    NBSR are loaded and frozen. ``allow_random_nbsr``: random ones instead (tests only)."""

    weights_field = "nbsr_weights"
    producer = "ssr-nbsr"

    nbsr_weights: str = ""
    allow_random_nbsr: bool = False


def _check_common(data: DataConfig, model: SSRConfig, where: str, multiple: int = 1) -> None:
    if data.scale != 1:
        raise ConfigError(
            f"{where} degrades the HR patches itself (synthetic spatially variant blur with kernel "
            f"ground truth): data.scale must be 1, got {data.scale}",
            hint="set data.scale = 1 (the SR factor is model.scale)",
        )
    m = model.scale * multiple
    if data.patch_size % m:
        raise ConfigError(
            f"{where}: data.patch_size {data.patch_size} must be a multiple of {m}",
            hint=f"pick a multiple of {m}",
        )
    if not model.depth_head:
        raise ConfigError(
            f"{where}: training needs our depth head (model.depth_head = true)",
            hint="an injected depth estimator is an inference-time option",
        )


@dataclass(frozen=True)
class _SSRStageConfigBase(StageConfigBase):
    """The sections (and defaults) the three SSR stages share."""

    run: RunConfig = RunConfig(max_steps=200_000, checkpoint_every=10_000)
    data: DataConfig = DataConfig(scale=1, patch_size=256, batch_size=16, pipeline="realesrgan")
    optim: OptimConfig = OptimConfig(lr=1e-4, betas=(0.9, 0.999))
    schedule: ScheduleConfig = ScheduleConfig(kind="constant", milestones=())
    ema: EMAConfig = EMAConfig(decay=0.999)
    model: SSRConfig = SSRConfig()
    degradation: SpatialBlurConfig = SpatialBlurConfig()


@dataclass(frozen=True)
class SSRKernelStageConfig(_SSRStageConfigBase):
    """``ssr-kernel``: DKENet + depth head on synthetic spatially variant blur."""

    loss: SSRKernelLossConfig = SSRKernelLossConfig()

    def __post_init__(self) -> None:
        _check_common(self.data, self.model, "ssr-kernel")


@dataclass(frozen=True)
class SSRNBSRStageConfig(_SSRStageConfigBase):
    """``ssr-nbsr``: the non-blind RRDB SR network, frozen depth head + DKENet."""

    inputs: SSRNBSRInputsConfig = SSRNBSRInputsConfig()
    loss: SSRNBSRLossConfig = SSRNBSRLossConfig()

    def __post_init__(self) -> None:
        _check_common(self.data, self.model, "ssr-nbsr")


@dataclass(frozen=True)
class SSRStageConfig(_SSRStageConfigBase):
    """``ssr``: the AMF diffusion denoiser on frozen SVKR parts."""

    run: RunConfig = RunConfig(max_steps=400_000, checkpoint_every=10_000)
    ema: EMAConfig = EMAConfig(decay=0.9999)
    inputs: SSRInputsConfig = SSRInputsConfig()
    loss: SSRLossConfig = SSRLossConfig()

    def __post_init__(self) -> None:
        _check_common(self.data, self.model, "ssr", self.model.size_multiple)


# ------------------------------------------------------------------------------------ networks
def build_seeded_model(config: SSRConfig, seed: int) -> SSRNet:
    """``SSRNet(config)`` initialised from ``seed`` alone (the global RNG is left untouched): the
    same fresh parts in every process, stage and export."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SSRNet(config)


class SSRParts(nn.Module):
    """Some children of an :class:`SSRNet` under their own names, so state-dict keys are the
    network's (``dkenet.*`` ...). The base is used for the frozen parts (net ``frozen``); the
    subclasses below are the trained nets, each with a ``forward`` for DDP."""

    def __init__(self, model: SSRNet, names: Sequence[str]) -> None:
        super().__init__()
        for name in names:
            self.add_module(name, getattr(model, name))


class _KernelNet(SSRParts):
    """``(lq, depth_in | None) -> (depth_pred, kernels)``; DKENet sees ``depth_in`` when given,
    else the head's prediction."""

    depth_estimator: nn.Module
    dkenet: nn.Module

    def forward(self, lq: Tensor, depth_in: Tensor | None = None) -> tuple[Tensor, Tensor]:
        depth = self.depth_estimator(lq)
        kernels = self.dkenet(lq, depth if depth_in is None else depth_in)
        return depth, kernels


class _NBSRNet(SSRParts):
    nbsr: nn.Module

    def forward(self, lq: Tensor, kernels: Tensor) -> Tensor:
        return self.nbsr(lq, kernels)


class _DenoiserNet(SSRParts):
    """``(x_t, t, lq_pm1, depth, kernels, sr_pm1) -> (eps, l1)``: encoders + UNet in one forward,
    ``l1`` the (3,) mean |f_i| of the kernel, depth and LR features."""

    denoiser: nn.Module

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        lq: Tensor,
        depth: Tensor,
        kernels: Tensor,
        sr: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        feats = self.denoiser.encode(lq, depth, kernels)
        eps = self.denoiser(x_t, t, feats, lq, sr)
        l1 = feats.l1()
        return eps, torch.stack([l1["kernel"], l1["depth"], l1["lr"]]).float()


def load_parts(
    model: SSRNet, path: str, parts: Sequence[str], *, stage: str, producer: str, field: str
) -> None:
    """Copy ``parts`` of the ``ssr`` file at ``path`` into ``model`` (configs checked first)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{stage}: inputs.{field} not found: {p}",
            hint=f"point it at the export of a `{producer}` run",
        )
    load_upstream_parts(
        model, p, arch=ARCH, file_kind="an ssr file", parts=parts,
        prefixes=tuple(f"{part}." for part in parts),
        fields=sorted({f for part in parts for f in _PART_FIELDS[part]}),
        stage=stage, producer=producer,
    )


# -------------------------------------------------------------------------------------- stages
class _SSRStageBase(SeededGeneratorStage):
    """Shared machinery: ``self.model`` (a seeded :class:`SSRNet`), one trained net (``_trained``
    parts, net name ``_net``) and ``frozen`` (every other part, no gradients), the stage generator
    and the synthetic degradation."""

    _net: ClassVar[str]
    _trained: ClassVar[tuple[str, ...]]
    _net_cls: ClassVar[type[SSRParts]]
    #: parts read from the upstream file (none for the first stage) and who writes it
    _consumes: ClassVar[tuple[str, ...]] = ()
    _producer: ClassVar[str] = ""
    _input_field: ClassVar[str] = ""
    generator_offset = _SEED_OFFSET

    def __init__(self, config, device: torch.device) -> None:
        super().__init__(config, device)
        inputs = getattr(config, "inputs", None)
        if inputs is not None:
            inputs.require(self.name)
        self.model = build_seeded_model(config.model, config.run.seed).to(device)
        self.model.requires_grad_(False).eval()
        for name in self._trained:
            getattr(self.model, name).requires_grad_(True).train()
        self.nets[self._net] = self._net_cls(self.model, self._trained)
        others = [p for p in PARTS if p not in self._trained]
        self.nets["frozen"] = freeze(SSRParts(self.model, others))
        k = config.model.dkenet.kernel_size
        self.degrade = SpatiallyVariantBlur(config.degradation, k, config.model.scale)
        self._loaded = False

    def load_inputs(self) -> None:
        if self._loaded or not self._consumes:
            return
        path = self.config.inputs.path()
        if path:
            load_parts(self.model, path, self._consumes, stage=self.name,
                       producer=self._producer, field=self._input_field)
        else:
            log.warning("%s: RANDOM %s (inputs.allow_random_* = true)", self.name,
                        ", ".join(self._consumes))
        self._loaded = True

    def frozen(self) -> Iterator[nn.Module]:
        return iter(self.net("frozen").children())

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {self._net: [p for p in self.net(self._net).parameters() if p.requires_grad]}

    def synthesise(self, hq: Tensor) -> SpatialDegradation:
        """lq, kernels, depth from ``hq`` (B,3,P,P) with the stage generator (module docstring)."""
        return self.degrade(hq.float(), self.generator)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        """The complete ``ssr`` network from ``state`` alone: ``frozen`` as is + the trained net
        (EMA weights when on)."""
        sd = frozen_and_trained_state_dict(self, state, self.model, self._net)
        return Export(ARCH, self.config.model, sd)


class SSRKernelStage(_SSRStageBase):
    """Stage 1: DKENet + depth head (net ``kernel``, EMA'd); the rest (NBSR, denoiser) is the
    seeded fresh initialisation, carried as net ``frozen``. Logs ``kernel``, ``depth``,
    ``total``. Validation (:meth:`predict`) is bicubic x4 (this stage has no SR output)."""

    name = "ssr-kernel"
    summary = "SSR 1/3: depth-informed kernel estimator (DKENet) + depth head, synthetic blur"
    config_cls = SSRKernelStageConfig
    ema_net = "kernel"
    _net = "kernel"
    _trained = ("depth_estimator", "dkenet")
    _net_cls = _KernelNet

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        deg = self.synthesise(batch["hq"])
        depth_in = deg.depth if loss.kernel_depth == "synthetic" else None
        with ctx.autocast():
            depth, kernels = self.nets["kernel"](deg.lq, depth_in)
        k_l1 = (kernels.float() - deg.kernels).abs().sum(dim=1).mean()
        d_l1 = l1_loss(depth.float(), deg.depth.float())
        terms = {"kernel": loss.kernel * k_l1, "depth": loss.depth * d_l1}
        total = terms["kernel"] + terms["depth"]
        ctx.backward_step(total, "kernel")
        return scalars({**terms, "total": total})

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return F.interpolate(lq, scale_factor=self.config.model.scale, mode="bicubic",
                             align_corners=False)


class SSRNBSRStage(_SSRStageBase):
    """Stage 2: NBSR (net ``nbsr``, EMA'd) on frozen depth head + DKENet
    (``inputs.kernel_weights``). Logs ``l1``. Validation: SVKR's last estimate I_T."""

    name = "ssr-nbsr"
    summary = "SSR 2/3: RRDB non-blind SR network on per-pixel kernels (frozen DKENet + depth)"
    config_cls = SSRNBSRStageConfig
    ema_net = "nbsr"
    _net = "nbsr"
    _trained = ("nbsr",)
    _net_cls = _NBSRNet
    _consumes = ("depth_estimator", "dkenet")
    _producer = "ssr-kernel"
    _input_field = "kernel_weights"

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        deg = self.synthesise(hq)
        kernels = deg.kernels
        if loss.kernels == "estimated":
            with torch.no_grad():
                kernels = self.model.dkenet(deg.lq, self.model.estimate_depth(deg.lq)).float()
        with ctx.autocast():
            sr = self.nets["nbsr"](deg.lq, kernels)
        l1 = loss.l1 * l1_loss(sr.float(), hq.float())
        ctx.backward_step(l1, "nbsr")
        return scalars({"l1": l1})

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.model.svkr(lq, keep_estimates=True).estimates[-1]


class SSRStage(_SSRStageBase):
    """Stage 3: the AMF denoiser with its modality encoders (net ``denoiser``, EMA'd) on frozen
    SVKR parts (``inputs.nbsr_weights``). Logs ``eps``, ``sparsity`` and ``total``. Validation:
    DDIM sampling with noise seeded by ``run.seed``."""

    name = "ssr"
    summary = "SSR 3/3: AMF-conditioned eps-prediction diffusion denoiser on frozen SVKR"
    config_cls = SSRStageConfig
    ema_net = "denoiser"
    _net = "denoiser"
    _trained = ("denoiser",)
    _net_cls = _DenoiserNet
    _consumes = ("depth_estimator", "dkenet", "nbsr")
    _producer = "ssr-nbsr"
    _input_field = "nbsr_weights"

    def __init__(self, config: SSRStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.schedule = self.model.make_schedule()

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"].float()
        deg = self.synthesise(hq)
        model_cfg = self.config.model
        with torch.no_grad():  # SVKR on frozen parts, float32 (as at inference)
            est, sr = self.model.svkr_for_denoiser(deg.lq)
        b = hq.shape[0]
        t = self.schedule.sample_timesteps(b, generator=self.generator).to(hq.device)
        noise = randn(hq.shape, generator=self.generator, device=hq.device)
        x0 = hq * 2 - 1
        if model_cfg.target == "residual":
            assert sr is not None
            x0 = x0 - sr
        x_t = self.schedule.add_noise(x0, noise, t)
        with ctx.autocast():
            pred, l1 = self.nets["denoiser"](x_t, t, deg.lq * 2 - 1, est.depth, est.kernels, sr)
        target = noise
        if self.config.model.schedule.prediction == "v":
            target = self.schedule.v_target(x0, noise, t)
        lam = loss.lambdas()
        weights = torch.tensor([lam["kernel"], lam["depth"], lam["lr"]], device=l1.device)
        terms = {
            "eps": loss.eps * mse_loss(pred.float(), target),
            "sparsity": (weights * l1.float()).sum(),
        }
        total = terms["eps"] + terms["sparsity"]
        ctx.backward_step(total, "denoiser")
        return scalars({**terms, "total": total})

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.model.upscale(lq, generator=make_generator(self.config.run.seed))
