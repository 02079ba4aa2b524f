"""Quality of models vs bicubic on degraded benchmark sets, side by side, through the CLI.

For each pipeline (default: bicubic, mild, realesrgan) and each paired set (default Set5, Set14,
BSD68 from ../shared/data):

1. ``realsr degrade HR OUT/PIPE/SET/lr --pipeline PIPE --scale 4 --seed S`` (fixed seed: the same
   LR images on every machine and for every model; HR sides are cropped to a multiple of 4 first);
2. bicubic: every LR image upscaled x4 with OpenCV's bicubic (``realsr_cli.engine.io.resize``),
   clipped and rounded to 8 bits like any saved output;
3. each model: ``realsr batch LR SR --model ID`` (or ``--weights FILE`` for a path);
4. ``realsr eval SR HR --scale 4 --json``: PSNR/SSIM on Y, BasicSR conventions (float, border crop
   = scale), against the cropped HR.

For each no-reference set (default RealSRSet+5images): bicubic x4 and each model, NIQE (``realsr
eval DIR --niqe --json``), lower is better.

Prints one table per pipeline (PSNR-Y / SSIM-Y and the difference to bicubic) and the NIQE table,
and writes OUT/quality.json.

    python bench/quality_default.py --out /tmp/q --models bicres-x4 ugtsr-x4-cpu
    python bench/quality_default.py --out /tmp/q --models run/new.safetensors --pipelines mild --sets Set5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REALSR_SHARED", REPO.parent / "shared")) / "data"
PIPELINES = ("bicubic", "mild", "realesrgan", "bsrgan", "mix")


def realsr(*args: str) -> dict:
    """Run the CLI with ``--json`` and return the parsed object (exit 0 required)."""
    cmd = [sys.executable, "-c", "from realsr_cli.cli.app import main; main()", *args, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"failed ({done.returncode}): realsr {' '.join(args)}")
    return json.loads(done.stdout)


def bicubic_folder(lr_dir: Path, out_dir: Path, scale: int) -> None:
    """OpenCV-bicubic x``scale`` of every PNG in ``lr_dir`` as 8-bit PNGs in ``out_dir``."""
    from realsr_cli.engine.io import ImageData, read_image, resize, write_image

    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(lr_dir.glob("*.png")):
        img = read_image(src)
        h, w = img.pixels.shape[:2]
        up = resize(img.pixels, (h * scale, w * scale), filter="bicubic").clip(0.0, 1.0)
        write_image(out_dir / src.name, ImageData(pixels=up, bit_depth=8))


def cropped_hr(hr_dir: Path, out_dir: Path, scale: int) -> None:
    """HR images cropped at the bottom/right to a multiple of ``scale`` (as ``realsr degrade``)."""
    from realsr_cli.engine.io import ImageData, read_image, write_image

    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".tif")):
        img = read_image(src)
        h, w = (img.pixels.shape[0] // scale) * scale, (img.pixels.shape[1] // scale) * scale
        write_image(out_dir / f"{src.stem}.png", ImageData(pixels=img.pixels[:h, :w], bit_depth=8))


def model_args(spec: str) -> list[str]:
    """``--weights FILE`` for an existing file, else ``--model ID``."""
    return ["--weights", spec] if Path(spec).is_file() else ["--model", spec]


def label(spec: str) -> str:
    return Path(spec).stem if Path(spec).is_file() else spec


def upscale_all(lr: Path, work: Path, models: list[str], scale: int, tta: bool = False) -> dict[str, tuple[Path, float]]:
    """bicubic + every model (and with ``tta`` each model with ``--tta`` too, labelled
    ``LABEL+tta``) over ``lr``: label -> (SR folder, seconds of its batch run)."""
    t = time.perf_counter()
    bicubic_folder(lr, work / "bicubic", scale)
    out = {"bicubic": (work / "bicubic", time.perf_counter() - t)}
    for spec in models:
        for extra in ([], ["--tta"]) if tta else ([],):
            name = label(spec) + ("+tta" if extra else "")
            dst = work / f"sr-{name}"
            t = time.perf_counter()
            realsr("batch", str(lr), str(dst), *model_args(spec), "--format", "png", "--skip-existing", *extra)
            out[name] = (dst, time.perf_counter() - t)
    return out


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="work folder (LR, SR, bicubic images)")
    ap.add_argument("--models", nargs="*", default=[], help="model ids/aliases or safetensors files "
                    "(default: the catalog default)")
    ap.add_argument("--sets", nargs="*", default=["Set5", "Set14", "BSD68"],
                    help="paired sets: names under ../shared/data or HR folders")
    ap.add_argument("--real", nargs="*", default=["RealSRSet+5images"])
    ap.add_argument("--pipelines", nargs="*", default=["bicubic", "mild", "realesrgan"], choices=PIPELINES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--tta", action="store_true", help="also run each model with --tta (x8 self-ensemble)")
    args = ap.parse_args()
    if not args.models:
        from realsr_cli.registry.catalog import load_catalog

        args.models = [load_catalog().default_model]
    labels = [label(m) + suffix for m in args.models for suffix in (("", "+tta") if args.tta else ("",))]
    report: dict = {"seed": args.seed, "scale": args.scale, "models": args.models, "pipelines": {}, "real": {}}
    for pipe in args.pipelines:
        rows, sets = [], {}
        for name in args.sets:
            work = args.out / pipe / Path(name).name  # a set is a name under DATA or a folder path
            cropped_hr(DATA / name, work / "hr", args.scale)
            realsr("degrade", str(work / "hr"), str(work / "lr"), "--pipeline", pipe,
                   "--scale", str(args.scale), "--seed", str(args.seed), "--skip-existing")
            results = {}
            for key, (folder, seconds) in upscale_all(work / "lr", work, args.models, args.scale, args.tta).items():
                mean = realsr("eval", str(folder), str(work / "hr"), "--scale", str(args.scale))["mean"]
                results[key] = {**mean, "seconds": seconds}
            sets[Path(name).name] = results
            b = results["bicubic"]
            rows.append((Path(name).name, f"{b['psnr']:.2f} / {b['ssim']:.4f}", *(
                f"{results[k]['psnr']:.2f} / {results[k]['ssim']:.4f} ({results[k]['psnr'] - b['psnr']:+.2f} dB)"
                for k in labels)))
        report["pipelines"][pipe] = sets
        print(f"pipeline {pipe}, seed {args.seed}, x{args.scale}: PSNR-Y / SSIM-Y (difference to bicubic)")
        table(("set", "bicubic", *labels), rows)
    rows = []
    for name in args.real:
        work = args.out / "real" / name
        (work / "lr").mkdir(parents=True, exist_ok=True)
        from realsr_cli.engine.io import ImageData, read_image, write_image

        for src in sorted((DATA / name).iterdir()):  # 8-bit RGB PNG copies (some inputs are JPEG)
            img = read_image(src)
            write_image(work / "lr" / f"{src.stem}.png", ImageData(pixels=img.pixels, bit_depth=8))
        results = {key: realsr("eval", str(folder), "--niqe")["mean"]["niqe"]
                   for key, (folder, _) in upscale_all(work / "lr", work, args.models, args.scale, args.tta).items()}
        report["real"][name] = results
        rows.append((name, f"{results['bicubic']:.3f}", *(
            f"{results[k]:.3f} ({results[k] - results['bicubic']:+.3f})" for k in labels)))
    if rows:
        print("NIQE (lower is better; difference to bicubic)")
        table(("set", "bicubic", *labels), rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
