"""Fuzz realsr's image handling: malformed, extreme and valid-but-odd images through the CLI.

    python bench/fuzz_io.py --out /tmp/fuzz --count 2000          # the full run (docs/reliability.md)
    python bench/fuzz_io.py --out /tmp/fuzz --count 60 --seed 1   # what tests/test_fuzz_io.py runs

Generates ``--count`` files (seeded: the same set every time) — every format realsr reads (PNG,
JPEG, WebP, TIFF, BMP), modes L/LA/RGB/RGBA/I;16/P, 8 and 16 bits, sizes from 1x1 to just over
``--max-pixels``, and damage: truncation, byte flips, a lying header (PNG IHDR size, JPEG SOF
size), garbage after the end, broken EXIF/ICC blocks, a wrong suffix, empty files — then runs
``realsr upscale`` on a sample, ``realsr batch`` over the folder (tiny random BicRes weights, so
the model costs nothing), ``realsr degrade`` and ``realsr eval SR_DIR`` over the batch output.

Checks, per invocation: no Python traceback on stderr, an exit code from the documented set
(0, 2, 3, 4, 6), no partial or temporary file left in an output folder, and every output image
decodes. Per input: a file the oracle (Pillow alone) can fully decode must get an output in the
batch. Prints a summary and writes OUT/fuzz.json; exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

DOCUMENTED = {0, 2, 3, 4, 6}
FORMATS = [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp")]
MODES = ["L", "LA", "RGB", "RGBA", "I;16", "P"]


def _image(rng: random.Random, w: int, h: int, mode: str) -> Image.Image:
    arr = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray((arr[..., 0].astype(np.uint16) * 257), mode="I;16")
    base = Image.fromarray(arr, "RGBA")
    return base.convert(mode) if mode != "P" else base.convert("RGB").convert("P")


def _encode(img: Image.Image, fmt: str, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    if fmt in ("JPEG", "BMP") and img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if fmt == "WEBP" and img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    kwargs = {}
    if fmt == "JPEG":
        kwargs["quality"] = rng.choice([5, 50, 95])
        if rng.random() < 0.2:  # a broken EXIF block
            kwargs["exif"] = b"Exif\x00\x00" + bytes(rng.randrange(256) for _ in range(40))
    if fmt == "PNG" and rng.random() < 0.1:
        kwargs["icc_profile"] = bytes(rng.randrange(256) for _ in range(64))  # an ICC that is not one
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _damage(data: bytes, kind: str, fmt: str, rng: random.Random) -> bytes:
    if kind == "truncate":
        return data[: rng.randrange(0, max(1, len(data)))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "lying_header" and fmt == "PNG" and len(data) > 24:
        w, h = rng.choice([(1, 1), (65535, 65535), (2**31 - 1, 3)])
        ihdr = data[12:16] + struct.pack(">II", w, h) + data[24:29]
        return data[:16] + struct.pack(">II", w, h) + data[24:29] + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    if kind == "lying_header" and fmt == "JPEG":
        i = data.find(b"\xff\xc0")
        if i > 0:
            return data[: i + 5] + struct.pack(">HH", 65000, 65000) + data[i + 9 :]
    if kind == "trailing":
        return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 500)))
    if kind == "empty":
        return b""
    return data


def make_cases(folder: Path, count: int, seed: int, max_pixels: int) -> list[dict]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    side_limit = int(max_pixels**0.5)
    for i in range(count):
        fmt, suffix = rng.choice(FORMATS)
        mode = rng.choice(MODES)
        roll = rng.random()
        if roll < 0.05:
            w, h = side_limit + 1, side_limit  # just over --max-pixels
        elif roll < 0.15:
            w, h = rng.choice([(1, 1), (1, 17), (17, 1), (2, 2), (3, 5)])
        else:
            w, h = rng.randrange(4, 48), rng.randrange(4, 48)
        damage = rng.choices(["none", "truncate", "flip", "lying_header", "trailing", "empty", "suffix"],
                             weights=[45, 15, 15, 8, 7, 5, 5])[0]
        try:
            data = _encode(_image(rng, w, h, mode), fmt, rng)
        except Exception as exc:  # a combination Pillow cannot write: record it as such
            cases.append({"file": None, "format": fmt, "mode": mode, "skipped": str(exc)})
            continue
        data = _damage(data, damage, fmt, rng)
        if damage == "suffix":
            suffix = rng.choice([s for _, s in FORMATS if s != suffix])
        path = folder / f"{i:05d}_{fmt.lower()}_{mode.replace(';', '')}_{damage}{suffix}"
        path.write_bytes(data)
        cases.append({"file": path.name, "format": fmt, "mode": mode, "size": [w, h], "damage": damage,
                      "decodes": _oracle(path), "too_large": w * h > max_pixels})
    return cases


def _oracle(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def _realsr(args: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", "from realsr_cli.cli.app import main; main()", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -9, "TIMEOUT", time.perf_counter() - t0
    return done.returncode, done.stderr, time.perf_counter() - t0


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and (p.name.startswith(".") or p.suffix in (".tmp", ".part"))]


def _tiny_weights(path: Path) -> Path:
    import torch

    from realsr_cli.models.bicres import BicResConfig, BicResNet
    from realsr_cli.registry.loader import save_weights

    torch.manual_seed(0)
    net = BicResNet(BicResConfig(scale=2, width=4, depth=1))
    save_weights(path, arch="bicres", config=net.config, state_dict=net.state_dict())
    return path


def run(out: Path, count: int, seed: int, sample: int, timeout: float) -> dict:
    max_pixels = 4096
    inputs = out / "in"
    cases = make_cases(inputs, count, seed, max_pixels)
    weights = _tiny_weights(out / "tiny.safetensors")
    violations: list[str] = []
    calls: list[dict] = []

    def check(name: str, args: list[str], folders: list[Path]) -> int:
        code, err, secs = _realsr(args, timeout)
        calls.append({"call": name, "code": code, "seconds": round(secs, 2)})
        if code not in DOCUMENTED:
            violations.append(f"{name}: exit {code}")
        if "Traceback" in err or "this is a bug" in err:
            violations.append(f"{name}: traceback / unexpected error: {err[-300:]}")
        for f in folders:
            if f.exists() and _leftovers(f):
                violations.append(f"{name}: partial files {_leftovers(f)[:3]}")
        return code

    files = [c for c in cases if c.get("file")]
    rng = random.Random(seed + 1)
    for case in rng.sample(files, min(sample, len(files))):
        dst = out / "single" / f"{Path(case['file']).stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        code = check(f"upscale {case['file']}", ["upscale", str(inputs / case["file"]), "-o", str(dst), "--weights",
                     str(weights), "--device", "cpu", "--max-pixels", str(max_pixels)], [dst.parent])
        if code == 0 and not _oracle(dst):
            violations.append(f"upscale {case['file']}: output does not decode")
    batch_out = out / "batch"
    check("batch", ["batch", str(inputs), str(batch_out), "--weights", str(weights), "--device", "cpu",
                    "--max-pixels", str(max_pixels), "--format", "png"], [batch_out])
    made = {p.stem for p in batch_out.glob("*.png")} if batch_out.exists() else set()
    for p in batch_out.glob("*.png") if batch_out.exists() else []:
        if not _oracle(p):
            violations.append(f"batch output {p.name} does not decode")
    for case in files:
        if case["decodes"] and not case["too_large"] and case["damage"] != "suffix" and Path(case["file"]).stem not in made:
            violations.append(f"batch: valid input {case['file']} got no output")
    check("degrade", ["degrade", str(inputs), str(out / "degraded"), "--pipeline", "bicubic", "--scale", "2"],
          [out / "degraded"])
    if batch_out.exists():
        check("eval", ["eval", str(batch_out), "--niqe"], [])
    report = {"count": count, "seed": seed, "files": len(files), "oracle_decodable": sum(c["decodes"] for c in files),
              "batch_outputs": len(made), "invocations": len(calls), "violations": violations,
              "exit_codes": sorted({c["code"] for c in calls}), "calls": calls, "cases": cases}
    (out / "fuzz.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=20, help="files also run one by one through `upscale`")
    ap.add_argument("--timeout", type=float, default=600.0, help="per invocation (a hang is a violation)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = run(args.out, args.count, args.seed, args.sample, args.timeout)
    print(f"{report['files']} files ({report['oracle_decodable']} decodable by Pillow), {report['invocations']} "
          f"invocations, exit codes {report['exit_codes']}, {len(report['violations'])} violation(s), "
          f"{time.perf_counter() - t0:.0f} s")
    for v in report["violations"][:20]:
        print("  -", v)
    sys.exit(1 if report["violations"] else 0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
