"""Training checkpoints (exact resume) and ``export`` to registry-loadable safetensors.

A checkpoint is one ``torch.save`` dict of plain types and tensors, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling)::

    format = "realsr-train"  format_version = 1  realsr_version  stage  step  world_size
    config        the resolved stage config (to_dict)
    nets          {name: state_dict}              ema          state_dict | None
    optimizers    {name: state_dict}              scaler       state_dict | None
    rng           [per rank: python, numpy, torch, cuda]    (see rng_state())
    data          {"seed", "global_batch", "position"}      (the data order is a function of these)
    stage_state   Stage.extra_state()             elapsed      seconds trained so far

Files: ``RUN_DIR/checkpoints/step_0001000.pt`` (the newest ``keep`` are kept) and ``last.pt``
(always the newest). Writes go to a temporary file, flushed to disk (fsync) and renamed into
place, so a crash, a kill -9 or a full disk never leaves a half-written checkpoint under those
names and the previous one stays intact; the temporary file of a writer killed mid-write is
removed by the next save. A checkpoint that still cannot be read (copied truncated, disk damage)
is refused with its name and the older ones to resume from.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from realsr_cli._config import from_dict
from realsr_cli.errors import ConfigError, FileWriteError, UsageError, WeightsError

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "ExportReport",
    "checkpoint_dir",
    "export_checkpoint",
    "find_checkpoint",
    "has_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "realsr-train"
CHECKPOINT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
#: the temporary file of a checkpoint write (``mkstemp`` in :func:`save_checkpoint`)
_PART_FILE = re.compile(r"^\.step_\d+\.pt\..+\.part$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _step_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def has_checkpoints(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a checkpoint (``last.pt`` or a step file)."""
    return (checkpoint_dir(run_dir) / "last.pt").is_file() or bool(_step_files(run_dir))


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``last.pt``, else the newest step file, else None."""
    last = checkpoint_dir(run_dir) / "last.pt"
    if last.is_file():
        return last
    steps = _step_files(run_dir)
    return steps[-1][1] if steps else None


# ----------------------------------------------------------------------------- RNG state


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------- save / load

_PLAIN = (str, int, float, bool, type(None), Tensor, torch.Size, torch.dtype)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise :class:`ConfigError` unless ``obj`` is made of dicts/lists/tuples, scalars and tensors
    (what ``torch.load(weights_only=True)`` accepts); names the first offending entry."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            check_plain(k, where)
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise ConfigError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, numbers, strings, "
        "lists and dicts (so they load with weights_only=True)"
    )


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], *, keep: int = 3) -> Path:
    """Write ``state`` as ``step_XXXXXXX.pt`` and ``last.pt`` atomically; keep the newest ``keep``
    step files. Returns the step file. A failed write (full or read-only disk) raises
    :class:`FileWriteError` and leaves the previous checkpoints as they were."""
    folder = checkpoint_dir(run_dir)
    step = int(state["step"])
    dst = folder / f"step_{step:07d}.pt"
    tmp = ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # a writer killed mid-write (kill -9) left its temporary file
            if _PART_FILE.match(stale.name):
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
        # last.pt: a hard link to the same bytes where the filesystem allows, else a copy
        try:
            os.link(dst, tmp)
        except OSError:
            shutil.copyfile(dst, tmp)
        os.replace(tmp, folder / "last.pt")
        _fsync_dir(folder)
    except OSError as exc:
        previous = find_checkpoint(run_dir)
        raise FileWriteError(
            f"could not write the checkpoint of step {step} to {folder}: {exc.strerror or exc}",
            hint=("free disk space or make the folder writable, then resume: the previous "
                  f"checkpoint {previous} is intact" if previous is not None and previous != dst
                  else "free disk space or make the folder writable, then run again"),
        ) from exc
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    for old_step, path in _step_files(run_dir)[:-keep]:
        if old_step != step:
            path.unlink(missing_ok=True)
    log.debug("checkpoint %s", dst)
    return dst


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint on the CPU (``weights_only=True``) and check its format."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint not found: {p}", hint="pass a file from RUN_DIR/checkpoints/")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UsageError(
            f"{p} is not a readable realsr training checkpoint (truncated or damaged: {exc})",
            hint=_older_hint(p),
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{p} is not a realsr training checkpoint")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise UsageError(
            f"{p} has checkpoint format {state.get('format_version')}; this realsr reads "
            f"{CHECKPOINT_VERSION}",
            hint="resume with the realsr version that wrote it",
        )
    return state


def _older_hint(bad: Path) -> str:
    """What to do about an unreadable checkpoint: move it (and its hard links, e.g. ``last.pt``)
    away so that ``--resume`` takes the newest other step file."""
    candidates = [bad.parent / "last.pt"] + [f for _, f in reversed(_step_files(bad.parent.parent))]
    same, others = [], []
    for f in candidates:
        try:
            (same if os.path.samefile(f, bad) else others).append(f)
        except OSError:
            continue
    if not others:
        return "no other checkpoint in that folder; start the run again"
    moves = "; ".join(f"mv {f} {f}.bad" for f in (same or [bad]))
    return f"move it away ({moves}), then the same command with --resume continues from {others[0]}"


# ----------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportReport:
    path: Path
    arch: str
    stage: str
    step: int
    ema: bool
    tensors: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "arch": self.arch, "stage": self.stage, "step": self.step,
                "ema": self.ema, "tensors": self.tensors}


def _check_partial(net: torch.nn.Module, state_dict: dict, *, what: str) -> None:
    """A partial export: every key exists in the architecture with the same shape."""
    expected = net.state_dict()
    unknown = sorted(k for k in state_dict if k not in expected)
    wrong = sorted(
        k for k in state_dict if k in expected and expected[k].shape != state_dict[k].shape
    )
    if unknown or wrong or not state_dict:
        raise WeightsError(
            f"{what} do not fit the architecture: {len(unknown)} unknown key(s) "
            f"{unknown[:3]}, {len(wrong)} shape mismatch(es) {wrong[:3]}",
            hint="this is a bug in the stage's export(); please report it",
        )


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    use_ema: bool = True,
    stage_cls: type | None = None,
) -> ExportReport:
    """Write the weights of a training checkpoint as a realsr safetensors file.

    The stage (from the checkpoint, or ``stage_cls``) maps its networks' state dicts to
    ``(arch, config, state_dict)``; the result is checked to load ``strict=True`` into the
    registry architecture before it is written with :func:`registry.loader.save_weights`, so
    ``realsr upscale --weights OUTPUT`` can use it. EMA weights are used when the run kept them
    and ``use_ema`` is true.
    """
    from realsr_cli.registry.archs import get_arch
    from realsr_cli.registry.loader import load_state_dict_strict, save_weights

    if not str(output).endswith(".safetensors"):
        raise UsageError(f"{output}: exported weights must be a .safetensors file",
                         hint="e.g. -o weights.safetensors")
    ckpt = load_checkpoint(checkpoint)
    if stage_cls is None:
        from realsr_cli.training.stages import get_stage

        stage_cls = get_stage(ckpt["stage"])
    config = from_dict(stage_cls.config_cls, ckpt["config"])
    stage = stage_cls(config, torch.device("cpu"))
    nets = dict(ckpt["nets"])
    ema = use_ema and ckpt.get("ema") is not None and stage_cls.ema_net is not None
    if ema:
        nets[stage_cls.ema_net] = ckpt["ema"]
    arch, arch_config, state_dict = stage.export(nets)
    spec = get_arch(arch)
    net = spec.build(arch_config)
    what = f"the {arch} weights exported by {stage_cls.name}"
    complete = getattr(stage_cls, "export_is_complete", True)
    if complete:
        load_state_dict_strict(net, state_dict, what=what)
    else:
        _check_partial(net, state_dict, what=what)
    meta = {"stage": str(ckpt["stage"]), "step": str(ckpt["step"]), "ema": str(ema).lower(),
            "source": "realsr train export"}
    if not complete:
        meta["partial"] = "true"
    path = save_weights(output, arch=arch, config=arch_config, state_dict=state_dict, extra_metadata=meta)
    return ExportReport(Path(path), arch, str(ckpt["stage"]), int(ckpt["step"]), ema, len(state_dict))
