"""`realsr degrade HR_DIR LR_DIR`: synthetic LR images from HR images (Real-ESRGAN, BSRGAN, ...);
the work is :func:`realsr_cli.training.degradations.folder.degrade_folder`."""

from __future__ import annotations

import time
from enum import Enum
from typing import Annotated

import typer

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.errors import BatchFailedError


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
    from realsr_cli.training.degradations.folder import degrade_folder

    t0 = time.perf_counter()
    with _output.progress() as view:

        def start(n: int) -> None:
            _output.info(f"{pipeline.value} x{scale}, seed {seed}; {n} image(s)")
            view.images(n)

        def done(src, error: str | None) -> None:
            if error is not None:
                _output.warn(f"{src}: {error}")
            view.advance_image(src.name)

        report = degrade_folder(hr_dir, lr_dir, pipeline=pipeline.value, scale=scale, seed=seed,
                                recursive=recursive, pattern=glob, skip_existing=skip_existing,
                                on_start=start, on_done=done)
    if json_out:
        summary = {"done": report.done, "skipped": report.skipped, "seconds": round(time.perf_counter() - t0, 3)}
        _output.emit_json(_schemas.stamp("degrade", {**report.manifest, **summary, "manifest": str(report.manifest_path)}))
    n, total = len(report.failed), report.total
    _output.info(f"done: {report.done}, skipped: {report.skipped}, failed: {n} of {total} -> {lr_dir}")
    if report.failed:
        raise BatchFailedError(
            f"{n} of {total} image(s) failed", failed=n, total=total,
            hint="see the warnings above; rerun with --skip-existing to retry only the failures",
        )
