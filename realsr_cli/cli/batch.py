"""`realsr batch IN_DIR OUT_DIR`: a folder of images, mirrored into another folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from realsr_cli.cli import _common, _output, _schemas
from realsr_cli.cli._options import (
    AlphaMode,
    AlphaOpt,
    BitDepthOpt,
    DepthEstimatorOpt,
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
    TtaOpt,
    WeightsOpt,
)
from realsr_cli.errors import EXIT_BATCH_FAILURES, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from realsr_cli.engine import batch as engine_batch


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
    tta: TtaOpt = False,
    seed: SeedOpt = None,
    steps: StepsOpt = None,
    bit_depth: BitDepthOpt = None,
    quality: QualityOpt = 95,
    fmt: FormatOpt = None,
    alpha: AlphaOpt = AlphaMode.bicubic,
    max_pixels: MaxPixelsOpt = None,
    save_aux: SaveAuxOpt = None,
    depth_estimator: DepthEstimatorOpt = "auto",
    offline: OfflineOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale every image in a folder; goes on past bad files and exits 6 if any failed.

    Under torchrun each process takes every N-th image on its own GPU; rank 0 prints one
    summary and decides the exit code (docs/cli.md, "Many GPUs / many machines").

    Examples:

      realsr batch ./photos ./photos_x4

      realsr batch ./scans ./out --recursive --glob '*.tif' --skip-existing --format png

      realsr batch ./photos ./photos_x4 --model ssr --seed 0 --save-aux ./photos_aux

      realsr batch ./photos ./photos_x4 --model ssr --depth-estimator builtin --offline

      torchrun --nproc-per-node 4 -m realsr_cli batch ./photos ./photos_x4 --skip-existing --json
    """
    from realsr_cli.engine import api
    from realsr_cli.engine import batch as engine_batch
    from realsr_cli.engine import distributed as engine_dist

    opts = _common.options(
        scale=scale, tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, seed=seed, steps=steps,
        alpha=alpha.value, bit_depth=bit_depth, quality=quality, fmt=fmt, max_pixels=max_pixels, tta=tta,
    )
    jobs = engine_batch.plan(
        in_dir, out_dir, recursive=recursive, pattern=glob, fmt=fmt, aux_dir=save_aux
    )
    if jobs:
        engine_batch.check_out_dir(out_dir)  # before the model loads and any image is computed
    with engine_dist.process_group(device) as (rank, dev), engine_dist.sigterm_as_interrupt():
        say = _output.info if rank.is_main else _quiet
        tag = f"rank {rank.rank}: " if rank.enabled else ""
        mine = engine_batch.share(jobs, rank)
        if not jobs and rank.is_main:
            _output.warn(f"no images found in {in_dir}" + ("" if recursive else " (use --recursive for sub-folders)"))
        with _output.progress(enabled=rank.is_main) as view:
            with engine_dist.local_main_first(rank, enabled=weights is None):  # one download per node
                m = _common.load(model, weights, scale, str(dev), precision.value, offline, view,
                                 depth_estimator)
            if save_aux is not None:
                api.check_aux(m, save_aux)
            ranks = f" on {rank.world_size} ranks" if rank.enabled else ""
            say(f"model: {_common.describe(m)}; {len(jobs)} image(s){ranks}")
            view.images(len(mine))

            def done(job, report, error):
                view.reset_tiles()
                view.advance_image(job.src.name)
                if error:
                    _output.warn(f"{tag}{job.src}: {error}")
                elif report is None:
                    say(f"skipped {job.src} (output exists)")
                else:
                    say(f"{job.src} -> {job.dst} ({report.seconds:.1f}s)")

            part = engine_batch.run(m, mine, opts, skip_existing=skip_existing, on_done=done,
                                    progress=view.tiles, stop_on_interrupt=True, rank=rank.rank)
        summary = engine_batch.gather(part, jobs)
        failed, interrupted = engine_batch.outcome(part)
        if summary is not None:
            _report(summary, json_out)
        # Every rank waits until rank 0's report (JSON, summary, error line) is out: torchrun
        # SIGTERMs the remaining ranks as soon as one exits non-zero, which used to cut rank 0
        # off before it had printed anything.
        engine_dist.barrier()
    code = EXIT_INTERRUPTED if interrupted else EXIT_BATCH_FAILURES if failed else 0
    if code:
        raise typer.Exit(code)  # the same code on every rank (engine_batch.outcome)


def _quiet(message: str) -> None:
    pass


def _report(summary: engine_batch.BatchSummary, json_out: bool) -> None:
    if json_out:
        _output.emit_json(_schemas.stamp("batch", summary.to_json()))
    for p in summary.parts:
        _output.info(f"rank {p.rank} ({p.host}, {p.device}): done {p.done}, skipped {p.skipped}, "
                     f"failed {len(p.failed)} of {p.total} in {p.seconds:.1f}s")
    _output.info(
        f"done: {summary.done}, skipped: {summary.skipped}, failed: {len(summary.failed)} "
        f"of {summary.total} in {summary.seconds:.1f}s"
    )
    # the error line main() would print for exit 130 / exit 6; printed here so that it is out
    # before the ranks leave (the caller then exits with the code)
    if summary.interrupted:
        _output.interrupted()
    elif summary.failed:
        _output.error(f"{len(summary.failed)} of {summary.total} image(s) failed",
                      "see the warnings above; rerun with --skip-existing to retry only the failures")
