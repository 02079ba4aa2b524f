"""Degrade a folder of HR images into a paired LR set (what ``realsr degrade`` runs).

Reproducible per image: each image's CPU generator is seeded from ``sha256(f"{seed}:{rel}")``
(``rel`` = its path relative to HR_DIR, POSIX), so its LR image depends on nothing else: not the
order, not the other files, not the device. HR sides are cropped at the bottom/right to a multiple
of the scale first, so LR x scale == the cropped HR. Outputs are 8-bit RGB PNG (gray is degraded as
RGB, alpha is dropped); ``LR_DIR/degrade.json`` records the run. A bad file is reported and
skipped; the caller decides what failures mean (the CLI exits 6).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realsr_cli import __version__
from realsr_cli.engine import batch as engine_batch
from realsr_cli.engine import io
from realsr_cli.errors import ImageIOError, RealSRError, UsageError

__all__ = ["MANIFEST", "DegradeReport", "degrade_folder", "image_seed"]

MANIFEST = "degrade.json"


def image_seed(seed: int, rel: str) -> int:
    """The generator seed of the image at ``rel`` (relative POSIX path) for run seed ``seed``."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rel}".encode()).digest()[:8], "little")


@dataclass
class DegradeReport:
    """``manifest``: what ``degrade.json`` holds (pipeline, scale, seed, version, files, failed)."""

    manifest: dict[str, Any]
    manifest_path: Path
    total: int
    done: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


def _degrade_one(pipe: Any, job: engine_batch.Job, rel: str, seed: int, head: dict) -> dict:
    import torch

    from realsr_cli.engine.device import make_generator

    scale = head["scale"]
    pixels = io.read_image(job.src).pixels
    h, w = (pixels.shape[0] // scale) * scale, (pixels.shape[1] // scale) * scale
    if h == 0 or w == 0:
        raise ImageIOError(f"{job.src} is smaller than the scale {scale}", hint="remove it")
    hr = torch.from_numpy(pixels[:h, :w].copy()).permute(2, 0, 1).unsqueeze(0)
    hr = hr.expand(1, 3, h, w).contiguous()  # gray -> RGB; RGB unchanged
    lq = pipe(hr, make_generator(seed))[0].permute(1, 2, 0).numpy()
    manifest = {"software": f"realsr {__version__}", **head, "image_seed": str(seed), "source": rel}
    manifest = {k: str(v) for k, v in manifest.items()}
    io.write_image(job.dst, io.ImageData(pixels=lq), format="PNG", bit_depth=8, manifest=manifest)
    return {"lr_size": [lq.shape[1], lq.shape[0]], "hr_size": [w, h]}


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _previous(path: Path, head: dict) -> dict[str, dict]:
    """Entries of an earlier run's manifest by HR path; refuses to mix other settings in."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    diff = [k for k in head if k in old and old[k] != head[k]]
    if diff:
        was = ", ".join(f"{k}={old[k]}" for k in diff)
        raise UsageError(
            f"{path} was written with {was}: --skip-existing would mix two degradations",
            hint="use the same settings, another LR_DIR, or drop --skip-existing",
        )
    return {e["hr"]: e for e in old.get("files", []) if isinstance(e, dict) and "hr" in e}


def degrade_folder(
    hr_dir: str | Path,
    lr_dir: str | Path,
    *,
    pipeline: str = "realesrgan",
    scale: int = 4,
    seed: int = 0,
    recursive: bool = False,
    pattern: str | None = None,
    skip_existing: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[Path, str | None], None] | None = None,
) -> DegradeReport:
    """Degrade every image under ``hr_dir`` into ``lr_dir`` with ``pipeline`` (a name of
    ``training.degradations.PIPELINES``) and write the manifest. ``on_start(n_images)`` and
    ``on_done(src, error message or None)`` report progress; failures do not stop the run."""
    from realsr_cli.training.degradations import build_pipeline

    pipe = build_pipeline(pipeline, scale)
    jobs = engine_batch.plan(hr_dir, lr_dir, recursive=recursive, pattern=pattern, fmt="png")
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst in seen:
            msg = f"{seen[job.dst]} and {job.src} would both write {job.dst}"
            raise UsageError(msg, hint="rename one of them")
        seen[job.dst] = job.src
    head = {"pipeline": pipeline, "scale": scale, "seed": seed}
    manifest_path = Path(lr_dir) / MANIFEST
    previous = _previous(manifest_path, head) if skip_existing else {}
    files: list[dict] = []
    report = DegradeReport(manifest={}, manifest_path=manifest_path, total=len(jobs))
    if on_start is not None:
        on_start(len(jobs))
    for job in jobs:
        rel = job.src.relative_to(hr_dir).as_posix()
        entry = {"hr": rel, "lr": job.dst.relative_to(lr_dir).as_posix(), "seed": image_seed(seed, rel)}
        error = None
        if skip_existing and job.dst.exists():
            report.skipped += 1
            files.append(previous.get(rel, entry))
        else:
            try:
                files.append(entry | _degrade_one(pipe, job, rel, entry["seed"], head))
                report.done += 1
            except RealSRError as exc:
                error = exc.message
                report.failed.append({"hr": rel, "error": exc.message})
        if on_done is not None:
            on_done(job.src, error)
    report.manifest = {**head, "version": __version__, "files": files, "failed": report.failed}
    Path(lr_dir).mkdir(parents=True, exist_ok=True)
    _write_json(manifest_path, report.manifest)
    return report
