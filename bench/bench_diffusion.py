"""Benchmark UPSR and RealSRT at their released sizes on the CPU: ours vs the untuned reference.

Same weights, same input, same noise, two code paths:

- ``ours``: the default forward under ``torch.inference_mode()`` (fused SDPA attention, attention
  masks built once per size, LR cross-attention keys/values computed once per patch, channels-last
  UPSR denoiser, row-copy token shuffles);
- ``reference``: the straightforward formulation of the official code, switched on with
  ``realsr_cli.models._blocks.reference.reference_mode()`` (explicit ``softmax(q k^T + B) v``, masks rebuilt
  on every call, LR tokens re-encoded at every RealSRT step, expanded gathers) under
  ``torch.no_grad()``, with the UPSR denoiser's weights and activations in the standard NCHW layout.

Before timing, one check subprocess per model runs both paths on the same weights and input in
float64 (``--check-steps`` sampler steps / decoding iterations, default 2) and the run stops unless
they agree within ``--tol`` (1e-5). float64 because ATD (UPSR's g) groups tokens by an argmax: a
float32 rounding difference between two correct formulations can flip a near-tied category and
regroup tokens, a discontinuous change. Then each (model, path) is timed in its own subprocess (its
peak RSS, VmHWM, is its own), in float32, and the max abs difference of the two timed float32
outputs is reported as well. Weights are random (``torch.manual_seed(0)`` default init; RealSRT's
zero-initialised CCM output conv ``zero_out`` is re-drawn with std 0.02 so the CCM branch reaches
the output): values do not matter for speed.

    python bench/bench_diffusion.py
    python bench/bench_diffusion.py --models upsr atd --repeat 2 --threads 2 --check-steps 1
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
import tempfile
import time

from _proc import peak_rss_mib  # bench/_proc.py (scripts run as python bench/NAME.py)

RESULT_TAG = "BENCH_RESULT "
PATHS = ("reference", "ours")
MODELS = {
    "upsr": "UPSR x4, 5-step sampler (denoiser + ATD g)",
    "atd": "UPSR's ATD g alone",
    "realsrt": "RealSRT x4, T=4 iterative decoding + CCM + AdaIN",
}


def _build(model: str, steps: int | None = None):
    """(network, call) for one model; ``call(lq)`` runs the measured work on a (1,3,S,S) LR.

    ``steps``: sampler steps / decoding iterations (None: the model's default, 5 and 4).
    """
    import torch

    torch.manual_seed(0)
    if model in ("upsr", "atd"):
        from realsr_cli.models.upsr import ATD, UPSRConfig, UPSRNet

        if model == "atd":  # g alone, without the denoiser's weights in memory
            g = ATD(UPSRConfig().aux).eval()
            return g, lambda lq: g(lq)
        net = UPSRNet(UPSRConfig()).eval()

        def sample(lq):
            shape = net.noise_shape(lq.shape)
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(2))
            return net.upscale(lq, noise=noise, steps=steps)

        return net, sample
    from realsr_cli.models.realsrt import RealSRTNet

    net = RealSRTNet().eval()
    with torch.no_grad():  # zero at init: the CCM would not reach the output (module docstring)
        net.zero_out.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(3))
    return net, lambda lq: net.upscale(lq, steps=steps)


def _path_context(path: str):
    """``ours``: inference mode; ``reference``: no_grad + ``reference_mode()``."""
    import contextlib

    import torch

    from realsr_cli.models._blocks.reference import reference_mode

    stack = contextlib.ExitStack()
    if path == "reference":
        stack.enter_context(torch.no_grad())
        stack.enter_context(reference_mode())
    else:
        stack.enter_context(torch.inference_mode())
    return stack


def _lq(size: int, dtype=None):
    import torch

    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return lq if dtype is None else lq.to(dtype)


def _child(model: str, path: str, args: argparse.Namespace) -> None:
    """One configuration: build, run ``repeat`` times, save the output, print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    net, call = _build(model)
    if path == "reference":  # the official NCHW layout (our UPSR denoiser stores channels-last)
        net.to(memory_format=torch.contiguous_format)
    params = sum(p.numel() for p in net.parameters())
    lq = _lq(args.size)
    rss_before = peak_rss_mib()
    runs = []
    for _ in range(args.repeat):
        with _path_context(path):
            t0, c0 = time.perf_counter(), time.process_time()
            out = call(lq)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
    torch.save(out.clone(), args.save)
    result = {
        "seconds": min(r[0] for r in runs),
        "cpu_seconds": min(r[1] for r in runs),
        "peak_rss_mib": peak_rss_mib(),
        "model_rss_mib": rss_before,
        "params": params,
        "out_shape": list(out.shape),
        "torch": torch.__version__,
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


def _check(model: str, args: argparse.Namespace) -> None:
    """Equivalence check before timing: both paths in float64 in one process, same weights/input.

    float64 because ATD groups tokens by an argmax of similarities: a float32 rounding difference
    can flip a near-tied category and regroup tokens (a real, discontinuous change that both paths
    would show against any reordering of the sums); in float64 the two paths must agree to ~1e-12.
    """
    import torch

    torch.set_num_threads(args.threads)
    net, call = _build(model, steps=args.check_steps if model != "atd" else None)
    net.double()
    if (
        model == "upsr"
    ):  # the sinusoidal time embedding is built in float32: cast it like the weights
        net.denoiser.time_embed.register_forward_pre_hook(lambda m, a: (a[0].double(),))
    lq = _lq(args.size, torch.float64)
    t0 = time.perf_counter()
    with _path_context("ours"):
        ours = call(lq)
    net.to(memory_format=torch.contiguous_format)
    with _path_context("reference"):
        ref = call(lq)
    diff = (ours - ref).abs().max().item()
    result = {"diff": diff, "seconds": time.perf_counter() - t0}
    print(RESULT_TAG + json.dumps(result), flush=True)


def _run_child(extra: list[str], base: dict, args: argparse.Namespace) -> dict:
    """Run one child in a fresh interpreter; status 'ok', 'timeout', 'OOM' or 'error'."""
    cmd = [sys.executable, os.path.abspath(__file__), *extra]
    cmd += ["--repeat", str(args.repeat), "--threads", str(args.threads), "--size", str(args.size)]
    cmd += ["--check-steps", str(args.check_steps)]
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


def _max_abs_diff(a: str, b: str) -> float | None:
    import torch

    x, y = torch.load(a), torch.load(b)
    if x.shape != y.shape:
        return None
    return (x.double() - y.double()).abs().max().item()


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den else "-"


def _table(results: list[dict], checks: dict[str, dict]) -> str:
    head = (
        "| model | path | time (s) | speedup | CPU time (s) | CPU speedup | peak RSS (MiB) "
        "| RSS vs ref | max abs diff fp64 check | max abs diff fp32 outputs |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    refs = {r["model"]: r for r in results if r["path"] == "reference" and r["status"] == "ok"}
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['path']} | {r['status']} |" + " - |" * 7)
            continue
        ref = refs.get(r["model"])
        speed = cpu = rss = diff = check = "-"
        if ref is not None:
            speed = _ratio(ref["seconds"], r["seconds"])
            cpu = _ratio(ref["cpu_seconds"], r["cpu_seconds"])
            rss = _ratio(r["peak_rss_mib"], ref["peak_rss_mib"])
            diff = "(ref)" if r is ref else _fmt_diff(r.get("diff"))
        c = checks.get(r["model"], {})
        if r["path"] == "ours" and c.get("status") == "ok":
            check = _fmt_diff(c["diff"])
        lines.append(
            f"| {r['model']} | {r['path']} | {r['seconds']:.2f} | {speed} | {r['cpu_seconds']:.2f} "
            f"| {cpu} | {r['peak_rss_mib']:.0f} | {rss} | {check} | {diff} |"
        )
    return "\n".join(lines)


def _fmt_diff(diff: float | None) -> str:
    return "shape mismatch" if diff is None else f"{diff:.1e}"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_checks(args: argparse.Namespace) -> dict[str, dict]:
    checks = {}
    for model in args.models:
        c = _run_child(["--check", model], {"model": model}, args)
        checks[model] = c
        if c["status"] == "ok":
            verdict = "ok" if c["diff"] <= args.tol else "FAILED"
            note = f"max abs diff {c['diff']:.1e} ({verdict}), {c['seconds']:.0f}s"
        else:
            note = c["status"] + (f" ({c['detail']})" if "detail" in c else "")
        print(f"#   check {model} (float64): {note}", flush=True)
    return checks


def _run_timings(args: argparse.Namespace, tmp: str) -> list[dict]:
    results: list[dict] = []
    todo = [(m, path) for m in args.models for path in PATHS]
    for i, (model, path) in enumerate(todo):
        save = os.path.join(tmp, f"{model}-{path}.pt")
        try:
            r = _run_child(
                ["--child", model, path, "--save", save], {"model": model, "path": path}, args
            )
        except KeyboardInterrupt:  # Ctrl-C: keep what finished, mark the rest
            results += [{"model": m, "path": q, "status": "not run"} for m, q in todo[i:]]
            print("# interrupted: remaining configurations not run", flush=True)
            break
        if r["status"] == "ok":
            r["save"] = save
            ref = next((x for x in results if x["model"] == model and x["status"] == "ok"), None)
            if path == "ours" and ref is not None:
                r["diff"] = _max_abs_diff(save, ref["save"])
            note = f"{r['seconds']:.2f}s (CPU {r['cpu_seconds']:.2f}s), {r['peak_rss_mib']:.0f} MiB"
            if "diff" in r:
                note += f", fp32 max abs diff {_fmt_diff(r['diff'])}"
        else:
            note = r["status"] + (f" ({r['detail']})" if "detail" in r else "")
        print(f"#   {model} {path}: {note}  [load {_load()}]", flush=True)
        results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--size", type=int, default=64, help="LR side (default 64)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration (min is kept)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs diff of the fp64 check")
    p.add_argument(
        "--check-steps", type=int, default=2, help="sampler steps / iterations of the fp64 check"
    )
    p.add_argument("--no-check", action="store_true", help="skip the fp64 check (not advised)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--check", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1 or args.check_steps < 1:
        p.error("--repeat and --check-steps must be >= 1")

    if args.child:
        _child(args.child[0], args.child[1], args)
        return 0
    if args.check:
        _check(args.check, args)
        return 0

    import torch

    now = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"# UPSR / RealSRT (released sizes), ours vs reference, CPU — {now}")
    print(
        f"# cpu: {_cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__}; "
        f"threads {args.threads}; repeat {args.repeat} (min); timeout {args.timeout:.0f}s; "
        f"LR {args.size}x{args.size}"
    )
    print(f"# load average at start (1, 5, 15 min): {_load()}")
    print("# command: python " + " ".join(sys.argv))
    checks: dict[str, dict] = {}
    if not args.no_check:
        print(f"# equivalence check first: float64, {args.check_steps} steps, tol {args.tol:g}")
        checks = _run_checks(args)
        bad = [m for m, c in checks.items() if c["status"] != "ok" or c["diff"] > args.tol]
        if bad:
            print(f"FAILED: ours and the reference disagree (or did not run) for {bad}; not timed")
            return 1
    with tempfile.TemporaryDirectory(prefix="bench_diffusion_") as tmp:
        results = _run_timings(args, tmp)
    print(f"# load average at end (1, 5, 15 min): {_load()}")
    for model in args.models:
        ok = next((r for r in results if r["model"] == model and r["status"] == "ok"), None)
        if ok:
            mparams = ok["params"] / 1e6
            print(f"# {model}: {MODELS[model]}; {mparams:.1f} M params; out {ok['out_shape']}")
    print()
    print(_table(results, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
