"""FeMaSR training stages (Chen et al., "Real-World Blind Super-Resolution via Feature Matching with
Implicit High-Resolution Priors", ACM MM 2022).

* ``femasr-hrp`` (:class:`FeMaSRHRPStage`, Sec. 3.2): the stage-I VQGAN — ``FeMaSRNet`` with
  ``lq_stage = false``, trained to reconstruct HR patches with L1 + perceptual (Eq. 10) + the VQ
  codebook/commitment loss (Eq. 3, beta 0.25) + semantic guidance L_r (Eq. 4, gamma 0.1) + the
  hinge adversarial loss (weight 0.1). Its export is the high-resolution prior (HRP).
* ``femasr`` (:class:`FeMaSRStage`, Sec. 3.3-3.4): the SR network — ``FeMaSRNet`` with
  ``lq_stage = true`` whose codebook Z and decoder G are copied from the HRP and frozen; trained with
  L_fema (Eq. 9) + L_rec (Eq. 10) + L_adv (Eq. 11), weights alpha = lambda_L1 = lambda_per = 1,
  beta = 0.25, lambda_adv = 0.1 (Eq. 12).

Both stages use Adam (0.9, 0.99) with a fixed learning rate of 1e-4 for G and D, batch 16 and
256x256 HR patches (Sec. 4.2); these are the config defaults. Stage-config TOMLs live in
``realsr_cli/configs/femasr*.toml``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli._noise import randn
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.models.femasr import PRIOR_PREFIXES, FeMaSRConfig, FeMaSRNet, FeMaSROutput
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    ScheduleConfig,
    StageConfigBase,
)
from realsr_cli.training.discriminators import UNetDiscriminatorConfig
from realsr_cli.training.losses import (
    VGGFeatureExtractor,
    fema_loss,
    vgg_layer_names,
    vq_codebook_loss,
)
from realsr_cli.training.stage import Export, Stage, StepContext
from realsr_cli.training.stages.adversarial import (
    build_discriminator,
    gan_param_groups,
    gan_step,
    generator_adversarial_loss,
)
from realsr_cli.training.stages.helpers import net_state_dict, scalars
from realsr_cli.training.stages.prior import (
    DECODER_MODULES,
    HRPInputsConfig,
    check_same_grid,
    copy_prior,
    freeze_prior,
    hrp_codes,
    load_femasr_hrp,
    random_hrp,
    tune_decoder,
)
from realsr_cli.training.stages.reconstruction import (
    ReconstructionLossConfig,
    build_perceptual_loss,
    check_vgg_inputs,
    load_perceptual_weights,
    load_vgg_weights,
    perceptual_vgg_needs,
    reconstruction_terms,
)

__all__ = [
    "FeMaSRHRPLossConfig",
    "FeMaSRHRPStage",
    "FeMaSRHRPStageConfig",
    "FeMaSRLossConfig",
    "FeMaSRStage",
    "FeMaSRStageConfig",
    "SemanticHead",
]

#: output widths of the five VGG blocks at base width 64
_VGG_WIDTHS = (64, 128, 256, 512, 512)
#: FeMaSR Sec. 4.2: "the learning rates ... are fixed as 0.0001 throughout the training"
_FIXED_LR = ScheduleConfig(kind="constant", milestones=())
#: the paper uses no weight EMA
_NO_EMA = EMAConfig(decay=0.0)

log = logging.getLogger(__name__)


def _vgg_layer_geometry(layer: str, base_width: int) -> tuple[int, int]:
    """(channels, stride) of VGG feature ``layer`` (``conv4_4``, ``relu4_4``, ``pool3`` ...)."""
    m = re.fullmatch(r"(?:conv|relu)(\d)_\d|pool(\d)", layer)
    if m is None:
        raise ConfigError(f"not a VGG layer name: {layer!r}")
    block = int(m.group(1) or m.group(2))
    stride = 2 ** (block - 1) if m.group(1) else 2**block
    return _VGG_WIDTHS[block - 1] * base_width // 64, stride


def _check_patch(data: DataConfig, model: FeMaSRConfig, where: str) -> None:
    grid_stride = 1 << model.max_depth
    if data.patch_size % grid_stride:
        raise ConfigError(
            f"{where}: data.patch_size {data.patch_size} must be a multiple of "
            f"2**{model.max_depth} = {grid_stride} (the codebook grid of the model)"
        )


# ------------------------------------------------------------------------------- stage I: HRP
@dataclass(frozen=True)
class FeMaSRHRPLossConfig(ReconstructionLossConfig):
    """Stage-I losses (Sec. 3.2); adds to :class:`ReconstructionLossConfig`:

    Fields:
        codebook: weight of the VQ codebook + commitment terms of Eq. 3 (1).
        beta: commitment weight inside them (Eq. 3: 0.25).
        semantic: gamma of the semantic guidance L_r (Eq. 4: 0.1); 0 = off (no VGG-19).
        semantic_layer: VGG-19 feature matched by CONV(z); it must sit at the codebook grid's
            stride (2**(len(model.channels) - 1)). The paper names none; ``relu4_4`` (stride 8)
            is the official code's choice.
        restart_dead_codes: every this many steps, codes that no position chose since the last
            restart are re-set to random encoder features of the current batch (plus 1% noise)
            — the usual cure for codebook collapse in short runs (SoundStream/Jukebox-style code
            restarts; not in the paper). 0 = off (paper). Counts start afresh on resume.
    """

    codebook: float = 1.0
    beta: float = 0.25
    semantic: float = 0.1
    semantic_layer: str = "relu4_4"
    restart_dead_codes: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.codebook, self.beta, self.semantic, self.restart_dead_codes) < 0:
            raise ConfigError(
                "loss.codebook, loss.beta, loss.semantic and loss.restart_dead_codes must be >= 0"
            )
        if self.semantic > 0 and self.semantic_layer not in vgg_layer_names("vgg19"):
            raise ConfigError(
                f"loss.semantic_layer {self.semantic_layer!r} is not a VGG-19 layer",
                hint="e.g. relu4_4 (stride 8), relu3_4 (stride 4)",
            )


@dataclass(frozen=True)
class FeMaSRHRPStageConfig(StageConfigBase):
    """``femasr-hrp``: the stage-I VQGAN on HR patches (``data.scale = 1``)."""

    data: DataConfig = DataConfig(scale=1, patch_size=256, batch_size=16, pipeline="bsrgan")
    schedule: ScheduleConfig = _FIXED_LR
    ema: EMAConfig = _NO_EMA
    model: FeMaSRConfig = FeMaSRConfig(scale=1, lq_stage=False)
    discriminator: UNetDiscriminatorConfig = UNetDiscriminatorConfig()
    loss: FeMaSRHRPLossConfig = FeMaSRHRPLossConfig()

    def __post_init__(self) -> None:
        if self.data.scale != 1:
            raise ConfigError(
                f"femasr-hrp trains a VQGAN on HR patches: data.scale must be 1, got "
                f"{self.data.scale}",
                hint="set data.scale = 1 (the SR factor belongs to the `femasr` stage)",
            )
        if self.model.lq_stage or self.model.scale != 1:
            raise ConfigError(
                "femasr-hrp trains the HR-prior VQGAN: model.lq_stage must be false and "
                "model.scale 1"
            )
        _check_patch(self.data, self.model, "femasr-hrp")
        if self.loss.semantic > 0:
            _, stride = _vgg_layer_geometry(self.loss.semantic_layer, self.loss.vgg_base_width)
            if stride != 1 << self.model.max_depth:
                raise ConfigError(
                    f"loss.semantic_layer {self.loss.semantic_layer} has stride {stride}, but the "
                    f"codebook grid has stride {1 << self.model.max_depth}",
                    hint="pick a VGG-19 layer of block log2(stride)+1, e.g. relu4_4 for stride 8",
                )


class SemanticHead(nn.Module):
    """CONV of Eq. 4: 1x1 conv from the code width n_z to the VGG feature width, then ReLU (VGG
    ``relu`` features are non-negative). Training-only: never exported.

    (B,n_z,h,w) -> (B,C_vgg,h,w).
    """

    def __init__(self, code_dim: int, vgg_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(code_dim, vgg_channels, 1)

    def forward(self, z: Tensor) -> Tensor:
        return F.relu(self.conv(z))


class FeMaSRHRPStage(Stage):
    """Stage I: the HR-prior VQGAN with semantic guidance (FeMaSR Sec. 3.2).

    Nets: ``g`` (``FeMaSRNet``, lq_stage off), ``semantic`` (:class:`SemanticHead`, when
    ``loss.semantic > 0``), ``d`` (U-Net discriminator, when ``loss.adversarial > 0``).
    Optimizers: ``g`` (VQGAN + semantic head) and ``d``.

    Per step, with y = ``batch["hq"]`` and z the quantized codes (straight-through):
    ``L_g = l1 |G(z) - y| + perceptual + codebook (||sg[z^] - z||^2 + beta ||z^ - sg[z]||^2)
    + semantic ||CONV(z) - phi_19(y)||^2 + adversarial (-E[D(G(z))])``, then the hinge D step.
    As in the official code, CONV sees the straight-through codes, so L_r trains the encoder
    and the head (the codebook follows through its own VQ term).
    """

    name = "femasr-hrp"
    summary = "FeMaSR stage I: HR-prior VQGAN (codebook + decoder) with semantic guidance"
    config_cls = FeMaSRHRPStageConfig
    ema_net = "g"

    def __init__(self, config: FeMaSRHRPStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        loss = config.loss
        needs = perceptual_vgg_needs(loss)
        if loss.semantic > 0:
            needs.setdefault("vgg19", "semantic guidance (Eq. 4)")
        check_vgg_inputs(loss, needs)

        self.nets["g"] = FeMaSRNet(config.model).to(device)
        self.semantic_vgg: VGGFeatureExtractor | None = None
        if loss.semantic > 0:
            channels, _ = _vgg_layer_geometry(loss.semantic_layer, loss.vgg_base_width)
            self.semantic_vgg = VGGFeatureExtractor(
                "vgg19", (loss.semantic_layer,), base_width=loss.vgg_base_width
            ).to(device)
            self.nets["semantic"] = SemanticHead(config.model.codebook_dim, channels).to(device)
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def load_inputs(self) -> None:
        load_perceptual_weights(self.perceptual, self.config.loss)
        if self.semantic_vgg is not None:
            load_vgg_weights(self.semantic_vgg, self.config.loss, purpose="semantic guidance")

    def frozen(self) -> Iterator[nn.Module]:
        return iter(m for m in (self.perceptual, self.semantic_vgg) if m is not None)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        trained = [self.net(name) for name in ("g", "semantic") if name in self.nets]
        return gan_param_groups(self, (p for net in trained for p in net.parameters()))

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        with ctx.autocast():
            out = self.nets["g"](hq)
            terms = reconstruction_terms(out.image, hq, loss, self.perceptual)
            terms["codebook"] = loss.codebook * vq_codebook_loss(
                out.feat_to_quant.float(), out.codes.float(), beta=loss.beta
            )
            if self.semantic_vgg is not None:
                with torch.no_grad():
                    target = self.semantic_vgg(hq)[loss.semantic_layer]
                pred = self.nets["semantic"](out.z_quant)
                check_same_grid(pred, target, what="semantic head vs VGG-19 feature")
                terms["semantic"] = loss.semantic * F.mse_loss(pred.float(), target.float())
            if "d" in self.nets:
                terms["g_adv"] = loss.adversarial * generator_adversarial_loss(self, out.image)
        out_logs = scalars(gan_step(self, ctx, terms, hq, out.image, d_step="d" in self.nets))
        if loss.restart_dead_codes:
            out_logs.update(self._restart_dead_codes(out.feat_to_quant, out.indices, ctx.step))
        return out_logs

    @torch.no_grad()
    def _restart_dead_codes(self, feats: Tensor, indices: Tensor, step: int) -> dict[str, float]:
        """Track code usage; every ``loss.restart_dead_codes`` steps re-seed the unused codes."""
        quantizer = self.net("g").quantize_group[0]
        k = quantizer.num_codes
        counts = torch.bincount(indices.flatten(), minlength=k)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self._code_use = counts if getattr(self, "_code_use", None) is None else self._code_use + counts
        used = {"batch_codes": float((counts > 0).sum())}
        if (step + 1) % self.config.loss.restart_dead_codes:
            return used
        dead = (self._code_use == 0).nonzero().flatten()
        self._code_use = None
        if dead.numel():
            flat = feats.detach().float().permute(0, 2, 3, 1).reshape(-1, quantizer.code_dim)
            gen = torch.Generator().manual_seed(self.config.run.seed * 1_000_003 + step)
            pick = torch.randint(flat.shape[0], (dead.numel(),), generator=gen).to(flat.device)
            noise = randn((dead.numel(), flat.shape[1]), generator=gen, device=flat.device)
            fresh = flat[pick] + 0.01 * flat.std() * noise
            quantizer.embedding.weight.data[dead] = fresh.to(quantizer.embedding.weight.dtype)
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(quantizer.embedding.weight.data, src=0)
            log.info("step %d: re-seeded %d of %d unused codes", step + 1, dead.numel(), k)
        return used

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.net("g").upscale(lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        sd = net_state_dict(self.net("g"), state["g"], what=self.name)
        return Export("femasr", self.config.model, sd)


# ------------------------------------------------------------------------------ stage II: SR
@dataclass(frozen=True)
class FeMaSRLossConfig(ReconstructionLossConfig):
    """Stage-II losses (Sec. 3.4, Eq. 9-12); adds to :class:`ReconstructionLossConfig`:

    Fields:
        fema: weight of L_fema as a whole (Eq. 12: 1).
        beta: weight of the feature term ||z^l - z_gt||^2 inside L_fema (Eq. 9: 0.25).
        alpha: weight of the Gram term ||psi(z^l) - psi(z_gt)||^2 inside L_fema (Eq. 9: 1).
    """

    fema: float = 1.0
    beta: float = 0.25
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.fema, self.beta, self.alpha) < 0:
            raise ConfigError("loss.fema, loss.beta and loss.alpha must be >= 0")


@dataclass(frozen=True)
class FeMaSRStageConfig(StageConfigBase):
    """``femasr``: the SR network on a frozen HRP (``inputs.hrp_weights``)."""

    data: DataConfig = DataConfig(scale=4, patch_size=256, batch_size=16, pipeline="bsrgan")
    schedule: ScheduleConfig = _FIXED_LR
    ema: EMAConfig = _NO_EMA
    model: FeMaSRConfig = FeMaSRConfig(scale=4, lq_stage=True)
    discriminator: UNetDiscriminatorConfig = UNetDiscriminatorConfig()
    inputs: HRPInputsConfig = HRPInputsConfig()
    loss: FeMaSRLossConfig = FeMaSRLossConfig()

    def __post_init__(self) -> None:
        if not self.model.lq_stage:
            raise ConfigError(
                "femasr trains the SR network: model.lq_stage must be true",
                hint="the HR-prior VQGAN (lq_stage = false) is the `femasr-hrp` stage",
            )
        if self.data.scale != self.model.scale:
            raise ConfigError(
                f"data.scale {self.data.scale} differs from model.scale {self.model.scale}",
                hint="set both to the SR factor",
            )
        _check_patch(self.data, self.model, "femasr")
        grid = self.data.patch_size >> self.model.max_depth
        if grid % self.model.swin_window:
            raise ConfigError(
                f"femasr: the codebook grid of a {self.data.patch_size}px patch is {grid}, not a "
                f"multiple of model.swin_window {self.model.swin_window}",
                hint="pick data.patch_size = 2**(len(model.channels)-1) * swin_window * n",
            )


class FeMaSRStage(Stage):
    """Stage II: SR via feature matching on the frozen HRP (FeMaSR Sec. 3.3-3.4).

    Nets: ``g`` (``FeMaSRNet``, lq_stage on; its prior — :data:`PRIOR_PREFIXES` — is copied from
    the HRP in :meth:`load_inputs` and frozen), ``d`` (when ``loss.adversarial > 0``). The full
    HRP VQGAN is kept frozen as ``self.hrp`` to compute ``z_gt = q[E(y), Z]``.

    Per step: ``L_g = fema (beta ||z^l - z_gt||^2 + alpha ||psi(z^l) - psi(z_gt)||^2)
    + l1 |y^ - y| + perceptual + adversarial (-E[D(y^)])``, then the hinge D step. Also logs
    ``match_acc``: the share of codebook positions where the SR network picks z_gt's code.
    """

    name = "femasr"
    summary = "FeMaSR stage II: SR network matching LR features to a frozen HR prior"
    config_cls = FeMaSRStageConfig
    ema_net = "g"

    def __init__(self, config: FeMaSRStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        config.inputs.require(self.name)
        loss = config.loss
        check_vgg_inputs(loss)
        net = self.build_generator().to(device)
        freeze_prior(net)  # never trained here; frozen before DDP wraps the net
        if config.inputs.tune_decoder:
            tune_decoder(net)  # ... except the decoder, when asked (not the paper)
        self.nets["g"] = net
        self.hrp: FeMaSRNet | None = None
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def build_generator(self) -> FeMaSRNet:
        """The SR network trained here, on the CPU (a hook: subclasses build a FeMaSRNet subclass)."""
        return FeMaSRNet(self.config.model)

    def extra_terms(self, batch: dict[str, Tensor], out: FeMaSROutput) -> dict[str, Tensor]:
        """Further weighted generator-loss terms, added to the total and logged (a hook; none here).

        Called inside ``ctx.autocast()`` after the FeMaSR terms, with the generator output ``out``.
        """
        return {}

    def load_inputs(self) -> None:
        inputs, model = self.config.inputs, self.config.model
        if inputs.hrp_weights:
            hrp = load_femasr_hrp(inputs.hrp_weights, self.device, model=model)
        else:
            hrp = random_hrp(model, self.device)
        net = self.net("g")
        copy_prior(hrp, net)
        if inputs.tune_decoder:
            tune_decoder(net)
        self.hrp = hrp
        load_perceptual_weights(self.perceptual, self.config.loss)

    def _prior(self) -> FeMaSRNet:
        if self.hrp is None:
            raise UsageError("femasr: load_inputs() must run before training (no HRP loaded)")
        return self.hrp

    def frozen(self) -> Iterator[nn.Module]:
        modules: list[nn.Module | None] = [self.hrp, self.perceptual]
        tuned = DECODER_MODULES if self.config.inputs.tune_decoder else ()
        modules += [m for k, m in self.net("g").prior_modules().items() if k not in tuned]
        return iter(m for m in modules if m is not None)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return gan_param_groups(self, (p for p in self.net("g").parameters() if p.requires_grad))

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        lq, hq = batch["lq"], batch["hq"]
        hrp = self._prior()
        with ctx.autocast():
            z_gt, gt_indices = hrp_codes(hrp, hq)
            out = self.nets["g"](lq)
            check_same_grid(out.feat_to_quant, z_gt, what="LR-encoder features vs HRP codes")
            terms = {
                "fema": loss.fema
                * fema_loss(
                    out.feat_to_quant.float(), z_gt.float(), alpha=loss.alpha, beta=loss.beta
                )
            }
            terms.update(reconstruction_terms(out.image, hq, loss, self.perceptual))
            terms.update(self.extra_terms(batch, out))
            if "d" in self.nets:
                terms["g_adv"] = loss.adversarial * generator_adversarial_loss(self, out.image)
        match_acc = (out.indices == gt_indices).float().mean()
        logs = gan_step(
            self, ctx, terms, hq, out.image, d_step="d" in self.nets, logs={"match_acc": match_acc}
        )
        return scalars(logs)

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self.net("g").upscale(lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        """The SR network from ``state["g"]`` (EMA weights when on).

        Once :meth:`load_inputs` has run, the prior's tensors are taken from the live frozen
        modules (the HRP, bit for bit, whatever an EMA did to them); a stage built only to export a
        checkpoint (no inputs loaded) takes everything from ``state``.
        """
        net = self.net("g")
        sd = net_state_dict(net, state["g"], what=self.name)
        tuned = tuple(f"{m}." for m in DECODER_MODULES) if self.config.inputs.tune_decoder else ()
        if self.hrp is not None:
            for key, value in net.state_dict().items():
                if key.startswith(PRIOR_PREFIXES) and not (tuned and key.startswith(tuned)):
                    sd[key] = value
        return Export("femasr", self.config.model, sd)
