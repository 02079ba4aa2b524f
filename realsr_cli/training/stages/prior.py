"""FeMaSR's frozen high-resolution prior (HRP) in stage II of FeMaSR and UGTSR: the inputs config
(:class:`HRPInputsConfig`), loading or building it (:func:`load_femasr_hrp`, :func:`random_hrp`),
checking it fits the SR network (:func:`hrp_config_for`, :func:`check_prior_compatible`), copying
and freezing it (:func:`copy_prior`, :func:`freeze_prior`, :func:`tune_decoder`) and its codes
for the feature-matching loss (:func:`hrp_codes`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.training.stages.helpers import freeze

log = logging.getLogger(__name__)

__all__ = [
    "DECODER_MODULES",
    "check_prior_compatible",
    "check_same_grid",
    "copy_prior",
    "freeze_prior",
    "hrp_codes",
    "hrp_config_for",
    "HRPInputsConfig",
    "load_femasr_hrp",
    "random_hrp",
    "tune_decoder",
]


@dataclass(frozen=True)
class HRPInputsConfig:
    """The frozen high-resolution prior (FeMaSR stage I VQGAN) a stage-II model is built on.

    Fields:
        hrp_weights: realsr safetensors of a ``femasr`` network with ``lq_stage = false`` — the
            export of a ``femasr-hrp`` run, or FeMaSR's released HRP converted with
            ``realsr convert``. Required unless ``allow_random_hrp``.
        allow_random_hrp: use a randomly initialised prior instead (tests and smoke runs only);
            a set ``hrp_weights`` always wins.
        tune_decoder: also train the prior's decoder (``after_quant_group``, ``decoder_group``,
            ``out_conv``) in stage II, starting from the HRP's; the codebook stays frozen and
            ``z_gt`` still comes from the untouched HRP. Not in the papers (they freeze the whole
            prior): for short CPU runs whose HRP decoder is too weak to keep frozen.
    """

    hrp_weights: str = ""
    allow_random_hrp: bool = False
    tune_decoder: bool = False

    def require(self, stage: str) -> None:
        """Raise :class:`ConfigError` when no prior is configured (called by the stage)."""
        if self.hrp_weights or self.allow_random_hrp:
            return
        raise ConfigError(
            f"{stage}: inputs.hrp_weights is not set; this stage needs the frozen high-resolution "
            "prior (codebook + decoder) of a FeMaSR stage-I VQGAN",
            hint=(
                "train one (`realsr train femasr-hrp --data HR_DIR --out runs/hrp`, then "
                "`realsr train export runs/hrp -o hrp.safetensors`) or convert FeMaSR's released "
                "HRP (`realsr convert FeMaSR_HRP_model_g.pth --arch femasr -o hrp.safetensors`); "
                'then set inputs.hrp_weights = "hrp.safetensors" in the config or pass '
                "--set inputs.hrp_weights=hrp.safetensors (inputs.allow_random_hrp = true is for "
                "smoke tests only)"
            ),
        )


#: FeMaSRConfig fields that fix the shapes of the prior (codebook Z + decoder G)
_PRIOR_FIELDS = ("channels", "codebook_size", "codebook_dim", "norm_type", "act_type")


def hrp_config_for(model: FeMaSRConfig) -> FeMaSRConfig:
    """The stage-I VQGAN config whose prior fits the SR network ``model`` (lq_stage off, x1)."""
    return dataclasses.replace(model, lq_stage=False, scale=1)


def check_prior_compatible(hrp: FeMaSRConfig, model: FeMaSRConfig, *, where: str) -> None:
    """Raise :class:`ConfigError` unless the prior of ``hrp`` has the shapes ``model`` needs."""
    if hrp.lq_stage:
        raise ConfigError(
            f"{where} is a FeMaSR SR network (lq_stage = true), not a stage-I VQGAN",
            hint="use the export of a `femasr-hrp` run (lq_stage = false)",
        )
    diff = [
        f"{name} {getattr(hrp, name)!r} (model: {getattr(model, name)!r})"
        for name in _PRIOR_FIELDS
        if getattr(hrp, name) != getattr(model, name)
    ]
    if diff:
        fix = ", ".join(f"model.{name} = {getattr(hrp, name)!r}" for name in _PRIOR_FIELDS)
        raise ConfigError(
            f"the prior in {where} does not fit the model: " + "; ".join(diff),
            hint=f"set the [model] section to the prior's shapes: {fix}",
        )


def load_femasr_hrp(
    path: str | Path, device: torch.device, *, model: FeMaSRConfig | None = None
) -> FeMaSRNet:
    """Load a FeMaSR stage-I VQGAN (``arch = femasr``, ``lq_stage = false``) from a realsr
    safetensors (strict, via :func:`realsr_cli.registry.loader.load_weights`), frozen, on
    ``device``. With ``model``, also check that its prior fits that SR config."""
    from realsr_cli.registry.loader import load_weights

    spec, config, net = load_weights(path)
    name = Path(path).name
    if spec.name != "femasr":
        raise WeightsError(
            f"{name} holds a {spec.name!r} network; a FeMaSR HRP (arch femasr) is needed",
            hint="use the export of a `femasr-hrp` run",
        )
    check_prior_compatible(config, config if model is None else model, where=name)
    return freeze(net.to(device))


def random_hrp(model: FeMaSRConfig, device: torch.device) -> FeMaSRNet:
    """A randomly initialised, frozen stage-I VQGAN fitting ``model`` (``allow_random_hrp``)."""
    log.warning("using a RANDOM high-resolution prior (inputs.allow_random_hrp = true)")
    return freeze(FeMaSRNet(hrp_config_for(model)).to(device))


def freeze_prior(net: FeMaSRNet) -> list[nn.Module]:
    """Freeze ``net``'s prior (codebook + decoder, :data:`PRIOR_PREFIXES`); returns its modules."""
    modules = list(net.prior_modules().values())
    for module in modules:
        freeze(module)
    return modules


