"""RealSRT training stages (Peng et al., "Confidence-Based Iterative Generation for Real-World Image
Super-Resolution", ECCV 2024). Four stages, run in this order (Sec. 4.1):

1. ``realsrt-vqgan`` (:class:`RealSRTVQGANStage`, Sec. 3.1): the image tokenizer (VQGAN, f = 8,
   K = 512) on HR patches: pixel + perceptual (weight 0.1) + commitment (beta 0.25) + adversarial
   (hinge, adaptive weight of Esser et al.) losses; Adam, lr 4e-5, batch 64, 200 epochs.
2. ``realsrt-generator`` (:class:`RealSRTGeneratorStage`, Sec. 3.2, Eq. 1): the frozen tokenizer
   gives HR tokens Y_HR and LR tokens Y_LR (of the bicubic-upsampled LR patch); a ratio
   gamma(r) = 1 - sqrt(r), r ~ U(0, 1), of the HR tokens is replaced by [M]; cross-entropy of the
   generator's logits on the masked positions only. AdamW, lr 1e-4 -> 1e-7 (cosine), batch 64,
   800k steps, EMA 0.999.
3. ``realsrt-critic`` (:class:`RealSRTCriticStage`, Sec. 3.2, Eq. 2): tokenizer and generator
   frozen; the generator fills the masked positions (argmax, as the official code; Token-Critic's
   sampling is ``loss.tokens = "sample"``), the critic predicts per token whether it was masked;
   binary cross-entropy over all tokens. Same optimiser/schedule/EMA as the generator.
4. ``realsrt-ccm`` (:class:`RealSRTCCMStage`, Sec. 3.3): everything but the conditional controlling
   module frozen; the frozen masked transformer generates HR tokens from the LR patch (T steps, in
   float32 as at inference), the CCM + frozen decoder turn them into the HR image, trained with
   the tokenizer's losses (pixel, perceptual 0.1, adaptive adversarial on ``zero_out.weight`` as
   in the official code). Adam, lr 4e-5, batch 8, 80k steps, EMA 0.999.

Handoff format. Every stage exports a *complete* ``realsrt`` network (arch ``realsrt``, the
``[model]`` section as its config, loadable strictly by :func:`realsr_cli.registry.loader.
load_weights` and by ``realsr upscale --weights``): the parts trained so far plus a deterministic
fresh initialisation of the rest (seeded by ``run.seed``; the token embeddings of generator and
critic are copies of the codebook, the CCM's encoder a copy of the tokenizer's encoder and its
``zero_out`` zeros, so the CCM adds exactly nothing until trained). The next stage names that file
in its ``[inputs]`` section and reads only the parts it builds on:

====================  =========================  ======================================
stage                 input (``[inputs]``)        parts taken from the file
====================  =========================  ======================================
realsrt-generator     ``vqgan_weights``           ``vae.*`` (tokenizer)
realsrt-critic        ``generator_weights``       ``vae.*``, ``generator.*``
realsrt-ccm           ``critic_weights``          ``vae.*``, ``generator.*``, ``critic.*``
====================  =========================  ======================================

Everything else is initialised fresh. The file's ``[model]`` shapes of the parts taken must
equal the stage's (a :class:`ConfigError` lists the differences). Because every handoff file is a
full model, any ``realsrt`` file works as an input (e.g. the converted official checkpoint, to
retrain only the CCM). Checkpoints of stages 2-4 also hold the frozen parts (net ``frozen``,
:class:`FrozenParts`), so ``realsr train export`` needs no input file. The ``realsrt-critic``
export is the paper's ablation (b) (no CCM effect); the ``realsrt-ccm`` export is the full model.

Decisions where the paper is silent (official code consulted for facts):

- Pixel loss: MSE (the official ``compute_loss`` and CCM training use ``F.mse_loss``); L1 is
  available as ``loss.l1``. Perceptual: the five VGG-16 taps of LPIPS (no learned LPIPS heads in
  this project) with MSE, weight 0.1 (Sec. 4.1).
- Codebook: updated by EMA k-means with decay 0.99 and restart of unused codes, as the official
  VQGAN (``loss.codebook_update = "ema"``); ``"loss"`` uses the VQ-VAE codebook loss instead.
- Adversarial: Real-ESRGAN's U-Net discriminator with spectral norm and hinge loss (the official
  code uses a PatchGAN), generator term ``-E[D(x^)]`` times the adaptive weight
  ``||grad L_nll|| / (||grad L_adv|| + 1e-4)`` (clamped to [0, 1e4]) on the last decoder
  convolution (VQGAN) or ``zero_out`` (CCM), times ``loss.adversarial`` = 0.8 (taming-transformers'
  VQGAN configs; the paper gives no value). ``loss.adversarial_start`` delays it (default 0).
- Adam betas (0.5, 0.9) for the GAN stages (taming-transformers), AdamW with PyTorch's defaults
  (betas (0.9, 0.999), weight decay 0.01) for generator and critic.
- The token embeddings of generator and critic stay frozen copies of the codebook (official code).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.diffusion.masking import MaskSchedule
from realsr_cli.engine.tiling import REALSRT_SIGMA, tiled_forward
from realsr_cli.errors import ConfigError, UsageError, WeightsError
from realsr_cli.models.realsrt import RealSRTConfig, RealSRTNet, adain_color_correction
from realsr_cli.models.realsrt.net import centred_reflect_pad
from realsr_cli.models.realsrt.transformer import TokenTransformer
from realsr_cli.models.realsrt.vqgan import VQGAN
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfigBase,
)
from realsr_cli.training.discriminators import UNetDiscriminatorConfig
from realsr_cli.training.losses import PerceptualLoss, mse_loss
from realsr_cli.training.stage import Export, Stage, StepContext
from realsr_cli.training.stages._common import (
    ReconstructionLossConfig,
    build_discriminator,
    build_perceptual_loss,
    check_vgg_inputs,
    discriminator_step,
    generator_adversarial_loss,
    load_vgg_weights,
    net_state_dict,
    reconstruction_terms,
    scalars,
)

log = logging.getLogger(__name__)

__all__ = [
    "CCM_PREFIXES",
    "CCMNet",
    "FrozenParts",
    "RealSRTCCMInputsConfig",
    "RealSRTCCMStage",
    "RealSRTCCMStageConfig",
    "RealSRTCriticInputsConfig",
    "RealSRTCriticLossConfig",
    "RealSRTCriticStage",
    "RealSRTCriticStageConfig",
    "RealSRTGeneratorInputsConfig",
    "RealSRTGeneratorStage",
    "RealSRTGeneratorStageConfig",
    "RealSRTImageLossConfig",
    "RealSRTVQGANLossConfig",
    "RealSRTVQGANStage",
    "RealSRTVQGANStageConfig",
    "VQGANOutput",
    "VQGANTrainingNet",
    "adaptive_adversarial_weight",
    "assemble_state_dict",
    "generate_with_generator_confidence",
]

ARCH = "realsrt"
#: state-dict prefixes of the parts of :class:`RealSRTNet`
TOKENIZER_PREFIX = "vae."
GENERATOR_PREFIX = "generator."
CRITIC_PREFIX = "critic."
CCM_PREFIXES = ("trainable_copy_encoder.", "fuse_res1.", "fuse_attn.", "fuse_res2.", "zero_out.")
_PART_PREFIXES: dict[str, tuple[str, ...]] = {
    "tokenizer": (TOKENIZER_PREFIX,),
    "generator": (GENERATOR_PREFIX,),
    "critic": (CRITIC_PREFIX,),
    "ccm": CCM_PREFIXES,
}

#: Sec. 4.1: VQGAN and CCM use Adam with lr 4e-5 (betas: taming-transformers')
_GAN_OPTIM = OptimConfig(lr=4e-5, betas=(0.5, 0.9))
#: Sec. 4.1: AdamW, initial lr 1e-4 (betas and weight decay: PyTorch's AdamW defaults)
_TOKEN_OPTIM = OptimConfig(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01)
#: Sec. 4.1: cosine annealing from 1e-4 to 1e-7
_TOKEN_SCHEDULE = ScheduleConfig(kind="cosine", milestones=(), min_lr_ratio=1e-3)
_CONSTANT = ScheduleConfig(kind="constant", milestones=())
_NO_EMA = EMAConfig(decay=0.0)
_EMA = EMAConfig(decay=0.999)
#: Sec. 4.1: 256x256 HR crops, x4, Real-ESRGAN's high-order degradations
_SR_DATA = DataConfig(scale=4, patch_size=256, batch_size=64, pipeline="realesrgan")


# --------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class RealSRTImageLossConfig(ReconstructionLossConfig):
    """Image losses of the tokenizer and the CCM (Sec. 3.1, 3.3: the same terms and weights).

    Changes to :class:`ReconstructionLossConfig`: ``l1`` defaults to 0 (the official code's pixel
    loss is the MSE), ``perceptual`` to 0.1 (Sec. 4.1), ``adversarial`` to 0.8. Adds:

    Fields:
        mse: weight of the pixel MSE (1).
        adaptive_adversarial: scale the adversarial term by Esser et al.'s adaptive weight
            ``||grad L_nll|| / (||grad L_adv|| + 1e-4)`` on the last layer (Sec. 4.1).
        adversarial_start: step from which the adversarial terms (G and D) are on (0).
    """

    l1: float = 0.0
    perceptual: float = 0.1
    adversarial: float = 0.8
    mse: float = 1.0
    adaptive_adversarial: bool = True
    adversarial_start: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mse < 0 or self.adversarial_start < 0:
            raise ConfigError("loss.mse and loss.adversarial_start must be >= 0")


@dataclass(frozen=True)
class RealSRTVQGANLossConfig(RealSRTImageLossConfig):
    """Tokenizer losses; adds to :class:`RealSRTImageLossConfig`:

    Fields:
        codebook_update: ``ema`` (official VQGAN: codebook vectors are EMA k-means centroids of the
            encoder outputs, no codebook gradient) or ``loss`` (VQ-VAE codebook loss
            ``||sg[z_e] - e||^2``, weight ``codebook``).
        codebook_decay: EMA decay of the cluster statistics (official 0.99).
        restart_unused_codes: in ``ema`` mode, codes whose EMA count drops below 1 are reset to
            random encoder outputs of the batch (official; also initialises the codebook on the
            first step).
        beta: commitment weight ``beta ||z_e - sg[e]||^2`` (official ``latent_loss_weight`` 0.25).
        codebook: weight of the codebook loss in ``loss`` mode (1).
    """

    codebook_update: Literal["ema", "loss"] = "ema"
    codebook_decay: float = 0.99
    restart_unused_codes: bool = True
    beta: float = 0.25
    codebook: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.codebook_decay < 1:
            raise ConfigError(f"loss.codebook_decay must be in (0, 1), got {self.codebook_decay}")
        if self.beta < 0 or self.codebook < 0:
            raise ConfigError("loss.beta and loss.codebook must be >= 0")


@dataclass(frozen=True)
class RealSRTCriticLossConfig:
    """How the critic's training input is made (Eq. 2).

    Fields:
        tokens: ``argmax`` (the official code and inference: the generator's most likely token at
            each masked position) or ``sample`` (Token-Critic: a token drawn from the generator's
            softmax at ``temperature``).
        temperature: softmax temperature for ``sample``.
    """

    tokens: Literal["argmax", "sample"] = "argmax"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be positive, got {self.temperature}")


def _require_input(stage: str, field: str, path: str, allow: bool, producer: str) -> None:
    if path or allow:
        return
    random_field = field.replace("_weights", "")
    raise ConfigError(
        f"{stage}: inputs.{field} is not set; this stage builds on the output of the "
        f"`{producer}` stage",
        hint=(
            f"train `{producer}` and pass its export (a realsrt .safetensors): set "
            f"inputs.{field} = \"PATH\" in the config or --set inputs.{field}=PATH "
            f"(inputs.allow_random_{random_field} = true is for smoke tests only)"
        ),
    )


@dataclass(frozen=True)
class RealSRTGeneratorInputsConfig:
    """``vqgan_weights``: the export of a ``realsrt-vqgan`` run (or any realsrt file); its
    tokenizer ``vae.*`` is loaded and frozen. ``allow_random_vqgan``: a random tokenizer instead
    (tests and smoke runs only)."""

    vqgan_weights: str = ""
    allow_random_vqgan: bool = False

    def path(self) -> str:
        return self.vqgan_weights

    def require(self, stage: str) -> None:
        _require_input(
            stage, "vqgan_weights", self.vqgan_weights, self.allow_random_vqgan, "realsrt-vqgan"
        )


@dataclass(frozen=True)
class RealSRTCriticInputsConfig:
    """``generator_weights``: the export of a ``realsrt-generator`` run; its tokenizer and
    generator are loaded and frozen. ``allow_random_generator``: random ones (tests only)."""

    generator_weights: str = ""
    allow_random_generator: bool = False

    def path(self) -> str:
        return self.generator_weights

    def require(self, stage: str) -> None:
        _require_input(
            stage, "generator_weights", self.generator_weights, self.allow_random_generator,
            "realsrt-generator",
        )


@dataclass(frozen=True)
class RealSRTCCMInputsConfig:
    """``critic_weights``: the export of a ``realsrt-critic`` run; tokenizer, generator and critic
    are loaded and frozen. ``allow_random_critic``: random ones (tests only)."""

    critic_weights: str = ""
    allow_random_critic: bool = False

    def path(self) -> str:
        return self.critic_weights

    def require(self, stage: str) -> None:
        _require_input(
            stage, "critic_weights", self.critic_weights, self.allow_random_critic, "realsrt-critic"
        )


def _check_token_data(data: DataConfig, model: RealSRTConfig, where: str) -> None:
    """The transformers have a fixed token grid: one training patch must be one model patch."""
    if data.scale != model.scale:
        raise ConfigError(
            f"{where}: data.scale {data.scale} differs from model.scale {model.scale}",
            hint="set both to the SR factor",
        )
    want = model.lr_patch * model.scale
    if data.patch_size != want:
        raise ConfigError(
            f"{where}: data.patch_size must be model.lr_patch * model.scale = {want} (one "
            f"{model.grid}x{model.grid} token grid), got {data.patch_size}",
            hint=f"set data.patch_size = {want}",
        )


@dataclass(frozen=True)
class _RealSRTStageConfigBase(StageConfigBase):
    """The sections the four RealSRT stages share; the defaults are the token stages' (generator,
    critic), which the VQGAN and CCM stages redeclare where theirs differ."""

    run: RunConfig = RunConfig(max_steps=800_000)
    data: DataConfig = _SR_DATA
    optim: OptimConfig = _TOKEN_OPTIM
    schedule: ScheduleConfig = _TOKEN_SCHEDULE
    ema: EMAConfig = _EMA
    model: RealSRTConfig = RealSRTConfig()


@dataclass(frozen=True)
class RealSRTVQGANStageConfig(_RealSRTStageConfigBase):
    """``realsrt-vqgan``: the tokenizer of ``model`` on HR patches (``data.scale = 1``).

    ``model`` is the whole RealSRT config: the export is a complete ``realsrt`` network.
    """

    run: RunConfig = RunConfig(max_steps=43_000)
    data: DataConfig = DataConfig(scale=1, patch_size=256, batch_size=64, pipeline="realesrgan")
    optim: OptimConfig = _GAN_OPTIM
    schedule: ScheduleConfig = _CONSTANT
    ema: EMAConfig = _NO_EMA
    discriminator: UNetDiscriminatorConfig = UNetDiscriminatorConfig()
    loss: RealSRTVQGANLossConfig = RealSRTVQGANLossConfig()

    def __post_init__(self) -> None:
        if self.data.scale != 1:
            raise ConfigError(
                f"realsrt-vqgan trains the tokenizer on HR patches: data.scale must be 1, got "
                f"{self.data.scale}",
                hint="set data.scale = 1 (the SR factor is model.scale)",
            )
        f = self.model.tokenizer.downsample
        if self.data.patch_size % f:
            raise ConfigError(
                f"realsrt-vqgan: data.patch_size {self.data.patch_size} is not a multiple of the "
                f"tokenizer's downsampling factor {f}"
            )


@dataclass(frozen=True)
class RealSRTGeneratorStageConfig(_RealSRTStageConfigBase):
    """``realsrt-generator``: the generator on a frozen tokenizer (``inputs.vqgan_weights``)."""

    inputs: RealSRTGeneratorInputsConfig = RealSRTGeneratorInputsConfig()

    def __post_init__(self) -> None:
        _check_token_data(self.data, self.model, "realsrt-generator")


@dataclass(frozen=True)
class RealSRTCriticStageConfig(_RealSRTStageConfigBase):
    """``realsrt-critic``: the critic on a frozen tokenizer + generator
    (``inputs.generator_weights``)."""

    inputs: RealSRTCriticInputsConfig = RealSRTCriticInputsConfig()
    loss: RealSRTCriticLossConfig = RealSRTCriticLossConfig()

    def __post_init__(self) -> None:
        _check_token_data(self.data, self.model, "realsrt-critic")


@dataclass(frozen=True)
class RealSRTCCMStageConfig(_RealSRTStageConfigBase):
    """``realsrt-ccm``: the conditional controlling module on a frozen tokenizer + masked
    transformer (``inputs.critic_weights``)."""

    run: RunConfig = RunConfig(max_steps=80_000)
    data: DataConfig = DataConfig(scale=4, patch_size=256, batch_size=8, pipeline="realesrgan")
    optim: OptimConfig = _GAN_OPTIM
    schedule: ScheduleConfig = _CONSTANT
    discriminator: UNetDiscriminatorConfig = UNetDiscriminatorConfig()
    inputs: RealSRTCCMInputsConfig = RealSRTCCMInputsConfig()
    loss: RealSRTImageLossConfig = RealSRTImageLossConfig()

    def __post_init__(self) -> None:
        _check_token_data(self.data, self.model, "realsrt-ccm")
        if not self.model.ccm.enabled:
            raise ConfigError(
                "realsrt-ccm trains the conditional controlling module: model.ccm.enabled must be "
                "true",
                hint="without a CCM the realsrt-critic export is already the final model",
            )


# ------------------------------------------------------------------------------ networks
class VQGANOutput(NamedTuple):
    """What :class:`VQGANTrainingNet` returns: ``image`` (B,3,H,W) reconstruction, ``z_e``
    (B,c,h,w) encoder output, ``codes`` (B,c,h,w) the selected codebook vectors (with gradient to
    the codebook in ``loss`` mode), ``ids`` (B,h,w) int64 token ids."""

    image: Tensor
    z_e: Tensor
    codes: Tensor
    ids: Tensor


class VQGANTrainingNet(nn.Module):
    """Training forward of the tokenizer ``vae`` (a :class:`VQGAN`), straight-through estimator.

    ``forward(x)``: ``z_e = quant_conv(E(x))``, ids = nearest codes, ``z_q = z_e + sg[e - z_e]``,
    image ``D(post_quant_conv(z_q))``. With ``ema_decay`` (the official EMA codebook) the codebook
    is not a trainable parameter: in training mode every forward folds the batch's assignments
    into ``cluster_size_ema`` (K,) and ``embed_ema`` (K, c) (summed over DDP ranks) and sets the
    codebook to their ratio, after the codes of this batch were looked up; codes with an EMA count
    below 1 are restarted from random encoder outputs (identical on every rank).

    State-dict keys: ``vae.*`` (= the ``realsrt`` network's tokenizer keys) plus the two EMA
    buffers (training only, never exported).
    """

    def __init__(
        self, vae: VQGAN, *, ema_decay: float | None = None, restart_unused: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.ema_decay = ema_decay
        self.restart_unused = restart_unused
        self.eps = eps
        book = vae.quantizer.codebook
        if ema_decay is not None:
            book.weight.requires_grad_(False)
            self.register_buffer("cluster_size_ema", torch.zeros(book.n_embed))
            self.register_buffer("embed_ema", book.codes.detach().clone())

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the decoder's output convolution (for the adaptive adversarial weight)."""
        return self.vae.decoder.model[-1].weight

    def forward(self, x: Tensor) -> VQGANOutput:
        vae = self.vae
        z_e = vae.encode(x)
        ids = vae.quantizer(z_e)
        codes = vae.quantizer.embed(ids)
        if self.training and self.ema_decay is not None:
            self._ema_update(z_e.detach(), ids)
        z_q = z_e + (codes - z_e).detach()
        image = vae.decoder(vae.post_quant_conv(z_q))
        return VQGANOutput(image, z_e, codes, ids)

    @torch.no_grad()
    def _ema_update(self, z_e: Tensor, ids: Tensor) -> None:
        book = self.vae.quantizer.codebook
        k, c = book.n_embed, z_e.shape[1]
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, c).float()
        idx = ids.reshape(-1)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, c, device=flat.device).index_add_(0, idx, flat)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        decay = self.ema_decay
        assert decay is not None
        self.cluster_size_ema.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_ema.mul_(decay).add_(sums, alpha=1 - decay)
        if self.restart_unused:
            dead = self.cluster_size_ema < 1
            if bool(dead.any()):
                pick = torch.randint(flat.shape[0], (k,)).to(flat.device)  # CPU stream, moved
                fresh = flat[pick].contiguous()
                if distributed:
                    dist.broadcast(fresh, 0)
                self.embed_ema[dead] = fresh[dead]
                self.cluster_size_ema[dead] = 1.0
        n = self.cluster_size_ema.sum()
        size = (self.cluster_size_ema + self.eps) / (n + k * self.eps) * n
        book.weight[:k] = (self.embed_ema / size[:, None]).to(book.weight.dtype)


