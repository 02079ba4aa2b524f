"""`realsr batch IN_DIR OUT_DIR`: a folder of images, mirrored into another folder."""

from __future__ import annotations

from typing import Annotated

import typer

from realsr_cli.cli import _common, _output
from realsr_cli.cli._options import (
    AlphaMode,
    AlphaOpt,
    BitDepthOpt,
    DeviceOpt,
    FormatOpt,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    OfflineOpt,
    Precision,
    PrecisionOpt,
    QualityOpt,
    SaveAuxOpt,
    ScaleOpt,
    SeedOpt,
    StepsOpt,
    TileBatchOpt,
    TileOpt,
    TileOverlapOpt,
    WeightsOpt,
)
from realsr_cli.engine import api
from realsr_cli.engine import batch as engine_batch
from realsr_cli.errors import BatchFailedError


def batch(
    in_dir: Annotated[str, typer.Argument(help="Folder of input images.", show_default=False)],
    out_dir: Annotated[str, typer.Argument(help="Output folder (the input tree is mirrored).", show_default=False)],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    glob: Annotated[str | None, typer.Option("--glob", help="Only files matching this pattern, e.g. '*.jpg'.")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip images whose output exists.")] = False,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    scale: ScaleOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    tile_batch: TileBatchOpt = 1,
    seed: SeedOpt = None,
    steps: StepsOpt = None,
    bit_depth: BitDepthOpt = None,
    quality: QualityOpt = 95,
    fmt: FormatOpt = None,
    alpha: AlphaOpt = AlphaMode.bicubic,
    max_pixels: MaxPixelsOpt = None,
    save_aux: SaveAuxOpt = None,
    offline: OfflineOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale every image in a folder; goes on past bad files and exits 6 if any failed.

    Examples:

      realsr batch ./photos ./photos_x4

      realsr batch ./scans ./out --recursive --glob '*.tif' --skip-existing --format png

      realsr batch ./photos ./photos_x4 --model ssr --seed 0 --save-aux ./photos_aux
    """
    opts = _common.options(
        scale=scale, tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, seed=seed, steps=steps,
        alpha=alpha.value, bit_depth=bit_depth, quality=quality, fmt=fmt, max_pixels=max_pixels,
    )
    jobs = engine_batch.plan(
        in_dir, out_dir, recursive=recursive, pattern=glob, fmt=fmt, aux_dir=save_aux
    )
    if not jobs:
        _output.warn(f"no images found in {in_dir}" + ("" if recursive else " (use --recursive for sub-folders)"))
    with _output.progress() as view:
        m = _common.load(model, weights, scale, device, precision.value, offline, view)
        if save_aux is not None:
            api.check_aux(m, save_aux)
        _output.info(f"model: {_common.describe(m)}; {len(jobs)} image(s)")
        view.images(len(jobs))

        def done(job, report, error):
            view.reset_tiles()
            view.advance_image(job.src.name)
            if error:
                _output.warn(f"{job.src}: {error}")
            elif report is None:
                _output.info(f"skipped {job.src} (output exists)")
            else:
                _output.info(f"{job.src} -> {job.dst} ({report.seconds:.1f}s)")

        summary = engine_batch.run(m, jobs, opts, skip_existing=skip_existing, on_done=done, progress=view.tiles)
    if json_out:
        _output.emit_json(summary.to_json())
    _output.info(
        f"done: {summary.done}, skipped: {summary.skipped}, failed: {len(summary.failed)} "
        f"of {summary.total} in {summary.seconds:.1f}s"
    )
    if summary.failed:
        raise BatchFailedError(
            f"{len(summary.failed)} of {summary.total} image(s) failed",
            failed=len(summary.failed),
            total=summary.total,
            hint="see the warnings above; rerun with --skip-existing to retry only the failures",
        )