#: prior modules that ``inputs.tune_decoder`` trains in stage II (all but the codebook)
DECODER_MODULES = ("after_quant_group", "decoder_group", "out_conv")


def tune_decoder(net: FeMaSRNet) -> None:
    """Make the decoder part of ``net``'s prior trainable again (:data:`DECODER_MODULES`)."""
    for name in DECODER_MODULES:
        getattr(net, name).requires_grad_(True).train()


def copy_prior(src: FeMaSRNet, dst: FeMaSRNet) -> None:
    """Copy the prior modules of ``src`` into ``dst`` (strict, exact copies) and freeze them."""
    theirs = src.prior_modules()
    for name, module in dst.prior_modules().items():
        try:
            module.load_state_dict(theirs[name].state_dict(), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"the HRP's {name} does not fit the model: {exc}") from exc
    freeze_prior(dst)


def hrp_codes(hrp: FeMaSRNet, hq: Tensor) -> tuple[Tensor, Tensor]:
    """``z_gt = q[E(hq), Z]`` (FeMaSR Sec. 3.4): the frozen HRP's matched codes of ``hq``.

    ``hq`` (B,3,H,W) in [0,1]; returns ``(codes (B,n_z,h,w), indices (B,1,h,w))``, no gradients.
    """
    with torch.no_grad():
        _, q = hrp.quantize(hrp.encode(hq)[0])
    return q.codes, q.indices


def check_same_grid(a: Tensor, b: Tensor, *, what: str) -> None:
    """Raise :class:`UsageError` when two (B,C,h,w) feature maps differ in shape."""
    if a.shape != b.shape:
        raise UsageError(
            f"{what}: {tuple(a.shape)} vs {tuple(b.shape)}",
            hint="data.patch_size must be a multiple of 2**(len(model.channels) - 1)",
        )
