"""Batch planning and running: mirror a folder tree, go on past bad files, summarise."""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from realsr_cli.engine import api, io
from realsr_cli.errors import RealSRError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """``aux_dir``: where ``--save-aux`` maps of this image go (the mirrored folder), or None."""

    src: Path
    dst: Path
    aux_dir: Path | None = None


@dataclass
class BatchSummary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    reports: list[api.UpscaleReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": [{"input": f, "error": m} for f, m in self.failed],
            "seconds": round(self.seconds, 3),
            "images": [r.to_json() for r in self.reports],
        }


def plan(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    fmt: str | None = None,
    aux_dir: str | Path | None = None,
) -> list[Job]:
    """List the images under ``in_dir`` (sorted, deterministic) and their mirrored outputs
    (and, with ``aux_dir``, the mirrored folder of each image's auxiliary maps)."""
    src_root, dst_root = Path(in_dir), Path(out_dir)
    aux_root = None if aux_dir is None else Path(aux_dir)
    if not src_root.is_dir():
        raise UsageError(f"input folder not found: {src_root}", hint="give an existing folder of images")
    if dst_root.resolve() == src_root.resolve():
        raise UsageError("output folder must differ from the input folder", hint="choose another OUT_DIR")
    candidates = src_root.rglob("*") if recursive else src_root.iterdir()
    dst_resolved = dst_root.resolve()
    aux_resolved = None if aux_root is None else aux_root.resolve()
    jobs = []
    for p in sorted(candidates):
        if not p.is_file() or not io.is_image_path(p):
            continue
        if dst_resolved in p.resolve().parents:  # OUT_DIR inside IN_DIR: never re-read our outputs
            continue
        if aux_resolved is not None and aux_resolved in p.resolve().parents:  # same for aux maps
            continue
        rel = p.relative_to(src_root)
        if pattern and not (fnmatch.fnmatch(rel.as_posix(), pattern) or fnmatch.fnmatch(p.name, pattern)):
            continue
        dst = dst_root / rel
        if fmt:
            dst = dst.with_suffix(io.suffix_for_format(fmt))
        jobs.append(Job(p, dst, None if aux_root is None else aux_root / rel.parent))
    return jobs


def shard(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """Deterministic round-robin share of ``jobs`` for one of ``world`` processes."""
    return jobs[rank::world]


def run(
    model: api.LoadedModel,
    jobs: list[Job],
    options: api.UpscaleOptions,
    *,
    skip_existing: bool = False,
    on_start: Callable[[Job], None] | None = None,
    on_done: Callable[[Job, api.UpscaleReport | None, str | None], None] | None = None,
    progress: api.Progress | None = None,
) -> BatchSummary:
    """Upscale every job; a failing image is recorded and the batch goes on."""
    if any(job.aux_dir is not None for job in jobs):
        from realsr_cli.engine import auxmaps

        auxmaps.require_aux(model)  # a usage error for the whole batch, not one per image
    t0 = time.perf_counter()
    summary = BatchSummary(total=len(jobs))
    for job in jobs:
        if skip_existing and job.dst.exists():
            summary.skipped += 1
            if on_done:
                on_done(job, None, None)
            continue
        if on_start:
            on_start(job)
        try:
            report = api.upscale_file(
                model, job.src, job.dst, options, progress=progress, aux_dir=job.aux_dir
            )
        except RealSRError as exc:
            msg = exc.message + (f" ({exc.hint})" if exc.hint else "")
            summary.failed.append((str(job.src), msg))
            log.debug("failed: %s", job.src, exc_info=True)
            if on_done:
                on_done(job, None, msg)
            continue
        summary.done += 1
        summary.reports.append(report)
        if on_done:
            on_done(job, report, None)
    summary.seconds = time.perf_counter() - t0
    return summary
