"""`realsr export ID|FILE --onnx OUT.onnx`: one model's single-pass inference as an ONNX graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from realsr_cli.cli import _output
from realsr_cli.cli._options import OfflineOpt

if TYPE_CHECKING:
    pass


#: engine/export.py's MIN_OPSET and CHECK_ATOL, repeated so that `--help` needs no torch import
#: (tests/cli/test_cli_export.py checks they agree)
MIN_OPSET = 18
CHECK_ATOL = 1e-3

def export(
    source: Annotated[
        str,
        typer.Argument(help="Registry id or alias (e.g. femasr-x4), or a realsr .safetensors file.", show_default=False),
    ],
    onnx: Annotated[str, typer.Option("--onnx", help="Destination .onnx file (written atomically).", show_default=False)],
    opset: Annotated[
        int | None, typer.Option("--opset", help=f"ONNX opset, >= {MIN_OPSET} (default: the exporter's).")
    ] = None,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="Dynamic batch, height and width (RealSRT: batch only).")
    ] = False,
    height: Annotated[
        int | None,
        typer.Option("--height", help="Static LR input height (default: the model's tile size); with --dynamic, the traced example.", min=1),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option("--width", help="Static LR input width (default: the model's tile size); with --dynamic, the traced example.", min=1),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Run onnxruntime and PyTorch on random inputs and print the max abs diff; "
                     f"above {CHECK_ATOL} nothing is written."),
    ] = False,
    optimize: Annotated[
        bool,
        typer.Option("--optimize/--no-optimize", help="Run onnxscript's graph optimizer (about half the export time)."),
    ] = True,
    offline: OfflineOpt = False,
) -> None:
    """Export a model to ONNX: the pass the engine runs for one tile (padding and crop included).

    Input lq (B,3,H,W) float32 RGB in [0,1]; output sr (B,3,sH,sW) float32, not clamped.
    Diffusion models (upsr, ssr) cannot be exported (exit 2, see docs/cli.md).

    Examples:

      realsr export femasr-x4 --onnx femasr-x4.onnx

      realsr export femasr-x4 --onnx femasr-x4-dyn.onnx --dynamic --check

      realsr export my-femasr.safetensors --onnx tile256.onnx --height 256 --width 256 --opset 18
    """
    from realsr_cli.engine import export as exporter

    options = exporter.ExportOptions(
        opset=opset, dynamic=dynamic, height=height, width=width, check=check, optimize=optimize
    )
    with _output.progress() as view:
        model = exporter.load_for_export(source, offline=True if offline else None, progress=view.bytes)
    _output.info(f"exporting {model.weights_id or model.weights_path} ({model.spec.title} x{model.scale}) to ONNX ...")
    report = exporter.export_onnx(model, onnx, options)
    shape = "x".join(str(d) for d in report.input_shape)
    limits = "".join(f", {k} {v}" for k, v in (("H, W >=", report.min_size), ("H, W <=", report.max_size)) if v)
    _output.success(
        f"wrote {report.output} ({report.arch} x{report.scale}, opset {report.opset}, input {shape}{limits}; "
        f"{report.bytes / 2**20:.1f} MiB, {report.seconds:.1f}s)"
    )
    if report.max_abs_diff is not None:
        shapes = ", ".join("x".join(map(str, s)) for s in report.checked_shapes or [])
        _output.info(f"onnxruntime vs PyTorch: max abs diff {report.max_abs_diff:.3g} (inputs {shapes})")