class CCMNet(nn.Module):
    """The trainable part of the CCM (Sec. 3.3), sharing its modules with a :class:`RealSRTNet`.

    ``forward(h, lr_up)``: ``h + zero_out(fuse_res2(fuse_attn(fuse_res1([h, E'(lr_up)]))))`` with
    ``h`` (B,c,g,g) the post-quant features of the HR tokens and ``lr_up`` (B,3,sH,sW) the
    bicubic-upsampled LR patch; the result goes through the frozen decoder. Attribute names are
    the network's, so this module's state-dict keys are the ``realsrt`` keys of the CCM.
    """

    def __init__(self, net: RealSRTNet) -> None:
        super().__init__()
        if not net.config.ccm.enabled:
            raise UsageError("the network has no CCM (model.ccm.enabled = false)")
        self.trainable_copy_encoder = net.trainable_copy_encoder
        self.fuse_res1 = net.fuse_res1
        self.fuse_attn = net.fuse_attn
        self.fuse_res2 = net.fuse_res2
        self.zero_out = net.zero_out

    def forward(self, h: Tensor, lr_up: Tensor) -> Tensor:
        r = torch.cat([h, self.trainable_copy_encoder(lr_up)], dim=1)
        r = self.fuse_res2(self.fuse_attn(self.fuse_res1(r)))
        return h + self.zero_out(r)


