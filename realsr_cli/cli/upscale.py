"""`realsr upscale INPUT [-o OUTPUT]`: one image, from a file or stdin, to a file or stdout."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from realsr_cli.cli import _common, _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.errors import UsageError


@_common.model_options()
def upscale(
    input: Annotated[str, typer.Argument(help="Image file, or - to read from stdin.", show_default=False)],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output file, or - for stdout. Default: INPUT_x<scale>.<ext> (stdout for -)."),
    ] = None,
    *,
    run: _common.ModelArgs,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow -o to name the input file itself (replaces the original).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale one image.

    Examples:

      realsr upscale photo.jpg -o photo_x4.png

      realsr upscale photo.jpg --model femasr --scale 2 --tile 256

      realsr upscale photo.jpg --weights 4x-UltraSharp.pth

      cat photo.jpg | realsr upscale - -o - --format png > photo_x4.png

      realsr upscale photo.jpg --model ssr --seed 0 --save-aux aux/

      realsr upscale photo.jpg --model ssr --depth-estimator depth_anything-v2-small
    """
    from realsr_cli.engine import api

    if output is None:
        output = "-" if input == "-" else None
    if output == "-" and json_out:
        raise UsageError("--json prints on stdout, which is taken by the image (-o -)", hint="write to a file with -o")
    if output is not None:
        api.check_not_input(input, output, overwrite=overwrite)  # before any model work
    stdin = sys.stdin.buffer.read() if input == "-" else None
    with _output.progress() as view:
        m = run.load(view)
        dst = output or str(api.default_output_path(input, run.scale or m.scale))
        if output is None:  # the default name depends on the model's scale: known only now
            api.check_not_input(input, dst, overwrite=overwrite)
        api.check_output_writable(dst)
        if run.save_aux is not None:
            api.check_aux(m, run.save_aux)
        _output.info(f"model: {_common.describe(m)}")
        report = api.upscale_file(
            m, input, dst, run.options, stdin=stdin, stdout=sys.stdout.buffer.write, progress=view.tiles,
            aux_dir=run.save_aux,
        )
    if json_out:
        _output.emit_json(_schemas.stamp("upscale", report.to_json()))
    elif dst != "-":
        w, h = report.output_size
        _output.success(f"{report.input} -> {report.output} ({w}x{h}, {report.tiles} tile(s), {report.seconds:.1f}s)")
    if not json_out and "aux" in report.extra:
        _output.info(f"aux maps: {report.extra['aux']['depth']}, {report.extra['aux']['kernel_var']}")
