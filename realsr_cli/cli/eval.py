"""`realsr eval --lq LR_DIR --hq HR_DIR`: PSNR/SSIM (and codebook accuracy) of a model on pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from realsr_cli.cli import _common, _output
from realsr_cli.cli._options import (
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    Precision,
    PrecisionOpt,
    SeedOpt,
    StepsOpt,
    TileOpt,
    TileOverlapOpt,
    WeightsOpt,
    parse_tile,
)
from realsr_cli.engine import api
from realsr_cli.engine import evaluate as engine_eval
from realsr_cli.errors import BatchFailedError, UsageError

_HQ_HELP = "Folder of HR images (same relative names, any image suffix)."
_CROP = "Pixels cropped from each side before scoring (default: the model's scale)."
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


def eval_cmd(
    lq: Annotated[str, typer.Option("--lq", help="Folder of LR images.", show_default=False)],
    hq: Annotated[str, typer.Option("--hq", help=_HQ_HELP, show_default=False)],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    crop_border: Annotated[int | None, typer.Option("--crop-border", help=_CROP, min=0)] = None,
    recursive: _RecursiveOpt = False,
    glob: Annotated[str | None, typer.Option("--glob", help="Only LR files matching this.")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    seed: SeedOpt = None,
    steps: StepsOpt = None,
    hr_prior: Annotated[str | None, typer.Option("--hr-prior", help=_PRIOR_HELP)] = None,
    top_k: Annotated[list[str] | None, typer.Option("--top-k", help=_TOPK_HELP)] = None,
    save_dir: Annotated[str | None, typer.Option("--save-dir", help=_SAVE_HELP)] = None,
    offline: OfflineOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score a model on LR/HR pairs: PSNR and SSIM on the Y channel (BasicSR conventions).

    Examples:

      realsr eval --model femasr-x4 --lq ./DIV2K_val_LR --hq ./DIV2K_val_HR

      realsr eval --weights g.safetensors --lq lr --hq hr --hr-prior hrp.safetensors --json
    """
    ks = _top_k(top_k)
    opts = engine_eval.EvalOptions(
        upscale=api.UpscaleOptions(
            tile=parse_tile(tile), tile_overlap=tile_overlap, seed=seed, steps=steps
        ),
        crop_border=crop_border,
        top_k=ks,
        save_dir=Path(save_dir) if save_dir else None,
    )
    plan = engine_eval.pair_folders(lq, hq, recursive=recursive, pattern=glob, exclude=save_dir)
    for name, reason in plan.missing:
        _output.warn(f"skipping {name}: {reason}")
    if not plan.pairs:
        raise UsageError(
            f"no LR image in {lq} has an HR partner in {hq}",
            hint="names must match: LR_DIR/a/x.png <-> HR_DIR/a/x.<any suffix>",
        )
    with _output.progress() as view:
        m = _common.load(model, weights, None, device, precision.value, offline, view)
        prior = engine_eval.load_prior(m, hr_prior) if hr_prior else None
        _output.info(f"model: {_common.describe(m)}; {len(plan.pairs)} pair(s)")
        view.images(len(plan.pairs))

        def done(pair, score, error):
            view.reset_tiles()
            view.advance_image(pair.name)
            if error:
                _output.warn(f"{pair.name}: {error}")

        report = engine_eval.evaluate(
            m, plan, opts, prior=prior, hr_prior=hr_prior, on_done=done, progress=view.tiles
        )
    if json_out:
        _output.emit_json(report.to_json())
    else:
        keys = list(report.mean)[2:]
        rows = [
            [s.name, _fmt(s.to_json()["psnr"], 3), f"{s.ssim:.4f}"]
            + [f"{(s.codebook or {})[k]:.4f}" for k in keys]
            for s in report.images
        ]
        if report.images:
            mean = report.to_json()["mean"]
            cells = (f"{mean[k]:.4f}" for k in keys)
            rows.append(["mean", _fmt(mean["psnr"], 3), f"{mean['ssim']:.4f}", *cells])
        title = f"{report.model} x{report.scale}, crop {report.crop_border}, Y channel"
        _output.table(title, ["image", "PSNR", "SSIM", *keys], rows)
    if report.failed:
        n, total = len(report.failed), len(plan.pairs)
        msg = f"{n} of {total} pair(s) failed"
        raise BatchFailedError(msg, failed=n, total=total, hint="see the warnings above")
