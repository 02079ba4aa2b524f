"""One prepared script that exercises every CUDA path of realsr, for the few minutes a GPU is lent.

    python bench/gpu_check.py --out $OUT/gpu                      # on a GPU machine (< 8 min)
    python bench/gpu_check.py --device cpu --quick --out /tmp/g   # the CI subset (< 1 min)

Writes OUT/report.json and OUT/report.md. Every section runs on its own (one failing section
never hides the others) and records pass / fail / skip with numbers and the reason:

- ``doctor``: realsr doctor's environment and its tiled/untiled self-test in each native precision;
- ``parity``: FeMaSR's reduced official fixtures (they ship weights) on the device: fp32 within
  the fixtures' 1e-4 relative tolerance; fp16/bf16 within stated bounds; the share of code indices
  equal to the official ones (``--parity DIR``: a copy of ../shared/parity, which does not travel
  with the checkout — copy the two ``femasr_*_reduced`` folders into an ignored folder and carry it);
- ``nan_retry``: a half-precision tile forced to NaN is redone in fp32 (``fp32_fallbacks``);
- ``oom_shrink``: a forced out-of-memory (CUDA: most free memory allocated first; CPU: a model that
  raises it above a size) shrinks the tile and still finishes;
- ``auto_tile``: the automatic tile chosen at a few sizes, with the free memory it saw;
- ``seeded_diffusion``: SSR (tiny, random weights) twice with one seed on the device: identical;
  and its output statistics next to the CPU's (equal in distribution, not bit-equal);
- ``amp_train``: one training step of each stage's tiny config with AMP (fp16 + GradScaler on
  CUDA; bf16 autocast elsewhere);
- ``ddp``: a one-process DDP training step (NCCL on CUDA, gloo on CPU);
- ``throughput``: output MP/s of the default model at 256 and 1024 px LR in each native precision,
  and under ``torch.compile`` (start-up cost and steady state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HALF_BOUND = {"fp16": 5e-3, "bf16": 3e-2}  # max |diff| of the final image vs the fixture, [0,1]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _precisions(dev: torch.device) -> list[str]:
    from realsr_cli.engine.device import cpu_native_bf16

    if dev.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32", "bf16"] if cpu_native_bf16() else ["fp32"]


# --------------------------------------------------------------------------------- sections
def s_doctor(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine.doctor import diagnose

    report = diagnose(str(dev) if dev.type != "cuda" else "cuda", verify_weights=False).to_json()
    failed = [c for c in report["checks"] if not c["ok"]]
    return {"ok": not failed, "environment": report["environment"], "devices": report["devices"],
            "checks": report["checks"]}


def s_parity(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import load_file

    from realsr_cli.models.femasr import (
        FeMaSRNet,
        config_from_state_dict,
        convert_official_state_dict,
    )

    root = Path(args.parity) if args.parity else REPO.parent / "shared" / "parity"
    names = ["femasr_x4_reduced"] if args.quick else ["femasr_x4_reduced", "femasr_x2_reduced"]
    rows, ok = [], True
    for name in names:
        folder = root / name
        if not (folder / "weights.safetensors").is_file():
            rows.append({"fixture": name, "skipped": f"not found under {root} (carry it, see --parity)"})
            continue
        state = convert_official_state_dict(load_file(str(folder / "weights.safetensors")))
        io = load_file(str(folder / "io.safetensors"))
        tags = sorted({k.split(".", 1)[0] for k in io})
        for precision in _precisions(dev):
            net = FeMaSRNet(config_from_state_dict(state, None)).eval()
            net.load_state_dict(state, strict=True)
            net.to(dev, DTYPES[precision])
            for tag in tags[: 1 if args.quick else None]:
                lr, ref, ref_idx = io[f"{tag}.lr"], io[f"{tag}.out"], io[f"{tag}.indices"]
                with torch.inference_mode():
                    padded = net.pad_lq(lr.to(dev, DTYPES[precision]))
                    out = net.encode_and_decode(padded)
                    sr = net.upscale(lr.to(dev, DTYPES[precision])).float().cpu()
                rel = float((sr - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
                same_codes = float((out.indices.cpu() == ref_idx).float().mean())
                bound = 1e-4 if precision == "fp32" else HALF_BOUND[precision]
                good = rel <= bound and (precision != "fp32" or same_codes == 1.0)
                # what counts: fp32, and the half precision `--precision auto` runs on this device
                # (fp16 on CUDA); other half precisions are reported, not required
                counts = precision == "fp32" or (dev.type == "cuda" and precision == "fp16")
                ok &= good or not counts
                rows.append({"fixture": name, "input": tag, "precision": precision, "max_rel_diff": rel,
                             "bound": bound, "codes_equal": same_codes, "within_bound": good,
                             "required": counts})
    if not any("required" in r for r in rows):
        return {"skipped": "no fixture available", "rows": rows}
    return {"ok": ok, "rows": rows}


def _probe(dev: torch.device, dtype: torch.dtype):
    """realsr doctor's probe: a small random BicRes with a non-zero residual."""
    from realsr_cli.engine.doctor import _probe_model

    return _probe_model(dev, dtype)


