"""Quality of a model vs bicubic on degraded benchmark sets, side by side, through the CLI.

For each paired set (default Set5, Set14, BSD68 from ../shared/data):

1. ``realsr degrade HR OUT/SET/lr --pipeline realesrgan --scale 4 --seed S`` (fixed seeds: the
   same LR images on every machine; HR sides are cropped to a multiple of 4 first);
2. bicubic: every LR image upscaled x4 with OpenCV's bicubic (``realsr_cli.engine.io.resize``),
   clipped and rounded to 8 bits like any saved output;
3. ours: ``realsr batch OUT/SET/lr OUT/SET/sr --model MODEL`` (or ``--weights FILE``);
4. ``realsr eval OUT/SET/sr OUT/SET/hr --scale 4 --json`` and the same for bicubic: PSNR/SSIM on Y,
   BasicSR conventions (float, border crop = scale), against the cropped HR.

For each no-reference set (default RealSRSet+5images): bicubic x4 and ours, NIQE of both
(``realsr eval DIR --niqe --json``), lower is better.

Prints one table with ours, bicubic and the difference per set, and writes OUT/quality.json.

    python bench/quality_default.py --out /tmp/q
    python bench/quality_default.py --out /tmp/q --weights my-ugtsr.safetensors --sets Set5
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="work folder (LR, SR, bicubic images)")
    ap.add_argument("--model", default=None, help="model id/alias (default: the catalog default)")
    ap.add_argument("--weights", default=None, help="a safetensors file instead of --model")
    ap.add_argument("--sets", nargs="*", default=["Set5", "Set14", "BSD68"])
    ap.add_argument("--real", nargs="*", default=["RealSRSet+5images"])
    ap.add_argument("--pipeline", default="realesrgan", choices=["realesrgan", "bsrgan"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=4)
    args = ap.parse_args()
    pick = ["--weights", args.weights] if args.weights else (["--model", args.model] if args.model else [])
    rows, report = [], {"pipeline": args.pipeline, "seed": args.seed, "scale": args.scale, "sets": {}}
    for name in args.sets:
        work = args.out / name
        cropped_hr(DATA / name, work / "hr", args.scale)
        realsr("degrade", str(work / "hr"), str(work / "lr"), "--pipeline", args.pipeline,
               "--scale", str(args.scale), "--seed", str(args.seed), "--skip-existing")
        bicubic_folder(work / "lr", work / "bicubic", args.scale)
        t0 = time.perf_counter()
        realsr("batch", str(work / "lr"), str(work / "sr"), *pick, "--format", "png")
        seconds = time.perf_counter() - t0
        ours = realsr("eval", str(work / "sr"), str(work / "hr"), "--scale", str(args.scale))
        base = realsr("eval", str(work / "bicubic"), str(work / "hr"), "--scale", str(args.scale))
        m, b = ours["mean"], base["mean"]
        report["sets"][name] = {"ours": m, "bicubic": b, "images": len(ours["images"]), "batch_seconds": seconds}
        rows.append((name, f"{m['psnr']:.2f} / {m['ssim']:.4f}", f"{b['psnr']:.2f} / {b['ssim']:.4f}",
                     f"{m['psnr'] - b['psnr']:+.2f} dB / {m['ssim'] - b['ssim']:+.4f}"))
    for name in args.real:
        work = args.out / name
        (work / "lr").mkdir(parents=True, exist_ok=True)
        for src in sorted((DATA / name).iterdir()):  # 8-bit RGB PNG copies (some inputs are JPEG)
            from realsr_cli.engine.io import ImageData, read_image, write_image

            img = read_image(src)
            write_image(work / "lr" / f"{src.stem}.png", ImageData(pixels=img.pixels, bit_depth=8))
        bicubic_folder(work / "lr", work / "bicubic", args.scale)
        realsr("batch", str(work / "lr"), str(work / "sr"), *pick, "--format", "png")
        ours = realsr("eval", str(work / "sr"), "--niqe")
        base = realsr("eval", str(work / "bicubic"), "--niqe")
        m, b = ours["mean"]["niqe"], base["mean"]["niqe"]
        report["sets"][name] = {"ours": {"niqe": m}, "bicubic": {"niqe": b}, "images": len(ours["images"])}
        rows.append((name, f"NIQE {m:.3f}", f"NIQE {b:.3f}", f"{m - b:+.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    head = ("set", "ours (PSNR-Y / SSIM-Y)", "bicubic", "ours - bicubic")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
