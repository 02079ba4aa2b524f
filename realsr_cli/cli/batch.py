"""`realsr batch IN_DIR OUT_DIR`: a folder of images, mirrored into another folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from realsr_cli.cli import _common, _output, _schemas
from realsr_cli.cli._options import JsonOpt

if TYPE_CHECKING:
    from realsr_cli.engine import batch as engine_batch


@_common.model_options()
def batch(
    in_dir: Annotated[str, typer.Argument(help="Folder of input images.", show_default=False)],
    out_dir: Annotated[str, typer.Argument(help="Output folder (the input tree is mirrored).", show_default=False)],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    glob: Annotated[str | None, typer.Option("--glob", help="Only files matching this pattern, e.g. '*.jpg'.")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip images whose output exists.")] = False,
    *,
    run: _common.ModelArgs,
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
    from realsr_cli.engine import folder

    events = _Events(in_dir, recursive, json_out)
    result = folder.upscale_folder(
        in_dir, out_dir, lambda dev: run.load(events.view, dev), run.options, recursive=recursive,
        pattern=glob, fmt=run.options.format, aux_dir=run.save_aux, skip_existing=skip_existing,
        device=run.device, events=events, download_once_per_node=run.weights is None,
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)  # the same code on every rank


class _Events:
    """The CLI's face of :func:`realsr_cli.engine.folder.upscale_folder`: progress and messages on
    rank 0 (warnings on every rank, tagged with it), the summary and its error line at the end."""

    def __init__(self, in_dir: str, recursive: bool, json_out: bool) -> None:
        self.in_dir, self.recursive, self.json_out = in_dir, recursive, json_out
        self.say, self.tag = _output.info, ""

    @contextmanager
    def session(self, rank) -> Iterator[None]:
        if not rank.is_main:
            self.say = _quiet
        self.tag = f"rank {rank.rank}: " if rank.enabled else ""
        with _output.progress(enabled=rank.is_main) as self.view:  # load() reports download bytes to it
            yield

    def loaded(self, m, rank, jobs, mine) -> None:
        if not jobs and rank.is_main:
            _output.warn(f"no images found in {self.in_dir}" + ("" if self.recursive else " (use --recursive for sub-folders)"))
        ranks = f" on {rank.world_size} ranks" if rank.enabled else ""
        self.say(f"model: {_common.describe(m)}; {len(jobs)} image(s){ranks}")
        self.view.images(len(mine))

    def done(self, job, report, error) -> None:
        self.view.reset_tiles()
        self.view.advance_image(job.src.name)
        if error:
            _output.warn(f"{self.tag}{job.src}: {error}")
        elif report is None:
            self.say(f"skipped {job.src} (output exists)")
        else:
            self.say(f"{job.src} -> {job.dst} ({report.seconds:.1f}s)")

    def tiles(self, done: int, total: int) -> None:
        self.view.tiles(done, total)

    def summary(self, summary) -> None:
        _report(summary, self.json_out)


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
