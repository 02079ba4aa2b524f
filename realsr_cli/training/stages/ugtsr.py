"""UGTSR training stages ("Incorporating Uncertainty-Guided and Top-k Codebook Matching for
Real-World Blind Image Super-Resolution"; spec ``shared/specs/ugtsr.md``). No official code exists.

UGTSR is FeMaSR on FeMaSR's frozen high-resolution prior (HRP: codebook + decoder, the export of a
``femasr-hrp`` run), trained in two stages (Sec. III-A, III-D, IV-C). Both stages are the
``femasr`` stage (:class:`~realsr_cli.training.stages.femasr.FeMaSRStage`) with a
:class:`~realsr_cli.models.ugtsr.UGTSRNet` as generator and one more loss term
(:meth:`FeMaSRStage.extra_terms`), so everything else is FeMaSR's, unchanged: the HRP is loaded
from ``inputs.hrp_weights`` into the network's prior (:data:`PRIOR_PREFIXES`) and frozen, z_gt is
the HRP's quantized encoding of the HR patch, and the generator loss is

    fema (beta ||z_lq - z_gt||^2 + alpha ||Gram(z_lq) - Gram(z_gt)||^2)     Eq. 13 (FeMaSR Eq. 9)
    + l1 |sr - hq| + perceptual (VGG-19) + adversarial (hinge, U-Net D)      Eq. 10-12
    + the uncertainty term of the stage,

followed by the hinge discriminator step; ``match_acc`` is logged as in ``femasr``.

* ``ugtsr-uncertainty`` (:class:`UGTSRUncertaintyStage`, stage I, Eq. 2/14): the network
  :meth:`UGTSRConfig.stage1` — FeMaSR plus the uncertainty head (s = log theta, one map per colour
  channel, :data:`~realsr_cli.models.ugtsr.UNCERTAINTY_CHANNELS`), no top-k, no Align-Attention.
  Uncertainty term ``esu * ESU(sr, hq, s)``, ESU = mean(exp(-s) |hq - sr| + 2 s). ESU already holds
  the (uncertainty-weighted) pixel term, so the plain L1 weight defaults to 0 here (UDL's stage I is
  ESU alone); fema, perceptual and adversarial stay as in stage II (spec §1).
  The LR encoder may start from a FeMaSR SR export (``inputs.init_weights``).
* ``ugtsr`` (:class:`UGTSRStage`, stage II, Eq. 3/15): the network :meth:`UGTSRConfig.stage2` —
  top-k fusion matching (``top_k``, paper 3) and Align-Attention, no uncertainty head. The stage-I
  network (``inputs.uncertainty_weights``) is frozen in eval mode and only gives
  ``theta = exp(s)`` of the LR patch, detached; uncertainty term ``ud * UD(sr, hq, s)``,
  UD = mean(g(theta) |hq - sr|), g(theta) = theta - min(theta) per image (UDL). Its LR encoder
  (``multiscale_encoder.*``, ``before_quant_group.*``) initialises the stage-II encoder.

Paper training (Sec. IV-A, IV-C), the config defaults: Adam (0.9, 0.99), fixed lr 1e-4 for G and D,
batch 32, HR patches 256x256, BSRGAN degradations; loss weights as FeMaSR's: L1 = perceptual =
Gram (alpha) = 1, beta = 0.25, adversarial = 0.1, uncertainty terms 1. The paper names VGG-19 for
the perceptual loss but no layers: we take the last ReLU of each of VGG-19's five blocks (the taps
LPIPS uses on VGG-16, the ``femasr`` default) with FeMaSR's squared error. Stage-config TOMLs live
in ``realsr_cli/configs/ugtsr*.toml``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.models.ugtsr import (
    PRIOR_PREFIXES,
    UGTSR_PREFIXES,
    UGTSRConfig,
    UGTSRNet,
    UGTSROutput,
)
from realsr_cli.training.config import DataConfig
from realsr_cli.training.losses import esu_loss, ud_loss
from realsr_cli.training.stage import Export
from realsr_cli.training.stages.femasr import (
    FeMaSRLossConfig,
    FeMaSRStage,
    FeMaSRStageConfig,
)
from realsr_cli.training.stages.helpers import freeze
from realsr_cli.training.stages.prior import HRPInputsConfig, copy_prior

log = logging.getLogger(__name__)

__all__ = [
    "UGTSR_VGG19_LAYERS",
    "UGTSRInputsConfig",
    "UGTSRLossConfig",
    "UGTSRStage",
    "UGTSRStageConfig",
    "UGTSRUncertaintyInputsConfig",
    "UGTSRUncertaintyLossConfig",
    "UGTSRUncertaintyStage",
    "UGTSRUncertaintyStageConfig",
    "init_encoder",
    "load_femasr_start",
    "load_uncertainty_net",
    "start_from_femasr",
]

ARCH = "ugtsr"

#: VGG-19 taps of the perceptual loss: the last ReLU of each block (the paper names no layers)
UGTSR_VGG19_LAYERS: dict[str, float] = {
    "relu1_2": 1.0,
    "relu2_2": 1.0,
    "relu3_4": 1.0,
    "relu4_4": 1.0,
    "relu5_4": 1.0,
}

#: Sec. IV-A/IV-C: batch 32, 256x256 HR patches, BSRGAN degradations (x4; x2 via the TOML)
_PAPER_DATA = DataConfig(scale=4, patch_size=256, batch_size=32, pipeline="bsrgan")

_STAGE1_HINT = (
    "train one (`realsr train ugtsr-uncertainty --data HR_DIR --out runs/ugtsr-u`, then "
    "`realsr train export runs/ugtsr-u -o ugtsr-uncertainty.safetensors`) and set "
    'inputs.uncertainty_weights = "ugtsr-uncertainty.safetensors" (or --set '
    "inputs.uncertainty_weights=PATH); inputs.allow_random_uncertainty = true is for smoke tests only"
)


# --------------------------------------------------------------------------------------- configs
def _one_start(init_weights: str, init_from: str) -> None:
    if init_weights and init_from:
        raise ConfigError(
            "inputs.init_weights and inputs.init_from both name a starting network",
            hint="keep one: init_from starts from a FeMaSR network, init_weights from our own export",
        )


@dataclass(frozen=True)
class _UGTSRLossDefaults(FeMaSRLossConfig):
    """FeMaSR's stage-II loss section with UGTSR's perceptual network (Eq. 11: VGG-19)."""

    perceptual_arch: Literal["vgg16", "vgg19"] = "vgg19"
    perceptual_layers: dict[str, float] = field(default_factory=lambda: dict(UGTSR_VGG19_LAYERS))


@dataclass(frozen=True)
class UGTSRUncertaintyLossConfig(_UGTSRLossDefaults):
    """Stage-I losses (Eq. 14); adds to :class:`FeMaSRLossConfig` (fema, beta, alpha, l1, ...):

    Fields:
        esu: weight of ESU (Eq. 2), the term that trains the uncertainty head; must be > 0.
        l1: plain L1 weight, 0 by default (ESU is the stage's pixel loss).
    """

    l1: float = 0.0
    esu: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.esu <= 0:
            raise ConfigError(
                f"loss.esu must be positive (it trains the uncertainty head), got {self.esu}"
            )


@dataclass(frozen=True)
class UGTSRLossConfig(_UGTSRLossDefaults):
    """Stage-II losses (Eq. 15); adds to :class:`FeMaSRLossConfig` (fema, beta, alpha, l1, ...):

    Fields:
        ud: weight of the uncertainty-driven loss UD (Eq. 3); 0 = plain FeMaSR losses.
    """

    ud: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ud < 0:
            raise ConfigError(f"loss.ud must be >= 0, got {self.ud}")


@dataclass(frozen=True)
class UGTSRUncertaintyInputsConfig(HRPInputsConfig):
    """Stage-I inputs: the frozen HRP (``hrp_weights``, required unless ``allow_random_hrp``), and

    Fields:
        init_weights: optional realsr safetensors of a FeMaSR SR network (a ``femasr`` export or
            FeMaSR's converted release, ``lq_stage = true``) or of a UGTSR network; its LR encoder
            (``multiscale_encoder.*``, ``before_quant_group.*``) initialises this one's. The
            prior always comes from ``hrp_weights``; other keys are ignored.
        init_from: the FeMaSR SR network the whole UGTSR network starts from — prior (codebook
            + decoder), LR encoder and decoder: a registry id (``femasr-x4``, ``femasr``), a
            realsr ``femasr`` safetensors, or FeMaSR's released ``.pth`` (converted on load).
            UGTSR's additions keep their neutral start, so before the first step the SR image is
            FeMaSR's exactly (:func:`start_from_femasr`). ``[model]`` must be that network's
            (the shipped ``ugtsr*.toml`` are the released x4 shapes). Excludes ``init_weights``.
    """

    init_weights: str = ""
    init_from: str = ""

    def __post_init__(self) -> None:
        _one_start(self.init_weights, self.init_from)


@dataclass(frozen=True)
class UGTSRInputsConfig(HRPInputsConfig):
    """Stage-II inputs: the frozen HRP (``hrp_weights``, required unless ``allow_random_hrp``), and

    Fields:
        uncertainty_weights: the export of a ``ugtsr-uncertainty`` run (arch ``ugtsr`` with the
            uncertainty head). Frozen; gives theta = exp(s) and the initial LR encoder.
            Required unless ``allow_random_uncertainty``.
        allow_random_uncertainty: use a randomly initialised stage-I network instead (tests and
            smoke runs only); a set ``uncertainty_weights`` always wins.
        init_weights: optional ``ugtsr`` stage-II export (safetensors) of the same network:
            the whole SR network, prior included, starts from it instead of the stage-I encoder,
            so a run can fine-tune a trained model under other losses (a GAN run from an
            L1-trained model, as Real-ESRGAN starts from Real-ESRNet). Not in the paper. The
            frozen HRP (``hrp_weights``) still encodes z_gt; the stage-I network still gives theta.
        init_from: as in stage I (a FeMaSR id or file): the whole network starts as that FeMaSR
            network (top-k fusion and Align-Attention neutral, so the SR image is FeMaSR's before
            the first step) instead of taking the stage-I encoder; the stage-I network still
            gives theta. Excludes ``init_weights``.
    """

    uncertainty_weights: str = ""
    allow_random_uncertainty: bool = False
    init_weights: str = ""
    init_from: str = ""

    def __post_init__(self) -> None:
        _one_start(self.init_weights, self.init_from)

    def require(self, stage: str) -> None:
        """Raise :class:`ConfigError` when the HRP or the stage-I network is not configured."""
        super().require(stage)
        if self.uncertainty_weights or self.allow_random_uncertainty:
            return
        raise ConfigError(
            f"{stage}: inputs.uncertainty_weights is not set; this stage needs the frozen "
            "uncertainty estimator of UGTSR stage I (the `ugtsr-uncertainty` stage)",
            hint=_STAGE1_HINT,
        )


@dataclass(frozen=True)
class _UGTSRStageConfigBase(FeMaSRStageConfig):
    """FeMaSR's stage-II config (``model`` is the underlying FeMaSR network, lq_stage on) with the
    paper's data settings; :attr:`net_config` is the UGTSR network a stage trains and exports."""

    data: DataConfig = _PAPER_DATA

    def __post_init__(self) -> None:
        super().__post_init__()
        _ = self.net_config  # the UGTSR additions must fit the model (align heads ...)

    @property
    def net_config(self) -> UGTSRConfig:
        raise NotImplementedError


@dataclass(frozen=True)
class UGTSRUncertaintyStageConfig(_UGTSRStageConfigBase):
    """``ugtsr-uncertainty``: FeMaSR + uncertainty head on a frozen HRP (``inputs.hrp_weights``)."""

    inputs: UGTSRUncertaintyInputsConfig = UGTSRUncertaintyInputsConfig()
    loss: UGTSRUncertaintyLossConfig = UGTSRUncertaintyLossConfig()

    @property
    def net_config(self) -> UGTSRConfig:
        """:meth:`UGTSRConfig.stage1` of ``model``: uncertainty head, top_k 1, no Align-Attention."""
        return UGTSRConfig.stage1(self.model)


@dataclass(frozen=True)
class UGTSRStageConfig(_UGTSRStageConfigBase):
    """``ugtsr``: the UGTSR SR network on a frozen HRP and a frozen stage-I network.

    Fields (besides FeMaSR's sections):
        top_k: candidate codes fused per position (Sec. III-B; paper 3, 1 = FeMaSR's matching).
        fusion_dim, fusion_heads: width and heads of the MDTA fusion (:class:`UGTSRConfig`).
        align_window, align_heads: Align-Attention window side and heads (:class:`UGTSRConfig`).
    """

    inputs: UGTSRInputsConfig = UGTSRInputsConfig()
    loss: UGTSRLossConfig = UGTSRLossConfig()
    top_k: int = 3
    fusion_dim: int = 256
    fusion_heads: int = 8
    align_window: int = 8
    align_heads: int = 8

    @property
    def net_config(self) -> UGTSRConfig:
        """:meth:`UGTSRConfig.stage2` of ``model``, ``top_k`` and the sizes: no uncertainty head."""
        return UGTSRConfig.stage2(
            self.model,
            top_k=self.top_k,
            fusion_dim=self.fusion_dim,
            fusion_heads=self.fusion_heads,
            align_window=self.align_window,
            align_heads=self.align_heads,
        )


# ------------------------------------------------------------------------------------- helpers
def init_encoder(net: UGTSRNet, state: Mapping[str, Tensor], *, where: str) -> list[str]:
    """Copy ``net``'s LR encoder from ``state`` (another FeMaSR/UGTSR network's state dict).

    The encoder is every key of ``net`` outside the prior (:data:`PRIOR_PREFIXES`) and UGTSR's
    additions (:data:`UGTSR_PREFIXES`): ``multiscale_encoder.*`` and ``before_quant_group.*``. All
    of them must be in ``state`` with the same shapes (else :class:`WeightsError`); every other key
    of ``state`` is ignored (``strict=False``). Returns the copied keys.
    """
    own = net.state_dict()
    keys = [k for k in own if not k.startswith(PRIOR_PREFIXES + UGTSR_PREFIXES)]
    missing = [k for k in keys if k not in state]
    mis_shaped = [k for k in keys if k in state and state[k].shape != own[k].shape]
    if missing or mis_shaped:
        raise WeightsError(
            f"{where}: its LR encoder does not fit the model "
            f"(missing {missing[:3]}, mis-shaped {mis_shaped[:3]})",
            hint=f"set the [model] section to the network in {where}",
        )
    net.load_state_dict({k: state[k] for k in keys}, strict=False)
    log.info("initialised %d LR-encoder tensors from %s", len(keys), where)
    return keys


def load_femasr_start(value: str, model: FeMaSRConfig, *, key: str = "inputs.init_from") -> FeMaSRNet:
    """The FeMaSR SR network named by ``value`` (``inputs.init_from``), on the CPU.

    ``value``: a registry id/alias of a ``femasr`` entry (fetched through the cache: checksum,
    conversion, offline mode as for ``realsr upscale``), a realsr safetensors of arch ``femasr``,
    or an official FeMaSR checkpoint (``.pth``), converted into a temporary file first. Its config
    must equal ``model`` (else :class:`ConfigError` naming the ``--set model.*`` to use).
    """
    from realsr_cli.registry import catalog as catalog_mod
    from realsr_cli.registry import hub, loader

    catalog = catalog_mod.load_catalog()
    path = Path(value).expanduser()
    if not path.is_file() and catalog.knows(value):
        entry = catalog.get(value, scale=model.scale)
        if entry.arch != "femasr":
            raise ConfigError(f"{key} = {value!r} is a {entry.arch!r} model, not FeMaSR",
                              hint="use femasr-x4 / femasr-x2 or a FeMaSR file")
        path = hub.fetch(entry)
    elif not path.is_file():
        raise ConfigError(
            f"{key}: {value!r} is neither a file nor a model id",
            hint="use a registry id (femasr-x4, femasr-x2), a FeMaSR .safetensors or FeMaSR's released .pth",
        )
    if loader.is_realsr_file(path):
        spec, config, net = loader.load_weights(path)
    else:  # an official checkpoint: convert it the way `realsr convert --arch femasr` does
        import tempfile

        from realsr_cli.registry.convert import convert_checkpoint

        with tempfile.TemporaryDirectory(prefix="realsr-init-") as tmp:
            converted = convert_checkpoint(path, Path(tmp) / "femasr.safetensors", arch="femasr",
                                           scale=model.scale)
            spec, config, net = loader.load_weights(converted)
    name = path.name
    if spec.name != "femasr" or not config.lq_stage:
        raise WeightsError(
            f"{name} is not a FeMaSR SR network (arch {spec.name!r})",
            hint=f"{key} takes FeMaSR's SR network (femasr-x4, FeMaSR_SRX4_model_g.pth), not its HRP",
        )
    if config != model:
        diff = [f.name for f in dataclasses.fields(model) if getattr(config, f.name) != getattr(model, f.name)]
        fix = " ".join(f"--set model.{k}={_toml_value(getattr(config, k))}" for k in diff)
        raise ConfigError(
            f"{name} does not fit [model]: " + "; ".join(
                f"{k} {getattr(config, k)!r} (model: {getattr(model, k)!r})" for k in diff),
            hint=f"set [model] to the checkpoint's network: {fix}",
        )
    log.info("%s = %s (%s)", key, value, path)
    return net


def _toml_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def start_from_femasr(net: UGTSRNet, femasr: FeMaSRNet, *, where: str) -> None:
    """Load every FeMaSR tensor of ``net`` (prior, LR encoder, decoder) from ``femasr``.

    UGTSR's additions (:data:`UGTSR_PREFIXES`) are left as built: the fusion's and
    Align-Attention's zero-initialised output projections make them neutral, and the uncertainty
    head is a separate branch, so ``net``'s SR image is then ``femasr``'s exactly.
    """
    state = femasr.state_dict()
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(UGTSR_PREFIXES)]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{where} does not fit the UGTSR network (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})",
            hint="set the [model] section to the FeMaSR network in " + where,
        )
    log.info("started the whole network from FeMaSR %s (%d tensors)", where, len(state))


