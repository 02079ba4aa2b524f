"""Export one model's single-pass inference to ONNX (``realsr export``).

What is exported is exactly what the engine runs for one tile: ``net.upscale(lq)`` including the
model's own padding and crop, on the CPU in fp32. Tiling, blending, clamping and image I/O stay
outside the graph. Input ``lq`` (B,3,H,W) float32 RGB in [0,1]; output ``sr`` (B,3,sH,sW) float32,
NOT clamped (clamp to [0,1] after blending tiles, as the engine does).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + ONNX Script; needs ``onnx`` and
``onnxscript``). The TorchScript exporter (``dynamo=False``) freezes the chunked codebook search and
the mirror-padding loop at the traced sizes; its FeMaSR graph fails in onnxruntime (docs/cli.md).
While tracing, :func:`_export_mode` makes two value-preserving changes, undone afterwards: the
codebook search runs unchunked and Swin blocks compute their shifted-window mask for the actual size
(the stored one fits one size only), so no traced size leaks into a dynamic graph.

Which architectures export: the literal table :data:`EXPORT_RULES`. The file goes to a temporary
name in the destination folder, renamed into place when complete (with ``check``: and verified).

Size (over STYLE's ~300-line guide): per-architecture export rules, size validation and the onnxruntime check belong to one command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from realsr_cli import __version__
from realsr_cli.engine.model import LoadedModel
from realsr_cli.errors import ModelError, RealSRError, UsageError
from realsr_cli.registry.capabilities import ExportOverrides, has

log = logging.getLogger(__name__)

__all__ = [
    "CHECK_ATOL",
    "EXPORT_RULES",
    "ExportOptions",
    "ExportReport",
    "ExportRule",
    "check_exportable",
    "export_onnx",
    "load_for_export",
]

#: the torch.export-based exporter writes opset 18 or newer
MIN_OPSET = 18
#: largest |onnxruntime - PyTorch| that ``check`` accepts (outputs are on the [0,1] scale)
CHECK_ATOL = 1e-3
_INSTALL_HINT = 'install the ONNX extra: pip install "realsr[onnx]" (onnx, onnxscript, onnxruntime)'


@dataclass(frozen=True)
class ExportRule:
    """Whether an architecture exports; ``why``: the refusal reason, or a note. ``dynamic_hw``:
    False when H, W are fixed at export time (only the batch may be dynamic)."""

    exports: bool
    why: str
    dynamic_hw: bool = True


#: architecture -> export rule (docs/cli.md, "Export to ONNX", keeps the same table)
EXPORT_RULES: dict[str, ExportRule] = {
    "femasr": ExportRule(True, "one deterministic pass; mirror padding and crop are in the graph"),
    "ugtsr": ExportRule(True, "one deterministic pass (top-k fusion, Align-Attention); FeMaSR padding"),
    "realsrt": ExportRule(
        True,
        "deterministic: the T token-decoding steps (config steps) are unrolled into the graph; "
        "it runs on fixed LR patches, so H and W are fixed (at most lr_patch) and only the batch "
        "can be dynamic",
        dynamic_hw=False,
    ),
    "bicres": ExportRule(True, "one deterministic pass: convolutions, pixel shuffle and the bicubic base"),
    "upsr": ExportRule(
        False,
        "UPSR is a diffusion sampler: its output depends on noise drawn from a seeded "
        "torch.Generator, which a graph cannot take (ONNX RandomNormal cannot reproduce realsr's "
        "seeds), and each sampling step is a full denoiser pass",
    ),
    "ssr": ExportRule(
        False,
        "SSR is a DDIM diffusion sampler: its output depends on seeded noise (x_T and, with "
        "eta > 0, every step), which a graph cannot take (ONNX RandomNormal cannot reproduce "
        "realsr's seeds), and each sampling step is a full denoiser pass",
    ),
}


def check_exportable(arch: str) -> ExportRule:
    """The rule for ``arch``; :class:`UsageError` (exit 2) saying why when it does not export."""
    rule = EXPORT_RULES.get(arch)
    hint = "exportable architectures: " + ", ".join(a for a, r in EXPORT_RULES.items() if r.exports)
    if rule is None:
        raise UsageError(f"{arch} models cannot be exported to ONNX by realsr (no export rule for this architecture)", hint=hint)
    if not rule.exports:
        raise UsageError(f"{arch} cannot be exported to ONNX as one graph: {rule.why}", hint=f"run it with `realsr upscale`; {hint}")
    return rule


@dataclass(frozen=True)
class ExportOptions:
    """``opset``: None = the exporter's default. ``dynamic``: dynamic batch (and H, W where the
    architecture allows). ``height``/``width``: the static input size, or with ``dynamic`` the
    example the exporter traces (None = the architecture's default tile). ``check``: compare
    onnxruntime with PyTorch before the file is put in place. ``optimize``: run onnxscript's graph
    optimizer (constant folding, fusions; about half the export time; False: a larger graph that
    computes the same)."""

    opset: int | None = None
    dynamic: bool = False
    height: int | None = None
    width: int | None = None
    check: bool = False
    optimize: bool = True


@dataclass
class ExportReport:
    """What was written. ``input_shape``: ints, or axis names where dynamic. ``min_size``: the
    smallest H/W the graph accepts (``max_size``: the largest, when fixed by the model).
    ``max_abs_diff``: worst |onnxruntime - PyTorch| over ``checked_shapes`` (None without check)."""

    output: str
    arch: str
    scale: int
    opset: int
    dynamic: bool
    input_shape: list[int | str]
    min_size: int | None
    max_size: int | None
    size_multiple: int
    bytes: int
    seconds: float
    max_abs_diff: float | None = None
    checked_shapes: list[list[int]] | None = None


def load_for_export(
    source: str, *, offline: bool | None = None, progress: Callable[[int, int], None] | None = None
) -> LoadedModel:
    """Resolve ``source`` (registry id/alias or our .safetensors) like ``realsr upscale`` and load it
    on the CPU in fp32. A non-exportable architecture is refused before any download."""
    from realsr_cli.engine import api

    arch = _peek_arch(source)
    if arch is not None:
        check_exportable(arch)
    model = api.load_model(source, device="cpu", precision="fp32", offline=offline, progress=progress)
    check_exportable(model.arch)
    return model


def _peek_arch(source: str) -> str | None:
    """The architecture a source names, read without loading or downloading anything (None when
    it cannot be told cheaply; the loader then reports the problem)."""
    from realsr_cli.engine import api
    from realsr_cli.registry import catalog, loader

    if api.looks_like_path(source):
        try:
            meta = loader.read_metadata(source)
        except RealSRError:
            return None
        return meta.get("arch") if meta.get("format") == loader.FORMAT else None
    return catalog.load_catalog().get(source).arch


class _SinglePass(nn.Module):
    """The graph's module: ``lq`` (B,3,H,W) float32 in [0,1] -> ``net.upscale(lq)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lq: Tensor) -> Tensor:
        return self.net.upscale(lq)


@contextlib.contextmanager
def _export_mode(net: nn.Module) -> Iterator[None]:
    """Value-preserving settings for tracing (module doc); every change is undone on exit."""
    undo: list[tuple[nn.Module, str, bool, object]] = []
    try:
        if has(net, ExportOverrides):
            for module, name, value in net.export_overrides():
                undo.append((module, name, name in vars(module), getattr(module, name)))
                setattr(module, name, value)
        yield
    finally:
        for module, name, own, value in reversed(undo):
            if own:
                setattr(module, name, value)
            else:
                delattr(module, name)


def _sizes(model: LoadedModel, rule: ExportRule, options: ExportOptions) -> tuple[int, int, int | None, int | None]:
    """(height, width) of the traced input, validated, and the (min, max) side the graph accepts
    when H, W are dynamic (min) or bounded by the model (max); None where it does not apply."""
    spec = model.spec
    max_side = None if rule.dynamic_hw else spec.default_tile  # RealSRT: lr_patch
    h = spec.default_tile if options.height is None else options.height
    w = spec.default_tile if options.width is None else options.width
    dynamic_hw = options.dynamic and rule.dynamic_hw
    # a dynamic graph must take the general path of the model's padding (FeMaSR: a single
    # mirrored copy needs sides >= half the pad multiple), so sides start at the tile grid
    min_side = max(spec.min_size, spec.tile_multiple) if dynamic_hw else max(1, spec.min_size)
    for name, side in (("--height", h), ("--width", w)):
        if side < min_side:
            raise UsageError(
                f"{name} {side} is below the smallest side {min_side} of a"
                f"{' dynamic' if dynamic_hw else ''} {model.arch} export",
                hint=f"use {name} {min_side} or more",
            )
        if max_side is not None and side > max_side:
            raise UsageError(
                f"{name} {side}: {model.arch} runs on LR patches of at most {max_side} px",
                hint=f"use {name} {max_side} (the default) or less; tile larger images",
            )
    return h, w, (min_side if dynamic_hw else None), max_side


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"ONNX export needs the {module!r} package, which is not installed", hint=_INSTALL_HINT)


