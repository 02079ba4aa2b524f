"""Pieces shared by the stages that follow FeMaSR's recipe (FeMaSR, UGTSR and later ones).

Everything here is a plain function or a frozen config dataclass, so a stage composes only what
it needs:

* loss config: :class:`ReconstructionLossConfig` (L1, VGG perceptual/style, adversarial weight and
  the VGG weights: a file path or a registry id) — stage loss sections subclass it and add their
  own terms;
* inputs config: :class:`HRPInputsConfig` (the frozen FeMaSR high-resolution prior of stage II);
* VGG: :func:`check_vgg_inputs` (in ``__init__``: refuse early when weights are missing),
  :func:`resolve_vgg_weights` (path or registry id -> file), :func:`read_vgg_state_dict`, :func:`load_vgg_weights`, :func:`build_perceptual_loss`,
  :func:`reconstruction_terms`;
* GAN: :func:`build_discriminator`, :func:`generator_adversarial_loss` (generator side, hinge),
  :func:`discriminator_step` (hinge D step through ``ctx.backward_step(loss, "d")``);
* HR prior: :func:`load_femasr_hrp`, :func:`random_hrp`, :func:`hrp_config_for`,
  :func:`check_prior_compatible`, :func:`copy_prior`, :func:`freeze_prior`,
  :func:`hrp_codes`;
* misc: :func:`freeze`, :func:`params_frozen`, :func:`scalars`, :func:`net_state_dict`.

DDP note (see :mod:`realsr_cli.training.stage`): trainable networks are called through
``stage.nets[name]`` when their gradients are wanted. The generator-side adversarial loss calls the
*unwrapped* discriminator with its parameters frozen, so the discriminator's DDP reducer only ever
sees the discriminator step (one forward on ``cat([real, fake])``, one backward).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.femasr import FeMaSRConfig, FeMaSRNet
from realsr_cli.training.discriminators import UNetDiscriminatorConfig, UNetDiscriminatorSN
from realsr_cli.training.losses import (
    PerceptualLoss,
    VGGFeatureExtractor,
    hinge_d_loss,
    hinge_g_loss,
    l1_loss,
    vgg_layer_names,
)
from realsr_cli.training.stage import Stage, StepContext

if TYPE_CHECKING:
    from realsr_cli.registry.catalog import WeightsEntry

log = logging.getLogger(__name__)

__all__ = [
    "LPIPS_VGG16_LAYERS",
    "TORCHVISION_VGG_URLS",
    "VGG_REGISTRY_IDS",
    "HRPInputsConfig",
    "ReconstructionLossConfig",
    "build_discriminator",
    "build_perceptual_loss",
    "check_prior_compatible",
    "check_same_grid",
    "check_vgg_inputs",
    "copy_prior",
    "discriminator_step",
    "freeze",
    "freeze_prior",
    "generator_adversarial_loss",
    "hrp_codes",
    "hrp_config_for",
    "load_femasr_hrp",
    "load_vgg_weights",
    "net_state_dict",
    "params_frozen",
    "random_hrp",
    "read_vgg_state_dict",
    "reconstruction_terms",
    "resolve_vgg_weights",
    "scalars",
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


# --------------------------------------------------------------------------------------- configs
def _non_negative(where: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"{where}.{name} must be >= 0, got {value}")


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
        _non_negative(
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
            _non_negative("loss.perceptual_layers", **self.perceptual_layers)

    @property
    def uses_perceptual(self) -> bool:
        return self.perceptual > 0 or self.style > 0

    def vgg_weights(self, arch: str) -> str:
        """The weights path or registry id configured for VGG ``arch`` (``""`` when unset)."""
        return {"vgg16": self.vgg16_weights, "vgg19": self.vgg19_weights}[arch]


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


# ------------------------------------------------------------------------------------- helpers
def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad_(False)`` and ``eval()``; returns ``module``."""
    module.requires_grad_(False)
    return module.eval()


