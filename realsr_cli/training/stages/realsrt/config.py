"""RealSRT stage configs: the loss, inputs and stage sections of the four stages, with the paper's defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from realsr_cli.errors import ConfigError
from realsr_cli.models.realsrt import RealSRTConfig
from realsr_cli.training.config import (
    DataConfig,
    EMAConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfigBase,
)
from realsr_cli.training.discriminators import UNetDiscriminatorConfig
from realsr_cli.training.stages.reconstruction import (
    ReconstructionLossConfig,
)
from realsr_cli.training.stages.upstream import UpstreamInputs

log = logging.getLogger(__name__)

ARCH = "realsrt"
#: state-dict prefixes of the parts of :class:`RealSRTNet`
TOKENIZER_PREFIX = "vae."
GENERATOR_PREFIX = "generator."
CRITIC_PREFIX = "critic."
CCM_PREFIXES = ("trainable_copy_encoder.", "fuse_res1.", "fuse_attn.", "fuse_res2.", "zero_out.")
PART_PREFIXES: dict[str, tuple[str, ...]] = {
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


class _RealSRTUpstreamInputs(UpstreamInputs):
    export_hint = "train `{producer}` and pass its export (a realsrt .safetensors): set "


@dataclass(frozen=True)
class RealSRTGeneratorInputsConfig(_RealSRTUpstreamInputs):
    """``vqgan_weights``: the export of a ``realsrt-vqgan`` run (or any realsrt file); its
    tokenizer ``vae.*`` is loaded and frozen. ``allow_random_vqgan``: a random tokenizer instead
    (tests and smoke runs only)."""

    weights_field = "vqgan_weights"
    producer = "realsrt-vqgan"

    vqgan_weights: str = ""
    allow_random_vqgan: bool = False


@dataclass(frozen=True)
class RealSRTCriticInputsConfig(_RealSRTUpstreamInputs):
    """``generator_weights``: the export of a ``realsrt-generator`` run; its tokenizer and
    generator are loaded and frozen. ``allow_random_generator``: random ones (tests only)."""

    weights_field = "generator_weights"
    producer = "realsrt-generator"

    generator_weights: str = ""
    allow_random_generator: bool = False


@dataclass(frozen=True)
class RealSRTCCMInputsConfig(_RealSRTUpstreamInputs):
    """``critic_weights``: the export of a ``realsrt-critic`` run; tokenizer, generator and critic
    are loaded and frozen. ``allow_random_critic``: random ones (tests only)."""

    weights_field = "critic_weights"
    producer = "realsrt-critic"

    critic_weights: str = ""
    allow_random_critic: bool = False


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
