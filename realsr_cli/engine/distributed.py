"""torchrun environment for inference: which rank this process is, its device, a few collectives.

The interface is torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). Without it (or with ``WORLD_SIZE=1``) nothing is initialised and every helper is
a cheap no-op, so the same code runs as one process, on one node with several GPUs
(``torchrun --nproc-per-node N``) and on several nodes.

Each rank computes on ``cuda:LOCAL_RANK`` when the device policy picks CUDA, otherwise on the
device it picks (CPU, or the one MPS device). Only small pickled Python objects cross between
ranks (plan digests, per-rank summaries), so the process group always uses Gloo over TCP: no GPU
memory for communicators, and a rank that finishes its share early simply waits for the slowest
one (up to :data:`WAIT`) instead of tripping NCCL's collective watchdog.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from realsr_cli.engine.device import resolve_device
from realsr_cli.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "WAIT",
    "DistInfo",
    "all_gather_objects",
    "barrier",
    "env_info",
    "gather_objects",
    "local_main_first",
    "process_group",
    "rank_device",
    "sigterm_as_interrupt",
]

#: how long a collective may wait for the other ranks (the last gather waits for the slowest rank)
WAIT = timedelta(days=7)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} is not an integer") from None


def env_info() -> DistInfo:
    """Rank/world from torchrun's environment variables (single process when they are unset)."""
    info = DistInfo(
        rank=_env_int("RANK", 0),
        local_rank=_env_int("LOCAL_RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
    )
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise UsageError(f"invalid torchrun environment: RANK={info.rank} WORLD_SIZE={info.world_size}")
    return info


def rank_device(device_name: str, info: DistInfo) -> torch.device:
    """The device policy (:func:`resolve_device`), then ``cuda:LOCAL_RANK`` for any CUDA choice
    when several ranks run (``auto``, ``cuda`` and ``cuda:N`` alike: one GPU per rank)."""
    device = resolve_device(device_name)
    if not info.enabled or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise DeviceError(
            f"LOCAL_RANK {info.local_rank} but only {count} GPU(s) visible on this node",
            hint="use --nproc-per-node <= the number of GPUs per node",
        )
    return torch.device("cuda", info.local_rank)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def process_group(device_name: str = "auto", *, timeout: timedelta = WAIT) -> Iterator[tuple[DistInfo, torch.device]]:
    """``(info, device)`` of this process; under torchrun, joined to a Gloo process group that is
    left again on exit. A group someone else already initialised is used and kept."""
    info = env_info()
    device = rank_device(device_name, info)
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        yield info, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_available():
        raise DeviceError(f"WORLD_SIZE={info.world_size} but this torch build has no torch.distributed")
    try:
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=timeout)
    except ValueError as exc:  # e.g. MASTER_ADDR missing: not started by torchrun
        raise UsageError(
            f"cannot join the other {info.world_size - 1} rank(s): {exc}",
            hint="start several processes with torchrun (docs/cli.md, 'Many GPUs / many machines')",
        ) from None
    log.info("rank %d/%d (local %d) on %s", info.rank, info.world_size, info.local_rank, device)
    try:
        yield info, device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if _active():
        dist.barrier()


@contextlib.contextmanager
def local_main_first(info: DistInfo, enabled: bool = True) -> Iterator[None]:
    """Run the body on each node's local rank 0 first, then on the node's other ranks (e.g. one
    download into the shared cache instead of one per GPU). Every rank passes one barrier."""
    staged = enabled and _active()
    if staged and info.local_rank != 0:
        barrier()
    yield
    if staged and info.local_rank == 0:
        barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any) -> list[Any] | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` on the other ranks."""
    if not _active():
        return [obj]
    main = dist.get_rank() == 0
    out: list[Any] | None = [None] * dist.get_world_size() if main else None
    dist.gather_object(obj, out, dst=0)
    return out


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block: torchrun forwards the signal it gets (SIGINT
    from Ctrl-C, SIGTERM from a scheduler or its own shutdown) to every worker, and a
    KeyboardInterrupt lets a batch stop between writes and still report. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