# ------------------------------------------------------------------------------- helpers
def adaptive_adversarial_weight(nll: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """Esser et al. (CVPR 2021, Eq. 7): ``||grad_L nll|| / (||grad_L g_loss|| + 1e-4)``, clamped
    to [0, 1e4] and detached, with L the given last-layer weight. Both graphs are retained."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach()


def _sync_token_embeddings(transformer: TokenTransformer, net: RealSRTNet) -> None:
    """Rows 0..K-1 of ``transformer.token_emb`` <- the codebook (Sec. 3.2); row K unchanged."""
    with torch.no_grad():
        codes = net.vae.quantizer.codebook.codes
        transformer.token_emb.weight[: codes.shape[0]].copy_(codes)


def _sync_ccm_encoder(net: RealSRTNet) -> None:
    """The CCM's encoder E' <- a copy of the tokenizer's encoder (Sec. 3.3)."""
    if net.config.ccm.enabled:
        net.trainable_copy_encoder.load_state_dict(net.vae.encoder.state_dict())


def assemble_state_dict(
    config: RealSRTConfig, vae_state: Mapping[str, Tensor], *, seed: int
) -> dict[str, Tensor]:
    """A complete ``realsrt`` state dict (CPU) around a trained tokenizer ``vae_state``.

    Generator, critic and CCM are a fresh initialisation drawn from ``seed`` (the global RNG is
    left untouched), their token embeddings copies of the codebook, the CCM encoder a copy of the
    tokenizer's encoder and ``zero_out`` zero: the handoff file of ``realsrt-vqgan``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RealSRTNet(config)
    net.vae.load_state_dict({k: v.detach().cpu() for k, v in vae_state.items()}, strict=True)
    _sync_token_embeddings(net.generator, net)
    _sync_token_embeddings(net.critic, net)
    _sync_ccm_encoder(net)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _part_differences(
    theirs: RealSRTConfig, ours: RealSRTConfig, parts: tuple[str, ...]
) -> list[str]:
    names = ["tokenizer"]
    if "generator" in parts or "critic" in parts:
        names += ["scale", "lr_patch"]
    names += [p for p in ("generator", "critic") if p in parts]
    return [
        f"model.{name}: file {getattr(theirs, name)!r}, config {getattr(ours, name)!r}"
        for name in names
        if getattr(theirs, name) != getattr(ours, name)
    ]


def _load_parts(
    net: RealSRTNet, path: str, parts: tuple[str, ...], *, stage: str, producer: str
) -> None:
    """Copy the ``parts`` of the realsrt file at ``path`` into ``net`` (shapes checked first)."""
    from pathlib import Path

    from realsr_cli.registry.loader import load_weights

    name = Path(path).name
    spec, config, src = load_weights(path)
    if spec.name != ARCH:
        raise WeightsError(
            f"{name} holds a {spec.name!r} network; {stage} needs a realsrt file",
            hint=f"use the export of a `{producer}` run",
        )
    diff = _part_differences(config, net.config, parts)
    if diff:
        raise ConfigError(
            f"{stage}: {name} does not fit the [model] section: " + "; ".join(diff),
            hint=f"set the [model] section to the values of the `{producer}` run that made {name}",
        )
    prefixes = tuple(p for part in parts for p in _PART_PREFIXES[part])
    theirs = src.state_dict()
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if key.startswith(prefixes):
                value.copy_(theirs[key])
    log.info("%s: loaded %s from %s", stage, ", ".join(parts), name)


@torch.no_grad()
def generate_with_generator_confidence(
    generator: TokenTransformer, lr_ids: Tensor, schedule: MaskSchedule, mask_id: int
) -> Tensor:
    """MaskGIT decoding with the generator's own confidences (the paper's ablation (a)).

    Like :meth:`RealSRTNet.generate`, but the ``k_s`` re-masked tokens are the newly predicted ones
    with the lowest softmax probability, and tokens kept once stay fixed. LR ids (B,N) -> (B,N).
    Used to validate the generator before a critic exists.
    """
    steps = schedule.num_inference_steps
    assert steps is not None
    context = generator.context(lr_ids)
    ids = torch.full_like(lr_ids, mask_id)
    for step in range(steps):
        mask = ids == mask_id
        probs = generator.decode(ids, context, mask).float().softmax(dim=-1)
        confidence, pred = probs.max(dim=-1)
        pred_ids = torch.where(mask, pred, ids)
        scores = torch.where(mask, -confidence, torch.full_like(confidence, float("-inf")))
        ids = schedule.step(pred_ids, scores, step)
    return ids


def _sample_tokens(logits: Tensor, temperature: float) -> Tensor:
    """One token per position from ``softmax(logits / temperature)`` (B,N,K) -> (B,N), by inverse
    CDF with uniforms from the CPU generator (moved), so a seed reproduces on any device."""
    cdf = (logits.float() / temperature).softmax(dim=-1).cumsum(dim=-1)
    u = torch.rand(cdf.shape[:-1]).to(cdf.device) * cdf[..., -1]
    ids = torch.searchsorted(cdf.contiguous(), u.unsqueeze(-1), right=True).squeeze(-1)
    return ids.clamp_(max=logits.shape[-1] - 1)


def _image_terms(
    sr: Tensor, hq: Tensor, loss: RealSRTImageLossConfig, perceptual: PerceptualLoss | None
) -> dict[str, Tensor]:
    """Weighted ``mse`` / ``l1`` / ``perceptual`` (/ ``style``) terms of (B,3,H,W) images."""
    terms = reconstruction_terms(sr, hq, loss, perceptual)
    if loss.l1 == 0:
        del terms["l1"]
    if loss.mse > 0:
        terms = {"mse": loss.mse * mse_loss(sr.float(), hq.float()), **terms}
    return terms


def _adversarial_terms(
    stage: Stage, ctx: StepContext, fake: Tensor, nll: Tensor,
    loss: RealSRTImageLossConfig, last_layer: Callable[[], Tensor],
) -> dict[str, Tensor]:
    """``{"g_adv", "adv_weight"}`` (empty before ``loss.adversarial_start`` or without D)."""
    if "d" not in stage.nets or ctx.step < loss.adversarial_start:
        return {}
    g_adv = generator_adversarial_loss(stage, fake)
    weight = (
        adaptive_adversarial_weight(nll, g_adv, last_layer())
        if loss.adaptive_adversarial
        else g_adv.new_ones(())
    )
    return {"g_adv": loss.adversarial * weight * g_adv, "adv_weight": weight}


# --------------------------------------------------------------------------- stage 1: VQGAN
class RealSRTVQGANStage(Stage):
    """Stage 1: the VQGAN tokenizer (Sec. 3.1).

    Nets: ``g`` (:class:`VQGANTrainingNet` around a fresh tokenizer), ``d`` (U-Net discriminator,
    when ``loss.adversarial > 0``). Per step, with x = ``batch["hq"]`` and x^ its reconstruction:
    ``L = mse |x^ - x|^2 (+ l1) + perceptual + beta ||z_e - sg[e]||^2 (+ codebook ||sg[z_e] - e||^2)
    + adversarial * w_adapt * (-E[D(x^)])``, then the hinge D step. Logs ``usage``: the share of
    the K codes used in the batch.
    Export: a complete ``realsrt`` network (:func:`assemble_state_dict`).
    """

    name = "realsrt-vqgan"
    summary = "RealSRT 1/4: VQGAN image tokenizer (f=8, K=512) on HR patches"
    config_cls = RealSRTVQGANStageConfig
    ema_net = "g"

    def __init__(self, config: RealSRTVQGANStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        loss = config.loss
        check_vgg_inputs(
            loss, {loss.perceptual_arch: "perceptual loss"} if loss.uses_perceptual else {}
        )
        ema = loss.codebook_decay if loss.codebook_update == "ema" else None
        self.nets["g"] = VQGANTrainingNet(
            VQGAN(config.model.tokenizer), ema_decay=ema, restart_unused=loss.restart_unused_codes
        ).to(device)
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def load_inputs(self) -> None:
        if self.perceptual is not None:
            load_vgg_weights(self.perceptual.vgg, self.config.loss, purpose="perceptual loss")

    def frozen(self) -> Iterator[nn.Module]:
        return iter([self.perceptual] if self.perceptual is not None else [])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"g": [p for p in self.net("g").parameters() if p.requires_grad]}
        if "d" in self.nets:
            groups["d"] = list(self.net("d").parameters())
        return groups

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        with ctx.autocast():
            out = self.nets["g"](hq)
            terms = _image_terms(out.image, hq, loss, self.perceptual)
            nll = torch.stack(list(terms.values())).sum()
            z_e, codes = out.z_e.float(), out.codes.float()
            terms["commit"] = loss.beta * mse_loss(z_e, codes.detach())
            if loss.codebook_update == "loss":
                terms["codebook"] = loss.codebook * mse_loss(z_e.detach(), codes)
            extra = _adversarial_terms(
                self, ctx, out.image, nll, loss, lambda: self.net("g").last_layer
            )
        weight = extra.pop("adv_weight", None)
        terms.update(extra)
        total = torch.stack(list(terms.values())).sum()
        ctx.backward_step(total, "g")
        k = self.config.model.tokenizer.n_embed
        logs: dict[str, Tensor | float] = {
            **terms, "total": total, "usage": out.ids.unique().numel() / k,
        }
        if weight is not None:
            logs["adv_weight"] = weight
            logs.update(discriminator_step(self, ctx, hq, out.image))
        return scalars(logs)

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        """Reconstruction of ``lq`` (scale 1), edge-padded to a multiple of f and cropped back."""
        vae = self.net("g").vae
        f = self.config.model.tokenizer.downsample
        h, w = lq.shape[-2:]
        x = F.pad(lq, (0, -w % f, 0, -h % f), mode="replicate") if h % f or w % f else lq
        return vae(x)[..., :h, :w]

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        theirs = net_state_dict(self.net("g"), state["g"], what=self.name)
        n = len(TOKENIZER_PREFIX)
        vae = {k[n:]: v for k, v in theirs.items() if k.startswith(TOKENIZER_PREFIX)}
        sd = assemble_state_dict(self.config.model, vae, seed=self.config.run.seed)
        return Export(ARCH, self.config.model, sd)


# ------------------------------------------------------------------ stages 2-4: shared base
class FrozenParts(nn.Module):
    """The children of a :class:`RealSRTNet` other than ``trained``, under their own names (so the
    state-dict keys are the network's), all without gradients.

    Listed as net ``"frozen"`` of the stages 2-4: it has no trainable parameter, so the trainer
    neither wraps it in DDP nor gives it an optimizer, but every checkpoint holds its tensors.
    ``realsr train export`` builds a fresh stage without :meth:`Stage.load_inputs`, so this is what
    makes :meth:`Stage.export` exact from the checkpoint alone (upstream file moved, changed or
    random).
    """

    def __init__(self, net: RealSRTNet, trained: nn.Module) -> None:
        super().__init__()
        skip = {id(m) for m in trained.modules()}
        for name, child in net.named_children():
            if id(child) not in skip:
                self.add_module(name, child)
        self.requires_grad_(False)


class _FrozenBaseStage(Stage):
    """A stage that trains one part of a :class:`RealSRTNet` (``self.base``) and freezes the rest.

    Subclasses set ``_consumes`` (parts read from the input file) and ``_producer`` (the stage
    that writes it) and call :meth:`_register` with the trained module. Nets: ``g`` (trained),
    ``frozen`` (:class:`FrozenParts`, everything else), plus ``d`` where a stage has one.
    """

    _consumes: ClassVar[tuple[str, ...]]
    _producer: ClassVar[str]
    ema_net = "g"

    def __init__(self, config, device: torch.device) -> None:
        super().__init__(config, device)
        config.inputs.require(self.name)
        self.base = RealSRTNet(config.model).to(device)
        self.base.requires_grad_(False).eval()
        self.schedule = MaskSchedule(
            config.model.num_tokens, mask_id=config.model.mask_id, schedule=config.model.schedule
        )

    # --------------------------------------------------------------- inputs
    def load_inputs(self) -> None:
        base, path = self.base, self.config.inputs.path()
        if path:
            _load_parts(base, path, self._consumes, stage=self.name, producer=self._producer)
        else:
            log.warning(
                "%s: RANDOM %s (inputs.allow_random_* = true)", self.name, ", ".join(self._consumes)
            )
        for part in ("generator", "critic"):
            if part not in self._consumes:
                _sync_token_embeddings(getattr(base, part), base)
        if "ccm" not in self._consumes:
            _sync_ccm_encoder(base)

    def _register(self, trained: nn.Module) -> None:
        trained.requires_grad_(True)
        self.nets["g"] = trained
        self.nets["frozen"] = FrozenParts(self.base, trained)

    def frozen(self) -> Iterator[nn.Module]:
        return iter(self.net("frozen").children())

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"g": [p for p in self.net("g").parameters() if p.requires_grad]}
        if "d" in self.nets:
            groups["d"] = list(self.net("d").parameters())
        return groups

    # --------------------------------------------------------------- helpers
    @torch.no_grad()
    def tokens(self, lq: Tensor, hq: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """``(lr_ids, hr_ids, lr_up)``: tokens (B,N) of the bicubic-upsampled LR patch and of the
        HR patch (None without ``hq``), in float32 (discrete choices as at inference)."""
        base = self.base
        lr_up = base.upsample(lq)
        lr_ids = base.tokenize(lr_up)
        hr_ids = base.tokenize(hq) if hq is not None else None
        return lr_ids, hr_ids, lr_up

    def mask_tokens(self, hr_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Random training mask (Sec. 3.2): per sample ``round(gamma(r) N)`` (at least 1) tokens,
        r ~ U(0, 1), replaced by [M]. Returns ``(masked_ids, mask)``, both (B,N)."""
        return self.schedule.add_noise(hr_ids)

    def _tiled(self, fn: Callable[[Tensor], Tensor], lq: Tensor) -> Tensor:
        """Sec. 3.4 aggregation: LR patches of ``lr_patch``, overlap half, Gaussian var 0.05."""
        cfg = self.config.model
        return tiled_forward(
            lambda x, _tiles: fn(x), lq, scale=cfg.scale, tile=cfg.lr_patch,
            overlap=cfg.lr_patch // 2, sigma=REALSRT_SIGMA, margin=0,
        )

    def _export(self, prefix: str, state: dict[str, dict[str, Tensor]]) -> Export:
        """The whole network from ``state`` alone: ``frozen`` as is, ``g`` under ``prefix`` (its
        frozen token embedding too: an EMA of a constant stays bit-identical)."""
        frozen = net_state_dict(self.net("frozen"), state["frozen"], what=self.name)
        trained = net_state_dict(self.net("g"), state["g"], what=self.name)
        sd = {k: v.detach().cpu().clone() for k, v in frozen.items()}
        sd.update({prefix + k: v.detach().cpu().clone() for k, v in trained.items()})
        missing = set(self.base.state_dict()) - set(sd)
        if missing:  # a programming error: g + frozen must cover the network
            raise WeightsError(f"{self.name}: export lacks {sorted(missing)[:3]}")
        return Export(ARCH, self.config.model, sd)


# ------------------------------------------------------------------------ stage 2: generator
class RealSRTGeneratorStage(_FrozenBaseStage):
    """Stage 2: the generator (Sec. 3.2, Eq. 1) on the frozen tokenizer of ``inputs.vqgan_weights``.

    Net ``g`` = the generator (:class:`TokenTransformer`; token embedding frozen). Per step:
    Y_HR = tokens of ``hq``, Y_LR = tokens of bicubic(``lq``); mask ``round(gamma(r) N)`` random
    HR tokens; ``L_g = CE(generator(Y~_HR, Y_LR)[M], Y_HR[M])`` over the masked tokens. Logs ``ce``,
    ``acc`` (argmax accuracy on masked tokens) and ``mask_ratio``.
    Validation decodes with the generator's own confidences (ablation (a)) and the plain decoder.
    """

    name = "realsrt-generator"
    summary = "RealSRT 2/4: token generator (masked-token cross-entropy) on the frozen VQGAN"
    config_cls = RealSRTGeneratorStageConfig
    _consumes = ("tokenizer",)
    _producer = "realsrt-vqgan"

    def __init__(self, config: RealSRTGeneratorStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self._register(self.base.generator)
        self.base.generator.token_emb.requires_grad_(False)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        lr_ids, hr_ids, _ = self.tokens(batch["lq"], batch["hq"])
        assert hr_ids is not None
        masked_ids, mask = self.mask_tokens(hr_ids)
        with ctx.autocast():
            logits = self.nets["g"](masked_ids, lr_ids, mask)
        target = hr_ids[mask]
        masked_logits = logits[mask].float()
        ce = F.cross_entropy(masked_logits, target)
        ctx.backward_step(ce, "g")
        acc = (masked_logits.detach().argmax(dim=-1) == target).float().mean()
        return scalars({"ce": ce, "acc": acc, "mask_ratio": mask.float().mean()})

    @torch.no_grad()
    def _patch_sr(self, lq: Tensor) -> Tensor:
        base, cfg = self.base, self.config.model
        s, g = cfg.scale, cfg.grid
        h, w = lq.shape[-2:]
        patch, (top, left) = centred_reflect_pad(lq, cfg.lr_patch)
        lr_ids, _, _ = self.tokens(patch)
        schedule = base.schedule(cfg.steps)
        ids = generate_with_generator_confidence(base.generator, lr_ids, schedule, cfg.mask_id)
        sr = adain_color_correction(base.vae.decode_ids(ids.view(-1, g, g)), patch)
        return sr[..., top * s : (top + h) * s, left * s : (left + w) * s]

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self._patch_sr, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export(GENERATOR_PREFIX, state)


# --------------------------------------------------------------------------- stage 3: critic
class RealSRTCriticStage(_FrozenBaseStage):
    """Stage 3: the critic (Sec. 3.2, Eq. 2); tokenizer and generator of
    ``inputs.generator_weights`` frozen.

    Net ``g`` = the critic (token embedding frozen). Per step: mask HR tokens as in stage 2, let
    the frozen generator fill the masked positions (``loss.tokens``: argmax or a sample), keep the
    others; ``L_c = BCE(critic(Y^_HR, Y_LR), M)`` averaged over all tokens. Logs ``bce``, ``acc``
    (logit > 0 vs. mask), ``replaced`` (share of masked tokens the generator got wrong) and
    ``mask_ratio``. Validation runs the full iterative decoding (the CCM adds nothing yet).
    """

    name = "realsrt-critic"
    summary = "RealSRT 3/4: token critic (BCE on masked/replaced tokens), generator frozen"
    config_cls = RealSRTCriticStageConfig
    _consumes = ("tokenizer", "generator")
    _producer = "realsrt-generator"

    def __init__(self, config: RealSRTCriticStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self._register(self.base.critic)
        self.base.critic.token_emb.requires_grad_(False)

    @torch.no_grad()
    def critic_input(
        self, masked_ids: Tensor, lr_ids: Tensor, mask: Tensor, ctx: StepContext | None = None
    ) -> Tensor:
        """Y^_HR (B,N): the frozen generator's tokens at the masked positions, ``masked_ids`` (the
        ground truth) elsewhere."""
        with ctx.autocast() if ctx is not None else contextlib.nullcontext():
            logits = self.base.generator(masked_ids, lr_ids, mask)
        loss = self.config.loss
        if loss.tokens == "sample":
            pred = _sample_tokens(logits, loss.temperature)
        else:
            pred = logits.float().argmax(dim=-1)
        return torch.where(mask, pred, masked_ids)

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        lr_ids, hr_ids, _ = self.tokens(batch["lq"], batch["hq"])
        assert hr_ids is not None
        masked_ids, mask = self.mask_tokens(hr_ids)
        pred_ids = self.critic_input(masked_ids, lr_ids, mask, ctx)
        with ctx.autocast():
            logits = self.nets["g"](pred_ids, lr_ids).squeeze(-1)
        labels = mask.float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        ctx.backward_step(bce, "g")
        acc = ((logits.detach() > 0) == mask).float().mean()
        replaced = (pred_ids != hr_ids)[mask].float().mean()
        return scalars(
            {"bce": bce, "acc": acc, "replaced": replaced, "mask_ratio": labels.mean()}
        )

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self.base.upscale, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export(CRITIC_PREFIX, state)


# ------------------------------------------------------------------------------ stage 4: CCM
class RealSRTCCMStage(_FrozenBaseStage):
    """Stage 4: the conditional controlling module (Sec. 3.3); tokenizer, generator and critic of
    ``inputs.critic_weights`` frozen.

    Nets: ``g`` (:class:`CCMNet`: E' initialised from the tokenizer's encoder, ``zero_out`` from
    zeros), ``d`` (when ``loss.adversarial > 0``). Per step: Y_LR from bicubic(``lq``); HR tokens by
    the frozen T-step iterative decoding (no gradients, float32); ``x^ = D(h + CCM(h, lr_up))``
    with ``h = post_quant_conv(e(Y))``; ``L = mse (+ l1) + perceptual + adversarial * w_adapt
    (-E[D(x^)])`` against ``hq`` (w_adapt on ``zero_out.weight``, as the official code), then the
    hinge D step. Validation: the full model's ``upscale`` with patch aggregation.
    """

    name = "realsrt-ccm"
    summary = "RealSRT 4/4: conditional controlling module, VQGAN and transformers frozen"
    config_cls = RealSRTCCMStageConfig
    _consumes = ("tokenizer", "generator", "critic")
    _producer = "realsrt-critic"

    def __init__(self, config: RealSRTCCMStageConfig, device: torch.device) -> None:
        super().__init__(config, device)
        loss = config.loss
        check_vgg_inputs(
            loss, {loss.perceptual_arch: "perceptual loss"} if loss.uses_perceptual else {}
        )
        self._register(CCMNet(self.base))
        self.perceptual = build_perceptual_loss(loss, device)
        if loss.adversarial > 0:
            self.nets["d"] = build_discriminator(config.discriminator, device)

    def load_inputs(self) -> None:
        super().load_inputs()
        if self.perceptual is not None:
            load_vgg_weights(self.perceptual.vgg, self.config.loss, purpose="perceptual loss")

    def frozen(self) -> Iterator[nn.Module]:
        yield from super().frozen()
        if self.perceptual is not None:
            yield self.perceptual

    @torch.no_grad()
    def hr_features(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """``(h, lr_up)``: post-quant features (B,c,g,g) of the frozen masked transformer's tokens
        for LR patches ``lq`` (``model.steps`` iterations), and the upsampled LR patch."""
        base, cfg = self.base, self.config.model
        lr_ids, _, lr_up = self.tokens(lq)
        ids = base.generate(lr_ids, cfg.steps).view(-1, cfg.grid, cfg.grid)
        return base.vae.post_quant_conv(base.vae.quantizer.embed(ids)), lr_up

    def train_step(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, float]:
        loss = self.config.loss
        hq = batch["hq"]
        h, lr_up = self.hr_features(batch["lq"])
        with ctx.autocast():
            sr = self.base.vae.decoder(self.nets["g"](h, lr_up))
            terms = _image_terms(sr, hq, loss, self.perceptual)
            nll = torch.stack(list(terms.values())).sum()
            extra = _adversarial_terms(
                self, ctx, sr, nll, loss, lambda: self.net("g").zero_out.weight
            )
        weight = extra.pop("adv_weight", None)
        terms.update(extra)
        total = torch.stack(list(terms.values())).sum()
        ctx.backward_step(total, "g")
        logs: dict[str, Tensor] = {**terms, "total": total}
        if weight is not None:
            logs["adv_weight"] = weight
            logs.update(discriminator_step(self, ctx, hq, sr))
        return scalars(logs)

    @torch.no_grad()
    def predict(self, lq: Tensor) -> Tensor:
        return self._tiled(self.base.upscale, lq)

    def export(self, state: dict[str, dict[str, Tensor]]) -> Export:
        return self._export("", state)
