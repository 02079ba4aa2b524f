"""Device/dtype policy, seeded noise, OOM detection, free memory (engine/device.py)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from realsr_cli.engine import device as devices
from realsr_cli.errors import EXIT_DEVICE, DeviceError, OutOfMemoryError, UsageError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
no_accel = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU"
)
gpu = pytest.mark.gpu


# ---------------------------------------------------------------- resolve_device


@no_accel
def test_auto_is_cpu_without_accelerator():
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device() == torch.device("cpu")


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_cpu_names(name):
    assert devices.resolve_device(name) == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_missing_cuda_is_device_error_with_hint(name):
    with pytest.raises(DeviceError) as info:
        devices.resolve_device(name)
    assert info.value.exit_code == EXIT_DEVICE
    assert "--device cpu" in (info.value.hint or "")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_missing_mps_is_device_error():
    with pytest.raises(DeviceError, match="MPS"):
        devices.resolve_device("mps")


@pytest.mark.parametrize("name", ["banana", "cuda:x", "meta"])
def test_bad_names_are_usage_errors(name):
    with pytest.raises(UsageError):
        devices.resolve_device(name)


@gpu
def test_cuda_resolves_and_validates_index():
    assert devices.resolve_device("cuda").type == "cuda"
    assert devices.resolve_device("auto").type == "cuda"
    with pytest.raises(DeviceError, match="does not exist"):
        devices.resolve_device(f"cuda:{torch.cuda.device_count()}")


# ---------------------------------------------------------------- resolve_dtype

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # resolve_dtype looks only at .type for these cases


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("device", "precision", "half_ok", "expected"),
    [
        (CPU, "auto", True, torch.float32),
        (CPU, "fp32", True, torch.float32),
        (CPU, "bf16", True, torch.bfloat16),  # allowed on CPU (documented)
        (CUDA, "auto", True, torch.float16),
        (CUDA, "auto", False, torch.float32),
        (CUDA, "fp16", True, torch.float16),
        (CUDA, "FP32", False, torch.float32),
    ],
)
def test_resolve_dtype_policy(device, precision, half_ok, expected, caplog):
    caplog.set_level(logging.WARNING, logger=devices.__name__)
    assert devices.resolve_dtype(device, precision, half_ok) == expected
    assert not _warnings(caplog)


@pytest.mark.parametrize(
    ("device", "precision", "half_ok", "reason"),
    [
        (CPU, "fp16", True, "CPU"),
        (CPU, "bf16", False, "fp32 only"),
        (CUDA, "fp16", False, "fp32 only"),
    ],
)
def test_impossible_dtype_downgrades_with_one_warning(device, precision, half_ok, reason, caplog):
    caplog.set_level(logging.WARNING, logger=devices.__name__)
    assert devices.resolve_dtype(device, precision, half_ok) == torch.float32
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and reason in warnings[0].getMessage()


def test_unknown_precision_is_usage_error():
    with pytest.raises(UsageError):
        devices.resolve_dtype(CPU, "fp8", True)


# ---------------------------------------------------------------- generator / randn


def test_same_seed_same_noise():
    a = devices.randn((2, 3, 5, 7), generator=devices.make_generator(123), device="cpu")
    b = devices.randn((2, 3, 5, 7), generator=devices.make_generator(123), device="cpu")
    c = devices.randn((2, 3, 5, 7), generator=devices.make_generator(124), device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_noise_is_drawn_in_fp32_then_cast():
    a = devices.randn(
        (4, 4), generator=devices.make_generator(5), device="cpu", dtype=torch.float64
    )
    b = devices.randn((4, 4), generator=devices.make_generator(5), device="cpu")
    assert a.dtype == torch.float64 and torch.equal(a, b.double())


def test_random_seed_is_retrievable():
    gen = devices.make_generator(None)
    seed = gen.initial_seed()
    first = torch.randn(8, generator=gen)
    assert torch.equal(first, torch.randn(8, generator=devices.make_generator(seed)))
    assert devices.make_generator(7).initial_seed() == 7
    assert devices.make_generator(2**64 - 1).initial_seed() == 2**64 - 1


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True])
def test_invalid_seed(seed):
    with pytest.raises(UsageError):
        devices.make_generator(seed)


@gpu
def test_same_noise_on_cuda_and_cpu():
    cpu = devices.randn((3, 9), generator=devices.make_generator(11), device="cpu")
    cuda = devices.randn((3, 9), generator=devices.make_generator(11), device="cuda")
    assert torch.equal(cpu, cuda.cpu())


# ---------------------------------------------------------------- is_oom


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory: you tried to allocate 100 bytes"
        ),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        MemoryError(),
        OutOfMemoryError("ours"),
    ],
)
def test_is_oom_true(exc):
    assert devices.is_oom(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("shape mismatch"),
        ValueError("out of memory"),
        KeyError("x"),
        OSError(28, "No space"),
    ],
)
def test_is_oom_false(exc):
    assert not devices.is_oom(exc)


# ---------------------------------------------------------------- free memory


def test_free_memory_cpu_positive():
    assert devices.free_memory_bytes(CPU) > 0


def test_free_memory_cpu_falls_back_to_sysconf(monkeypatch):
    def no_open(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(devices, "open", no_open, raising=False)
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    assert devices.free_memory_bytes(CPU) > 0


@gpu
def test_free_memory_cuda_positive():
    assert devices.free_memory_bytes(torch.device("cuda")) > 0


def test_release_memory_on_cpu_is_harmless():
    devices.release_memory(CPU)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("cpu_bf16", [True, False])
@pytest.mark.parametrize("half_ok", [True, False])
def test_cpu_auto_picks_bf16_only_where_detected_and_measured_safe(monkeypatch, native, cpu_bf16, half_ok):
    """Issue 15: `--precision auto` on the CPU runs bf16 only on a CPU with native bf16 (detected
    from its flags) for an architecture marked safe; fp32 stays fp32; unsafe archs never get bf16."""
    from realsr_cli.engine import device as dev_mod

    monkeypatch.setattr(dev_mod, "_CPU_BF16", native)
    cpu = torch.device("cpu")
    want = torch.bfloat16 if native and cpu_bf16 and half_ok else torch.float32
    assert dev_mod.resolve_dtype(cpu, "auto", half_ok, cpu_bf16) == want
    assert dev_mod.resolve_dtype(cpu, "fp32", half_ok, cpu_bf16) == torch.float32


def test_only_measured_architectures_may_run_bf16_on_the_cpu():
    from realsr_cli.registry.archs import ARCHITECTURES

    marked = {name for name, f in ARCHITECTURES.items() if f().cpu_bf16}
    # measured (docs/benchmarks.md "CPU fast path"); FeMaSR only with its code decision kept in fp32
    assert marked == {"bicres", "femasr", "ugtsr"}
    assert not any(f().cpu_bf16 and not f().half_ok for f in ARCHITECTURES.values())


def test_channels_last_output_equals_nchw(tmp_path):
    """bf16 on the CPU loads channels-last; fp32 stays NCHW (thread-count-independent bits); the
    layout itself changes values only within fp32 tolerance."""
    from realsr_cli.engine import api
    from realsr_cli.engine.runner import RunOptions, run_model
    from realsr_cli.models.bicres import BicResConfig, BicResNet
    from realsr_cli.registry.loader import save_weights

    torch.manual_seed(0)
    net = BicResNet(BicResConfig(width=8, depth=2))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    path = tmp_path / "b.safetensors"
    save_weights(path, arch="bicres", config=net.config, state_dict=net.state_dict())
    half = api.load_model(str(path), device="cpu", precision="bf16")
    assert half.channels_last and half.net.head.weight.is_contiguous(memory_format=torch.channels_last)
    model = api.load_model(str(path), device="cpu", precision="fp32")
    assert model.spec.channels_last and not model.channels_last
    assert not model.net.head.weight.is_contiguous(memory_format=torch.channels_last)
    lq = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(1))
    ref = run_model(model, lq, RunOptions(tile=0)).sr
    model.net.to(memory_format=torch.channels_last)
    fast = model(lq.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
