"""``--tile auto`` vs the untiled run at the same output, side by side in one process.

For each model and LR size: the engine's ``run_model`` with ``tile=None`` (auto: whole image when
it fits, else the fewest balanced tiles that fit) and ``tile=0`` (whole image), interleaved, best
of ``--repeat`` after a warm-up; the wall-time ratio, the tiles auto chose, and the output
difference (max 8-bit levels and PSNR of the 8-bit outputs, auto vs untiled). ``--free-gib`` makes
auto plan for that much free memory instead of what the machine reports (to show a smaller
machine's choice without needing one). The allocator is tuned as the CLI does.

    python bench/bench_tile_auto.py
    python bench/bench_tile_auto.py --cases ugtsr-x4-cpu:1024 --free-gib 4
"""

from __future__ import annotations

import argparse
import math
import os
import time

from _table import print_table  # bench/_table.py (scripts run as python bench/NAME.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=["bicres-x4:512", "bicres-x4:1024", "ugtsr-x4-cpu:512",
                                                    "ugtsr-x4-cpu:1024"], help="MODEL:LR_SIZE")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--free-gib", type=float, default=None)
    args = ap.parse_args()

    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine import device as devices
    from realsr_cli.engine.runner import RunOptions, run_model

    torch.set_num_threads(args.threads)
    devices.tune_cpu_allocator()
    if args.free_gib is not None:
        free = int(args.free_gib * 2**30)
        devices.free_memory_bytes = lambda d: free  # what auto plans for (module attribute)
    print(f"torch {torch.__version__}, {args.threads} threads, precision {args.precision}, "
          f"free memory seen by auto: {devices.free_memory_bytes(torch.device('cpu')) / 2**30:.1f} GiB, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    rows = [("model", "dtype", "LR", "auto tile (tiles)", "untiled s", "auto s", "auto / untiled",
             "max diff (levels)", "PSNR auto vs untiled")]
    for case in args.cases:
        name, size = case.rsplit(":", 1)
        model = api.load_model(name, device="cpu", precision=args.precision, offline=True)
        lq = torch.rand(1, 3, int(size), int(size), generator=torch.Generator().manual_seed(1))
        runs = {"untiled": RunOptions(tile=0, seed=0), "auto": RunOptions(tile=None, seed=0)}
        out, best = {}, {k: math.inf for k in runs}
        for k, o in runs.items():  # warm-up, keeps the outputs
            out[k] = run_model(model, lq, o)
        for _ in range(args.repeat):
            for k, o in runs.items():
                t = time.perf_counter()
                run_model(model, lq, o)
                best[k] = min(best[k], time.perf_counter() - t)
        a, b = ((out[k].sr.clamp(0, 1) * 255).round() for k in ("auto", "untiled"))
        mse = float(((a - b) ** 2).mean())
        psnr = "inf" if mse == 0 else f"{10 * math.log10(255**2 / mse):.1f} dB"
        rows.append((name, str(model.dtype)[6:], size, f"{out['auto'].tile} ({out['auto'].tiles})",
                     f"{best['untiled']:.3f}", f"{best['auto']:.3f}", f"**{best['auto'] / best['untiled']:.2f}x**",
                     f"{int((a - b).abs().max())}", psnr))
        del model
    print_table(rows)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
