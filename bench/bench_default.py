"""Speed of the embedded default model on the CPU, side by side with OpenCV bicubic.

Runs what ``realsr upscale`` runs (``load_model`` + ``run_model`` with the engine's automatic
tiling) on random LR images of a few sizes and prints output megapixels per second next to the
issue's target (0.5 out-MP/s on 2 CPU cores) and next to OpenCV bicubic of the same image (the
baseline a user would otherwise reach for; its ratio says how many times slower the model is).
Model load time (including the sha256 check of the shipped file) is reported separately.

    python bench/bench_default.py --threads 2
    python bench/bench_default.py --model ugtsr-x4-cpu --sizes 128 256 512 --repeat 3
"""

from __future__ import annotations

import argparse
import time

TARGET_MP_S = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registry id/alias or a weights file (default: the catalog default)")
    ap.add_argument("--sizes", nargs="*", type=int, default=[128, 256, 512], help="LR sides")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine.io import resize
    from realsr_cli.engine.runner import RunOptions, run_model

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = api.load_model(args.model, device="cpu", precision="fp32", offline=True)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.net.parameters())
    print(f"model {model.arch} x{model.scale}, {params / 1e6:.2f} M params, load {load_s:.2f} s, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    head = ("LR size", "tiles", "model s", "model out-MP/s", "vs target 0.5", "bicubic s", "model / bicubic time")
    rows = [head]
    for size in args.sizes:
        gen = torch.Generator().manual_seed(size)
        lq = torch.rand(1, 3, size, size, generator=gen)
        out_mp = (size * model.scale) ** 2 / 1e6
        best, tiles = float("inf"), 0
        with torch.inference_mode():
            for _ in range(args.repeat):
                t = time.perf_counter()
                result = run_model(model, lq, RunOptions())
                best, tiles = min(best, time.perf_counter() - t), result.tiles
        img = lq[0].permute(1, 2, 0).numpy().astype(np.float32)
        bic = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            resize(img, (size * model.scale, size * model.scale), filter="bicubic")
            bic = min(bic, time.perf_counter() - t)
        rows.append((str(size), str(tiles), f"{best:.2f}", f"{out_mp / best:.2f}",
                     f"{out_mp / best / TARGET_MP_S:.2f}x", f"{bic:.3f}", f"{best / bic:.0f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