def load_uncertainty_net(
    path: str | Path, device: torch.device, *, model: FeMaSRConfig
) -> UGTSRNet:
    """Load a stage-I network (a ``ugtsr-uncertainty`` export: arch ``ugtsr`` with the uncertainty
    head) strictly from ``path``, frozen, in eval mode, on ``device``; its SR factor must be
    ``model``'s (theta must cover the SR image)."""
    from realsr_cli.registry.loader import load_weights

    spec, config, net = load_weights(path)
    name = Path(path).name
    if spec.name != ARCH or not config.uncertainty:
        raise WeightsError(
            f"{name} holds a {spec.name!r} network without an uncertainty head; the stage-I "
            "UGTSR network is needed",
            hint=_STAGE1_HINT,
        )
    if config.scale != model.scale:
        raise ConfigError(
            f"{name} is an x{config.scale} uncertainty estimator, the model is x{model.scale}",
            hint="train stage I at the same scale as stage II",
        )
    return freeze(net.to(device))


def _same_prior(a: FeMaSRNet, b: FeMaSRNet) -> bool:
    theirs = b.state_dict()
    return all(
        torch.equal(v, theirs[k]) for k, v in a.state_dict().items() if k.startswith(PRIOR_PREFIXES)
    )


# --------------------------------------------------------------------------------------- stages
class _UGTSRStage(FeMaSRStage):
    """The ``femasr`` stage training ``UGTSRNet(config.net_config)``, exported as arch ``ugtsr``."""

    def build_generator(self) -> UGTSRNet:
        return UGTSRNet(self.config.net_config)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        """FeMaSR's export (the exact frozen prior once inputs are loaded) as a ``ugtsr`` model."""
        return Export(ARCH, self.config.net_config, super().export(state).state_dict)


