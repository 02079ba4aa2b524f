"""Benchmark FeMaSR x4 at the released size on the CPU: tiled vs untiled, side by side.

Each (size, tile) configuration runs in its own subprocess so its peak RSS (VmHWM) is its own.
The reference is the untiled whole-image run (``RunOptions(tile=0)``) of the same size; every row
shows ratios against it. Weights are random (``torch.manual_seed(0)`` default init): values do not
matter for speed or memory.

    python bench/bench_femasr.py --repeat 1
    python bench/bench_femasr.py --sizes 128 512 --tiles 0 128 64 --repeat 3 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

from _proc import peak_rss_mib  # bench/_proc.py (scripts run as python bench/NAME.py)

RESULT_TAG = "BENCH_RESULT "


def _child(size: int, tile: int, repeat: int, threads: int) -> None:
    """One configuration: build the model, run ``repeat`` times, print one JSON result line."""
    import torch

    from realsr_cli.engine.model import LoadedModel
    from realsr_cli.engine.runner import RunOptions, run_model
    from realsr_cli.models.femasr import FeMaSRConfig
    from realsr_cli.registry.archs import get_arch

    torch.set_num_threads(threads)
    spec = get_arch("femasr")
    config = FeMaSRConfig.released(4)
    torch.manual_seed(0)
    net = spec.build(config).eval()
    model = LoadedModel(
        spec=spec, config=config, net=net, device=torch.device("cpu"), dtype=torch.float32
    )
    params = sum(p.numel() for p in net.parameters())
    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    options = RunOptions(tile=tile)
    rss_before = peak_rss_mib()
    times = []
    tiles = 0
    with torch.inference_mode():
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = run_model(model, lq, options)
            times.append(time.perf_counter() - t0)
            tiles = result.tiles
            del result
    out_mp = (size * model.scale) ** 2 / 1e6
    best = min(times)
    print(
        RESULT_TAG
        + json.dumps(
            {
                "size": size,
                "tile": tile,
                "tiles": tiles,
                "seconds": best,
                "mp_per_s": out_mp / best,
                "peak_rss_mib": peak_rss_mib(),
                "model_rss_mib": rss_before,
                "params": params,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )


def _run_config(size: int, tile: int, args: argparse.Namespace) -> dict:
    """Run one configuration in a fresh interpreter; status 'ok', 'timeout', 'OOM' or 'error'."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        str(size),
        str(tile),
        "--repeat",
        str(args.repeat),
        "--threads",
        str(args.threads),
    ]
    base = {"size": size, "tile": tile}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return {**base, **json.loads(line[len(RESULT_TAG) :]), "status": "ok"}
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else f"exit {proc.returncode}"
    oom = proc.returncode == -signal.SIGKILL or any(
        s in proc.stderr for s in ("MemoryError", "OutOfMemoryError", "out of memory")
    )
    return {**base, "status": "OOM" if oom else "error", "detail": last}


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt_ratio(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return "-"
    return f"{value / ref:.2f}x"


def _table(results: list[dict]) -> str:
    head = (
        "| LR size | tile | tiles | time (s) | out MP/s | MP/s vs untiled | peak RSS (MiB) "
        "| RSS vs untiled |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    refs = {r["size"]: r for r in results if r["tile"] == 0 and r["status"] == "ok"}
    for r in results:
        tile = "untiled" if r["tile"] == 0 else str(r["tile"])
        if r["status"] != "ok":
            lines.append(f"| {r['size']} | {tile} | - | {r['status']} | - | - | - | - |")
            continue
        ref = refs.get(r["size"])
        lines.append(
            f"| {r['size']} | {tile} | {r['tiles']} | {r['seconds']:.2f} | {r['mp_per_s']:.4f} "
            f"| {_fmt_ratio(r['mp_per_s'], ref and ref['mp_per_s'])} | {r['peak_rss_mib']:.0f} "
            f"| {_fmt_ratio(r['peak_rss_mib'], ref and ref['peak_rss_mib'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="LR sides")
    p.add_argument("--tiles", type=int, nargs="+", default=[0, 128, 64], help="0 = untiled")
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration (min is kept)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    p.add_argument("--child", type=int, nargs=2, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")

    if args.child:
        _child(args.child[0], args.child[1], args.repeat, args.threads)
        return 0

    import torch

    tiles = sorted(set(args.tiles), key=lambda t: (t != 0, -t))  # untiled (the reference) first
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# FeMaSR x4 (released size), CPU — {datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    print(
        f"# cpu: {_cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__}; "
        f"threads {args.threads}; repeat {args.repeat} (min); timeout {args.timeout:.0f}s"
    )
    print(f"# load average at start (1, 5, 15 min): {load}")
    print("# command: python " + " ".join(sys.argv))
    results = []
    todo = [(size, tile) for size in args.sizes for tile in tiles]
    for i, (size, tile) in enumerate(todo):
        try:
            r = _run_config(size, tile, args)
        except KeyboardInterrupt:  # Ctrl-C: keep what finished, mark the rest
            results += [{"size": s, "tile": t, "status": "not run"} for s, t in todo[i:]]
            print("# interrupted: remaining configurations not run", flush=True)
            break
        else:
            note = (
                f"{r['seconds']:.2f}s, {r['peak_rss_mib']:.0f} MiB"
                if r["status"] == "ok"
                else r["status"] + (f" ({r['detail']})" if "detail" in r else "")
            )
            print(f"#   size {size} tile {tile}: {note}", flush=True)
            results.append(r)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# load average at end (1, 5, 15 min): {load}")
    ok = [r for r in results if r["status"] == "ok"]
    if ok:
        print(f"# params: {ok[0]['params'] / 1e6:.1f} M; overlap 16 LR px (FeMaSR default)")
    print()
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
