"""Speed of default-model candidates on the CPU, side by side with OpenCV bicubic, in one run.

Runs what ``realsr upscale`` runs (``load_model`` + ``run_model`` with the engine's automatic
tiling, fp32) on random LR images of a few sizes, for each model named (default: the catalog
default and the previous default ``ugtsr-x4-cpu``), and OpenCV bicubic of the same image (the
baseline a user would otherwise reach for). Prints output megapixels per second, the ratio to the
target (1.0 out-MP/s on 2 CPU cores at 256x256 LR, issue 13) and to bicubic, the model load time
(including the sha256 check of a shipped file), the machine's load average, and CPU time / wall
time per row (a ratio near the thread count means the cores were ours).

    python bench/bench_default.py --threads 2
    python bench/bench_default.py --models bicres-x4 ugtsr-x4-cpu --sizes 128 256 512 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time

from _table import print_table  # bench/_table.py (scripts run as python bench/NAME.py)

TARGET_MP_S = 1.0


def _best(fn, repeat: int) -> tuple[float, float, object]:
    """Fastest wall time of ``repeat`` calls, the CPU time of that call, and its result."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None,
                    help="registry ids/aliases or weights files (default: the catalog default and ugtsr-x4-cpu)")
    ap.add_argument("--sizes", nargs="*", type=int, default=[128, 256, 512], help="LR sides")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine.io import resize
    from realsr_cli.engine.runner import RunOptions, run_model
    from realsr_cli.registry.catalog import load_catalog

    torch.set_num_threads(args.threads)
    names = args.models or [load_catalog().default().id, "ugtsr-x4-cpu"]
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f} "
          f"(1 min) before the run")
    head = ("model", "LR size", "tiles", "wall s", "CPU/wall", "out-MP/s", "vs target 1.0", "model / bicubic time")
    rows = [head]
    for name in names:
        t0 = time.perf_counter()
        model = api.load_model(name, device="cpu", precision="fp32", offline=True)
        params = sum(p.numel() for p in model.net.parameters())
        print(f"{name}: {model.arch} x{model.scale}, {params / 1e6:.3f} M params, load {time.perf_counter() - t0:.2f} s")
        for size in args.sizes:
            lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
            out_mp = (size * model.scale) ** 2 / 1e6
            with torch.inference_mode():
                run_model(model, lq[..., :32, :32], RunOptions())  # warm-up (first-call allocations)
                wall, cpu, result = _best(lambda lq=lq, model=model: run_model(model, lq, RunOptions()), args.repeat)
            img = lq[0].permute(1, 2, 0).numpy().astype(np.float32)
            side = size * model.scale
            bic, _, _ = _best(lambda img=img, side=side: resize(img, (side, side), filter="bicubic"), args.repeat)
            rows.append((name, str(size), str(result.tiles), f"{wall:.3f}", f"{cpu / wall:.2f}",
                         f"{out_mp / wall:.2f}", f"{out_mp / wall / TARGET_MP_S:.2f}x", f"{wall / bic:.0f}x"))
    for size in args.sizes:
        img = np.random.default_rng(size).random((size, size, 3), dtype=np.float32)
        side = size * 4
        bic, cpu, _ = _best(lambda img=img, side=side: resize(img, (side, side), filter="bicubic"), args.repeat)
        rows.append(("bicubic (OpenCV)", str(size), "-", f"{bic:.4f}", f"{cpu / bic:.2f}",
                     f"{side * side / 1e6 / bic:.1f}", f"{side * side / 1e6 / bic / TARGET_MP_S:.0f}x", "1x"))
    print_table(rows)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after the run")


if __name__ == "__main__":
    main()
