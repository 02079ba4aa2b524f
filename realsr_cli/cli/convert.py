"""`realsr convert SRC... --arch ARCH -o DST.safetensors`: official checkpoints -> our weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt

if TYPE_CHECKING:
    pass


def convert(
    src: Annotated[list[str], typer.Argument(help="Official .pth/.safetensors file(s); UPSR takes two.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Destination .safetensors.", show_default=False)],
    arch: Annotated[str, typer.Option("--arch", "-a", help="Architecture: femasr, ugtsr, realsrt, upsr, ssr.")],
    scale: Annotated[int | None, typer.Option("--scale", "-s", help="Only if it cannot be inferred.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert official checkpoint(s) into a realsr .safetensors (keys checked, metadata added).

    .pth files are read with torch.load(weights_only=True); nothing is ever unpickled.

    Examples:

      realsr convert FeMaSR_SRX4_model_g.pth --arch femasr -o femasr-x4.safetensors

      realsr convert upsr.pth atd_real.pth --arch upsr -o upsr-x4.safetensors
    """
    from realsr_cli.engine import api
    from realsr_cli.registry import loader

    dst = api.convert_checkpoint(src if len(src) > 1 else src[0], output, arch=arch, scale=scale)
    meta = loader.read_metadata(dst)
    if json_out:
        _output.emit_json(_schemas.stamp("convert", {"output": str(dst), "sha256": loader.file_sha256(dst), **meta}))
    else:
        _output.success(f"wrote {dst} ({meta.get('arch')} x{meta.get('scale')})")
