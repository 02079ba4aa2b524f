"""`realsr compare IMG_A IMG_B [IMG_C ...] -o out.png|out.html`: the same crops side by side, or a
page with a before/after slider; the work is :func:`realsr_cli.evaluation.compare.compare`."""

from __future__ import annotations

from typing import Annotated

import typer

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt, MaxPixelsOpt

_IMAGES_HELP = (
    "Two or more images of the same scene, e.g. an LR input, bicubic and a model's output. All are "
    "shown at the size of the largest (most pixels): smaller ones are enlarged with nearest-neighbour "
    "so their pixels stay visible (a larger side is reduced by area)."
)
_OUT_HELP = "out.png: a grid of crops (one row per crop, one column per image); out.html: one offline page with a before/after slider."
_LABEL_HELP = "Label of an image, once per image in their order (default: the file names)."
_CROP_HELP = "A crop x,y,w,h in pixels of the largest image; repeat for more. Default: automatic crops."
_CROPS_HELP = "How many automatic crops: non-overlapping windows where the images differ most."
_SIZE_HELP = "Side of the automatic crops in pixels of the largest image."
_ZOOM_HELP = "Integer magnification of the crops in the PNG grid (nearest-neighbour)."


def compare(
    images: Annotated[list[str], typer.Argument(help=_IMAGES_HELP, metavar="IMAGES", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help=_OUT_HELP, metavar="OUT.png|OUT.html", show_default=False)],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help=_LABEL_HELP, show_default=False)] = None,
    crop: Annotated[list[str] | None, typer.Option("--crop", help=_CROP_HELP, show_default=False)] = None,
    crops: Annotated[int, typer.Option("--crops", "-n", help=_CROPS_HELP, min=1)] = 3,
    crop_size: Annotated[int, typer.Option("--crop-size", help=_SIZE_HELP, min=1)] = 128,
    zoom: Annotated[int, typer.Option("--zoom", "-z", help=_ZOOM_HELP, min=1, max=64)] = 2,
    max_pixels: MaxPixelsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare images of one scene: the crops where they differ most side by side in a PNG, or a
    self-contained HTML page with a before/after slider, zoom and pan (works offline).

    Examples:

      realsr compare lr.png bicubic.png sr.png -o cmp.png --zoom 3

      realsr compare bicubic.png sr.png -o cmp.html --label bicubic --label FeMaSR

      realsr compare a.png b.png -o cmp.png --crop 120,64,128,128 --crop 0,0,64,64 --json
    """
    from realsr_cli.engine.io import DEFAULT_MAX_PIXELS
    from realsr_cli.evaluation.compare import compare as run_compare

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None)
    report = run_compare(images, output, labels=label or (), crops=crop or (), n_crops=crops,
                         crop_size=crop_size, zoom=zoom, max_pixels=limit)
    if json_out:
        _output.emit_json(_schemas.stamp("compare", report.to_json()))
    w, h = report.size
    for s in report.sources:
        if s.resized:
            _output.info(f"{s.label}: {s.size[0]}x{s.size[1]} shown at {w}x{h}")
    for i, c in enumerate(report.crops, 1):
        how = "auto" if c.auto else "--crop"
        _output.info(f"crop {i} ({how}): x={c.x} y={c.y} {c.w}x{c.h}, mean |difference| {c.difference:.4f}")
    what = "grid" if report.kind == "png" else "page"
    _output.success(f"{what} of {len(report.sources)} images -> {report.output}")
