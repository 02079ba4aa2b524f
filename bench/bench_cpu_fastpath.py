"""The CPU fast path for a convolutional model, side by side in one run: fp32 NCHW (the reference),
fp32 channels-last, and bf16 channels-last (only on a CPU with native bf16).

Speed: output MP/s on a random LR image of each ``--sizes`` (best of ``--repeat``), whole image,
and each layout's ratio to fp32 NCHW. Safety of bf16 ("is it safe for this model?"): on real LR
images (every PNG in ``--images``), the PSNR of the bf16 output against the fp32 output, both
clamped and rounded to 8 bits as saved; the threshold we use is 45 dB — a max difference of a few
8-bit levels, an RMS below 1.5 levels, invisible next to the model's own error (the default model
is 25-30 dB from the HR image); for a codebook model also the share of code indices equal to fp32's.
Every row is the model as the engine loads it (bf16 keeps a model's deciding parts in fp32; the
allocator tuned as the CLI does unless ``--system-malloc``). Prints the machine's load average and
CPU/wall per row.

    python bench/bench_cpu_fastpath.py --model bicres-x4 --images /work/q/bicubic/BSD68/lr
    python bench/bench_cpu_fastpath.py --model ugtsr-x4-cpu --sizes 128 256 --images /work/q/bicubic/BSD68/lr
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from pathlib import Path

from _table import print_table  # bench/_table.py (scripts run as python bench/NAME.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registry id or weights file (default: the catalog default)")
    ap.add_argument("--images", type=Path, default=None, help="folder of real LR PNGs for the bf16 check")
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 512])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's allocator as it is")
    args = ap.parse_args()

    import numpy as np
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine.device import cpu_native_bf16, tune_cpu_allocator
    from realsr_cli.engine.io import read_image
    from realsr_cli.registry.capabilities import CodebookMatching, has

    torch.set_num_threads(args.threads)
    if not args.system_malloc:
        tune_cpu_allocator()  # as the CLI does for a CPU model

    def load(precision: str, channels_last: bool):
        """The model as the engine loads it (bf16 keeps a model's deciding parts in fp32), in the
        layout asked for whatever its ``ArchSpec.channels_last`` says (that is what is measured)."""
        m = api.load_model(args.model, device="cpu", precision=precision, offline=True)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m.net.to(memory_format=fmt)
        m.spec = dataclasses.replace(m.spec, channels_last=channels_last)
        run = lambda x: m(x.contiguous(memory_format=fmt))  # noqa: E731
        run.net = m.net
        return run

    base = api.load_model(args.model, device="cpu", precision="fp32", offline=True)
    layouts = [("fp32 NCHW", "fp32", False), ("fp32 channels-last", "fp32", True)]
    if cpu_native_bf16():
        layouts.append(("bf16 channels-last", "bf16", True))
    print(f"{base.weights_id or base.weights_path}: {base.arch} x{base.scale}; torch {torch.__version__}, "
          f"{args.threads} threads, native bf16 {cpu_native_bf16()}, allocator tuned {not args.system_malloc}, "
          f"load average {os.getloadavg()[0]:.2f}")

    rows = [("LR size", "layout", "wall s", "CPU/wall", "out-MP/s", "vs fp32 NCHW")]
    models = {name: load(p, cl) for name, p, cl in layouts}
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        ref_t = None
        for name, _, _ in layouts:
            m = models[name]
            m(x[..., :64, :64])
            best, cpu = math.inf, 0.0
            for _ in range(args.repeat):
                c, t = time.process_time(), time.perf_counter()
                m(x)
                wall = time.perf_counter() - t
                if wall < best:
                    best, cpu = wall, time.process_time() - c
            ref_t = ref_t or best
            rows.append((str(size), name, f"{best:.3f}", f"{cpu / best:.2f}",
                         f"{(size * base.scale) ** 2 / 1e6 / best:.2f}", f"{ref_t / best:.2f}x"))
    print_table(rows)

    if args.images and cpu_native_bf16():
        fp32, bf16 = models["fp32 channels-last"], models["bf16 channels-last"]
        codes = has(fp32.net, CodebookMatching)  # (fp32/bf16 are the channels-last runners)
        worst, psnrs, maxdiff, same, total = math.inf, [], 0, 0, 0
        for path in sorted(args.images.glob("*.png")):
            img = read_image(path).pixels
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
            if x.shape[1] == 1:
                x = x.expand(1, 3, *x.shape[2:])
            with torch.inference_mode():
                a = (fp32(x).clamp(0, 1) * 255).round()
                b = (bf16(x).clamp(0, 1) * 255).round()
                if codes:  # the code indices the decoder receives, fed as the engine feeds them
                    xc = x.contiguous(memory_format=torch.channels_last)
                    ca = fp32.net.match_indices(fp32.net.pad_lq(xc))[0]
                    cb = bf16.net.match_indices(bf16.net.pad_lq(xc))[0]
                    same += int((ca == cb).sum())
                    total += ca.numel()
            mse = float(((a - b) ** 2).mean())
            psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
            psnrs.append(psnr)
            worst = min(worst, psnr)
            maxdiff = max(maxdiff, int((a - b).abs().max()))
        finite = [p for p in psnrs if p != math.inf]
        mean = sum(finite) / len(finite) if finite else math.inf
        print(f"bf16 vs fp32 output on {len(psnrs)} real images ({args.images}): mean PSNR {mean:.2f} dB, "
              f"worst {worst:.2f} dB, max |diff| {maxdiff} levels; safe (worst >= 45 dB): {worst >= 45}")
        if codes:
            print(f"code indices equal to fp32's: {same}/{total} ({same / max(total, 1):.4%})")
    print(f"load average {os.getloadavg()[0]:.2f} after the run")


if __name__ == "__main__":
    main()
