"""A long `realsr batch`: is memory flat and throughput steady over thousands of images?

    python bench/batch_soak.py --out /tmp/soak --count 2000          # the full run (docs/reliability.md)
    python bench/batch_soak.py --out /tmp/soak --count 200           # a quick look

Writes ``--count`` seeded photo-like images (sizes drawn between 48 and 160 px a side, PNG and
JPEG, a few gray and RGBA ones), runs ``realsr batch IN OUT`` once (the embedded default model,
``--device cpu``) in a subprocess and samples its resident memory (VmRSS from /proc) every
``--every`` seconds. Afterwards: outputs written (all must decode), the RSS at 10% / 50% / 90% / 100%
of the images done, its peak, its growth from 25% of the images done to the end, and the
throughput of each tenth of the run (from the outputs' modification times). Writes OUT/soak.json;
exits 1 when the batch fails, an output is missing or undecodable, or RSS grows by more than
``--max-growth`` MiB from 25% of the images to the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, count: int, seed: int = 0, sizes: tuple[int, int] = (48, 160)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([xx, yy, (xx + yy) / 2], -1) * rng.uniform(0.3, 1.0, 3)
        for _ in range(3):  # a few edges and blobs
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(3, max(4, min(w, h) // 3)))
            base[max(0, y0 - r):y0 + r, max(0, x0 - r):x0 + r] = rng.uniform(0, 1, 3)
        img = (np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1) * 255).astype(np.uint8)
        kind = i % 10
        if kind == 7:
            im, suffix = Image.fromarray(img).convert("L"), ".png"
        elif kind == 8:
            im = Image.fromarray(np.dstack([img, np.full(img.shape[:2], 200, np.uint8)]), "RGBA")
            suffix = ".png"
        else:
            im, suffix = Image.fromarray(img), (".jpg" if kind % 2 else ".png")
        p = folder / f"img{i:05d}{suffix}"
        im.save(p, quality=90) if suffix == ".jpg" else im.save(p)
        paths.append(p)
    return paths


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--sizes", type=int, nargs=2, default=(48, 160), metavar=("MIN", "MAX"),
                    help="image sides drawn from MIN..MAX (equal: one size for every image)")
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--max-growth", type=float, default=50.0, help="MiB of RSS growth allowed from 25%% of the images to the end")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    src, dst = args.out / "in", args.out / "out"
    t0 = time.time()
    inputs = make_images(src, args.count, sizes=tuple(args.sizes))
    print(f"{len(inputs)} inputs written in {time.time() - t0:.1f}s", flush=True)

    cmd = [sys.executable, "-m", "realsr_cli", "batch", str(src), str(dst), "--device", "cpu",
           "--format", "png", "--json"]
    start = time.time()
    summary_path = args.out / "batch.json"  # a file, not a pipe: the summary is larger than a pipe's buffer
    summary_file = open(summary_path, "wb")
    proc = subprocess.Popen(cmd, stdout=summary_file, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int, float]] = []  # (seconds, outputs so far, RSS MiB)
    while proc.poll() is None:
        r = rss_mib(proc.pid)
        if r is not None:
            done = sum(1 for _ in dst.glob("*.png")) if dst.is_dir() else 0
            samples.append((time.time() - start, done, r))
        time.sleep(args.every)
    summary_file.close()
    stdout = summary_path.read_text()
    wall = time.time() - start
    problems = []
    if proc.returncode != 0:
        problems.append(f"batch exited {proc.returncode}")
    outputs = sorted(dst.glob("*.png"))
    if len(outputs) != len(inputs):
        problems.append(f"{len(outputs)} outputs for {len(inputs)} inputs")
    bad = []
    for p in outputs:
        try:
            with Image.open(p) as im:
                im.load()
        except OSError:
            bad.append(p.name)
    if bad:
        problems.append(f"{len(bad)} outputs do not decode: {bad[:5]}")

    def rss_at(frac: float) -> float | None:
        want = frac * len(inputs)
        hits = [s for s in samples if s[1] >= want]
        return round(hits[0][2], 1) if hits else (round(samples[-1][2], 1) if samples else None)

    # growth after warm-up: RSS once a quarter of the images is done vs at the end (start-up and
    # the first images' allocations are not growth)
    growth = (rss_at(1.0) or 0.0) - (rss_at(0.25) or 0.0)
    if growth > args.max_growth:
        problems.append(f"RSS grew {growth:.1f} MiB from 25% to 100% of the images")
    times = sorted(p.stat().st_mtime for p in outputs)
    tenths = []
    if len(times) >= 20:
        k = len(times) // 10
        for i in range(10):
            chunk = times[i * k:(i + 1) * k]
            span = chunk[-1] - chunk[0]
            tenths.append(round((len(chunk) - 1) / span, 2) if span > 0 else None)
    report = {
        "command": " ".join(cmd[1:]), "images": len(inputs), "outputs": len(outputs), "wall_seconds": round(wall, 1),
        "images_per_second": round(len(outputs) / wall, 2) if wall else None,
        "rss_mib": {"at_10%": rss_at(0.1), "at_50%": rss_at(0.5), "at_90%": rss_at(0.9), "end": rss_at(1.0),
                    "peak": round(max((s[2] for s in samples), default=0.0), 1),
                    "growth_25%_to_end": round(float(growth), 1)},
        "images_per_second_by_tenth": tenths, "samples": len(samples),
        "load_average": os.getloadavg(), "problems": problems,
        "batch_summary": {k: v for k, v in json.loads(stdout).items() if k not in ("images", "failed")}
        if stdout.strip().startswith("{") else None,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "batch_summary"}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
