"""Ours vs the official code itself: same weights, same input, outputs checked, then timed.

The official repositories are NOT part of this project: check them out in a folder of your own and
name it with ``--official DIR`` or ``REALSR_OFFICIAL_DIR`` (``DIR/FeMaSR`` = chaofengc/FeMaSR at
1ca4295, ``DIR/UPSR`` = LabShuHangGU/UPSR at 7fef55a, ``DIR/RealSRT`` = USTC-JialunPeng/RealSRT at
494bfc2). Their Python dependencies (``timm``,
``fairscale``, ``einops``) must be importable; their ``basicsr`` package is loaded without running
its ``__init__`` (which imports its training stack: cv2, lmdb, ...): only the architecture and
diffusion files and what they import are executed, unmodified.

Per model (``--models femasr upsr realsrt``) and LR size:

1. build the official network(s) (released constructors; FeMaSR ``torch.manual_seed(0)`` default
   init, UPSR every float weight N(0, 0.02) from one seeded generator), save the state dict(s) as
   official ``.pth`` files and convert them with ``api.convert_checkpoint`` (what ``realsr
   convert`` runs), then load ours with ``api.load_model`` in ``fp32`` and in ``auto`` precision;
2. each side runs in its own process (official: glibc's default allocator, as its scripts run;
   ours: the CLI's setting unless ``--system-malloc``); the first call per size is untimed and
   saves the output (and FeMaSR's code indices) for the checks: max abs difference and share of
   equal codes against the official side;
3. then ``--repeat`` rounds of calls in turn (official, fp32, auto); best of each. FeMaSR runs
   through the engine's ``run_model`` (whole image, as ``realsr upscale``); UPSR's sampler gets the
   same prior noise on both sides (one 64x64 LR, the official minimum).

Prints load average and CPU time / wall time per row (ratios are only comparable when CPU/wall is
about the thread count, i.e. nothing else ran).

    REALSR_OFFICIAL_DIR=/work/official python bench/bench_official.py --sizes 64 128 --repeat 3
    REALSR_OFFICIAL_DIR=/work/official python bench/bench_official.py --models upsr --repeat 3
    REALSR_OFFICIAL_DIR=/work/official python bench/bench_official.py --models realsrt --repeat 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from _table import print_table  # bench/_table.py (scripts run as python bench/NAME.py)

_ROOTS: dict[str, Path] = {}


def official_module(root: Path, package: str, module: str) -> types.ModuleType:
    """Import ``package.module`` (e.g. ``basicsr.archs.femasr_arch``) from the checkout ``root``
    without executing the package ``__init__`` files: each parent package is an empty namespace
    module whose ``__path__`` points at the checkout, so the file itself and what it imports run
    unmodified."""
    parts = f"{package}.{module}".split(".")
    if _ROOTS.get(package, root) != root:  # the same package name from another checkout: forget it
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
    _ROOTS[package] = root
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*parts[:i]))]
            sys.modules[name] = pkg
    if package == "basicsr" and "basicsr.utils" not in sys.modules:  # its __init__ imports cv2, lmdb...
        import logging

        utils = types.ModuleType("basicsr.utils")
        utils.__path__ = [str(root / "basicsr" / "utils")]
        utils.get_root_logger = lambda *a, **k: logging.getLogger("basicsr")
        sys.modules["basicsr.utils"] = utils
    full = ".".join(parts)
    if full in sys.modules:  # executed once per process (its registry refuses a second run)
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, root.joinpath(*parts[:-1], parts[-1] + ".py"))
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {full} from {root}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    spec.loader.exec_module(mod)
    return mod


def femasr_pair(root: Path, scale: int, tmp: Path, save: bool = True):
    """(official net, its state dict saved as .pth path): released constructor, seeded init."""
    import torch

    from realsr_cli.registry.community import _torchvision_without_compiled_ops

    _torchvision_without_compiled_ops()  # timm imports torchvision (see docs/cli.md, community)
    arch = official_module(root / "FeMaSR", "basicsr", "archs.femasr_arch")
    torch.manual_seed(0)
    net = arch.FeMaSRNet(codebook_params=[[32, 1024, 512]], LQ_stage=True, scale_factor=scale).eval()
    pth = tmp / f"femasr_x{scale}_official.pth"
    if save:
        torch.save({"params": net.state_dict()}, pth)
    return net, pth


#: the released UPSR constructors and diffusion settings (../shared/parity upsr_* fixture.json)
UPSR_UNET = dict(image_size=64, in_channels=48, model_channels=160, out_channels=3,
                 attention_resolutions=[64, 32, 16, 8], dropout=0, channel_mult=[1, 2, 2, 4],
                 num_res_blocks=[2, 2, 2, 2], conv_resample=True, dims=2, use_fp16=False,
                 num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False, swin_depth=2,
                 swin_embed_dim=192, window_size=8, mlp_ratio=4, cond_lq=True, lq_size=64, num_feat=128)
UPSR_ATD = dict(upscale=4, in_chans=3, img_size=64, embed_dim=96, depths=[6, 6, 6, 6], num_heads=[4, 4, 4, 4],
                window_size=16, category_size=128, num_tokens=64, reducted_dim=8, convffn_kernel_size=7,
                img_range=1.0, mlp_ratio=1, upsampler="pixelshuffledirect", resi_connection="1conv",
                use_checkpoint=False)
UPSR_DIFFUSION = dict(sf=4, schedule_name="exponential", schedule_kwargs={"power": 0.2}, etas_end=0.99, steps=5,
                      min_noise_level=0.2, kappa=2.5, weighted_mse=False, predict_type="xstart",
                      timestep_respacing=None, scale_factor=1.0, normalize_input=True, latent_flag=False)


def upsr_pair(root: Path, tmp: Path, save: bool = True):
    """(official denoiser, official ATD g, [their .pth paths]): released constructors, every float
    tensor redrawn N(0, 0.02) from one seeded generator (the default init zeroes the output
    layers, which would make the comparison trivial)."""
    import torch

    from realsr_cli.registry.community import _torchvision_without_compiled_ops

    _torchvision_without_compiled_ops()
    unet = official_module(root / "UPSR", "basicsr", "archs.swin_unet_arch").UNetModelSwin(**UPSR_UNET).eval()
    atd = official_module(root / "UPSR", "basicsr", "archs.atd_real_arch").ATD(**UPSR_ATD).eval()
    paths = [tmp / "upsr_official.pth", tmp / "atd_official.pth"]
    if save:
        g = torch.Generator().manual_seed(0)
        for net, path in zip((unet, atd), paths, strict=True):
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            torch.save({"params": net.state_dict()}, path)
    return unet, atd, paths


def _upsr_noise(size: int):
    import torch

    return torch.randn(1, 3, 4 * size, 4 * size, generator=torch.Generator().manual_seed(2))


def _official_upsr(root: Path, tmp: Path):
    """The official sampler (``UPSRRealModel.sample_func``'s procedure, test settings) around the
    official networks and ``models/gaussian_diffusion.py``; the prior noise passed in HR layout."""
    import torch
    from torch import nn

    unet, atd, paths = upsr_pair(root, tmp, save=False)
    unet.load_state_dict(torch.load(paths[0])["params"])
    atd.load_state_dict(torch.load(paths[1])["params"])
    diffusion = official_module(root / "UPSR", "models", "script_util").create_gaussian_diffusion(**UPSR_DIFFUSION)

    def run(lq):
        with torch.no_grad():
            y0 = (lq - 0.5) / 0.5  # 64x64: a multiple of the 64-px minimum, no padding
            y_bic = torch.nn.functional.interpolate(y0, scale_factor=4, mode="bicubic", align_corners=False)
            y_hat = (atd(y0 * 0.5 + 0.5) - 0.5) / 0.5
            un = 0.4 + 0.6 * ((y_hat - y_bic) / 2).abs().clamp(0.0, 0.1) / 0.1
            cond = nn.PixelUnshuffle(4)(torch.cat([y_hat, y_bic], dim=1))
            out = diffusion.ddim_sample_loop(y=y_bic, y_hat=y_hat, un=un, model=unet, noise=_upsr_noise(lq.shape[-1]),
                                             clip_denoised=False, model_kwargs={"lq": cond}, progress=False)
            return out.clamp(-1.0, 1.0) * 0.5 + 0.5

    return run


def realsrt_pair(root: Path, tmp: Path, save: bool = True):
    """(official RealSRT(use_critic=True, use_ccm=True) as ``inference_realsrt.py`` builds it, its
    .pth): every float weight N(0, 0.02) from one seeded generator (the default init zeroes the
    CCM's output layer), codebooks included. Its constructor calls ``.cuda()`` on a copy of the
    codebook and uses ``np.float``: while it runs, ``.cuda()`` is a no-op and ``np.float`` is the
    builtin ``float`` it always was, so it builds on a CPU-only torch and a current NumPy."""
    import torch

    official_module(root / "RealSRT", "basicsr", "utils.registry")
    cls = official_module(root / "RealSRT", "realsrt", "archs.realsrt_arch").RealSRT
    import numpy as np

    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # its constructor copies the codebook via .cuda()
    np.float = float  # and uses np.float (removed in NumPy 1.24; it was the builtin float)
    try:
        net = cls(use_critic=True, use_ccm=True).eval()
    finally:
        torch.Tensor.cuda = cuda
        del np.float
    pth = tmp / "realsrt_official.pth"
    if save:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        torch.save({"params_ema": net.state_dict()}, pth)
    return net, pth


def _official_realsrt(root: Path, tmp: Path):
    """One 64x64 LR patch as ``inference_realsrt.py`` runs each patch: ``forward_with_ccm`` with
    T = 4, then its own AdaIN colour correction against the LR patch (its function, imported)."""
    import torch

    net, pth = realsrt_pair(root, tmp, save=False)
    net.load_state_dict(torch.load(pth)["params_ema"], strict=True)
    spec = importlib.util.spec_from_file_location("inference_realsrt", root / "RealSRT" / "inference_realsrt.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # imports only (its main() is guarded)

    def run(lq):
        with torch.no_grad():
            return script.adaptive_instance_normalization(net.forward_with_ccm(lq, 4), lq).clamp(0, 1)

    return run


def _worker(args: argparse.Namespace) -> None:
    """One side in its own process (its own allocator state): reads ``SIZE`` lines, runs that LR
    size (the first call per size also saves output and code indices), answers one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    kind, tmp = args.worker, Path(args.tmp)
    upsr = args.model == "upsr"
    patch = args.model == "realsrt"
    if kind == "official" and patch:
        run = _official_realsrt(Path(args.official), tmp)

        def codes(lq):
            return torch.zeros(0)
    elif kind == "official" and upsr:
        with contextlib.redirect_stdout(sys.stderr):  # it prints its schedule; stdout is our protocol
            run = _official_upsr(Path(args.official), tmp)

        def codes(lq):
            return torch.zeros(0)
    elif kind == "official":
        official, _ = femasr_pair(Path(args.official), args.scale, tmp, save=False)
        official.load_state_dict(torch.load(tmp / f"femasr_x{args.scale}_official.pth")["params"])

        def run(lq):
            return official.test(lq)

        def codes(lq):
            return _codes_official(official, lq)
    else:
        from realsr_cli.engine import api
        from realsr_cli.engine.device import tune_cpu_allocator
        from realsr_cli.engine.runner import RunOptions, run_model

        if not args.system_malloc:
            tune_cpu_allocator()  # what the CLI does for a CPU model
        model = api.load_model(str(tmp / "ours.safetensors"), device="cpu", precision=kind, offline=True)

        def run(lq):
            with torch.inference_mode():
                if upsr:  # the official sampler's prior noise; one 64-px LR is one whole-image call
                    return model(lq, noise=_upsr_noise(lq.shape[-1])).clamp(0, 1)
                if patch:  # one 64-px LR is one RealSRT patch (the engine's whole-image call)
                    return model(lq).clamp(0, 1)
                return run_model(model, lq, RunOptions(tile=None)).sr

        def codes(lq):
            return torch.zeros(0) if upsr or patch else _same_codes_input(model, lq)
    saved: set[int] = set()
    print(json.dumps({"ready": True, "dtype": "float32" if kind == "official" else str(model.dtype)[6:]}), flush=True)
    for line in sys.stdin:
        size = int(line)
        lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        c, t = time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            out = run(lq)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if size not in saved:
            saved.add(size)
            torch.save({"out": out, "codes": codes(lq)}, tmp / f"{kind}_{size}.pt")
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", type=Path, default=os.environ.get("REALSR_OFFICIAL_DIR"),
                    help="folder holding the official checkouts (env REALSR_OFFICIAL_DIR)")
    ap.add_argument("--models", nargs="*", default=["femasr"], choices=["femasr", "upsr", "realsrt"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[64, 128])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--system-malloc", action="store_true",
                    help="ours too with glibc's default allocator (the CLI tunes it for CPU models)")
    ap.add_argument("--worker", choices=["official", "fp32", "auto"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default="femasr", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.official or not Path(args.official).is_dir():
        raise SystemExit("name the official checkouts with --official DIR or REALSR_OFFICIAL_DIR")
    if args.worker:
        return _worker(args)

    import torch

    from realsr_cli.engine.device import cpu_native_bf16

    print(f"torch {torch.__version__}, {args.threads} threads, native bf16 {cpu_native_bf16()}, "
          f"ours with {'the default' if args.system_malloc else 'the tuned (as the CLI)'} allocator, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    rows = [("model", "LR", "path", "dtype", "wall s", "CPU/wall", "vs official", "max |d| vs official",
             "same codes")]
    for name in args.models:
        sizes = [64] if name in ("upsr", "realsrt") else args.sizes  # UPSR's minimum; RealSRT's patch
        rows += _compare(name, sizes, args)
    print_table(rows)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def _compare(name: str, sizes: list[int], args: argparse.Namespace) -> list[tuple[str, ...]]:
    """One model: convert the official weights, start the three workers, check, time; table rows."""
    import torch

    from realsr_cli.engine import api

    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if name == "upsr":
            _, _, paths = upsr_pair(Path(args.official), tmp)
            api.convert_checkpoint([str(p) for p in paths], tmp / "ours.safetensors", arch="upsr")
        elif name == "realsrt":
            _, pth = realsrt_pair(Path(args.official), tmp)
            api.convert_checkpoint(pth, tmp / "ours.safetensors", arch="realsrt")
        else:
            _, pth = femasr_pair(Path(args.official), args.scale, tmp)
            api.convert_checkpoint(pth, tmp / "ours.safetensors", arch="femasr", scale=args.scale)
        base = [sys.executable, __file__, "--official", str(args.official), "--scale", str(args.scale),
                "--threads", str(args.threads), "--tmp", tmp_s, "--model", name] + (
                    ["--system-malloc"] if args.system_malloc else [])
        kinds = ("official", "fp32", "auto")
        procs = {k: subprocess.Popen([*base, "--worker", k], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True) for k in kinds}
        dtypes = {k: json.loads(procs[k].stdout.readline())["dtype"] for k in kinds}

        def call(kind: str, size: int) -> tuple[float, float]:
            procs[kind].stdin.write(f"{size}\n")
            procs[kind].stdin.flush()
            r = json.loads(procs[kind].stdout.readline())
            return r["wall"], r["cpu"]

        try:
            for size in sizes:
                for k in kinds:  # untimed first call: warm-up, saves output and codes
                    call(k, size)
                ref = torch.load(tmp / f"official_{size}.pt")
                times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
                for _ in range(args.repeat):  # interleaved, one process per side
                    for k in kinds:
                        times[k].append(call(k, size))
                best = {k: min(v) for k, v in times.items()}
                t_off = best["official"][0]
                rows.append((name, str(size), "official", "float32", f"{t_off:.3f}",
                             f"{best['official'][1] / t_off:.2f}", "1.00x", "-", "-"))
                for k in kinds[1:]:
                    got = torch.load(tmp / f"{k}_{size}.pt")
                    d = float((got["out"] - ref["out"]).abs().max())
                    same = f"{float((got['codes'] == ref['codes']).float().mean()):.4f}" if ref["codes"].numel() else "-"
                    t, c = best[k]
                    rows.append((name, str(size), f"ours {k}", dtypes[k], f"{t:.3f}", f"{c / t:.2f}",
                                 f"**{t_off / t:.2f}x**", f"{d:.1e}", same))
        finally:
            for p in procs.values():
                p.stdin.close()
                p.wait()
    return rows


def _codes_official(net, lq):
    """The official code indices for ``lq`` (its own padding and encoder)."""
    import torch

    with torch.no_grad():
        wsz = 8 // net.scale_factor * 8
        h, w = lq.shape[-2:]
        x = torch.cat([lq, torch.flip(lq, [2])], 2)[:, :, : h + (h // wsz + 1) * wsz - h, :]
        x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, : w + (w // wsz + 1) * wsz - w]
        return net.encode_and_decode(x)[3][0].flatten()


def _same_codes_input(model, lq):
    """Our code indices for ``lq``, fed as the engine feeds it (fp32, the model's layout)."""
    import torch

    x = lq.contiguous(memory_format=torch.channels_last) if model.spec.channels_last else lq
    with torch.inference_mode():
        return model.net.encode_and_decode(model.net.pad_lq(x)).indices.flatten()


if __name__ == "__main__":
    main()
