"""The one device/dtype policy (STYLE §6): pick a device, pick a dtype, seed noise, spot OOM.

* ``auto`` device = cuda, then mps, then cpu.
* ``auto`` precision = fp16 on CUDA for architectures that allow half precision; bf16 on a CPU with
  native bf16 for architectures measured safe there (``ArchSpec.cpu_bf16``); fp32 elsewhere.
  fp16 rather than bf16: it keeps 3 more mantissa bits (visible in 16-bit outputs), and the one
  thing bf16 would buy, fp32's range, is covered by the runner's per-tile fp32 redo of any tile that
  overflows to NaN/Inf. bf16 is available on request.
* A dtype the device cannot run is downgraded to fp32 with one logged warning: fp16 on CPU (most
  CPU kernels lack it), bf16 on a GPU without bf16 support, any half dtype for an architecture with
  ``half_ok=False``. bf16 on CPU is allowed (oneDNN runs it; slow on CPUs without AVX512-BF16).
* Noise is drawn from a seeded CPU generator in float32 and then moved/cast, so one seed gives the
  same noise on every device and dtype (up to the final cast).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import secrets
import sys
from typing import Any

import torch

from realsr_cli import _noise
from realsr_cli.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "free_memory_bytes",
    "is_oom",
    "make_generator",
    "randn",
    "release_memory",
    "resolve_device",
    "resolve_dtype",
    "cpu_native_bf16",
    "tune_cpu_allocator",
    "trim_cpu_heap",
    "cpuinfo_field",
]

#: accepted ``precision`` names and their dtypes (``auto`` is resolved per device)
PRECISIONS: dict[str, torch.dtype | None] = {
    "auto": None,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_HALF = (torch.float16, torch.bfloat16)
_MAX_SEED = 2**64 - 1


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` -> an available :class:`torch.device`.

    Raises :class:`UsageError` for a name that is not a device, :class:`DeviceError` (exit 5) for a
    device this machine does not have.
    """
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA is not available on this machine (no GPU, or torch was built without CUDA)",
                hint="use --device cpu (or --device auto)",
            )
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise DeviceError(
                f"{text} does not exist: {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})",
                hint="pick a visible GPU, e.g. --device cuda:0, or use --device cpu",
            )
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(
                "the Apple MPS backend is not available on this machine",
                hint="use --device cpu (or --device auto)",
            )
        return torch.device("mps")
    raise UsageError(f"unsupported device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps")


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":
        try:  # macOS < 14 cannot run bf16 on MPS
            (torch.ones(2, device=device, dtype=torch.bfloat16) * 2).sum().item()
        except (RuntimeError, TypeError):
            return False
        return True
    return False


def cpu_native_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AVX512-BF16 or AMX-BF16), read from its flags
    (Linux ``/proc/cpuinfo``; elsewhere False: not detected, so not claimed). Cached."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        flags = _cpu_flags()
        _CPU_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return _CPU_BF16


def _cpu_flags() -> list[str]:
    return (cpuinfo_field("flags") or "").split()


