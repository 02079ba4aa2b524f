"""Training configuration: the sections every stage shares, as typed frozen dataclasses.

A stage's config (``<Stage>.config_cls``) is a frozen dataclass that composes these common sections
with its own ``model`` and ``loss`` sections. :class:`StageConfigBase` declares the common ones
once; a stage extends it and redeclares a section (same name and type) to change its default: the
field keeps its place, so the TOML keys and the section order stay the base's::

    @dataclass(frozen=True)
    class FeMaSRStageConfig(StageConfigBase):        # run, data, optim, schedule, ema, val
        ema: EMAConfig = EMAConfig(decay=0.9999)      # a redeclared section: new default
        model: FeMaSRConfig = FeMaSRConfig()          # the architecture being trained
        loss: FeMaSRLossConfig = FeMaSRLossConfig()    # stage-specific weights

TOML files mirror the nesting (``[optim]``, ``[model]`` ...); unknown keys are errors and
``--set optim.lr=2e-4`` overrides are type-checked (both via :mod:`realsr_cli._config`).
The resolved config is written to ``RUN_DIR/config.toml`` and stored in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from realsr_cli.errors import ConfigError

__all__ = [
    "DataConfig",
    "EMAConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "StageConfigBase",
    "ValConfig",
    "check_non_negative",
]


def _positive(where: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{where}.{name} must be positive, got {value}")


def check_non_negative(where: str, **values: float) -> None:
    """Raise :class:`ConfigError` naming ``where.name`` for the first negative value."""
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"{where}.{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class RunConfig:
    """The loop itself.

    Fields:
        max_steps: optimisation steps (one step = one global batch); ``--max-steps`` overrides.
        seed: seeds model init, data order, crops and degradations. Each image's crop and
            degradation are drawn from ``(seed, epoch, image index)``, so a global batch is the
            same whether it runs on 1 process or is split over N DDP ranks.
        amp: mixed precision on CUDA (``"bf16"``, ``"fp16"`` with a grad scaler, or ``"off"``);
            ignored on CPU/MPS.
        grad_clip: max global grad norm per optimizer (0 = off).
        log_every: steps between JSONL metric lines (``RUN_DIR/metrics.jsonl``).
        checkpoint_every: steps between checkpoints (``RUN_DIR/checkpoints/step_XXXXXXX.pt``,
            ``last.pt``); 0 = only at the end.
        keep_checkpoints: how many step checkpoints to keep (``last.pt`` always stays).
        device: ``auto|cpu|cuda|mps`` (``engine.device`` policy); under torchrun each rank takes
            ``cuda:LOCAL_RANK``.
    """

    max_steps: int = 400_000
    seed: int = 0
    amp: Literal["off", "fp16", "bf16"] = "bf16"
    grad_clip: float = 0.0
    log_every: int = 100
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 3
    device: str = "auto"

    def __post_init__(self) -> None:
        _positive("run", max_steps=self.max_steps, log_every=self.log_every)
        if self.grad_clip < 0 or self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError(
                "run: grad_clip and checkpoint_every must be >= 0, keep_checkpoints >= 1"
            )


@dataclass(frozen=True)
class DataConfig:
    """HR training images -> random patches -> on-the-fly degradation.

    Fields:
        hr_dir: folder of HR images, searched recursively (``--data`` sets it).
        patch_size: HR patch side (the LR patch is ``patch_size // scale``).
        scale: SR factor of the synthetic LR (1: no degradation, ``lq`` is the HR patch itself,
            e.g. for the stage-1 VQGAN).
        pipeline: ``realesrgan``, ``bsrgan``, ``bicubic``, ``mild`` or ``mix``
            (``training.degradations.PIPELINES``).
        batch_size: global batch (split evenly over DDP ranks; must divide by the world size).
        num_workers: DataLoader worker processes per rank.
        flip, rot90: random horizontal flip / 90-degree rotation augmentation.
        min_size: HR images smaller than ``patch_size`` are skipped with a warning; images
            below this side are an error (corrupt/tiny inputs).
        cache_images: keep every decoded HR image in memory (uint8/uint16 as stored, per
            process / DataLoader worker) instead of decoding a file per patch; for small
            corpora of large photos (decoding dominates a CPU step), costs H*W*3 bytes per image.
    """

    hr_dir: str = ""
    patch_size: int = 256
    scale: int = 4
    pipeline: str = "realesrgan"
    batch_size: int = 32
    num_workers: int = 4
    flip: bool = True
    rot90: bool = True
    min_size: int = 8
    cache_images: bool = False

    def __post_init__(self) -> None:
        _positive("data", patch_size=self.patch_size, scale=self.scale, batch_size=self.batch_size)
        if self.patch_size % self.scale:
            raise ConfigError(
                f"data.patch_size {self.patch_size} is not divisible by data.scale {self.scale}"
            )
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """Adam(W) for every optimizer of a stage (generator and, where present, discriminator).

    Fields:
        lr: generator learning rate; lr_d: discriminator learning rate (0 = same as ``lr``).
        betas: Adam betas (FeMaSR/UGTSR: (0.9, 0.99)).
        weight_decay: decoupled weight decay (AdamW); 0 = plain Adam.
    """

    lr: float = 1e-4
    lr_d: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _positive("optim", lr=self.lr)
        if self.lr_d < 0 or self.weight_decay < 0:
            raise ConfigError("optim.lr_d and optim.weight_decay must be >= 0")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, applied to every optimizer of the stage after each step.

    Fields:
        kind: ``constant``, ``multistep`` (multiply by ``gamma`` at each of ``milestones``) or
            ``cosine`` (to ``min_lr_ratio * lr`` at ``max_steps``).
        warmup_steps: linear warm-up from 0 over this many steps (0 = none).
    """

    kind: Literal["constant", "multistep", "cosine"] = "multistep"
    milestones: tuple[int, ...] = (50_000, 100_000, 200_000, 300_000)
    gamma: float = 0.5
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1 or self.gamma <= 0:
            raise ConfigError(
                "schedule: warmup_steps >= 0, 0 <= min_lr_ratio <= 1 and gamma > 0 required"
            )


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the generator's weights (0 = off).

    ``ema = decay * ema + (1 - decay) * weights`` after every step from ``start_step``; exported
    weights are the EMA ones when enabled.
    """

    decay: float = 0.999
    start_step: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1 or self.start_step < 0:
            raise ConfigError("ema: 0 <= decay < 1 and start_step >= 0 required")


@dataclass(frozen=True)
class ValConfig:
    """Periodic validation on a paired folder (``lq_dir``/``hq_dir``, matched by file stem).

    PSNR/SSIM on the Y channel with BasicSR conventions (crop ``scale`` px borders), plus up to
    ``samples`` side-by-side PNGs in ``RUN_DIR/samples/step_XXXXXXX/``. Empty dirs = off.
    """

    lq_dir: str = ""
    hq_dir: str = ""
    every: int = 5_000
    samples: int = 4
    max_images: int = 100

    def __post_init__(self) -> None:
        _positive("val", every=self.every)
        if bool(self.lq_dir) != bool(self.hq_dir):
            raise ConfigError("val: set both lq_dir and hq_dir, or neither")


@dataclass(frozen=True)
class StageConfigBase:
    """The six sections every stage config starts with (``run`` ... ``val``).

    Subclasses add their own sections (``model``, ``loss`` ...) and override a default by
    redeclaring the field, e.g. ``ema: EMAConfig = EMAConfig(decay=0.9999)``.
    """

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    ema: EMAConfig = EMAConfig()
    val: ValConfig = ValConfig()
