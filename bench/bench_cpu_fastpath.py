"""The CPU fast path for a convolutional model, side by side in one run: fp32 NCHW (the reference),
fp32 channels-last, and bf16 channels-last (only on a CPU with native bf16).

Speed: output MP/s on a random LR image of each ``--sizes`` (best of ``--repeat``), whole image,
and each layout's ratio to fp32 NCHW. Safety of bf16 ("is it safe for this model?"): on real LR
images (every PNG in ``--images``), the PSNR of the bf16 output against the fp32 output, both
clamped and rounded to 8 bits as saved; the threshold we use is 45 dB — a max difference of a few
8-bit levels, an RMS below 1.5 levels, invisible next to the model's own error (the default model
is 25-30 dB from the HR image). Prints the machine's load average and CPU/wall per row.

    python bench/bench_cpu_fastpath.py --model bicres-x4 --images /work/q/bicubic/BSD68/lr
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registry id or weights file (default: the catalog default)")
    ap.add_argument("--images", type=Path, default=None, help="folder of real LR PNGs for the bf16 check")
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 512])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine.device import cpu_native_bf16
    from realsr_cli.engine.io import read_image

    torch.set_num_threads(args.threads)
    base = api.load_model(args.model, device="cpu", precision="fp32", offline=True)
    layouts = [("fp32 NCHW", torch.float32, torch.contiguous_format), ("fp32 channels-last", torch.float32, torch.channels_last)]
    if cpu_native_bf16():
        layouts.append(("bf16 channels-last", torch.bfloat16, torch.channels_last))
    print(f"{base.weights_id or base.weights_path}: {base.arch} x{base.scale}; torch {torch.__version__}, "
          f"{args.threads} threads, native bf16 {cpu_native_bf16()}, load average {os.getloadavg()[0]:.2f}")

    def net_for(dtype, fmt):
        import copy

        net = copy.deepcopy(base.net).to(dtype=dtype).to(memory_format=fmt)
        return lambda x: net.upscale(x.to(dtype).contiguous(memory_format=fmt)).float()

    rows = [("LR size", "layout", "wall s", "CPU/wall", "out-MP/s", "vs fp32 NCHW")]
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        ref_t = None
        for name, dtype, fmt in layouts:
            fn = net_for(dtype, fmt)
            with torch.inference_mode():
                fn(x[..., :64, :64])
                best, cpu = math.inf, 0.0
                for _ in range(args.repeat):
                    c, t = time.process_time(), time.perf_counter()
                    fn(x)
                    wall = time.perf_counter() - t
                    if wall < best:
                        best, cpu = wall, time.process_time() - c
            ref_t = ref_t or best
            rows.append((str(size), name, f"{best:.3f}", f"{cpu / best:.2f}",
                         f"{(size * base.scale) ** 2 / 1e6 / best:.2f}", f"{ref_t / best:.2f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")

    if args.images and cpu_native_bf16():
        fp32, bf16 = net_for(torch.float32, torch.channels_last), net_for(torch.bfloat16, torch.channels_last)
        worst, psnrs, maxdiff = math.inf, [], 0
        for path in sorted(args.images.glob("*.png")):
            img = read_image(path).pixels
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
            if x.shape[1] == 1:
                x = x.expand(1, 3, *x.shape[2:])
            with torch.inference_mode():
                a = (fp32(x).clamp(0, 1) * 255).round()
                b = (bf16(x).clamp(0, 1) * 255).round()
            mse = float(((a - b) ** 2).mean())
            psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
            psnrs.append(psnr)
            worst = min(worst, psnr)
            maxdiff = max(maxdiff, int((a - b).abs().max()))
        finite = [p for p in psnrs if p != math.inf]
        mean = sum(finite) / len(finite) if finite else math.inf
        print(f"bf16 vs fp32 output on {len(psnrs)} real images ({args.images}): mean PSNR {mean:.2f} dB, "
              f"worst {worst:.2f} dB, max |diff| {maxdiff} levels; safe (worst >= 45 dB): {worst >= 45}")
    print(f"load average {os.getloadavg()[0]:.2f} after the run")


if __name__ == "__main__":
    main()
