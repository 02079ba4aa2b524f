"""`realsr eval`: score SR images. Two forms:

- ``realsr eval SR_DIR [HR_DIR]``: existing SR images, no model: PSNR/SSIM against HR_DIR,
  LPIPS with ``--lpips``, DISTS with ``--dists``, NIQE with ``--niqe`` (alone without HR_DIR);
- ``realsr eval --lq LR_DIR --hq HR_DIR [--model ID]``: run a model on LR/HR pairs and score it
  (PSNR/SSIM, ``--lpips``, ``--dists``, ``--niqe``, codebook accuracy with ``--hr-prior``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from realsr_cli.cli import _common, _output, _schemas
from realsr_cli.cli._options import IMAGE_FILE_OPTIONS, JsonOpt
from realsr_cli.errors import BatchFailedError, UsageError

_SR_HELP = "Folder of SR images to score as they are (no model)."
_HR_HELP = "HR references for SR_DIR, paired by relative path and stem; omit for --niqe only."
_HQ_HELP = "Model form: folder of HR images (same relative names, any image suffix)."
_CROP = "Pixels cropped from each side before scoring (default: the scale; SR_DIR without --scale: 0)."
_SCALE_HELP = "SR_DIR form: the SR scale (crop border; HR may be up to scale-1 px larger)."
_SUFFIX_HELP = "SR_DIR form: SR stems end with this tag, e.g. _x4: 0801_x4.png <-> 0801.png."
_NIQE_HELP = "Also NIQE (no reference, lower is better; BasicSR's conventions) of each SR image."
_LPIPS_HELP = ("Also LPIPS-VGG v0.1 against HR (lower is better). Needs vgg16-imagenet and "
               "lpips-vgg-v0.1 in the cache (realsr models download ...); never downloads.")
_DISTS_HELP = ("Also DISTS against HR (lower is better). Needs vgg16-imagenet and dists-vgg in the "
               "cache (realsr models download ...); never downloads.")
_PRIOR_HELP = "HQ-stage VQGAN .safetensors (FeMaSR HR prior): adds codebook matching accuracy."
_TOPK_HELP = "Ranks for the top-k matching accuracy: 1,3,5 (default), or repeat the option."
_SAVE_HELP = "Also write the SR images here (PNG, LR tree mirrored)."

_RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]


def _top_k(values: list[str] | None) -> tuple[int, ...]:
    """``--top-k 1 --top-k 5`` or ``--top-k 1,3,5`` -> (1, 3, 5)."""
    parts = [p for v in values or ["1,3,5"] for p in v.replace(" ", ",").split(",") if p]
    try:
        ks = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise UsageError(f"--top-k {values}: expected integers, e.g. --top-k 1,3,5") from None
    if not ks or ks[0] < 1:
        raise UsageError("--top-k values must be >= 1")
    return ks


def _fmt(value: float | None, digits: int) -> str:
    return "inf" if value is None else f"{value:.{digits}f}"


_DIGITS = {"psnr": 3, "ssim": 4, "lpips": 4, "dists": 4, "niqe": 4}


def _row(name: str, scores: dict, keys: list[str]) -> list[str]:
    return [name] + [_fmt(scores[k], _DIGITS.get(k, 4)) for k in keys]


def _check_failed(report) -> None:
    """Exit 6 when any image failed (every image is in ``report.images`` or ``report.failed``)."""
    if report.failed:
        n, total = len(report.failed), len(report.failed) + len(report.images)
        raise BatchFailedError(f"{n} of {total} image(s) failed", failed=n, total=total,
                               hint="see the warnings above")


@_common.model_options(skip=("scale", "tile_batch", "tta", *IMAGE_FILE_OPTIONS))
def eval_cmd(
    sr_dir: Annotated[
        str | None, typer.Argument(help=_SR_HELP, metavar="SR_DIR", show_default=False)
    ] = None,
    hr_dir: Annotated[
        str | None, typer.Argument(help=_HR_HELP, metavar="HR_DIR", show_default=False)
    ] = None,
    lq: Annotated[str | None, typer.Option("--lq", help="Model form: folder of LR images.")] = None,
    hq: Annotated[str | None, typer.Option("--hq", help=_HQ_HELP)] = None,
    *,
    run: _common.ModelArgs,
    scale: Annotated[int | None, typer.Option("--scale", "-s", help=_SCALE_HELP, min=1)] = None,
    suffix: Annotated[str, typer.Option("--suffix", help=_SUFFIX_HELP)] = "",
    niqe: Annotated[bool, typer.Option("--niqe", help=_NIQE_HELP)] = False,
    lpips: Annotated[bool, typer.Option("--lpips", help=_LPIPS_HELP)] = False,
    dists: Annotated[bool, typer.Option("--dists", help=_DISTS_HELP)] = False,
    crop_border: Annotated[int | None, typer.Option("--crop-border", help=_CROP, min=0)] = None,
    recursive: _RecursiveOpt = False,
    glob: Annotated[str | None, typer.Option("--glob", help="Only LR/SR files matching this.")] = None,
    hr_prior: Annotated[str | None, typer.Option("--hr-prior", help=_PRIOR_HELP)] = None,
    top_k: Annotated[list[str] | None, typer.Option("--top-k", help=_TOPK_HELP)] = None,
    save_dir: Annotated[str | None, typer.Option("--save-dir", help=_SAVE_HELP)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Score SR images: PSNR and SSIM on the Y channel (BasicSR conventions), LPIPS with --lpips,
    DISTS with --dists, NIQE with --niqe.

    Examples:

      realsr eval ./sr ./hr --scale 4

      realsr eval ./sr ./hr --scale 4 --suffix _x4 --niqe --json > scores.json

      realsr eval ./sr ./hr --scale 4 --lpips --dists

      realsr eval ./sr --niqe --crop-border 4

      realsr eval --model femasr-x4 --lq ./DIV2K_val_LR --hq ./DIV2K_val_HR

      realsr eval --weights g.safetensors --lq lr --hq hr --hr-prior hrp.safetensors --json
    """
    from realsr_cli.evaluation import pairs
    from realsr_cli.evaluation import run as evaluation

    if sr_dir is not None:
        o = run.options
        model_opts = {"--lq": lq, "--hq": hq, "--model": run.model, "--weights": run.weights,
                      "--hr-prior": hr_prior, "--top-k": top_k, "--save-dir": save_dir,
                      "--seed": o.seed, "--steps": o.steps, "--tile-overlap": o.tile_overlap}
        given = [k for k, v in model_opts.items() if v is not None]
        # --offline is accepted: this form never downloads (--lpips/--dists read the cache only)
        given += [k for k, on in (("--device", run.device != "auto"), ("--tile", o.tile is not None),
                                  ("--precision", run.precision != "auto")) if on]
        if given:
            raise UsageError(
                f"{', '.join(given)}: model options, but SR_DIR scores existing images",
                hint="drop them, or run a model with --lq LR_DIR --hq HR_DIR (no SR_DIR)",
            )
        return _eval_dirs(sr_dir, hr_dir, scale, suffix, niqe, lpips, dists, crop_border, recursive,
                          glob, json_out)
    if lq is None or hq is None:
        raise UsageError(
            "give SR_DIR [HR_DIR] to score existing images, or --lq LR_DIR --hq HR_DIR to run a model",
            hint="e.g. realsr eval ./sr ./hr --scale 4, or realsr eval --model femasr-x4 --lq lr --hq hr",
        )
    if scale is not None or suffix:
        raise UsageError("--scale and --suffix are for SR_DIR; a model is scored at its own scale",
                         hint="drop them (use --crop-border to change the crop)")
    ks = _top_k(top_k)
    opts = pairs.EvalOptions(
        upscale=run.options,
        crop_border=crop_border,
        top_k=ks,
        save_dir=Path(save_dir) if save_dir else None,
        niqe=niqe,
        lpips=lpips,
        dists=dists,
    )
    events = _Events()
    report = evaluation.evaluate_model_on_folders(
        lq, hq, lambda: run.load(events.view),
        opts, recursive=recursive, pattern=glob, hr_prior=hr_prior, events=events,
    )
    out = report.to_json()
    if json_out:
        _output.emit_json(_schemas.stamp("eval", out))
    else:
        keys = list(out["mean"]) or ["psnr", "ssim", *(["lpips"] if lpips else []),
                                     *(["dists"] if dists else []), *(["niqe"] if niqe else [])]
        rows = [_row(i["name"], {**i, **i.get("codebook", {})}, keys) for i in out["images"]]
        if report.images:
            rows.append(_row("mean", out["mean"], keys))
        title = f"{report.model} x{report.scale}, crop {report.crop_border}, Y channel"
        _output.table(title, ["image", *(k.upper() if k in _DIGITS else k for k in keys)], rows)
    _check_failed(report)