def s_nan_retry(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine.runner import RunOptions, run_model

    half = "fp16" if dev.type == "cuda" else ("bf16" if "bf16" in _precisions(dev) else None)
    if half is None:
        return {"skipped": "no native half precision on this device"}
    model = _probe(dev, DTYPES[half])
    real = model.net.upscale

    def poisoned(lq, **kw):
        out = real(lq, **kw)
        return torch.full_like(out, float("nan")) if lq.dtype != torch.float32 else out

    model.net.upscale = poisoned
    lq = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        res = run_model(model, lq, RunOptions(tile=32, tile_overlap=8))
    finite = bool(torch.isfinite(res.sr).all())
    return {"ok": finite and res.fp32_fallbacks == res.tiles, "precision": half, "tiles": res.tiles,
            "fp32_fallbacks": res.fp32_fallbacks, "output_finite": finite}


def s_oom_shrink(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine.runner import RunOptions, run_model

    model = _probe(dev, torch.float32)
    hog, real = None, model.net.upscale
    if dev.type == "cuda":  # leave about 64 MB: the 512-px whole image needs more than that
        free, _ = torch.cuda.mem_get_info(dev)
        hog = torch.empty(max(0, free - 64 * 2**20), dtype=torch.uint8, device=dev)
    else:
        def limited(lq, **kw):  # CPU: behave like a device whose memory holds 64x64 LR tiles
            if lq.shape[-1] * lq.shape[-2] > 64 * 64:
                raise torch.OutOfMemoryError("forced by gpu_check (CPU stand-in)")
            return real(lq, **kw)

        model.net.upscale = limited
    lq = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    try:
        with torch.inference_mode():
            res = run_model(model, lq, RunOptions(tile=512))
        return {"ok": res.tile < 512 and tuple(res.sr.shape) == (1, 3, 2048, 2048), "asked_tile": 512,
                "final_tile": res.tile, "tiles": res.tiles}
    finally:
        del hog
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def s_auto_tile(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine import device as devices
    from realsr_cli.engine.runner import auto_tile

    model = _probe(dev, torch.float32)
    rows = []
    for s in (128, 512, 2048, 4096):
        t = auto_tile(model, s, s)  # a square side, or (height, width) for rectangular tiles
        rows.append({"lr_size": s, "tile": t if isinstance(t, int) else list(t)})
    ok = all(min([r["tile"]] if isinstance(r["tile"], int) else r["tile"]) >= 0 for r in rows)
    return {"ok": ok, "free_memory_bytes": devices.free_memory_bytes(dev), "rows": rows}


def s_seeded_diffusion(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine.model import LoadedModel
    from realsr_cli.engine.runner import RunOptions, run_model
    from realsr_cli.models.ssr import SSRConfig
    from realsr_cli.registry.archs import get_arch

    spec = get_arch("ssr")
    config = SSRConfig.tiny()
    outs = {}
    for where in ("cpu", str(dev)):
        torch.manual_seed(0)
        net = spec.build(config).eval().requires_grad_(False).to(where)
        model = LoadedModel(spec=spec, config=config, net=net, device=torch.device(where), dtype=torch.float32)
        lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            outs[where] = [run_model(model, lq, RunOptions(tile=0, seed=7, steps=2)).sr for _ in range(2)]
    same = torch.equal(outs[str(dev)][0], outs[str(dev)][1])
    a, b = outs["cpu"][0], outs[str(dev)][0]
    stats = {"cpu_mean": float(a.mean()), "dev_mean": float(b.mean()), "cpu_std": float(a.std()),
             "dev_std": float(b.std()), "max_abs_diff_vs_cpu": float((a - b).abs().max())}
    close = abs(stats["cpu_mean"] - stats["dev_mean"]) < 0.02 and abs(stats["cpu_std"] - stats["dev_std"]) < 0.02
    return {"ok": same and close, "identical_on_device": same, **stats}


def _tiny_configs(quick: bool) -> list[str]:
    from realsr_cli.training.stages import STAGES

    names = sorted(STAGES)
    return ["bicres", "femasr-hrp"] if quick else names


def s_amp_train(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli._config import apply_overrides, from_dict, load_toml
    from realsr_cli.training.run import PACKAGED_CONFIGS
    from realsr_cli.training.stages import get_stage
    from realsr_cli.training.trainer import Trainer
    from tests.training.test_trainer import make_images

    amp = "fp16" if dev.type == "cuda" else "bf16"
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        hr = make_images(Path(tmp) / "hr", n=2, size=96)
        for name in _tiny_configs(args.quick):
            cls = get_stage(name)
            t0 = time.perf_counter()
            try:
                cfg = from_dict(cls.config_cls, load_toml(str(PACKAGED_CONFIGS / f"{name}-tiny.toml")))
                allow = [f"{k}=true" for k in _allow_random(cfg)]
                cfg = apply_overrides(cfg, [f"data.hr_dir={str(hr)!r}", "run.max_steps=1", f"run.amp={amp!r}",
                                            f"run.device={str(dev)!r}", "run.checkpoint_every=0", *allow])
                result = Trainer(cls, cfg, Path(tmp) / name).run()
                losses = {k: v for k, v in (result.last_train or {}).items() if k not in ("kind", "step", "time")}
                finite = bool(losses) and all(isinstance(v, float) and abs(v) < float("inf") for v in losses.values())
                rows.append({"stage": name, "ok": finite, "losses": result.last_train,
                             "seconds": round(time.perf_counter() - t0, 2)})
                ok &= finite
            except Exception as exc:
                ok = False
                rows.append({"stage": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return {"ok": ok, "amp": amp, "rows": rows}


def _allow_random(cfg: Any) -> list[str]:
    """``section.allow_random_*`` switches a tiny config has (inputs a smoke step may randomise)."""
    import dataclasses

    found = []
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub):
            found += [f"{f.name}.{g.name}" for g in dataclasses.fields(sub) if g.name.startswith("allow_random")]
    return found


def s_ddp(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    import torch.distributed as dist

    backend = "nccl" if dev.type == "cuda" else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        dist.init_process_group(backend, rank=0, world_size=1)
        net = torch.nn.Conv2d(3, 3, 3, padding=1).to(dev)
        ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        loss = ddp(torch.rand(2, 3, 16, 16, device=dev)).square().mean()
        loss.backward()
        opt.step()
        value = float(loss.detach())
        return {"ok": abs(value) < float("inf"), "backend": backend, "loss": value}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s_throughput(dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from realsr_cli.engine import api
    from realsr_cli.engine.runner import RunOptions, run_model

    sizes = [128] if args.quick else [256, 1024]
    rows = []
    for precision in _precisions(dev):
        model = api.load_model(None, device=str(dev), precision=precision, offline=True)
        for size in sizes:
            lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
            with torch.inference_mode():
                run_model(model, lq[..., :64, :64], RunOptions())
                _sync(dev)
                t0 = time.perf_counter()
                res = run_model(model, lq, RunOptions())
                _sync(dev)
            wall = time.perf_counter() - t0
            rows.append({"model": model.weights_id, "precision": precision, "lr_size": size, "tiles": res.tiles,
                         "seconds": round(wall, 4), "out_mp_s": round((size * model.scale) ** 2 / 1e6 / wall, 3)})
    compile_row: dict[str, Any] = {}
    if not args.quick and hasattr(torch, "compile"):
        try:
            model = api.load_model(None, device=str(dev), precision="fp32", offline=True)
            lq = torch.rand(1, 3, 256, 256, device=dev)
            fn = torch.compile(model.net)
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn(lq)
                _sync(dev)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(3):
                    fn(lq)
                _sync(dev)
            compile_row = {"startup_seconds": round(first, 2), "steady_seconds": round((time.perf_counter() - t0) / 3, 4)}
        except Exception as exc:
            compile_row = {"error": f"{type(exc).__name__}: {exc}"}
    return {"ok": all(r["out_mp_s"] > 0 for r in rows), "rows": rows, "compile": compile_row}


SECTIONS = {
    "doctor": s_doctor, "parity": s_parity, "nan_retry": s_nan_retry, "oom_shrink": s_oom_shrink,
    "auto_tile": s_auto_tile, "seeded_diffusion": s_seeded_diffusion, "amp_train": s_amp_train,
    "ddp": s_ddp, "throughput": s_throughput,
}


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# realsr GPU check — {report['device']} ({report['started']})", "",
             f"torch {report['torch']}, {report['device_name']}; total {report['seconds']:.0f} s", "",
             "| section | result | seconds | notes |", "|---|---|---|---|"]
    for name, sec in report["sections"].items():
        result = "skip" if "skipped" in sec else ("pass" if sec.get("ok") else "FAIL")
        note = sec.get("skipped") or sec.get("error") or ""
        lines.append(f"| {name} | {result} | {sec.get('seconds', 0):.1f} | {note} |")
    lines += ["", "Details: report.json (same folder)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for report.json and report.md")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="the CI subset (CPU, under a minute)")
    ap.add_argument("--parity", default=None, help="folder holding the femasr_*_reduced fixtures")
    ap.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here: use --device cpu")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": str(dev), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
        "quick": args.quick, "sections": {},
    }
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            sec = SECTIONS[name](dev, args)
        except Exception as exc:
            sec = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        sec["seconds"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = sec
        status = "skip" if "skipped" in sec else ("pass" if sec.get("ok") else "FAIL")
        print(f"{name:18s} {status:4s} {sec['seconds']:7.1f} s", flush=True)
    report["seconds"] = time.perf_counter() - started
    report["ok"] = all(s.get("ok", True) for s in report["sections"].values())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "report.md").write_text(_markdown(report))
    print(f"{'ok' if report['ok'] else 'FAILED'}: {args.out / 'report.md'}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    raise SystemExit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
