"""torchrun environment -> process group, device and the few collectives the trainer needs.

The interface is torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), so the same code runs single-process, on one node with several
GPUs (``torchrun --nproc_per_node N``) and on several nodes. Without those variables (or with
``WORLD_SIZE=1``) nothing is initialised and every helper is a cheap no-op.

Backend: NCCL for CUDA, Gloo for CPU (useful for tests and tiny runs). Each rank uses
``cuda:LOCAL_RANK``. Only rank 0 writes files and reports progress (:attr:`DistInfo.is_main`).
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from realsr_cli.engine.device import resolve_device
from realsr_cli.engine.distributed import (  # shared with `realsr batch`
    DistInfo,
    all_gather_objects,
    barrier,
    env_info,
)
from realsr_cli.errors import DeviceError

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "env_info",
    "rank",
    "setup",
    "teardown",
]


def setup(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Pick this process's device and, under torchrun, join the process group.

    ``device_name`` is ``run.device`` (``auto|cpu|cuda|cuda:N|mps``). Single process: the
    :func:`engine.device.resolve_device` policy. Under torchrun: ``cuda:LOCAL_RANK`` with NCCL when
    the policy picks CUDA, otherwise the CPU with Gloo (MPS cannot run distributed).
    """
    info = env_info()
    device = resolve_device(device_name)
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPU(s) visible",
                hint="use --nproc_per_node <= the number of GPUs",
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DeviceError(
            f"distributed training is not supported on {device.type}",
            hint="use CUDA GPUs, or --set run.device=cpu",
        )
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    log.info("rank %d/%d on %s (%s)", info.rank, info.world_size, device, backend)
    return info, device


def teardown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank in the joined process group; 0 when none is joined."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64 on the wire)."""
    if not _active() or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. "stop requested")."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