class UGTSRUncertaintyStage(_UGTSRStage):
    """Stage I: estimate the uncertainty map (UGTSR Sec. III-A, Eq. 2 and 14).

    Nets: ``g`` (``UGTSRNet``, :meth:`UGTSRConfig.stage1`; prior copied from the HRP and frozen,
    the LR encoder and the uncertainty head train), ``d`` (when ``loss.adversarial > 0``).
    Generator loss: FeMaSR's terms (``femasr``) + ``esu * ESU(sr, hq, s)``.
    Export: arch ``ugtsr`` with the stage-I config (uncertainty head included).
    """

    name = "ugtsr-uncertainty"
    summary = "UGTSR stage I: FeMaSR + uncertainty head trained with ESU on a frozen HR prior"
    config_cls = UGTSRUncertaintyStageConfig

    def load_inputs(self) -> None:
        super().load_inputs()
        inputs = self.config.inputs
        if inputs.init_from:
            femasr = load_femasr_start(inputs.init_from, self.config.model)
            start_from_femasr(self.net("g"), femasr, where=inputs.init_from)
            return
        path = inputs.init_weights
        if not path:
            return
        from realsr_cli.registry.loader import load_weights

        spec, config, net = load_weights(path)
        femasr = getattr(config, "femasr", config)
        if spec.name not in ("femasr", ARCH) or not femasr.lq_stage:
            raise WeightsError(
                f"{Path(path).name} is not a FeMaSR/UGTSR SR network (arch {spec.name!r})",
                hint="inputs.init_weights takes a `femasr` export; the HRP goes in hrp_weights",
            )
        init_encoder(self.net("g"), net.state_dict(), where=Path(path).name)

    def extra_terms(self, batch: dict[str, Tensor], out: UGTSROutput) -> dict[str, Tensor]:
        s = out.log_uncertainty
        esu = esu_loss(out.image.float(), batch["hq"].float(), s.float())
        return {"esu": self.config.loss.esu * esu}


