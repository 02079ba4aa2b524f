"""Does ``torch.compile`` pay on this CPU? Start-up cost and steady-state gain per model, measured
in one run, eager and compiled side by side (issue 15, ``--compile``).

    python bench/bench_compile.py                          # bicres-x4 and ugtsr-x4-cpu, 256x256 LR
    python bench/bench_compile.py --models bicres-x4 --size 128 --repeats 5

For each model and precision the engine would pick (``load_model(..., precision=P)``: fp32, and
``auto`` = bf16 channels-last where the CPU has native bf16 and the model allows it), on one fixed
input: eager steady state (median of ``--repeats`` calls after one warm-up), then
``torch.compile(net.upscale)`` (inductor, default mode): the first call (compilation included),
then its steady state, and the largest difference to the eager output. Each compiled model runs in
a fresh interpreter, so no cache from an earlier model helps. Prints one row per model/precision
with the ratios and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time, torch
from realsr_cli.engine import api
name, precision, size, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = api.load_model(name, device="cpu", precision=precision, offline=True)
torch.manual_seed(0)
x = torch.rand(1, 3, size, size).to(m.dtype)
if m.spec.channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
fn = m.net.upscale
def timed(f, n):
    out, ts = None, []
    for _ in range(n):
        t = time.perf_counter()
        with torch.no_grad():
            out = f(x, generator=torch.Generator().manual_seed(0))
        ts.append(time.perf_counter() - t)
    return out, ts
ref, _ = timed(fn, 1)
_, eager = timed(fn, repeats)
compiled = torch.compile(fn)
t = time.perf_counter()
with torch.no_grad():
    first_out = compiled(x, generator=torch.Generator().manual_seed(0))
first = time.perf_counter() - t
out, comp = timed(compiled, repeats)
print(json.dumps(dict(dtype=str(m.dtype).removeprefix("torch."), eager_s=statistics.median(eager),
                      compile_first_s=first, compiled_s=statistics.median(comp),
                      max_abs_diff=float((out.float() - ref.float()).abs().max()))))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["bicres-x4", "ugtsr-x4-cpu"])
    ap.add_argument("--precisions", nargs="*", default=["fp32", "auto"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'model':<14}{'precision':>10}{'dtype':>10}{'eager s':>9}{'compiled s':>11}{'gain':>7}"
          f"{'1st call s':>11}{'calls to repay':>15}{'max |diff|':>12}")
    for name in args.models:
        for precision in args.precisions:
            r = subprocess.run([sys.executable, "-c", CHILD, name, precision, str(args.size), str(args.repeats)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name:<14}{precision:>10}  failed: {r.stderr.strip().splitlines()[-1][:120]}")
                continue
            d = json.loads(r.stdout.strip().splitlines()[-1])
            gain = d["eager_s"] / d["compiled_s"]
            saved = d["eager_s"] - d["compiled_s"]
            repay = (d["compile_first_s"] - d["eager_s"]) / saved if saved > 0 else float("inf")
            print(f"{name:<14}{precision:>10}{d['dtype']:>10}{d['eager_s']:>9.3f}{d['compiled_s']:>11.3f}"
                  f"{gain:>6.2f}x{d['compile_first_s']:>11.1f}{repay:>15.0f}{d['max_abs_diff']:>12.2e}")
    print(f"\n{args.size}x{args.size} LR, median of {args.repeats}; load average {os.getloadavg()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
