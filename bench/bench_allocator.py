"""The CLI's CPU allocator setting (``engine.device.tune_cpu_allocator``) vs glibc's default, side
by side in one run: each row is its own subprocess (so its peak RSS, VmHWM, is its own), the same
model, size and tile, with ``REALSR_MALLOC=system`` (default glibc) or tuned. Prints the best wall
time of ``--repeat`` runs after one warm-up, the speed ratio, peak RSS and its ratio.

    python bench/bench_allocator.py
    python bench/bench_allocator.py --cases bicres-x4:fp32:512:0 ugtsr-x4-cpu:auto:256:auto
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _proc import status_kib  # bench/_proc.py (scripts run as python bench/NAME.py)
from _table import print_table

TAG = "ALLOC_RESULT "


def _child(case: str, repeat: int, threads: int) -> None:
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine.device import tune_cpu_allocator
    from realsr_cli.engine.runner import RunOptions, run_model

    torch.set_num_threads(threads)
    model_id, precision, size, tile = case.split(":")
    tuned = tune_cpu_allocator()
    model = api.load_model(model_id, device="cpu", precision=precision, offline=True)
    lq = torch.rand(1, 3, int(size), int(size), generator=torch.Generator().manual_seed(1))
    options = RunOptions(tile=None if tile == "auto" else int(tile))
    result = run_model(model, lq, options)
    best = min(_timed(lambda: run_model(model, lq, options)) for _ in range(repeat))
    hwm = status_kib("VmHWM") / 1024
    print(TAG + json.dumps({"tuned": tuned, "wall": best, "hwm": hwm, "tile": result.tile,
                            "tiles": result.tiles, "dtype": str(model.dtype)[6:]}), flush=True)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=["bicres-x4:fp32:512:0", "bicres-x4:auto:512:0",
                                                    "bicres-x4:auto:1024:auto", "ugtsr-x4-cpu:fp32:256:auto",
                                                    "ugtsr-x4-cpu:auto:256:auto"],
                    help="MODEL:PRECISION:LR_SIZE:TILE")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.repeat, args.threads)
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    rows = [("model", "precision", "LR", "tile", "allocator", "wall s", "speed vs default", "peak RSS MiB",
             "RSS vs default")]
    for case in args.cases:
        got = {}
        for mode in ("system", ""):
            env = {**os.environ, "REALSR_MALLOC": mode}
            out = subprocess.run([sys.executable, __file__, "--child", case, "--repeat", str(args.repeat),
                                  "--threads", str(args.threads)], env=env, capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith(TAG)), None)
            if line is None:
                raise SystemExit(f"{case} ({mode or 'tuned'}) failed:\n{out.stderr[-2000:]}")
            got[mode] = json.loads(line[len(TAG):])
        base = got["system"]
        model_id, precision, size, _ = case.split(":")
        for mode, r in (("system", base), ("", got[""])):
            rows.append((model_id, f"{precision} ({r['dtype']})", size, f"{r['tile']} ({r['tiles']})",
                         "glibc default" if mode else "tuned (CLI)", f"{r['wall']:.3f}",
                         f"{base['wall'] / r['wall']:.2f}x", f"{r['hwm']:.0f}", f"{r['hwm'] / base['hwm']:.2f}x"))
    print_table(rows)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
