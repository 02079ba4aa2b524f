"""UPSR training stages (Zhang et al., "Uncertainty-guided Perturbation for Image Super-Resolution
Diffusion Model", CVPR 2025; official code LabShuHangGU/UPSR).

UPSR is trained in two steps, one stage each:

* ``upsr-g`` (:class:`UPSRGStage`): the auxiliary SR network g (ATD, Sec. 4.1: "we employ the
  lightweight version of [ATD] and pretrain it following the real SR pipeline"), trained alone with
  a pixel loss (L1) on (lq, hq) pairs. The paper publishes no recipe for g; the defaults follow the
  PSNR-oriented stage of the real-world pipeline it names (Real-ESRNet: L1, Adam (0.9, 0.99),
  lr 2e-4, EMA 0.999).
* ``upsr`` (:class:`UPSRStage`): the denoiser f on a *frozen* g (Algorithm 1 of the supplementary),
  per step, with everything on the [-1,1] scale as in the official ``UPSRRealModel``::

      x0 = (hq - 0.5) / 0.5                      y = bicubic_x4(y0),  y0 = (lq - 0.5) / 0.5
      g(y0) = (ATD(lq) - 0.5) / 0.5               (frozen, no grad, float32)
      psi = |g(y0) - y| / 2                       (Eq. 5)
      w_u = b_u + (1 - b_u) min(psi, psi_max) / psi_max     (official un = 0.1, min_noise = 0.4)
      t ~ U{0..T-1}, noise ~ N(0, I)              (HR layout, seeded CPU generator)
      x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) w_u noise      (Eq. 11, add_noise)
      x0^ = f(scale_input(PixelUnshuffle(x_t)), t, PixelUnshuffle(cat[g(y0), y]))
      L = mse ||x0^ - x0||^2 + lpips * LPIPS(clamp(x0^), hq)       (Eq. 9)

  ``psi_max``/``b_u`` are ``model.diffusion.psi_max``/``min_weight`` (the released config's 0.1/0.4;
  the paper's Sec. B quotes psi_max = 0.05, the code uses 0.1 — we follow the code, as the parity
  fixtures do). The official loss is ``mse`` 1 + ``lpips_weight`` 0.5 (``001_UPSR_RealSR_x4.yml``;
  its configured ``L1Loss`` is never used: the pixel term is the diffusion MSE).

LPIPS: the official code uses pyiqa's ``lpips-vgg`` (Zhang et al., CVPR 2018), whose learned linear
heads we cannot ship. :class:`LPIPSStyleLoss` computes the same form on our own VGG-16
(``training.losses.vgg``): relu1_2 .. relu5_3 features, unit-normalised along channels, squared
difference, a per-channel weight (the LPIPS heads when ``loss.lpips_weights`` names the official
``vgg.pth`` v0.1 file, else 1: LPIPS' "baseline" variant), channel sum, spatial mean, layer sum. It
needs ImageNet VGG-16 weights (``loss.vgg16_weights``: registry id ``vgg16-imagenet`` or a path) and
refuses to run without them unless ``loss.allow_random_vgg = true`` (tests). Inputs are mapped to
[0,1] and normalised with ImageNet statistics, the same affine map as LPIPS' scaling layer on
[-1,1] inputs. The unit normalisation uses ``F.normalize`` (no NaN gradient at all-zero features,
the failure the official code patches with ``nan_to_num``).

Export formats (the decision for g): the ``upsr`` architecture needs a denoiser *and* g in one
file, so a g alone is no runnable ``upsr`` model. :meth:`UPSRGStage.export` therefore returns
``Export("upsr", UPSRConfig(aux=<g config>), {"aux.*": ...})``: a realsr safetensors (written by
the trainer with ``registry.loader.save_weights``) whose metadata names arch ``upsr`` and carries
g's config, holding **only** the ``aux.`` tensors. ``realsr`` refuses to upscale with it (strict
loading lists the missing ``denoiser.`` keys); it is the input of the ``upsr`` stage's
``inputs.aux_weights``. That field also accepts a full ``upsr`` file (its ``aux.`` part is used,
e.g. a converted official release) and the official ``atd_real.pth`` (``params_ema``/``params``).
:meth:`UPSRStage.export` returns a complete, strictly loadable ``upsr`` model: the trained denoiser
(EMA weights when on) under ``denoiser.`` plus the frozen g under ``aux.``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli._config import config_from_json
from realsr_cli.engine.device import make_generator, randn
from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.upsr import (
    ATD,
    AUX_PREFIX,
    DENOISER_PREFIX,
    ATDConfig,
    UPSRConfig,
    UPSRNet,
    convert_official_state_dict,
)
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfigBase,
)
from realsr_cli.training.losses import VGGFeatureExtractor, mse_loss
from realsr_cli.training.stage import Export, StepContext
from realsr_cli.training.stages.helpers import (
    PixelLossStage,
    SeededGeneratorStage,
    freeze,
    net_state_dict,
    scalars,
)
from realsr_cli.training.stages.reconstruction import (
    LPIPS_VGG16_LAYERS,
    check_vgg_inputs,
    load_vgg_weights,
)

log = logging.getLogger(__name__)

__all__ = [
    "LPIPSStyleLoss",
    "UPSRGLossConfig",
    "UPSRGStage",
    "UPSRGStageConfig",
    "UPSRInputsConfig",
    "UPSRLossConfig",
    "UPSRStage",
    "UPSRStageConfig",
    "UPSRTrainInputs",
    "load_aux_state_dict",
]

#: added to the run seed for the stage's own (timestep + noise) generator, so its stream differs
#: from the data pipeline's, which is seeded with ``seed + rank`` too
_NOISE_SEED_OFFSET = 0x5EED
_AUX_HINT = (
    "train g first with the `upsr-g` stage and set inputs.aux_weights to its exported file, or "
    "point it at UPSR's released `atd_real.pth` (or a converted `upsr` model); "
    "inputs.allow_random_aux = true runs with a random g (smoke tests only)"
)


# ------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class UPSRGLossConfig:
    """``upsr-g`` loss: ``pixel_weight * d(g(lq), hq)`` on the [0,1] scale.

    Fields:
        pixel: ``l1`` (Real-ESRNet, the fidelity-oriented g UPSR names ``network_mse``), ``mse``
            or ``charbonnier``.
        pixel_weight: its weight (1).
    """

    pixel: Literal["l1", "mse", "charbonnier"] = "l1"
    pixel_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.pixel_weight <= 0:
            raise ConfigError(f"loss.pixel_weight must be positive, got {self.pixel_weight}")


def _check_scale(data: DataConfig, scale: int, where: str) -> None:
    if scale != 4:
        raise ConfigError(
            f"{where}: the UPSR denoiser upsamples x4, so g must be x4 too; got scale {scale}",
            hint="set model scale and data.scale to 4",
        )
    if data.scale != scale:
        raise ConfigError(
            f"{where}: data.scale {data.scale} differs from the model's scale {scale}",
            hint="set both to 4",
        )


@dataclass(frozen=True)
class UPSRGStageConfig(StageConfigBase):
    """``upsr-g``: the auxiliary SR network g alone; ``model`` is its ATD config (the
    ``[model.aux]`` section of the ``upsr`` stage must equal it)."""

    run: RunConfig = RunConfig(max_steps=1_000_000, checkpoint_every=10_000)
    data: DataConfig = DataConfig(patch_size=256, scale=4, batch_size=48)
    optim: OptimConfig = OptimConfig(lr=2e-4, betas=(0.9, 0.99))
    schedule: ScheduleConfig = ScheduleConfig(kind="constant", milestones=())
    ema: EMAConfig = EMAConfig(decay=0.999)
    model: ATDConfig = ATDConfig()
    loss: UPSRGLossConfig = UPSRGLossConfig()

    def __post_init__(self) -> None:
        _check_scale(self.data, self.model.scale, "upsr-g")


@dataclass(frozen=True)
class UPSRInputsConfig:
    """The frozen auxiliary network g of the ``upsr`` stage.

    Fields:
        aux_weights: g's weights: the export of an ``upsr-g`` run, a full ``upsr`` realsr file
            (its ``aux.`` part), or UPSR's released ``atd_real.pth``. Required unless
            ``allow_random_aux``; its config must equal ``[model.aux]``.
        allow_random_aux: use a randomly initialised g (tests and smoke runs only).
    """

    aux_weights: str = ""
    allow_random_aux: bool = False

    def require(self, stage: str) -> None:
        """Raise :class:`ConfigError` when no g is configured (called by the stage)."""
        if self.aux_weights or self.allow_random_aux:
            return
        raise ConfigError(
            f"{stage}: inputs.aux_weights is not set; UPSR trains its denoiser on a frozen, "
            "pretrained auxiliary SR network g (uncertainty estimate and SR condition)",
            hint=_AUX_HINT,
        )


@dataclass(frozen=True)
class UPSRLossConfig:
    """``upsr`` loss (Eq. 9): ``mse * ||x0^ - x0||^2 + lpips * LPIPS(x0^, hq)``.

    Fields:
        mse: weight of the pixel MSE on the [-1,1] scale (official: 1).
        lpips: weight lambda of the LPIPS-style term (official ``lpips_weight``: 0.5); 0 builds no
            VGG and needs no weights.
        vgg16_weights: torchvision's ImageNet VGG-16: a file path (``vgg16-397923af.pth`` or the
            same tensors as ``.safetensors``) or the registry id ``vgg16-imagenet``.
        lpips_weights: optional LPIPS linear heads (the ``lpips`` package's
            ``weights/v0.1/vgg.pth``, keys ``lin{0..4}.model.1.weight``; or a ``.safetensors``
            with those keys); empty = all channel weights 1.
        vgg_base_width: 64 is the real VGG; 8/16/32 make tiny random VGGs for smoke tests.
        allow_random_vgg: run with a random VGG when ``vgg16_weights`` is empty (tests only).
    """

    mse: float = 1.0
    lpips: float = 0.5
    vgg16_weights: str = ""
    lpips_weights: str = ""
    vgg_base_width: int = 64
    allow_random_vgg: bool = False

    def __post_init__(self) -> None:
        if self.mse < 0 or self.lpips < 0 or self.mse + self.lpips == 0:
            raise ConfigError("loss.mse and loss.lpips must be >= 0, and not both 0")
        if not 1 <= self.vgg_base_width <= 64 or 64 % self.vgg_base_width:
            raise ConfigError(f"loss.vgg_base_width must divide 64, got {self.vgg_base_width}")

    def vgg_weights(self, arch: str) -> str:
        """The weights path or registry id for VGG ``arch`` (the interface ``stages.reconstruction``'s VGG
        helpers read)."""
        return self.vgg16_weights if arch == "vgg16" else ""


@dataclass(frozen=True)
class UPSRStageConfig(StageConfigBase):
    """``upsr``: the denoiser (Algorithm 1) on a frozen g (``inputs.aux_weights``)."""

    run: RunConfig = RunConfig(max_steps=200_000, amp="fp16", checkpoint_every=10_000)
    data: DataConfig = DataConfig(patch_size=256, scale=4, batch_size=32, num_workers=6)
    optim: OptimConfig = OptimConfig(lr=1e-4, betas=(0.9, 0.999))
    schedule: ScheduleConfig = ScheduleConfig(kind="constant", milestones=(), warmup_steps=5000)
    ema: EMAConfig = EMAConfig(decay=0.999)
    model: UPSRConfig = UPSRConfig()
    inputs: UPSRInputsConfig = UPSRInputsConfig()
    loss: UPSRLossConfig = UPSRLossConfig()

    def __post_init__(self) -> None:
        model = self.model
        _check_scale(self.data, model.scale, "upsr")
        if model.aux.scale != model.scale:
            raise ConfigError(f"upsr: model.aux.scale {model.aux.scale} != model.scale 4")
        lr_patch = self.data.patch_size // self.data.scale
        den = model.denoiser
        unet_multiple = den.window_size * 2 ** (len(den.channel_mult) - 1)
        for what, multiple in (("model.pad_multiple", model.pad_multiple),
                               ("the denoiser's window_size * 2**(levels-1)", unet_multiple)):
            if lr_patch % multiple:
                raise ConfigError(
                    f"upsr: the LR patch (data.patch_size / data.scale = {lr_patch}) must be a "
                    f"multiple of {what} = {multiple}",
                    hint="the released model trains on 256px HR / 64px LR patches",
                )


# ------------------------------------------------------------------------------- file helpers
def _read_tensors(path: str | Path, what: str) -> tuple[dict[str, object], dict[str, str]]:
    """Tensors (possibly nested, e.g. ``{"params_ema": {...}}``) and safetensors metadata of a
    ``.safetensors`` or ``.pth``/``.pt`` (``torch.load(weights_only=True)``) file, on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}", hint="check the path in the config")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(p), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
            return dict(load_file(str(p), device="cpu")), meta
        if suffix in (".pth", ".pt"):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"{p.name}: unsupported {what} format {suffix!r}", hint="use .safetensors or .pth"
            )
    except WeightsError:
        raise
    except Exception as exc:  # unpickling refused, truncated file ...
        raise WeightsError(f"{p.name}: cannot read the {what} ({exc})") from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{p.name}: the {what} is not a state dict")
    return dict(obj), {}