class UGTSRStage(_UGTSRStage):
    """Stage II: SR with top-k matching and Align-Attention, uncertainty-driven (Eq. 3 and 15).

    Nets: ``g`` (``UGTSRNet``, :meth:`UGTSRConfig.stage2`; prior copied from the HRP and frozen;
    LR encoder initialised from the stage-I network; encoder, fusion and Align-Attention train),
    ``d`` (when ``loss.adversarial > 0``). Frozen: the HRP, the VGG and ``self.uncertainty`` (the
    stage-I network, eval mode), which maps the LR patch to s; theta = exp(s) is detached.
    Generator loss: FeMaSR's terms (``femasr``) + ``ud * UD(sr, hq, s)``.
    Export: arch ``ugtsr`` stage-II model (EMA weights when on), no uncertainty head.
    """

    name = "ugtsr"
    summary = "UGTSR stage II: top-k matching + Align-Attention, uncertainty-driven loss"
    config_cls = UGTSRStageConfig

    def __init__(self, config: UGTSRStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.uncertainty: UGTSRNet | None = None

    def load_inputs(self) -> None:
        super().load_inputs()
        path, model = self.config.inputs.uncertainty_weights, self.config.model
        if path:
            net = load_uncertainty_net(path, self.device, model=model)
            if not _same_prior(net, self._prior()):
                log.warning(
                    "%s was trained on another prior than inputs.hrp_weights", Path(path).name
                )
            if not self.config.inputs.init_from:
                init_encoder(self.net("g"), net.state_dict(), where=Path(path).name)
        else:
            log.warning(
                "using a RANDOM uncertainty estimator (inputs.allow_random_uncertainty = true)"
            )
            net = freeze(UGTSRNet(UGTSRConfig.stage1(model)).to(self.device))
            copy_prior(self._prior(), net)
        self.uncertainty = net
        if self.config.inputs.init_from:
            femasr = load_femasr_start(self.config.inputs.init_from, model)
            start_from_femasr(self.net("g"), femasr, where=self.config.inputs.init_from)
        if self.config.inputs.init_weights:
            self._init_whole(self.config.inputs.init_weights)

    def _init_whole(self, path: str) -> None:
        """Load a stage-II network of this config into ``g`` strictly (``inputs.init_weights``)."""
        from realsr_cli.registry.loader import load_weights

        spec, config, net = load_weights(path)
        name = Path(path).name
        if spec.name != ARCH or config != self.config.net_config:
            raise WeightsError(
                f"{name} is not a UGTSR stage-II network of this run's shape (arch {spec.name!r})",
                hint="inputs.init_weights takes a `ugtsr` export trained with the same [model], "
                "top_k, fusion_* and align_* settings",
            )
        g = self.net("g")
        if not self.config.inputs.tune_decoder and not _same_prior(net, g):
            log.warning("%s has another prior than inputs.hrp_weights; its prior is used (frozen)",
                        name)
        g.load_state_dict(net.state_dict(), strict=True)
        log.info("initialised the whole SR network from %s", name)

    def frozen(self) -> Iterator[nn.Module]:
        extra = [] if self.uncertainty is None else [self.uncertainty]
        return itertools.chain(super().frozen(), extra)

    def extra_terms(self, batch: dict[str, Tensor], out: UGTSROutput) -> dict[str, Tensor]:
        if self.uncertainty is None:
            raise UsageError("ugtsr: load_inputs() must run before training (no stage-I network)")
        with torch.no_grad():
            s = self.uncertainty(batch["lq"]).log_uncertainty
        ud = ud_loss(out.image.float(), batch["hq"].float(), s.float())
        return {"ud": self.config.loss.ud * ud}
