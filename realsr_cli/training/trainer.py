"""The training loop (STYLE §12): a plain loop around a :class:`~realsr_cli.training.stage.Stage`.

One step: next batch of HR patches -> LR by the degradation pipeline (on the device) -> learning
rates for this step -> ``stage.train_step(batch, ctx)`` (which calls ``ctx.backward_step`` per
optimizer) -> grad-scaler update -> EMA update. Around it, every ``run.log_every`` steps a JSONL
metrics line (losses averaged over the window and the ranks), every ``val.every`` steps a
validation pass, every ``run.checkpoint_every`` steps a checkpoint, and the same at the end.

Under torchrun every rank runs this loop on its share of the global batch, with the stage's
trainable nets wrapped in ``DistributedDataParallel``; only rank 0 writes files and calls the
progress hooks. Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, all ranks agree to
stop, a checkpoint is written and :class:`TrainingInterrupted` (a ``KeyboardInterrupt``, exit
130 in the CLI) is raised; a second Ctrl-C aborts at once.

Run folder (rank 0)::

    RUN_DIR/config.toml          the resolved config
    RUN_DIR/metrics.jsonl        {"kind": "train"|"val", "step": ..., "time": ..., losses, lr ...}
    RUN_DIR/checkpoints/         step_XXXXXXX.pt (newest run.keep_checkpoints), last.pt
    RUN_DIR/samples/step_XXXXXXX/NAME.png   validation samples: LR (nearest) | SR | HQ
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli import __version__
from realsr_cli._config import to_dict
from realsr_cli.engine.device import resolve_dtype
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training import distributed
from realsr_cli.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_plain,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from realsr_cli.training.data import (
    HRPatches,
    PairedFolder,
    ShardSampler,
    degrade_batch,
    local_batch_size,
    make_loader,
    sample_seed,
)
from realsr_cli.training.ema import EMA
from realsr_cli.training.run import save_config
from realsr_cli.training.schedule import LRSchedule
from realsr_cli.training.stage import Stage

log = logging.getLogger(__name__)

__all__ = ["TrainHooks", "TrainResult", "Trainer", "TrainingInterrupted", "train"]


@dataclass
class TrainHooks:
    """Progress callbacks, called on rank 0 only (the CLI renders them; library code prints nothing).

    ``on_start(first_step, max_steps)``; ``on_step(steps_done, losses)`` after every step with
    this rank's losses; ``on_record(record)`` for every line written to ``metrics.jsonl``.
    """

    on_start: Callable[[int, int], None] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None
    on_record: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    last_train: dict[str, Any] | None = None
    last_val: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "step": self.step,
                "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
                "train": self.last_train, "val": self.last_val}


#: consecutive steps with a non-finite loss after which a run stops (a few may be skipped by the
#: fp16 grad scaler; a run that stays non-finite has diverged and only wastes compute)
MAX_NONFINITE_STEPS = 20


class TrainingDiverged(ConfigError):
    """The loss was non-finite for :data:`MAX_NONFINITE_STEPS` steps in a row (exit 2). The last
    checkpoint written is one from before (checkpoints are not written while the loss is
    non-finite)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Stopped by Ctrl-C/SIGTERM after a checkpoint at ``step`` was written to ``checkpoint``."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"training stopped at step {step}")
        self.step = step
        self.checkpoint = checkpoint


class _StepContext:
    """The :class:`~realsr_cli.training.stage.StepContext` the trainer hands to ``train_step``."""

    def __init__(self, trainer: Trainer, step: int) -> None:
        self._t = trainer
        self.step = step
        self.device = trainer.device

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._t.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._t.amp_dtype)

    def backward_step(self, loss: Tensor, optimizer: str) -> None:
        t = self._t
        if optimizer not in t.optimizers:
            raise ConfigError(f"stage asked for optimizer {optimizer!r}; it has {sorted(t.optimizers)}")
        opt = t.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        if t.scaler is not None:
            t.scaler.scale(loss).backward()
            t.scaler.unscale_(opt)
        else:
            loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(t.params[optimizer], t.grad_clip)
        if t.scaler is not None:
            t.scaler.step(opt)
        else:
            opt.step()


def _lr_key(name: str) -> str:
    return {"g": "lr", "d": "lr_d"}.get(name, f"lr_{name}")


