"""Side-by-side crops for the docs: bicubic | model(s) | HR, from a ``quality_default.py`` folder.

Each crop is ``PIPELINE/SET/IMAGE:x,y,w,h`` in HR pixels (x, y of the top-left corner); every
column is the same region of bicubic, each model's output and the HR image, enlarged ``--zoom``
times with nearest neighbour so pixels stay visible, with a label row on top. Writes one PNG.

    python bench/crops_default.py --work /tmp/q --models bicres-x4 ugtsr-x4-cpu -o crops.png \\
        --crops mild/Set14/face:100,60,96,96 mild/Set14/ppt3:0,300,128,96
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw


def _crop(path: Path, box: tuple[int, int, int, int], zoom: int) -> Image.Image:
    x, y, w, h = box
    im = Image.open(path).convert("RGB").crop((x, y, x + w, y + h))
    return im.resize((w * zoom, h * zoom), Image.NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, type=Path, help="quality_default.py --out folder")
    ap.add_argument("--models", nargs="*", default=[], help="model labels as in that folder (sr-LABEL)")
    ap.add_argument("--crops", nargs="+", required=True, help="PIPELINE/SET/IMAGE:x,y,w,h")
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("-o", "--output", required=True, type=Path)
    args = ap.parse_args()
    columns = [("bicubic", "bicubic"), *((f"sr-{m}", m) for m in args.models), ("hr", "HR")]
    rows: list[list[Image.Image]] = []
    labels: list[str] = []
    for spec in args.crops:
        where, box = spec.split(":")
        pipe, set_name, image = where.split("/")
        xywh = tuple(int(v) for v in box.split(","))
        folder = args.work / pipe / set_name
        rows.append([_crop(folder / sub / f"{image}.png", xywh, args.zoom) for sub, _ in columns])
        labels.append(f"{set_name}/{image} ({pipe} LR)")
    pad, head = 6, 16
    cw = max(im.width for r in rows for im in r)
    heights = [max(im.height for im in r) + head for r in rows]
    sheet = Image.new("RGB", (pad + len(columns) * (cw + pad), head + pad + sum(h + pad for h in heights)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (_, title) in enumerate(columns):
        draw.text((pad + j * (cw + pad), 2), title, fill="black")
    y = head + pad
    for r, label, h in zip(rows, labels, heights, strict=True):
        draw.text((pad, y), label, fill="black")
        for j, im in enumerate(r):
            sheet.paste(im, (pad + j * (cw + pad), y + head))
        y += h + pad
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"{args.output}: {sheet.width}x{sheet.height}, {len(rows)} crops x {len(columns)} columns")


if __name__ == "__main__":
    main()