def _dynamic_shapes(min_side: int | None) -> dict[str, dict[int, object]]:
    dim = torch.export.Dim
    axes: dict[int, object] = {0: dim("batch", min=1)}
    if min_side is not None:  # dynamic H, W
        axes[2] = dim("height", min=min_side)
        axes[3] = dim("width", min=min_side)
    return {"lq": axes}


def _metadata(model: LoadedModel, shape: list[int | str], min_side: int | None, max_side: int | None) -> dict[str, str]:
    spec = model.spec
    meta = {
        "realsr_version": __version__,
        "arch": model.arch,
        "scale": str(model.scale),
        "size_multiple": str(spec.tile_multiple),
        "input_shape": json.dumps(shape),
        "default_tile": str(spec.default_tile),
        "default_overlap": str(spec.default_overlap),
        "input": "lq: (B,3,H,W) float32 RGB in [0,1]",
        "output": f"sr: (B,3,{model.scale}H,{model.scale}W) float32, not clamped",
        "model": model.weights_id or Path(model.weights_path or "").name,
        "weights_sha256": model.weights_sha256 or "",
    }
    if min_side is not None:
        meta["min_size"] = str(min_side)
    if max_side is not None:
        meta["max_size"] = str(max_side)
    return meta


def export_onnx(model: LoadedModel, dst: str | os.PathLike[str], options: ExportOptions = ExportOptions()) -> ExportReport:
    """Export ``model`` (on the CPU in fp32) to ``dst`` atomically; see the module doc."""
    t0 = time.perf_counter()
    rule = check_exportable(model.arch)
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise UsageError("ONNX export needs the model on the CPU in fp32", hint="load it with device='cpu', precision='fp32'")
    if options.opset is not None and options.opset < MIN_OPSET:
        raise UsageError(f"--opset {options.opset}: the exporter writes opset {MIN_OPSET} or newer", hint=f"use --opset {MIN_OPSET} or more")
    for module in ("onnx", "onnxscript") + (("onnxruntime",) if options.check else ()):
        _require(module)
    h, w, min_side, max_side = _sizes(model, rule, options)
    dst = Path(dst)
    if dst.is_dir():
        raise UsageError(f"--onnx {dst} is a folder", hint="give a file name, e.g. model.onnx")
    dst.parent.mkdir(parents=True, exist_ok=True)

    # a dynamic batch is traced at 2: torch.export specialises example sizes 0 and 1
    example = torch.rand(2 if options.dynamic else 1, 3, h, w, generator=torch.Generator().manual_seed(0))
    program = _trace(model, example, options, min_side)
    opset = int(program.model.opset_imports.get("", 0))
    if options.opset is not None and opset != options.opset:
        raise UsageError(f"--opset {options.opset}: the exporter could only produce opset {opset} for {model.arch}", hint=f"use --opset {opset}")
    shape: list[int | str] = [
        "batch" if options.dynamic else 1, 3, h if min_side is None else "height", w if min_side is None else "width"
    ]
    program.model.metadata_props.update(_metadata(model, shape, min_side, max_side))
    report = ExportReport(
        output=str(dst), arch=model.arch, scale=model.scale, opset=opset, dynamic=options.dynamic,
        input_shape=shape, min_size=min_side, max_size=max_side, size_multiple=model.spec.tile_multiple,
        bytes=0, seconds=0.0,
    )
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.part"  # created by save(), umask applies
    try:
        program.save(tmp, external_data=False)
        report.bytes = os.path.getsize(tmp)
        if options.check:
            shapes = _check_shapes(example.shape, min_side)
            report.max_abs_diff = compare_onnx(tmp, model, shapes)
            report.checked_shapes = [list(s) for s in shapes]
            if report.max_abs_diff > CHECK_ATOL:
                raise ModelError(
                    f"onnxruntime and PyTorch differ by up to {report.max_abs_diff:.3g} (> {CHECK_ATOL}) "
                    f"on {model.arch}; {dst} was not written",
                    hint="run again with --verbose and report it; try another --opset",
                )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    report.seconds = time.perf_counter() - t0
    log.debug("exported %s (%s, opset %d) in %.1fs", dst, model.arch, opset, report.seconds)
    return report


