"""Batch planning and running: mirror a folder tree, go on past bad files, summarise.

Under torchrun every rank plans the same sorted list, runs its :func:`shard` of it, and rank 0
gathers the per-rank summaries into one (:func:`gather`); see docs/cli.md, "Many GPUs / many
machines".

Size (over STYLE's ~300-line guide): planning, sharding over ranks, merging summaries and the run loop share the Job/BatchSummary types.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from realsr_cli.engine import api, io
from realsr_cli.engine import device as devices
from realsr_cli.engine import distributed as dist
from realsr_cli.errors import ImageIOError, RealSRError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """``aux_dir``: where ``--save-aux`` maps of this image go (the mirrored folder), or None."""

    src: Path
    dst: Path
    aux_dir: Path | None = None


@dataclass
class BatchSummary:
    """What one process did (``rank``, ``host``, ``device``), or, after :func:`merge`, all of
    them together with the per-rank summaries in ``parts`` (in rank order)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    reports: list[api.UpscaleReport] = field(default_factory=list)
    seconds: float = 0.0
    skipped_inputs: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped early by Ctrl-C/SIGTERM (``run(stop_on_interrupt=True)``)
    rank: int = 0
    host: str = ""
    device: str = ""
    parts: list[BatchSummary] = field(default_factory=list)

    def _inputs(self) -> dict[str, list[str]]:
        return {
            "done": [r.input for r in self.reports],
            "skipped": list(self.skipped_inputs),
            "failed": [f for f, _ in self.failed],
        }

    def _rank_json(self) -> dict:
        return {
            "rank": self.rank,
            "host": self.host,
            "device": self.device,
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "inputs": self._inputs(),
        }

    def to_json(self) -> dict:
        parts = self.parts or [self]
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": [{"input": f, "error": m} for f, m in self.failed],
            "seconds": round(self.seconds, 3),
            "images": [r.to_json() for r in self.reports],
            "interrupted": self.interrupted,
            "inputs": self._inputs(),
            "world_size": len(parts),
            "ranks": [p._rank_json() for p in parts],
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


def _writes(job: Job) -> list[Path]:
    """The files a job writes (its output; with aux maps, their shared per-stem name)."""
    out = [job.dst]
    if job.aux_dir is not None:
        out.append(job.aux_dir / job.src.stem)
    return out


def shard(jobs: Sequence[Job], rank: int, world: int) -> list[Job]:
    """Deterministic round-robin share of ``jobs`` for rank ``rank`` of ``world``: jobs
    ``rank, rank + world, ...``, except that a job writing a file an earlier job also writes
    (``a.jpg`` and ``a.png`` with ``--format png`` or ``--save-aux``) goes to that job's rank, so
    no file is written by two ranks and the last writer is the one a single process would have."""
    if not 0 <= rank < world:
        raise UsageError(f"rank {rank} is not in 0..{world - 1}")
    owner: dict[Path, int] = {}
    mine = []
    for i, job in enumerate(jobs):
        keys = _writes(job)
        r = next((owner[k] for k in keys if k in owner), i % world)
        for k in keys:
            owner.setdefault(k, r)
        if r == rank:
            mine.append(job)
    return mine