def load_aux_state_dict(path: str | Path, aux: ATDConfig) -> dict[str, Tensor]:
    """g's state dict (official ATD keys, no prefix) from ``path`` (see
    :class:`UPSRInputsConfig`), checked against the expected config ``aux`` when the file carries
    realsr metadata. Shapes are checked by the caller's strict load."""
    from realsr_cli.registry.loader import FORMAT

    tensors, meta = _read_tensors(path, "g weights (inputs.aux_weights)")
    name = Path(path).name
    if meta.get("format") == FORMAT:
        if meta.get("arch") != "upsr":
            raise WeightsError(
                f"{name} holds a {meta.get('arch')!r} network, not UPSR's g", hint=_AUX_HINT
            )
        theirs = config_from_json(UPSRConfig, meta.get("config", "{}")).aux
        if theirs != aux:
            diff = [
                f"{f.name} {getattr(theirs, f.name)!r} (config: {getattr(aux, f.name)!r})"
                for f in dataclasses.fields(ATDConfig)
                if getattr(theirs, f.name) != getattr(aux, f.name)
            ]
            raise ConfigError(
                f"g in {name} was built with another config: " + "; ".join(diff),
                hint="set [model.aux] to the [model] section of the upsr-g run that made it",
            )
    try:
        sd = convert_official_state_dict(tensors)
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{name}: {exc}", hint=_AUX_HINT) from exc
    out = {k[len(AUX_PREFIX):]: v for k, v in sd.items() if k.startswith(AUX_PREFIX)}
    if not out:
        raise WeightsError(f"{name} holds no g (aux.) tensors, only a denoiser", hint=_AUX_HINT)
    return out


