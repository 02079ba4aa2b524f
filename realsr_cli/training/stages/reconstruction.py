"""The reconstruction loss of FeMaSR-style stages: L1 + VGG perceptual/style terms.

:class:`ReconstructionLossConfig` (L1, VGG perceptual/style, adversarial weight and the VGG
weights: a file path or a registry id) is subclassed by stage loss sections; the VGG functions
check (:func:`check_vgg_inputs`, in ``__init__``: refuse early when weights are missing;
:func:`perceptual_vgg_needs`), resolve (:func:`resolve_vgg_weights`: path or registry id -> file),
read (:func:`read_vgg_state_dict`, :func:`load_vgg_weights`, :func:`load_perceptual_weights`) and
build (:func:`build_perceptual_loss`) them;
:func:`reconstruction_terms` computes the terms."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.training.config import check_non_negative
from realsr_cli.training.losses import (
    PerceptualLoss,
    VGGFeatureExtractor,
    l1_loss,
    vgg_layer_names,
)

if TYPE_CHECKING:
    from realsr_cli.registry.catalog import WeightsEntry

log = logging.getLogger(__name__)

__all__ = [
    "LPIPS_VGG16_LAYERS",
    "TORCHVISION_VGG_URLS",
    "VGG_REGISTRY_IDS",
    "build_perceptual_loss",
    "check_vgg_inputs",
    "load_perceptual_weights",
    "load_vgg_weights",
    "perceptual_vgg_needs",
    "read_vgg_state_dict",
    "reconstruction_terms",
    "ReconstructionLossConfig",
    "resolve_vgg_weights",
]


#: the five VGG-16 taps of LPIPS-VGG (the official FeMaSR code trains with LPIPS on VGG-16)
LPIPS_VGG16_LAYERS: dict[str, float] = {
    "relu1_2": 1.0,
    "relu2_2": 1.0,
    "relu3_3": 1.0,
    "relu4_3": 1.0,
    "relu5_3": 1.0,
}

#: the shipped weights.toml ids (``kind = "aux"``) of torchvision's ImageNet VGGs (named in hints)
VGG_REGISTRY_IDS: dict[str, str] = {"vgg16": "vgg16-imagenet", "vgg19": "vgg19-imagenet"}

#: where torchvision publishes the ImageNet checkpoints (the sources of those registry entries)
TORCHVISION_VGG_URLS: dict[str, str] = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}


@dataclass(frozen=True)
class ReconstructionLossConfig:
    """Loss weights every FeMaSR-style stage shares; stage ``loss`` sections subclass it.

    Fields:
        l1: weight of the pixel L1 loss (FeMaSR Eq. 10, lambda_L1 = 1).
        perceptual: weight of the VGG feature loss (Eq. 10, lambda_per = 1); 0 builds no VGG.
        style: weight of a VGG Gram (style) loss on the same layers (0 = off; not in FeMaSR).
        perceptual_arch: ``vgg16`` (FeMaSR Eq. 10) or ``vgg19`` (UGTSR, Real-ESRGAN).
        perceptual_layers: VGG layer -> weight; names like ``relu3_3`` / ``conv5_4``
            (``conv`` = before the ReLU). The FeMaSR paper names no layers; the default is the
            LPIPS-VGG tap set.
        perceptual_criterion: ``mse`` (Eq. 10 writes a squared L2 norm) or ``l1``.
        adversarial: weight of the hinge generator loss (Eq. 11, lambda_adv = 0.1); 0 = no
            discriminator at all.
        vgg16_weights, vgg19_weights: torchvision ImageNet checkpoints for every VGG of that
            architecture the stage uses: a file path (``vgg16-397923af.pth``,
            ``vgg19-dcbb9e9d.pth``, or the same tensors as ``.safetensors``) or the registry id
            of an aux weights.toml entry (``vgg16-imagenet``, ``vgg19-imagenet``), downloaded
            through the registry cache (:func:`resolve_vgg_weights`).
        vgg_base_width: 64 is the real VGG; smaller values (8, 16, 32) only make tiny random
            VGGs for smoke tests (they cannot load the published weights).
        allow_random_vgg: run with randomly initialised VGGs when no weights file is set
            (meaningless losses; tests and smoke runs only).
    """

    l1: float = 1.0
    perceptual: float = 1.0
    style: float = 0.0
    perceptual_arch: Literal["vgg16", "vgg19"] = "vgg16"
    perceptual_layers: dict[str, float] = field(default_factory=lambda: dict(LPIPS_VGG16_LAYERS))
    perceptual_criterion: Literal["l1", "mse"] = "mse"
    adversarial: float = 0.1
    vgg16_weights: str = ""
    vgg19_weights: str = ""
    vgg_base_width: int = 64
    allow_random_vgg: bool = False

    def __post_init__(self) -> None:
        check_non_negative(
            "loss",
            l1=self.l1,
            perceptual=self.perceptual,
            style=self.style,
            adversarial=self.adversarial,
        )
        if not 1 <= self.vgg_base_width <= 64 or 64 % self.vgg_base_width:
            raise ConfigError(f"loss.vgg_base_width must divide 64, got {self.vgg_base_width}")
        if self.uses_perceptual:
            names = vgg_layer_names(self.perceptual_arch)
            bad = [name for name in self.perceptual_layers if name not in names]
            if not self.perceptual_layers or bad:
                raise ConfigError(
                    f"loss.perceptual_layers: unknown {self.perceptual_arch} layer(s) "
                    f"{bad or '(none given)'}",
                    hint="use names like relu2_2, relu3_3, conv5_4 (conv = before the ReLU)",
                )
            check_non_negative("loss.perceptual_layers", **self.perceptual_layers)

    @property
    def uses_perceptual(self) -> bool:
        return self.perceptual > 0 or self.style > 0

    def vgg_weights(self, arch: str) -> str:
        """The weights path or registry id configured for VGG ``arch`` (``""`` when unset)."""
        return {"vgg16": self.vgg16_weights, "vgg19": self.vgg19_weights}[arch]


def _missing_vgg_error(arch: str, purpose: str) -> ConfigError:
    return ConfigError(
        f"the {purpose} needs ImageNet {arch.upper()} weights, but loss.{arch}_weights is not set",
        hint=(
            f'set loss.{arch}_weights = "{VGG_REGISTRY_IDS[arch]}" (torchvision\'s checkpoint from the '
            f"registry; fetch it once with `realsr models download {VGG_REGISTRY_IDS[arch]} --trust`) "
            f"or a file path (--set loss.{arch}_weights=...); "
            "loss.allow_random_vgg = true runs with a random VGG (smoke tests only)"
        ),
    )


_VGG_FILE_SUFFIXES = (".pth", ".pt", ".safetensors")


def _looks_like_path(value: str) -> bool:
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or Path(value).suffix.lower() in _VGG_FILE_SUFFIXES
    )


def _vgg_registry_entry(value: str, arch: str, key: str) -> WeightsEntry | None:
    """The aux catalog entry ``value`` names for VGG ``arch``; None when ``value`` is a path.

    Raises :class:`ConfigError` for an id that is not an aux entry of ``arch``.
    """
    if Path(value).expanduser().is_file() or _looks_like_path(value):
        return None
    from realsr_cli.registry.catalog import load_catalog

    catalog = load_catalog()
    ids = ", ".join(e.id for e in catalog.aux(arch)) or "(none)"
    entry = next((e for e in catalog.entries if e.id == value), None)
    if entry is None:
        raise ConfigError(
            f"{key} = {value!r} is neither an existing file nor a registry id",
            hint=f"registry ids for {arch}: {ids} (see `realsr models list`); or give a file path",
        )
    if not entry.is_aux or entry.arch != arch:
        what = f"{entry.arch} weights" if entry.is_aux else "a super-resolution model"
        raise ConfigError(f"{key} = {value!r} names {what}, not {arch} weights", hint=f"registry ids for {arch}: {ids}")
    return entry


def resolve_vgg_weights(value: str, arch: str, *, key: str | None = None) -> Path:
    """The local file for a ``loss.<arch>_weights`` value: an existing path as is, else the id of
    an aux weights.toml entry of ``arch``, fetched through the registry cache (sha256 recorded in
    weights.toml or trusted on first use; offline mode: cache only). Anything else is a
    :class:`ConfigError` listing the ids."""
    key = key or f"loss.{arch}_weights"
    entry = _vgg_registry_entry(value, arch, key)
    if entry is None:
        return Path(value).expanduser()
    from realsr_cli.registry import hub

    path = hub.fetch(entry)  # WeightsError / DownloadError hints name `realsr models download ID`
    log.info("%s = %s -> %s", key, entry.id, path)
    return path


def check_vgg_inputs(
    loss: ReconstructionLossConfig, needs: Mapping[str, str] | None = None
) -> None:
    """Refuse early (in a stage's ``__init__``, before any data is read) when a VGG has no weights.

    ``needs`` maps each VGG architecture the stage will build to what it is for, e.g.
    ``{"vgg16": "perceptual loss", "vgg19": "semantic guidance"}``; None: the perceptual loss's
    alone (:func:`perceptual_vgg_needs`).
    """
    if loss.allow_random_vgg:
        return
    if needs is None:
        needs = perceptual_vgg_needs(loss)
    for arch, purpose in needs.items():
        value = loss.vgg_weights(arch)
        if not value:
            raise _missing_vgg_error(arch, purpose)
        _vgg_registry_entry(value, arch, f"loss.{arch}_weights")  # a registry id must be known (no download)


def perceptual_vgg_needs(loss: ReconstructionLossConfig) -> dict[str, str]:
    """The ``needs`` of :func:`check_vgg_inputs` for the perceptual/style loss alone:
    ``{loss.perceptual_arch: "perceptual loss"}``, or empty when ``loss`` uses no VGG."""
    return {loss.perceptual_arch: "perceptual loss"} if loss.uses_perceptual else {}


def read_vgg_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a torchvision VGG checkpoint: ``.pth`` (``torch.load(weights_only=True)``) or
    ``.safetensors``; on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(
            f"VGG weights not found: {p}",
            hint="check the path in loss.vgg*_weights (or use a registry id: "
            f"{', '.join(VGG_REGISTRY_IDS.values())})",
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p), device="cpu")
        if suffix in (".pth", ".pt"):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"{p.name}: unsupported VGG weights format {suffix!r}",
                hint="use torchvision's .pth checkpoint or a .safetensors with the same keys",
            )
    except WeightsError:
        raise
    except Exception as exc:  # unpickling refused, truncated file ...
        raise WeightsError(f"{p.name}: cannot read VGG weights ({exc})") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"{p.name} is not a flat state dict of tensors",
            hint="use torchvision's ImageNet checkpoint (keys features.N.weight/bias)",
        )
    return dict(obj)


def load_vgg_weights(
    vgg: VGGFeatureExtractor, loss: ReconstructionLossConfig, *, purpose: str
) -> None:
    """Load the configured ImageNet weights into ``vgg`` (``loss.vgg16_weights`` /
    ``loss.vgg19_weights`` by its arch: a path or a registry id, :func:`resolve_vgg_weights`);
    with none set, keep it random only when ``loss.allow_random_vgg`` (with a warning), else raise
    :class:`ConfigError`."""
    value = loss.vgg_weights(vgg.arch)
    if value:
        vgg.load_torchvision_state_dict(read_vgg_state_dict(resolve_vgg_weights(value, vgg.arch)))
        return
    if not loss.allow_random_vgg:
        raise _missing_vgg_error(vgg.arch, purpose)
    log.warning("the %s runs on a RANDOM %s (loss.allow_random_vgg = true)", purpose, vgg.arch)


def load_perceptual_weights(
    perceptual: PerceptualLoss | None, loss: ReconstructionLossConfig
) -> None:
    """:func:`load_vgg_weights` into the VGG of ``perceptual`` (a stage's ``load_inputs``);
    nothing when it is None (no perceptual loss)."""
    if perceptual is not None:
        load_vgg_weights(perceptual.vgg, loss, purpose="perceptual loss")


def build_perceptual_loss(
    loss: ReconstructionLossConfig, device: torch.device
) -> PerceptualLoss | None:
    """The perceptual/style loss of ``loss`` on ``device`` (no I/O; weights come from
    :func:`load_vgg_weights` in ``load_inputs``), or None when both weights are 0."""
    if not loss.uses_perceptual:
        return None
    module = PerceptualLoss(
        loss.perceptual_layers,
        arch=loss.perceptual_arch,
        criterion=loss.perceptual_criterion,
        perceptual_weight=loss.perceptual,
        style_weight=loss.style,
        base_width=loss.vgg_base_width,
        allow_random_weights=loss.allow_random_vgg,
    )
    return module.to(device)


def reconstruction_terms(
    sr: Tensor, hq: Tensor, loss: ReconstructionLossConfig, perceptual: PerceptualLoss | None
) -> dict[str, Tensor]:
    """Weighted ``{"l1", "perceptual"[, "style"]}`` terms for ``sr``, ``hq`` (B,3,H,W) in [0,1].

    The L1 term is computed in float32; the VGG runs in the caller's autocast dtype.
    """
    terms = {"l1": loss.l1 * l1_loss(sr.float(), hq.float())}
    if perceptual is not None:
        p = perceptual(sr, hq)
        terms["perceptual"] = p.perceptual.float()
        if loss.style > 0:
            terms["style"] = p.style.float()
    return terms
