"""`realsr doctor`: what a user runs when something is off, and pastes into a bug report.

:func:`diagnose` collects the environment (realsr, Python, torch and its CUDA/ROCm/MPS build,
devices with memory, compute capability and native half precisions, threads, the weights cache
and which registry weights it holds, with their sha256 re-checked, optional extras) and runs a
self-test on every device it is asked to: a small random BicRes network (bicubic + a non-zero
residual, so both paths matter) through :func:`run_model` untiled and tiled (32-px LR tiles), in
every precision the device runs natively, each compared with the CPU fp32 untiled output.

Pass thresholds (max |difference| on the [0,1] scale, over a 96x80 LR image, x4):

* fp32, tiled or not, any device: ``FP32_TOL = 1e-4`` (float rounding; the tiling of this model is
  exact: its receptive field is inside the tile margin);
* bf16: ``BF16_TOL = 0.03`` (8 mantissa bits: ~0.4 % relative per operation, a few steps);
* fp16: ``FP16_TOL = 5e-3`` (11 mantissa bits).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realsr_cli import __version__
from realsr_cli.engine import device as devices
from realsr_cli.engine.model import LoadedModel
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.errors import RealSRError

__all__ = ["BF16_TOL", "FP16_TOL", "FP32_TOL", "Check", "DoctorReport", "diagnose"]

FP32_TOL = 1e-4
BF16_TOL = 0.03
FP16_TOL = 5e-3
_TOL = {"fp32": FP32_TOL, "bf16": BF16_TOL, "fp16": FP16_TOL}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Check:
    """One self-test: ``device``, ``precision``, ``tiled``; ``max_abs_diff`` vs CPU fp32 (None
    when it did not run), ``tolerance``, ``ok``, ``error`` (why it failed to run), ``seconds``."""

    device: str
    precision: str
    tiled: bool
    max_abs_diff: float | None
    tolerance: float
    ok: bool
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision, "tiled": self.tiled,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "ok": self.ok,
                "seconds": round(self.seconds, 4), "error": self.error}


@dataclass
class DoctorReport:
    environment: dict[str, Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    weights: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, str | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """All self-tests passed and no cached weights file failed its sha256."""
        return all(c.ok for c in self.checks) and all(w.get("ok", True) is not False for w in self.weights)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "environment": self.environment, "devices": self.devices,
                "cache": self.cache, "weights": self.weights, "extras": self.extras,
                "checks": [c.to_json() for c in self.checks]}


def _environment() -> dict[str, Any]:
    return {
        "realsr": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "rocm_build": getattr(torch.version, "hip", None),
        "mps_build": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_built()),
        "threads": torch.get_num_threads(),
    }


def _device_rows() -> list[dict[str, Any]]:
    rows = [{"device": "cpu", "name": devices.cpuinfo_field("model name") or platform.processor() or platform.machine(),
             "memory_free_bytes": devices.free_memory_bytes(torch.device("cpu")),
             "precisions": ["fp32", "bf16"] if devices.cpu_native_bf16() else ["fp32"]}]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            dev = torch.device(f"cuda:{i}")
            props = torch.cuda.get_device_properties(i)
            cap = f"{props.major}.{props.minor}"
            precisions = ["fp32", "fp16"] + (["bf16"] if devices._bf16_supported(dev) else [])
            rows.append({"device": str(dev), "name": props.name, "compute_capability": cap,
                         "memory_total_bytes": props.total_memory,
                         "memory_free_bytes": devices.free_memory_bytes(dev), "precisions": precisions})
    if devices._mps_available():
        dev = torch.device("mps")
        rows.append({"device": "mps", "name": "Apple GPU (MPS)",
                     "precisions": ["fp32", "fp16"] + (["bf16"] if devices._bf16_supported(dev) else [])})
    return rows


def _extras() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("spandrel", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _weights(verify: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from realsr_cli.registry import catalog, hub

    root = hub.cache_root()
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    cache = {"folder": str(root), "exists": root.exists(), "free_bytes": shutil.disk_usage(probe).free}
    rows = []
    for entry in catalog.load_catalog().entries:
        path = hub.cached_path(entry)
        if path is None:
            continue
        row: dict[str, Any] = {"id": entry.id, "path": str(path), "bytes": os.path.getsize(path)}
        if verify:
            try:
                row["ok"], row["sha256"] = hub.verify(entry)
            except RealSRError as exc:
                row["ok"], row["error"] = False, exc.message
        rows.append(row)
    return cache, rows


def _probe_model(dev: torch.device, dtype: torch.dtype) -> LoadedModel:
    from realsr_cli.registry.archs import get_arch

    spec = get_arch("bicres")
    config = spec.config_cls(scale=4, width=16, depth=3)
    torch.manual_seed(0)
    net = spec.build(config)
    with torch.no_grad():
        net.tail.weight.normal_(0.0, 0.02)  # a residual that matters, not bicubic alone
    net.eval().requires_grad_(False).to(device=dev, dtype=dtype)
    return LoadedModel(spec=spec, config=config, net=net, device=dev, dtype=dtype, weights_id="doctor-probe")


def _self_test(device_rows: list[dict[str, Any]], wanted: set[str] | None) -> list[Check]:
    lq = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = run_model(_probe_model(torch.device("cpu"), torch.float32), lq, RunOptions(tile=0)).sr
    checks = []
    for row in device_rows:
        name = row["device"]
        if wanted is not None and name not in wanted and name.split(":")[0] not in wanted:
            continue
        for precision in row["precisions"]:
            for tiled in (False, True):
                opts = RunOptions(tile=32, tile_overlap=16) if tiled else RunOptions(tile=0)
                tol = _TOL[precision]
                t0 = time.perf_counter()
                try:
                    model = _probe_model(torch.device(name), _DTYPES[precision])
                    with torch.inference_mode():
                        out = run_model(model, lq, opts).sr
                    diff = float((out.float() - reference).abs().max())
                    ok = diff <= tol  # NaN compares False: a NaN output fails
                    checks.append(Check(name, precision, tiled, diff, tol, ok, time.perf_counter() - t0))
                except Exception as exc:  # a device that cannot run it at all fails the check
                    checks.append(Check(name, precision, tiled, None, tol, False, time.perf_counter() - t0,
                                        error=f"{type(exc).__name__}: {exc}"))
    return checks


def diagnose(device: str = "all", *, self_test: bool = True, verify_weights: bool = True) -> DoctorReport:
    """The full report. ``device``: ``all`` (every device found), or ``cpu``/``cuda``/``cuda:N``/
    ``mps`` to self-test only that one (the environment is always reported whole)."""
    report = DoctorReport(environment=_environment(), devices=_device_rows(), extras=_extras())
    report.cache, report.weights = _weights(verify_weights)
    if self_test:
        wanted = None if device == "all" else {device}
        if wanted is not None and not any(r["device"] == device or r["device"].split(":")[0] == device
                                          for r in report.devices):
            from realsr_cli.errors import DeviceError

            raise DeviceError(f"device {device!r} is not available here",
                              hint="see the devices listed by `realsr doctor --no-self-test`")
        report.checks = _self_test(report.devices, wanted)
    return report