def cpuinfo_field(name: str) -> str | None:
    """The value of the first ``name`` line of Linux's ``/proc/cpuinfo`` (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)), None)


_CPU_BF16: bool | None = None
_ALLOCATOR_TUNED: bool | None = None
#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory for reuse instead of returning it to the OS (glibc only; once).

    glibc serves blocks above 32 MiB (every large activation) with a fresh ``mmap`` and unmaps them
    on free, so each such tensor pays a page fault per 4 KiB page on first touch: elementwise ops
    on large tensors ran 5-7x slower than on reused memory, the default model's 512-px x4 upscale
    1.5x slower (docs/benchmarks.md, "CPU allocator"). ``mallopt(M_MMAP_MAX, 0)`` serves them from
    the heap and a 2 GiB trim threshold keeps freed memory mapped; the cost is a higher peak RSS
    (about 1.3x on the whole-image runs measured). The CLI calls this for CPU models; the Python
    API leaves the process's allocator alone unless the caller asks. ``REALSR_MALLOC=system``
    turns it off. Returns whether the settings are active.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    libc = None if os.environ.get("REALSR_MALLOC", "").strip().lower() == "system" else _glibc()
    _ALLOCATOR_TUNED = bool(libc) and libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    log.debug("CPU allocator: heap-only, freed memory kept (%s)", "on" if _ALLOCATOR_TUNED else "off")
    return _ALLOCATOR_TUNED


@functools.cache
def _glibc() -> Any:
    """glibc as a ctypes library (for ``mallopt``/``malloc_trim``; looked up once), or None on
    any other C library or platform."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def resolve_dtype(
    device: torch.device, precision: str = "auto", half_ok: bool = True, cpu_bf16: bool = False
) -> torch.dtype:
    """Pick the compute dtype for ``device`` (see the module docstring for the policy).

    ``precision`` is ``"auto" | "fp32" | "fp16" | "bf16"``; ``half_ok`` is the architecture's
    ``ArchSpec.half_ok``, ``cpu_bf16`` its ``ArchSpec.cpu_bf16`` (bf16 measured safe on the CPU):
    ``auto`` on a CPU with native bf16 (:func:`cpu_native_bf16`, detected) picks bf16 only for such
    an architecture. An impossible request is downgraded to fp32 with one warning.
    """
    key = (precision or "auto").strip().lower()
    if key not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint="use auto, fp32, fp16 or bf16")
    wanted = PRECISIONS[key]
    if wanted is None:  # auto
        if device.type == "cpu":
            return torch.bfloat16 if half_ok and cpu_bf16 and cpu_native_bf16() else torch.float32
        return torch.float16 if device.type == "cuda" and half_ok else torch.float32
    if wanted not in _HALF:
        return wanted

    reason = None
    if not half_ok:
        reason = "this architecture runs in fp32 only"
    elif wanted == torch.float16 and device.type == "cpu":
        reason = "fp16 is not supported on the CPU"
    elif wanted == torch.bfloat16 and not _bf16_supported(device):
        reason = f"bf16 is not supported on {device}"
    if reason is not None:
        log.warning("%s requested but %s; running in fp32 instead", key, reason)
        return torch.float32
    return wanted


def trim_cpu_heap() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    A long batch of many image sizes leaves per-shape allocations of oneDNN scattered through the
    heap; trimming every few new image sizes keeps that from accumulating (docs/reliability.md, "The
    last long batch"). Returns whether anything was released.
    """
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))


def make_generator(seed: int | None = None) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``seed``; ``None`` draws a fresh random seed.

    The seed actually used is always ``generator.initial_seed()`` (write that to the manifest).
    """
    if seed is None:
        seed = secrets.randbits(32)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise UsageError(f"invalid seed {seed!r}", hint="use an integer between 0 and 2**64-1")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


#: standard normal noise drawn on the CPU in float32, then cast and moved: the package's one noise
#: rule (:func:`realsr_cli._noise.randn`), re-exported for the engine's callers
randn = _noise.randn


_OOM_MESSAGES = (
    "out of memory",  # CUDA / MPS / HIP: "CUDA out of memory", "MPS backend out of memory"
    "can't allocate memory",  # DefaultCPUAllocator
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
)


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` means "ran out of memory" on any device (so a smaller tile may work)."""
    if isinstance(exc, MemoryError):
        return True
    torch_oom = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    if torch_oom is not None and isinstance(exc, torch_oom):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(m in text for m in _OOM_MESSAGES)
    return False


def release_memory(device: torch.device) -> None:
    """Return cached allocator blocks after an OOM so the retry starts from a clean slate."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


def _cpu_available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no answer on this platform
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def free_memory_bytes(device: torch.device) -> int:
    """Bytes a new allocation on ``device`` may use now (0 when unknown).

    CUDA: driver-free memory plus what torch's caching allocator holds but does not use. MPS: the
    recommended working set minus what torch has allocated. CPU: ``MemAvailable`` from
    /proc/meminfo, else psutil, else ``os.sysconf``.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type == "mps":
        mps = torch.mps
        recommended = getattr(mps, "recommended_max_memory", None)
        if recommended is None:  # torch < 2.5: no cheap answer; assume the system RAM answer
            return _cpu_available_bytes()
        return max(0, int(recommended()) - int(mps.current_allocated_memory()))
    return _cpu_available_bytes()
