#!/usr/bin/env python3
"""Render a small, reproducible set of text-and-graphics images for training the default model.

The photo corpus (tools/make_corpus.py) has no text: the first default model learned to sharpen
photos and put a dark fringe on saturated text (white on orange, docs/benchmarks.md). These images
are what it lacked: lines of text in several fonts, sizes and colours on flat, gradient and
two-tone backgrounds, with slide-like boxes, rules and icons — rendered by us from a seed, so
nothing is downloaded and nothing comes from a benchmark set.

    python tools/make_graphics.py OUT_DIR [--count 12] [--seed 0] [--size 1024x768] [--force]

Fonts: the TrueType files of Debian's ``fonts-dejavu-core`` and ``fonts-liberation`` (DejaVu:
Bitstream Vera licence; Liberation: SIL OFL 1.1), found under ``/usr/share/fonts/truetype``.
``OUT_DIR/MANIFEST.json`` records the seed, every font file used with its sha256, and each image's
sha256; the output is deterministic for given fonts and Pillow/FreeType versions. Writes
``OUT_DIR/graphics_NNN.png``; refuses a non-empty OUT_DIR unless ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_ROOT = Path("/usr/share/fonts/truetype")
FONTS = [  # (package folder, file)
    ("dejavu", "DejaVuSans.ttf"), ("dejavu", "DejaVuSans-Bold.ttf"), ("dejavu", "DejaVuSerif.ttf"),
    ("dejavu", "DejaVuSansMono.ttf"), ("liberation", "LiberationSans-Regular.ttf"),
    ("liberation", "LiberationSans-Bold.ttf"), ("liberation", "LiberationSerif-Regular.ttf"),
    ("liberation", "LiberationSans-Italic.ttf"),
]
WORDS = ("how to do everything with your photos real world super resolution upscale the quick brown "
         "fox jumps over lazy dog chapter price total menu settings open save cancel welcome agenda "
         "results summary figure table north south station platform exit 2026 12 48 3.14 100% x4").split()
#: saturated and muted background / ink colours (RGB 0-255)
PALETTE = [(232, 152, 40), (200, 40, 40), (30, 90, 170), (20, 130, 70), (250, 250, 250), (20, 20, 20),
           (240, 200, 0), (120, 40, 140), (0, 150, 160), (90, 90, 90), (255, 110, 160), (245, 235, 215)]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _contrast(rng: np.random.Generator, bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """An ink colour that stands out from ``bg`` (luma difference >= 90)."""
    luma = lambda c: 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]  # noqa: E731
    choices = [c for c in PALETTE if abs(luma(c) - luma(bg)) >= 90]
    return tuple(choices[int(rng.integers(len(choices)))])


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = int(rng.integers(3))
    a = PALETTE[int(rng.integers(len(PALETTE)))]
    if kind == 0:
        return Image.new("RGB", (w, h), a)
    b = PALETTE[int(rng.integers(len(PALETTE)))]
    if kind == 1:  # a soft vertical gradient
        t = np.linspace(0, 1, h)[:, None, None]
        arr = (np.array(a) * (1 - t) + np.array(b) * t) * np.ones((1, w, 1))
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    im = Image.new("RGB", (w, h), a)  # two-tone: a panel
    x0 = int(rng.integers(w // 4, 3 * w // 4))
    ImageDraw.Draw(im).rectangle((x0, 0, w, h), fill=b)
    return im


def render(rng: np.random.Generator, fonts: list[Path], w: int, h: int) -> Image.Image:
    im = _background(rng, w, h)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):  # boxes, rules and round icons
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        x1, y1 = x0 + int(rng.integers(40, w // 2)), y0 + int(rng.integers(4, h // 3))
        fill = PALETTE[int(rng.integers(len(PALETTE)))]
        if rng.random() < 0.5:
            d.rectangle((x0, y0, min(x1, w - 1), min(y1, h - 1)), fill=fill)
        else:
            r = int(rng.integers(10, 50))
            d.ellipse((x0, y0, x0 + 2 * r, y0 + 2 * r), fill=fill, outline=_contrast(rng, fill), width=3)
    y = int(rng.integers(5, 40))
    while y < h - 20:
        size = int(rng.choice([14, 18, 22, 28, 36, 48, 64, 80]))
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(2, 9)))]
        if rng.random() < 0.3:
            words = [wd.capitalize() for wd in words]
        x = int(rng.integers(5, w // 3))
        bg = im.getpixel((min(x + 5, w - 1), min(y + size // 2, h - 1)))
        d.text((x, y), " ".join(words), font=font, fill=_contrast(rng, bg))
        y += int(size * rng.uniform(1.15, 1.8))
    return im


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="1024x768", help="WxH of each image")
    ap.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    fonts = [FONT_ROOT / pkg / name for pkg, name in FONTS]
    missing = [str(f) for f in fonts if not f.is_file()]
    if missing:
        print(f"missing fonts: {missing}; install Debian's fonts-dejavu-core and fonts-liberation",
              file=sys.stderr)
        return 2
    out = args.out_dir
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"{out} is not empty (use --force)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images = []
    for i in range(args.count):
        path = out / f"graphics_{i:03d}.png"
        render(rng, fonts, w, h).save(path, optimize=False)
        images.append({"file": path.name, "sha256": sha256_file(path), "size": [w, h]})
    manifest = {
        "tool": "tools/make_graphics.py", "seed": args.seed, "count": args.count, "size": [w, h],
        "fonts": [{"file": str(f), "sha256": sha256_file(f),
                   "licence": "Bitstream Vera (DejaVu)" if "dejavu" in str(f) else "SIL OFL 1.1 (Liberation)"}
                  for f in fonts],
        "licence": "rendered by realsr's tools/make_graphics.py; no third-party image content",
        "images": images,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{args.count} images -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