# -------------------------------------------------------------------------------- LPIPS-style
class LPIPSStyleLoss(nn.Module):
    """LPIPS-form distance on our VGG-16 (module docstring): ``(sr, hq)`` (B,3,H,W) in [0,1]
    -> 0-dim mean over the batch of ``sum_l mean_hw sum_c w_lc (n(f_l(sr)) - n(f_l(hq)))^2``,
    ``n`` = unit length along channels. ``hq`` features carry no gradient.

    Refuses to run (:class:`WeightsError`) until ImageNet weights are loaded into ``vgg``, unless
    ``allow_random_weights``. Heads are buffers ``w{l}`` of shape (C_l,), 1 by default.
    """

    layers: ClassVar[tuple[str, ...]] = tuple(LPIPS_VGG16_LAYERS)

    def __init__(self, *, base_width: int = 64, allow_random_weights: bool = False) -> None:
        super().__init__()
        self.allow_random_weights = allow_random_weights
        self.vgg = VGGFeatureExtractor("vgg16", self.layers, base_width=base_width)
        widths = (64, 128, 256, 512, 512)
        for i, width in enumerate(widths):
            self.register_buffer(f"w{i}", torch.ones(width * base_width // 64))
        self.requires_grad_(False)

    def load_heads(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load LPIPS' linear heads (``lin{l}.model.1.weight``, shape (1,C_l,1,1))."""
        pattern = re.compile(r"lin(\d)\.model\.1\.weight")
        found = {int(m.group(1)): v for k, v in state_dict.items() if (m := pattern.fullmatch(k))}
        if sorted(found) != list(range(len(self.layers))):
            raise WeightsError(
                f"not LPIPS-VGG linear heads: expected keys lin0..lin4.model.1.weight, got "
                f"{sorted(state_dict)[:5]}",
                hint="use the lpips package's weights/v0.1/vgg.pth",
            )
        for i, value in found.items():
            own = getattr(self, f"w{i}")
            if value.numel() != own.numel():
                raise WeightsError(
                    f"LPIPS head lin{i} has {value.numel()} channels, the VGG {own.numel()}",
                    hint="LPIPS heads need loss.vgg_base_width = 64",
                )
            own.copy_(value.reshape(-1).to(own))

    def forward(self, sr: Tensor, hq: Tensor) -> Tensor:
        if not self.vgg.pretrained and not self.allow_random_weights:
            raise WeightsError(
                "the LPIPS-style loss has no pretrained VGG-16 weights",
                hint='set loss.vgg16_weights = "vgg16-imagenet" (torchvision\'s checkpoint from the '
                "registry) or a file path, or loss.allow_random_vgg = true for tests",
            )
        if sr.shape != hq.shape:
            raise UsageError(f"sr and hq differ in shape: {tuple(sr.shape)} vs {tuple(hq.shape)}")
        feats = self.vgg(sr)
        with torch.no_grad():
            ref = self.vgg(hq.detach())
        total = sr.new_zeros((), dtype=torch.float32)
        for i, name in enumerate(self.layers):
            a = F.normalize(feats[name].float(), dim=1, eps=1e-10)
            b = F.normalize(ref[name].float(), dim=1, eps=1e-10)
            w = getattr(self, f"w{i}").view(1, -1, 1, 1)
            total = total + ((a - b).square() * w).sum(dim=1).mean()
        return total


# ------------------------------------------------------------------------------- stage: upsr-g
class UPSRGStage(PixelLossStage):
    """g alone: ``pixel_weight * d(g(lq), hq)``. Nets/optimizers: ``aux`` (ATD, EMA'd).

    Its export holds only g (``aux.`` keys; module docstring): the ``upsr`` stage's
    ``inputs.aux_weights``, not a model ``realsr`` can run (``export_is_complete = False``).
    """

    name = "upsr-g"
    summary = "UPSR step 1: the auxiliary SR network g (ATD) with an L1 loss"
    config_cls = UPSRGStageConfig
    ema_net = "aux"
    net_name = "aux"
    #: the export is an ``aux.``-only input for the ``upsr`` stage, not a strictly loadable model
    export_is_complete: ClassVar[bool] = False

    def __init__(self, config: UPSRGStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.nets["aux"] = ATD(config.model).to(device)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        sd = net_state_dict(self.net("aux"), state["aux"], what=self.name)
        config = UPSRConfig(scale=self.config.model.scale, aux=self.config.model)
        return Export("upsr", config, {AUX_PREFIX + k: v for k, v in sd.items()})


# --------------------------------------------------------------------------------- stage: upsr
@dataclass(frozen=True)
class UPSRTrainInputs:
    """One training sample of Algorithm 1 (HR tensors (B,3,P,P) on the [-1,1] scale).

    ``x0`` target, ``y_bicubic`` y, ``y_hat`` g(y0), ``un`` w_u, ``noise``, ``x_t``; ``t`` int64
    (B,); network inputs ``x_in`` (B,48,P/4,P/4) = scale_input(PixelUnshuffle(x_t)) and
    ``lq_cond`` (B,96,P/4,P/4).
    """

    x0: Tensor
    y_bicubic: Tensor
    y_hat: Tensor
    un: Tensor
    noise: Tensor
    t: Tensor
    x_t: Tensor
    x_in: Tensor
    lq_cond: Tensor


class UPSRStage(SeededGeneratorStage):
    """The UPSR denoiser on a frozen g (Algorithm 1, module docstring).

    Nets/optimizers: ``denoiser`` (``SwinUNet``, EMA'd). Frozen: g (``self.model.aux``, loaded in
    :meth:`load_inputs`; with ``allow_random_aux`` and no file, initialised from ``run.seed`` so
    every process and the export see the same one) and the LPIPS-style VGG. Timesteps and noise come from the stage's own
    seeded CPU generator (``run.seed + 0x5EED + rank``), saved in :meth:`extra_state`.
    Validation (:meth:`predict`) runs the 5-step sampler with noise seeded by ``run.seed``.
    """

    name = "upsr"
    summary = "UPSR step 2: the diffusion denoiser with uncertainty-weighted noise, frozen g"
    config_cls = UPSRStageConfig
    ema_net = "denoiser"
    export_is_complete: ClassVar[bool] = True
    generator_offset = _NOISE_SEED_OFFSET

    def __init__(self, config: UPSRStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        config.inputs.require(self.name)
        loss = config.loss
        if loss.lpips > 0:
            check_vgg_inputs(loss, {"vgg16": "LPIPS-style loss"})  # type: ignore[arg-type]
        with torch.random.fork_rng(devices=[]):  # a random g is a function of run.seed alone
            torch.manual_seed(config.run.seed)
            aux = ATD(config.model.aux)
        self.model = UPSRNet(config.model, aux=aux).to(device)
        freeze(self.model.aux)
        self._aux_loaded = False
        self.schedule = self.model.make_schedule()
        self.nets["denoiser"] = self.model.denoiser
        self.lpips: LPIPSStyleLoss | None = None
        if loss.lpips > 0:
            self.lpips = LPIPSStyleLoss(
                base_width=loss.vgg_base_width, allow_random_weights=loss.allow_random_vgg
            ).to(device)

    def _load_aux(self) -> None:
        """Load g from ``inputs.aux_weights`` once (a random g, seeded by ``run.seed``, stays)."""
        path = self.config.inputs.aux_weights
        if self._aux_loaded:
            return
        if path:
            from realsr_cli.registry.loader import load_state_dict_strict

            sd = load_aux_state_dict(path, self.config.model.aux)
            load_state_dict_strict(self.model.aux, sd, what=Path(path).name)
        else:
            log.warning("upsr uses a RANDOM g (inputs.allow_random_aux = true)")
        self._aux_loaded = True

    def load_inputs(self) -> None:
        loss = self.config.loss
        self._load_aux()
        if self.lpips is not None:
            # UPSRLossConfig offers the two members these helpers read (allow_random_vgg,
            # vgg_weights(arch)); it is not a ReconstructionLossConfig
            load_vgg_weights(self.lpips.vgg, loss, purpose="LPIPS-style loss")  # type: ignore
            if loss.lpips_weights:
                tensors, _ = _read_tensors(loss.lpips_weights, "LPIPS heads (loss.lpips_weights)")
                self.lpips.load_heads(tensors)  # type: ignore[arg-type]

    def frozen(self) -> Iterator[nn.Module]:
        return iter(m for m in (self.model.aux, self.lpips) if m is not None)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"denoiser": list(self.net("denoiser").parameters())}

    @torch.no_grad()
    def diffusion_inputs(
        self, hq: Tensor, lq: Tensor, *, t: Tensor | None = None, noise: Tensor | None = None
    ) -> UPSRTrainInputs:
        """Lines 2-8 of Algorithm 1 for ``hq`` (B,3,P,P), ``lq`` (B,3,P/4,P/4) in [0,1]: g, w_u,
        t and x_t (module docstring). ``t``/``noise`` default to draws from the stage generator
        (t first, then the (B,3,P,P) noise)."""
        s = self.config.model.scale
        cond = self.model.condition(lq.float())  # g in float32, outside autocast (official)
        if cond.y_bicubic.shape != hq.shape:
            raise UsageError(
                f"upsr: hq {tuple(hq.shape)} does not match the x{s} LR batch {tuple(lq.shape)} "
                f"(padded to {tuple(cond.y_bicubic.shape)})",
                hint="LR patches must be multiples of model.pad_multiple",
            )
        if t is None:
            t = self.schedule.sample_timesteps(hq.shape[0], generator=self.generator)
        t = t.to(hq.device)
        if noise is None:
            noise = randn(hq.shape, generator=self.generator, device=hq.device)
        x0 = (hq.float() - 0.5) / 0.5
        x_t = self.schedule.add_noise(x0, cond.y_bicubic, t, noise, un=cond.un)
        x_in = self.schedule.scale_input(F.pixel_unshuffle(x_t, s), t)
        return UPSRTrainInputs(
            x0=x0, y_bicubic=cond.y_bicubic, y_hat=cond.y_hat, un=cond.un, noise=noise, t=t,
            x_t=x_t, x_in=x_in, lq_cond=cond.lq_cond,
        )

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        inp = self.diffusion_inputs(hq, batch["lq"])
        with ctx.autocast():
            x0_pred = self.nets["denoiser"](inp.x_in, inp.t, inp.lq_cond)
            terms = {"mse": loss.mse * mse_loss(x0_pred.float(), inp.x0)}
            if self.lpips is not None:
                sr01 = x0_pred.clamp(-1.0, 1.0) * 0.5 + 0.5
                terms["lpips"] = loss.lpips * self.lpips(sr01, hq.to(sr01.dtype)).float()
        total = torch.stack(list(terms.values())).sum()
        ctx.backward_step(total, "denoiser")
        return scalars({**terms, "total": total})

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        own = self.model.denoiser
        self.model.denoiser = self.net("denoiser")  # whatever module the trainer put there (EMA)
        try:
            return self.model.upscale(lq, generator=make_generator(self.config.run.seed))
        finally:
            self.model.denoiser = own

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        """The trained denoiser + the frozen g. g is not in training checkpoints: it is (re)read
        from ``inputs.aux_weights`` (or is the seeded random g) when the stage was built without
        :meth:`load_inputs`, as ``realsr train export`` does."""
        self._load_aux()
        den = net_state_dict(self.net("denoiser"), state["denoiser"], what=self.name)
        sd = {DENOISER_PREFIX + k: v for k, v in den.items()}
        sd.update({AUX_PREFIX + k: v for k, v in self.model.aux.state_dict().items()})
        return Export("upsr", self.config.model, sd)