@contextlib.contextmanager
def params_frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``module`` (restored after).

    Graphs built inside treat the parameters as constants: gradients still flow *through* the
    module to its inputs, but none accumulate in it.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def scalars(terms: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Loss terms -> plain floats for logging, with a single device sync."""
    keys = list(terms)
    tensors = [
        t.detach().float().reshape(()) if isinstance(t, Tensor) else torch.tensor(float(t))
        for t in terms.values()
    ]
    if not tensors:
        return {}
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    values = torch.stack([t.to(device) for t in tensors]).tolist()
    return dict(zip(keys, values, strict=True))


def net_state_dict(net: nn.Module, state: Mapping[str, Tensor], *, what: str) -> dict[str, Tensor]:
    """Exactly ``net``'s state-dict keys taken from ``state`` (e.g. an EMA copy).

    A leading ``module.`` (a DDP wrapper's prefix) is tolerated; missing keys are a
    :class:`WeightsError`, extra keys (training-only heads) are dropped.
    """
    own = net.state_dict()
    if own and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(
            f"{what}: the state to export lacks {len(missing)} key(s) of the network, "
            f"e.g. {missing[:3]}"
        )
    return {k: state[k] for k in own}


# ------------------------------------------------------------------------------------------ VGG
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


def check_vgg_inputs(loss: ReconstructionLossConfig, needs: Mapping[str, str]) -> None:
    """Refuse early (in a stage's ``__init__``, before any data is read) when a VGG has no weights.

    ``needs`` maps each VGG architecture the stage will build to what it is for, e.g.
    ``{"vgg16": "perceptual loss", "vgg19": "semantic guidance"}``.
    """
    if loss.allow_random_vgg:
        return
    for arch, purpose in needs.items():
        value = loss.vgg_weights(arch)
        if not value:
            raise _missing_vgg_error(arch, purpose)
        _vgg_registry_entry(value, arch, f"loss.{arch}_weights")  # a registry id must be known (no download)


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


# ------------------------------------------------------------------------------------------ GAN
def build_discriminator(config: UNetDiscriminatorConfig, device: torch.device) -> nn.Module:
    """Real-ESRGAN's U-Net discriminator with spectral norm (FeMaSR Sec. 3.4) on ``device``."""
    return UNetDiscriminatorSN(config).to(device)


def generator_adversarial_loss(stage: Stage, fake: Tensor, name: str = "d") -> Tensor:
    """Unweighted hinge generator loss ``-E[D(fake)]`` (FeMaSR Eq. 11 without lambda_adv).

    Runs the unwrapped discriminator ``stage.net(name)`` with its parameters frozen, so gradients
    reach only the generator and the discriminator's DDP wrapper is not involved. Call it inside
    ``ctx.autocast()``.
    """
    disc = stage.net(name)
    with params_frozen(disc):
        return hinge_g_loss(disc(fake).float())


def discriminator_step(
    stage: Stage, ctx: StepContext, real: Tensor, fake: Tensor, name: str = "d"
) -> dict[str, Tensor]:
    """One hinge discriminator step on ``real`` and (detached) ``fake`` (B,3,H,W).

    Both batches go through ``stage.nets[name]`` in a single forward; the loss
    ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]`` is stepped with ``ctx.backward_step(., name)``.
    Returns detached ``{"d_loss", "d_real", "d_fake"}`` (the last two: mean logits).
    """
    with ctx.autocast():
        logits = stage.nets[name](torch.cat([real, fake.detach()]).to(real.dtype))
    real_logits, fake_logits = logits.float().split([real.shape[0], fake.shape[0]])
    loss = hinge_d_loss(real_logits, fake_logits)
    ctx.backward_step(loss, name)
    return {
        "d_loss": loss.detach(),
        "d_real": real_logits.detach().mean(),
        "d_fake": fake_logits.detach().mean(),
    }


# ------------------------------------------------------------------------------------ HR prior
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
