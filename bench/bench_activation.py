"""Measured activation memory per output pixel vs the engine's estimate (``--tile auto``'s budget).

Each case runs in a fresh interpreter, as the CLI runs a model on the CPU (allocator tuned): the
model is loaded and warmed on a 32-px image, the heap trimmed, the peak-RSS mark reset (``/proc/self/clear_refs``),
one whole-image ``run_model`` (``--tile 0``) runs, and the peak above the RSS before the call is
divided by the output pixels. Next to it: ``runner.estimate_bytes`` for the same image (what auto
plans with) and the ratio estimate / measured, which must stay >= 1 for auto never to plan more
than fits.

    python bench/bench_activation.py
    python bench/bench_activation.py --cases ugtsr-x4-cpu:256 --precisions fp32 auto
    python bench/bench_activation.py --cases random-upsr:64 random-realsrt:64  # released configs

MODEL is a weights id, a weights file, or ``random-ARCH``: the architecture's default (released)
config with seeded random weights, written to a temporary file (memory does not depend on values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _proc import status_kib  # bench/_proc.py (scripts run as python bench/NAME.py)
from _table import print_table


def _random_weights(arch: str, folder: str) -> str:
    import torch

    from realsr_cli.registry.archs import get_arch
    from realsr_cli.registry.loader import save_weights

    spec = get_arch(arch)
    torch.manual_seed(0)
    config = spec.config_cls()
    net = spec.build(config)
    path = os.path.join(folder, f"{arch}-random.safetensors")
    save_weights(path, arch=arch, config=config, state_dict=net.state_dict())
    return path


def one(name: str, size: int, precision: str, threads: int) -> dict:
    import torch

    from realsr_cli.engine import api
    from realsr_cli.engine import device as devices
    from realsr_cli.engine.runner import RunOptions, estimate_bytes, run_model

    torch.set_num_threads(threads)
    devices.tune_cpu_allocator()
    model = api.load_model(name, device="cpu", precision=precision, offline=True)
    run_model(model, torch.rand(1, 3, 32, 32), RunOptions(tile=0, seed=0))
    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    devices.trim_cpu_heap()  # free heap kept from loading would hide part of the run's peak
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = status_kib("VmRSS") * 1024
    run_model(model, lq, RunOptions(tile=0, seed=0))
    peak = status_kib("VmHWM") * 1024
    out_px = (size * model.scale) ** 2
    return {"dtype": str(model.dtype).replace("torch.", ""), "measured": (peak - before) / out_px,
            "estimate": estimate_bytes(model, size, size) / out_px, "peak_mib": (peak - before) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=["bicres-x4:256", "bicres-x4:512", "ugtsr-x4-cpu:128",
                                                    "ugtsr-x4-cpu:256", "ugtsr-x4-cpu:512"], help="MODEL:LR_SIZE")
    ap.add_argument("--precisions", nargs="*", default=["fp32", "auto"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        name, size, precision = args.one.rsplit(":", 2)
        print(json.dumps(one(name, int(size), precision, args.threads)))
        return

    print(f"{args.threads} threads, load average at start {os.getloadavg()[0]:.2f}")
    rows = [("model", "LR", "precision", "dtype", "run peak MiB", "measured B/out px", "estimate B/out px",
             "estimate / measured")]
    tmp = tempfile.TemporaryDirectory()
    for case in args.cases:
        name, size = case.rsplit(":", 1)
        source = _random_weights(name.removeprefix("random-"), tmp.name) if name.startswith("random-") else name
        for precision in args.precisions:
            res = subprocess.run([sys.executable, __file__, "--one", f"{source}:{size}:{precision}",
                                  "--threads", str(args.threads)], capture_output=True, text=True)
            if res.returncode:
                error = (res.stderr.strip().splitlines() or ["?"])[-1]
                rows.append((name, size, precision, "failed: " + error[:80], "", "", "", ""))
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(case, precision, r, file=sys.stderr, flush=True)
            rows.append((name, size, precision, r["dtype"], f"{r['peak_mib']:.0f}", f"{r['measured']:.0f}",
                         f"{r['estimate']:.0f}", f"{r['estimate'] / r['measured']:.2f}x" if r["measured"] > 0 else "-"))
    print_table(rows)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