def _trace(model: LoadedModel, example: Tensor, options: ExportOptions, min_side: int | None):
    """torch.onnx.export (dynamo) of the single pass -> ONNXProgram; exporter failures -> ModelError."""
    wrapper = _SinglePass(model.net).eval()
    shapes = _dynamic_shapes(min_side) if options.dynamic else None
    with warnings.catch_warnings(record=True) as caught, _export_mode(model.net):
        warnings.simplefilter("always")
        try:
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, input_names=["lq"], output_names=["sr"],
                opset_version=options.opset, dynamic_shapes=shapes, external_data=False, verbose=False,
                optimize=options.optimize,
            )
        except (RealSRError, MemoryError):
            raise
        except Exception as exc:
            log.debug("ONNX export failed", exc_info=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"ONNX export of {model.arch} failed: {first}",
                hint="run again with --verbose for the exporter's traceback; try without --dynamic",
            ) from exc
    for w in caught:
        log.debug("exporter warning: %s", w.message)
    return program


def _check_shapes(traced: torch.Size, min_side: int | None) -> list[tuple[int, ...]]:
    """The traced shape, plus with a dynamic batch another batch and (dynamic H, W) odd sides."""
    b, c, h, w = traced
    if b == 1:
        return [(1, c, h, w)]
    if min_side is None:
        return [(1, c, h, w), (3, c, h, w)]
    return [(1, c, h, w), (3, c, max(min_side, h // 2 + 1), max(min_side, w // 2 + 3))]


def compare_onnx(path: str | os.PathLike[str], model: LoadedModel, shapes: list[tuple[int, ...]], seed: int = 0) -> float:
    """Worst |onnxruntime - PyTorch| over random inputs of ``shapes`` (CPU, fp32). A shape the graph
    rejects or answers with the wrong size is a :class:`ModelError`."""
    import numpy as np

    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        lq = torch.rand(shape, generator=generator)
        ref = model(lq).numpy()
        try:
            (out,) = session.run(["sr"], {"lq": lq.numpy()})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime could not run the exported {model.arch} at {list(shape)}: {exc}") from exc
        if out.shape != ref.shape:
            raise ModelError(f"exported {model.arch} gave {list(out.shape)} for {list(shape)}, PyTorch {list(ref.shape)}")
        worst = max(worst, float(np.abs(out - ref).max()))
        log.debug("check %s: max abs diff %.3g", list(shape), worst)
    return worst