def plan_digest(jobs: Sequence[Job]) -> str:
    """sha256 of the plan (inputs and outputs, in order): equal on ranks that see the same tree."""
    h = hashlib.sha256()
    for job in jobs:
        h.update(f"{job.src}\t{job.dst}\t{job.aux_dir}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def share(jobs: Sequence[Job], info: dist.DistInfo) -> list[Job]:
    """This rank's :func:`shard`, after checking that every rank planned the same list (a
    :class:`UsageError` on every rank otherwise: the nodes see different folders)."""
    if not info.enabled:
        return list(jobs)
    digests = dist.all_gather_objects((plan_digest(jobs), len(jobs)))
    if len(set(digests)) > 1:
        seen = ", ".join(f"rank {r}: {n}" for r, (_, n) in enumerate(digests))
        raise UsageError(
            f"the ranks found different lists of images ({seen} image(s))",
            hint="IN_DIR and OUT_DIR must be the same shared folders on every node, "
            "and must not change while a batch starts",
        )
    return shard(jobs, info.rank, info.world_size)


def merge(parts: Sequence[BatchSummary], jobs: Sequence[Job]) -> BatchSummary:
    """One summary of per-rank ``parts`` (rank order): counts summed, lists in plan order,
    ``seconds`` the slowest rank's."""
    order = {str(job.src): i for i, job in enumerate(jobs)}

    def key(name: str) -> int:
        return order.get(name, len(order))

    return BatchSummary(
        total=sum(p.total for p in parts),
        done=sum(p.done for p in parts),
        skipped=sum(p.skipped for p in parts),
        failed=sorted((f for p in parts for f in p.failed), key=lambda f: key(f[0])),
        reports=sorted((r for p in parts for r in p.reports), key=lambda r: key(r.input)),
        seconds=max((p.seconds for p in parts), default=0.0),
        skipped_inputs=sorted((s for p in parts for s in p.skipped_inputs), key=key),
        interrupted=any(p.interrupted for p in parts),
        host=parts[0].host if parts else "",
        device=parts[0].device if parts else "",
        parts=list(parts),
    )


def gather(part: BatchSummary, jobs: Sequence[Job]) -> BatchSummary | None:
    """The :func:`merge` of every rank's ``part`` on rank 0; ``None`` on the other ranks (the
    same ``part`` when not distributed)."""
    parts = dist.gather_objects(part)
    if parts is None:
        return None
    return part if len(parts) == 1 else merge(parts, jobs)


def outcome(part: BatchSummary) -> tuple[int, bool]:
    """``(failed images, interrupted)`` over all ranks, the same on every rank: every rank can
    then exit with rank 0's code (under torchrun a rank exiting 0 while another fails leaves its
    node's launcher waiting at torchrun's exit barrier)."""
    states = dist.all_gather_objects((len(part.failed), part.interrupted))
    return sum(n for n, _ in states), any(i for _, i in states)


#: images of a new size between two returns of the heap's free pages to the OS
#: (engine/device.trim_cpu_heap): a 2,000-image mixed-size batch then stays flat at the same
#: speed; one trim costs the next image about 10 % (its pages fault in again)
TRIM_EVERY = 4

#: free space OUT_DIR must have before a batch starts (one large PNG; ENOSPC later stops the batch)
MIN_FREE_BYTES = 64 * 2**20


def check_out_dir(out_dir: str | Path, *, keep: bool = False) -> None:
    """Fail before any model work (exit 4) when OUT_DIR cannot take files: it cannot be created,
    a probe file cannot be written there (read-only, permissions, a full disk), or less than
    :data:`MIN_FREE_BYTES` is free. Folders the probe created are removed again unless ``keep``
    (under torchrun every rank probes at once: one rank removing the folder while another writes
    its probe there made that rank fail with exit 4)."""
    import errno
    import shutil
    import tempfile

    root = Path(out_dir)
    hint = "choose another OUT_DIR, or make room / fix its permissions"
    created = root  # the top-most folder this probe creates (removed again: nothing is left behind)
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    made = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".realsr-probe-") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        free = shutil.disk_usage(root).free
        if made and not keep:
            shutil.rmtree(created, ignore_errors=True)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise ImageIOError(f"cannot write to the output folder {root}: {why}", hint=hint) from exc
    if free < MIN_FREE_BYTES:
        raise ImageIOError(f"the output folder {root} has only {free / 2**20:.1f} MiB free", hint=hint)


def _disk_full(exc: BaseException) -> bool:
    import errno

    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run(
    model: api.LoadedModel,
    jobs: list[Job],
    options: api.UpscaleOptions,
    *,
    skip_existing: bool = False,
    on_start: Callable[[Job], None] | None = None,
    on_done: Callable[[Job, api.UpscaleReport | None, str | None], None] | None = None,
    progress: api.Progress | None = None,
    stop_on_interrupt: bool = False,
    rank: int = 0,
) -> BatchSummary:
    """Upscale every job; a failing image is recorded and the batch goes on.

    ``stop_on_interrupt``: a KeyboardInterrupt (Ctrl-C, or SIGTERM under
    :func:`distributed.sigterm_as_interrupt`) ends the loop and the partial summary is returned
    with ``interrupted=True`` instead of the exception propagating; the image in flight is not
    written (outputs are replaced atomically). ``rank`` is recorded in the summary.
    """
    if any(job.aux_dir is not None for job in jobs):
        from realsr_cli.engine import auxmaps

        auxmaps.require_aux(model)  # a usage error for the whole batch, not one per image
    t0 = time.perf_counter()
    summary = BatchSummary(total=len(jobs), rank=rank, host=socket.gethostname(), device=str(model.device))
    try:
        _run_jobs(model, jobs, options, summary, skip_existing, on_start, on_done, progress)
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            raise
        summary.interrupted = True
        seen = summary.done + summary.skipped + len(summary.failed)
        log.warning("interrupted after %d of %d image(s)", seen, len(jobs))
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_jobs(
    model: api.LoadedModel,
    jobs: list[Job],
    options: api.UpscaleOptions,
    summary: BatchSummary,
    skip_existing: bool,
    on_start: Callable[[Job], None] | None,
    on_done: Callable[[Job, api.UpscaleReport | None, str | None], None] | None,
    progress: api.Progress | None,
) -> None:
    last_size: tuple[int, int] | None = None
    new_shapes = 0
    for job in jobs:
        if skip_existing and job.dst.exists():
            summary.skipped += 1
            summary.skipped_inputs.append(str(job.src))
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
            if _disk_full(exc):  # every later image would be computed only to fail the same way
                left = len(jobs) - (summary.done + summary.skipped + len(summary.failed))
                log.error("the output disk is full: batch stopped, %d image(s) not attempted", left)
                return
            continue
        summary.done += 1
        summary.reports.append(report)
        if report.input_size != last_size:  # a new shape: oneDNN state for it, heap fragments
            new_shapes += 1
            if new_shapes % TRIM_EVERY == 0:
                devices.trim_cpu_heap()  # (docs/reliability.md); same-size batches never pay it
        last_size = report.input_size
        if on_done:
            on_done(job, report, None)
