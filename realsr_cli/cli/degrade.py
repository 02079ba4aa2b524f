"""`realsr degrade HR_DIR LR_DIR`: synthetic LR images from HR images (Real-ESRGAN, BSRGAN, ...).

Reproducible per image: each image's CPU generator is seeded from ``sha256(f"{seed}:{rel}")``
(``rel`` = its path relative to HR_DIR, POSIX), so its LR image depends on nothing else: not the
order, not the other files, not the device. HR sides are cropped at the bottom/right to a multiple
of the scale first, so LR x scale == the cropped HR. Outputs are 8-bit RGB PNG (gray is degraded as
RGB, alpha is dropped); LR_DIR/degrade.json records the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from realsr_cli import __version__
from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.engine import batch as engine_batch
from realsr_cli.engine import io
from realsr_cli.errors import BatchFailedError, ImageIOError, RealSRError, UsageError

MANIFEST = "degrade.json"


class Pipeline(str, Enum):
    realesrgan = "realesrgan"
    bsrgan = "bsrgan"
    bicubic = "bicubic"
    mild = "mild"
    mix = "mix"


_DEFAULT = Pipeline.realesrgan
_PIPE_HELP = (
    "Degradation model: realesrgan (Wang et al. 2021), bsrgan (Zhang et al. 2021), bicubic "
    "(antialiased bicubic down: the classic benchmark LR), mild (slight blur, light noise, JPEG "
    "70-95) or mix (per image one of bicubic/mild/realesrgan)."
)
_SEED_HELP = "Run seed; each image derives its own from it and its relative path."
_SKIP_HELP = "Skip images whose LR file exists (same settings only)."

_RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]


def image_seed(seed: int, rel: str) -> int:
    """The generator seed of the image at ``rel`` (relative POSIX path) for run seed ``seed``."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rel}".encode()).digest()[:8], "little")


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


def degrade(
    hr_dir: Annotated[str, typer.Argument(help="Folder of HR images.", show_default=False)],
    lr_dir: Annotated[str, typer.Argument(help="Output folder for LR images.", show_default=False)],
    pipeline: Annotated[Pipeline, typer.Option("--pipeline", "-p", help=_PIPE_HELP)] = _DEFAULT,
    scale: Annotated[int, typer.Option("--scale", "-s", help="Downscaling factor.", min=1)] = 4,
    seed: Annotated[int, typer.Option("--seed", help=_SEED_HELP, min=0)] = 0,
    recursive: _RecursiveOpt = False,
    glob: Annotated[str | None, typer.Option("--glob", help="Only files matching this.")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help=_SKIP_HELP)] = False,
    json_out: JsonOpt = False,
) -> None:
    """Make a paired LR set: degrade every HR image; goes on past bad files, exits 6 if any failed.

    Examples:

      realsr degrade ./DIV2K_valid_HR ./val_lr --pipeline bsrgan --scale 4 --seed 0

      realsr degrade ./hr ./lr -r --glob '*.png' --skip-existing --json
    """
    from realsr_cli.training.degradations import build_pipeline

    pipe = build_pipeline(pipeline.value, scale)
    jobs = engine_batch.plan(hr_dir, lr_dir, recursive=recursive, pattern=glob, fmt="png")
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst in seen:
            msg = f"{seen[job.dst]} and {job.src} would both write {job.dst}"
            raise UsageError(msg, hint="rename one of them")
        seen[job.dst] = job.src
    head = {"pipeline": pipeline.value, "scale": scale, "seed": seed}
    manifest_path = Path(lr_dir) / MANIFEST
    previous = _previous(manifest_path, head) if skip_existing else {}
    files, failed, skipped = [], [], 0
    t0 = time.perf_counter()
    with _output.progress() as view:
        _output.info(f"{pipeline.value} x{scale}, seed {seed}; {len(jobs)} image(s)")
        view.images(len(jobs))
        for job in jobs:
            rel = job.src.relative_to(hr_dir).as_posix()
            lr_rel = job.dst.relative_to(lr_dir).as_posix()
            entry = {"hr": rel, "lr": lr_rel, "seed": image_seed(seed, rel)}
            if skip_existing and job.dst.exists():
                skipped += 1
                files.append(previous.get(rel, entry))
            else:
                try:
                    files.append(entry | _degrade_one(pipe, job, rel, entry["seed"], head))
                except RealSRError as exc:
                    failed.append({"hr": rel, "error": exc.message})
                    _output.warn(f"{job.src}: {exc.message}")
            view.advance_image(job.src.name)
    manifest = {**head, "version": __version__, "files": files, "failed": failed}
    Path(lr_dir).mkdir(parents=True, exist_ok=True)
    _write_json(manifest_path, manifest)
    done = len(files) - skipped
    if json_out:
        summary = {"done": done, "skipped": skipped, "seconds": round(time.perf_counter() - t0, 3)}
        _output.emit_json(_schemas.stamp("degrade", {**manifest, **summary, "manifest": str(manifest_path)}))
    n, total = len(failed), len(jobs)
    _output.info(f"done: {done}, skipped: {skipped}, failed: {n} of {total} -> {lr_dir}")
    if failed:
        raise BatchFailedError(
            f"{n} of {total} image(s) failed", failed=n, total=total,
            hint="see the warnings above; rerun with --skip-existing to retry only the failures",
        )
