"""``upscale_folder``: a whole `realsr batch` — one process or every rank under torchrun — as a
library call. Plans the folder, checks OUT_DIR before any model work, joins the process group,
loads the model on each rank (each node's first rank first: one download per node), runs this
rank's share, merges the summaries on rank 0 and agrees on one exit code on every rank.

What a caller shows is up to it: :class:`FolderEvents` has a hook for each step (the CLI draws its
progress bar and messages with them; the defaults do nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realsr_cli.engine import api
from realsr_cli.engine import batch as engine_batch
from realsr_cli.engine import distributed as dist
from realsr_cli.errors import EXIT_BATCH_FAILURES, EXIT_INTERRUPTED

__all__ = ["FolderEvents", "FolderOutcome", "upscale_folder"]


class FolderEvents:
    """Hooks of :func:`upscale_folder`; override what you need. ``rank`` is this process's
    :class:`~realsr_cli.engine.distributed.DistInfo` (``is_main`` is True in a single process)."""

    def session(self, rank: dist.DistInfo) -> AbstractContextManager[Any]:
        """Entered around loading and running on this rank (e.g. a progress display)."""
        return nullcontext()

    def loaded(self, model: api.LoadedModel, rank: dist.DistInfo, jobs: list[engine_batch.Job],
               mine: list[engine_batch.Job]) -> None:
        """The model is loaded; ``jobs`` is the whole plan, ``mine`` this rank's share."""

    def done(self, job: engine_batch.Job, report: api.UpscaleReport | None, error: str | None) -> None:
        """One image finished: ``report`` None and no ``error`` means skipped (output exists)."""

    def tiles(self, done: int, total: int) -> None:
        """Tile progress of the image in flight."""

    def summary(self, summary: engine_batch.BatchSummary) -> None:
        """Rank 0 (or the single process): the merged summary, before the ranks leave."""


@dataclass(frozen=True)
class FolderOutcome:
    """``summary``: the merged summary on rank 0 / a single process, None on other ranks;
    ``exit_code``: 0, 6 (some images failed) or 130 (interrupted), the same on every rank."""

    summary: engine_batch.BatchSummary | None
    exit_code: int


def upscale_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    load: Callable[[str], api.LoadedModel],
    options: api.UpscaleOptions,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    fmt: str | None = None,
    aux_dir: str | Path | None = None,
    skip_existing: bool = False,
    device: str = "auto",
    events: FolderEvents | None = None,
    download_once_per_node: bool = True,
) -> FolderOutcome:
    """Upscale every image under ``in_dir`` into ``out_dir`` (tree mirrored), going on past bad
    files; ``load(device)`` returns the model for this rank's device. Ctrl-C (and SIGTERM) stops
    between writes with ``exit_code`` 130 and a partial summary. See docs/api.md."""
    events = events or FolderEvents()
    jobs = engine_batch.plan(in_dir, out_dir, recursive=recursive, pattern=pattern, fmt=fmt, aux_dir=aux_dir)
    if jobs:
        # before the model loads and any image is computed; several ranks probe the same folder
        engine_batch.check_out_dir(out_dir, keep=dist.env_info().enabled)
    with dist.process_group(device) as (rank, dev), dist.sigterm_as_interrupt():
        mine = engine_batch.share(jobs, rank)
        with events.session(rank):
            with dist.local_main_first(rank, enabled=download_once_per_node):
                model = load(str(dev))
            if aux_dir is not None:
                api.check_aux(model, aux_dir)
            events.loaded(model, rank, jobs, mine)
            part = engine_batch.run(model, mine, options, skip_existing=skip_existing, on_done=events.done,
                                    progress=events.tiles, stop_on_interrupt=True, rank=rank.rank)
        summary = engine_batch.gather(part, jobs)
        failed, interrupted = engine_batch.outcome(part)
        if summary is not None:
            events.summary(summary)
        # every rank waits until rank 0's report is out: torchrun SIGTERMs the remaining ranks as
        # soon as one exits non-zero, which used to cut rank 0 off before it had printed anything
        dist.barrier()
    code = EXIT_INTERRUPTED if interrupted else EXIT_BATCH_FAILURES if failed else 0
    return FolderOutcome(summary=summary, exit_code=code)