def _eval_dirs(sr_dir, hr_dir, scale, suffix, niqe, lpips, dists, crop_border, recursive, glob,
               json_out) -> None:
    """The SR_DIR form (see :mod:`realsr_cli.evaluation.folders` for the pairing rule)."""
    from realsr_cli.evaluation import folders
    from realsr_cli.evaluation import run as evaluation

    opts = folders.DirEvalOptions(
        scale=scale, crop_border=crop_border, reference=hr_dir is not None, niqe=niqe, lpips=lpips,
        dists=dists,
    )
    report = evaluation.evaluate_sr_folder(sr_dir, hr_dir, opts, recursive=recursive, pattern=glob,
                                           suffix=suffix, events=_Events())
    out = report.to_json()
    if json_out:
        _output.emit_json(_schemas.stamp("eval.dirs", out))
    else:
        keys = report.metrics
        rows = [_row(i["name"], i, keys) for i in out["images"]]
        if report.images:
            rows.append(_row("mean", out["mean"], keys))
        title = f"{sr_dir}: crop {report.crop_border}" + (", Y channel" if hr_dir else "")
        _output.table(title, ["image", *(k.upper() for k in keys)], rows)
    _check_failed(report)


class _Events:
    """The CLI's face of the evaluation runs: warnings, info lines, a progress bar."""

    def __init__(self) -> None:
        self.view: _output.ProgressView | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        with _output.progress() as self.view:
            yield

    def warn(self, message: str) -> None:
        _output.warn(message)

    def info(self, message: str) -> None:
        _output.info(message)

    def loaded(self, m, total: int) -> None:
        _output.info(f"model: {_common.describe(m)}; {total} pair(s)")

    def started(self, total: int) -> None:
        self.view.images(total)

    def done(self, name: str, error: str | None) -> None:
        self.view.reset_tiles()
        self.view.advance_image(name)
        if error:
            _output.warn(f"{name}: {error}")

    def tiles(self, done: int, total: int) -> None:
        self.view.tiles(done, total)