class Trainer:
    """Everything around a stage: devices, DDP, data, optimizers, EMA, logs, checkpoints.

    ``stage_cls`` follows :mod:`realsr_cli.training.stage`; ``config`` is its resolved
    ``config_cls`` instance (see :func:`realsr_cli.training.run.resolve_config`);
    ``resume_from`` a checkpoint to continue exactly from. Construction joins the torchrun
    process group (if any) and builds everything; :meth:`run` trains to ``run.max_steps``.
    """

    def __init__(
        self,
        stage_cls: type[Stage],
        config: Any,
        run_dir: str | Path,
        *,
        resume_from: str | Path | None = None,
        hooks: TrainHooks | None = None,
    ) -> None:
        self.stage_cls = stage_cls
        self.config = config
        self.run_dir = Path(run_dir)
        self.hooks = hooks or TrainHooks()
        self._stop_requested = False
        self.dist, self.device = distributed.setup(config.run.device)
        try:
            self._build(resume_from)
        except BaseException:
            distributed.teardown()
            raise

    # ------------------------------------------------------------------ setup
    def _build(self, resume_from: str | Path | None) -> None:
        cfg, rank = self.config, self.dist.rank
        seed = cfg.run.seed
        local_batch_size(cfg.data.batch_size, self.dist.world_size)  # fail before any heavy work
        random.seed(seed + rank)
        np.random.seed((seed + rank) % 2**32)
        torch.manual_seed(seed)  # the same initial weights on every rank
        self.stage = self.stage_cls(cfg, self.device)
        self.stage.load_inputs()
        torch.manual_seed(sample_seed(seed, 3, rank))  # per-rank stream for the stage's own noise

        amp = cfg.run.amp if self.device.type == "cuda" else "off"
        dtype = None if amp == "off" else resolve_dtype(self.device, amp)
        self.amp_dtype = None if dtype in (None, torch.float32) else dtype
        self.scaler = _grad_scaler() if self.amp_dtype == torch.float16 else None
        self.grad_clip = cfg.run.grad_clip

        optim = cfg.optim
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.params: dict[str, list[nn.Parameter]] = {}
        self.base_lr: dict[str, float] = {}
        for name, params in self.stage.param_groups().items():
            params = [p for p in params if p.requires_grad]
            if not params:
                raise ConfigError(f"stage {self.stage_cls.name}: optimizer {name!r} has no trainable parameters")
            lr = optim.lr_d if name == "d" and optim.lr_d > 0 else optim.lr
            adam = torch.optim.AdamW if optim.weight_decay > 0 else torch.optim.Adam
            self.optimizers[name] = adam(params, lr=lr, betas=tuple(optim.betas),
                                         weight_decay=optim.weight_decay)
            self.params[name] = params
            self.base_lr[name] = lr
        self.schedule = LRSchedule(cfg.schedule, cfg.run.max_steps)

        ema_cfg = getattr(cfg, "ema", None)
        self.ema: EMA | None = None
        if self.stage_cls.ema_net is not None and ema_cfg is not None and ema_cfg.decay > 0:
            self.ema = EMA(self.stage.net(self.stage_cls.ema_net), ema_cfg.decay, ema_cfg.start_step)

        self.step = 0
        self.elapsed = 0.0
        self._rng_to_restore: dict[str, Any] | None = None
        self.resumed_from = None if resume_from is None else Path(resume_from)
        if resume_from is not None:
            self._restore(load_checkpoint(resume_from), Path(resume_from))

        if self.dist.enabled:
            self._wrap_ddp()

        data = cfg.data
        self.dataset = HRPatches(data.hr_dir, data.patch_size, seed=seed, flip=data.flip,
                                 rot90=data.rot90, min_size=data.min_size,
                                 cache_images=data.cache_images)
        self.sampler = ShardSampler(len(self.dataset), data.batch_size, seed=seed, rank=rank,
                                    world_size=self.dist.world_size, start_step=self.step)
        self.loader = make_loader(self.dataset, self.sampler, num_workers=data.num_workers,
                                  pin_memory=self.device.type == "cuda")
        self.pipeline = None
        if data.scale > 1:
            from realsr_cli.training.degradations import build_pipeline

            self.pipeline = build_pipeline(data.pipeline, data.scale)

        val = getattr(cfg, "val", None)
        self.valset = None
        if val is not None and val.lq_dir and self.dist.is_main:
            # SSIM's 11 px window must fit after cropping data.scale px from each side
            self.valset = PairedFolder(val.lq_dir, val.hq_dir, val.max_images,
                                       min_size=11 + 2 * data.scale)

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        for name, net in list(self.stage.nets.items()):
            if any(p.requires_grad for p in net.parameters()):
                self.stage.nets[name] = DDP(net, device_ids=ids,
                                            find_unused_parameters=self.stage_cls.find_unused_parameters)

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt["stage"] != self.stage_cls.name:
            raise UsageError(f"{path} is a {ckpt['stage']!r} checkpoint, not {self.stage_cls.name!r}")
        for name in self.stage.nets:
            if name not in ckpt["nets"]:
                raise UsageError(f"{path} has no weights for network {name!r}")
            self.stage.net(name).load_state_dict(ckpt["nets"][name], strict=True)
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            else:
                log.warning("%s has no EMA weights; the EMA restarts from the current weights", path.name)
                self.ema.update(self.stage.net(self.stage_cls.ema_net), -1)
        for name, opt in self.optimizers.items():
            if name in ckpt["optimizers"]:
                opt.load_state_dict(ckpt["optimizers"][name])
            else:
                log.warning("%s has no state for optimizer %r; it starts fresh", path.name, name)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.stage.load_extra_state(ckpt.get("stage_state") or {})
        self.step = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        states = ckpt.get("rng") or []
        if len(states) == self.dist.world_size:
            self._rng_to_restore = states[self.dist.rank]
        else:
            log.warning("checkpoint written by %d process(es), resuming with %d: random streams of "
                        "the stage are re-seeded (data order and degradations are unaffected)",
                        len(states), self.dist.world_size)
            torch.manual_seed(sample_seed(self.config.run.seed, 4, self.step, self.dist.rank))
        data = ckpt.get("data", {})
        if data.get("global_batch") not in (None, self.config.data.batch_size):
            log.warning("data.batch_size changed since the checkpoint: the data order differs "
                        "from an uninterrupted run")
        log.info("resuming from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ the loop
    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and raise :class:`TrainingInterrupted`."""
        self._stop_requested = True

    def run(self) -> TrainResult:
        """Train from the current step to ``run.max_steps``; see the module docstring."""
        try:
            with self._signals():
                return self._loop()
        finally:
            distributed.teardown()

    def _loop(self) -> TrainResult:
        cfg, main = self.config, self.dist.is_main
        max_steps = cfg.run.max_steps
        if main:
            save_config(self.run_dir, cfg)
            self._trim_metrics()
            if self.hooks.on_start:
                self.hooks.on_start(self.step, max_steps)
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore, self.device)
            self._rng_to_restore = None
        batches: Iterator[dict[str, Tensor]] = iter(self.loader)
        self._train_mode()
        window: dict[str, list[float]] = {}
        lrs: dict[str, float] = {}
        last_train = last_val = None
        # nothing new to save until a step is taken (e.g. resuming a finished run)
        saved_at, checkpoint = self.step, self.resumed_from
        started = time.perf_counter() - self.elapsed
        interrupted = False
        nonfinite = 0  # consecutive steps with a non-finite loss
        val = getattr(cfg, "val", None)
        val_every = val.every if val is not None and val.lq_dir else 0  # the same on every rank

        while self.step < max_steps:
            if distributed.any_rank(self._stop_requested, self.device):
                interrupted = True
                break
            try:
                batch = next(batches)
            except Exception:
                if not self._stop_requested:  # a worker killed by Ctrl-C is no error
                    raise
                interrupted = True
                break
            step = self.step
            hq = batch["hq"].to(self.device, non_blocking=True)
            lq = degrade_batch(self.pipeline, hq, batch["key"], cfg.run.seed)
            for name, opt in self.optimizers.items():
                lrs[_lr_key(name)] = self.schedule.apply(opt, self.base_lr[name], step)
            losses = self.stage.train_step({"hq": hq, "lq": lq}, _StepContext(self, step))
            if self.scaler is not None:
                self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.stage.net(self.stage_cls.ema_net), step)
            self.step = step + 1
            bad = any(not math.isfinite(float(v)) for v in losses.values())
            nonfinite = nonfinite + 1 if distributed.any_rank(bad, self.device) else 0
            if nonfinite >= MAX_NONFINITE_STEPS:
                raise TrainingDiverged(
                    f"the loss was not finite (nan/inf) for {nonfinite} steps in a row, up to step "
                    f"{self.step}: the run diverged and was stopped",
                    hint=f"last good checkpoint: {checkpoint or 'none yet'}; lower optim.lr or set "
                    "run.grad_clip, then start again (or --resume from that checkpoint)",
                )
            for key, value in losses.items():
                acc = window.setdefault(key, [0.0, 0.0])
                acc[0] += float(value)
                acc[1] += 1
            if main and self.hooks.on_step:
                self.hooks.on_step(self.step, {k: float(v) for k, v in losses.items()})

            if self.step % cfg.run.log_every == 0 or self.step == max_steps:
                elapsed = time.perf_counter() - started
                last_train = self._log(window, lrs, elapsed)
                window = {}
            if val_every and (self.step % val_every == 0 or self.step == max_steps):
                last_val = self._validate() or last_val
            every = cfg.run.checkpoint_every
            if every and self.step % every == 0 and not nonfinite:  # never save a diverged state
                self.elapsed = time.perf_counter() - started
                checkpoint = self._save()
                saved_at = self.step

        self.elapsed = time.perf_counter() - started
        if saved_at != self.step and not nonfinite:
            checkpoint = self._save()
        if interrupted:
            if main:
                log.info("stopped at step %d; checkpoint %s", self.step, checkpoint)
            raise TrainingInterrupted(self.step, checkpoint)
        distributed.barrier()
        return TrainResult(self.run_dir, self.step, checkpoint, last_train, last_val)

    def _train_mode(self) -> None:
        for net in self.stage.nets.values():
            net.train()
        for module in self.stage.frozen():
            module.eval()

    # ------------------------------------------------------------------ logs
    def _trim_metrics(self) -> None:
        """Drop metric lines past the resumed step (written after the checkpoint, then lost)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["step"]) <= self.step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(".metrics.jsonl.part")
        tmp.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
        tmp.replace(path)

    def _write_record(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.hooks.on_record:
            self.hooks.on_record(record)

    def _log(self, window: dict[str, list[float]], lrs: dict[str, float], elapsed: float) -> dict[str, Any]:
        keys = sorted(window)
        flat = [v for k in keys for v in window[k]]
        total = distributed.all_reduce_sum(flat, self.device)
        record: dict[str, Any] = {"kind": "train", "step": self.step, "time": round(elapsed, 3)}
        record.update(lrs)
        for i, key in enumerate(keys):
            record[key] = total[2 * i] / max(total[2 * i + 1], 1.0)
        if self.dist.is_main:
            self._write_record(record)
        return record

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def _validate(self) -> dict[str, Any] | None:
        record = None
        if self.dist.is_main and self.valset is not None:
            from realsr_cli.evaluation import metrics

            scale = self.config.data.scale
            samples = self.config.val.samples
            folder = self.run_dir / "samples" / f"step_{self.step:07d}"
            psnrs, ssims = [], []
            with self._ema_weights():
                for net in self.stage.nets.values():
                    net.eval()
                for i in range(len(self.valset)):
                    stem, lq, hq = self.valset[i]
                    sr = self.stage.predict(lq[None].to(self.device)).float().cpu().clamp(0, 1)
                    hq = hq[None]
                    h, w = min(sr.shape[-2], hq.shape[-2]), min(sr.shape[-1], hq.shape[-1])
                    sr, hq = sr[..., :h, :w], hq[..., :h, :w]
                    psnrs.append(metrics.psnr(sr, hq, crop_border=scale))
                    ssims.append(metrics.ssim(sr, hq, crop_border=scale))
                    if i < samples:
                        _write_sample(folder / f"{stem}.png", lq[None], sr, hq)
            self._train_mode()
            record = {"kind": "val", "step": self.step, "psnr": float(np.mean(psnrs)),
                      "ssim": float(np.mean(ssims)), "images": len(psnrs)}
            self._write_record(record)
        distributed.barrier()
        return record

    @contextlib.contextmanager
    def _ema_weights(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the EMA net (validation sees what export writes)."""
        if self.ema is None:
            yield
            return
        net = self.stage.net(self.stage_cls.ema_net)
        backup = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.ema.state_dict())
        try:
            yield
        finally:
            net.load_state_dict(backup)

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> Path | None:
        rng = distributed.all_gather_objects(rng_state(self.device))
        if not self.dist.is_main:
            return None
        extra = self.stage.extra_state()
        check_plain(extra, f"{self.stage_cls.name}.extra_state()")
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "realsr_version": __version__,
            "stage": self.stage_cls.name,
            "step": self.step,
            "world_size": self.dist.world_size,
            "config": to_dict(self.config),
            "nets": {name: self.stage.net(name).state_dict() for name in self.stage.nets},
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": rng,
            "data": {"seed": self.config.run.seed, "global_batch": self.config.data.batch_size,
                     "position": self.step * self.config.data.batch_size},
            "stage_state": extra,
            "elapsed": self.elapsed,
        }
        return save_checkpoint(self.run_dir, state, keep=self.config.run.keep_checkpoints)

    # ------------------------------------------------------------------ signals
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: abort now, no checkpoint
            self._stop_requested = True
            if self.dist.is_main:
                log.warning("stopping after this step to write a checkpoint (Ctrl-C again aborts)")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _grad_scaler() -> Any:
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3


def _write_sample(path: Path, lq: Tensor, sr: Tensor, hq: Tensor) -> None:
    """LR (nearest-upsampled) | SR | HQ side by side, as an 8-bit PNG."""
    from realsr_cli.engine.io import ImageData, write_image

    lq_up = F.interpolate(lq.float(), size=sr.shape[-2:], mode="nearest")
    row = torch.cat([lq_up, sr, hq], dim=-1)[0].clamp(0, 1)
    write_image(path, ImageData(pixels=row.permute(1, 2, 0).numpy().astype(np.float32)))


def train(
    stage_cls: type[Stage],
    config: Any,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Build a :class:`Trainer` and run it (see there)."""
    return Trainer(stage_cls, config, run_dir, resume_from=resume_from, hooks=hooks).run()

