"""Kill -9 a small training run again and again; every --resume must end where an uninterrupted
run ends, bit for bit (issue 18, docs/reliability.md).

    python bench/fault_training.py --out /tmp/faults --kills 20      # the full run
    python bench/fault_training.py --out /tmp/faults --kills 2       # a quick look

1. A reference run: ``realsr train bicres --config bicres-tiny`` for ``--steps`` steps with a
   checkpoint every step, never interrupted.
2. The same command (same data, seed, config) started, SIGKILLed, resumed with ``--resume``,
   SIGKILLed again ... ``--kills`` times at distinct random steps spread over the run (in order).
   Odd kills land a random 0-50 ms after that step's checkpoint (inside a later step: forward,
   backward, optimizer, data); even kills watch the checkpoint folder and
   fire the moment a checkpoint's temporary ``.part`` file appears, i.e. inside a checkpoint
   write. Then one last ``--resume`` runs to the end.
3. Checks: no resume fails or goes back (the newest complete checkpoint never decreases); no
   temporary file is left at the end; the final checkpoint's
   networks, EMA and optimizer state equal the reference's exactly (``torch.equal``), and the
   metrics log has each step once with the reference's values.

Writes OUT/faults.json and prints a summary; exits 1 on any violation. Runs each process with one
thread (``OMP_NUM_THREADS=1``), as bit-equality across runs needs the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_data(folder: Path, n: int = 6, size: int = 96, seed: int = 0) -> Path:
    """``n`` smooth colour images (gradients plus a few shapes), seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        img = np.stack([a * xx, b * yy, c * (1 - xx) * yy], -1)
        for _ in range(4):
            x0, y0, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(4, size // 4))]
            img[max(0, y0 - r):y0 + r, max(0, x0 - r):x0 + r] = rng.uniform(0, 1, 3)
        Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def command(data: Path, out: Path, steps: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "realsr_cli", "train", "bicres", "--config", "bicres-tiny",
           "--data", str(data), "--out", str(out), "--max-steps", str(steps),
           "--set", "run.checkpoint_every=1", "--set", "run.keep_checkpoints=3",
           "--set", "run.log_every=1", "--set", "data.batch_size=4", "--set", "data.patch_size=48",
           "--set", "model.width=32", "--set", "model.depth=6"]
    return cmd + (["--resume"] if resume else [])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return e


STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def newest_step(out: Path) -> int:
    folder = out / "checkpoints"
    steps = [int(m.group(1)) for p in folder.glob("step_*.pt") if (m := STEP_FILE.match(p.name))] \
        if folder.is_dir() else []
    return max(steps, default=0)


def part_files(out: Path) -> list[str]:
    folder = out / "checkpoints"
    return sorted(p.name for p in folder.glob(".step_*.part")) if folder.is_dir() else []


def kill_run(cmd: list[str], out: Path, *, target: int, delay: float, in_write: bool,
             limit: float) -> dict:
    """Start ``cmd``; once the checkpoint of step ``target`` exists, SIGKILL it ``delay`` seconds
    later (a random moment of a later step: forward, backward, optimizer, data, logging), or
    (``in_write``) the moment the next checkpoint ``.part`` file appears. Progress-based rather
    than clock-based, so the kills land inside the run however busy the machine is."""
    before = newest_step(out)
    log = open(out.parent / f"{out.name}.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env())
    t0 = time.monotonic()
    hit_write = False
    reached: float | None = None
    while proc.poll() is None and time.monotonic() - t0 < limit:
        if reached is None:
            if newest_step(out) >= target:
                reached = time.monotonic()
            time.sleep(0.002)
        elif in_write:
            if part_files(out):
                hit_write = True
                break
            time.sleep(0.0002)
        elif time.monotonic() - reached >= delay:
            break
        else:
            time.sleep(0.001)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log.close()
    return {"delay": round(delay, 3), "resumed_from": before, "killed": not finished, "in_write": hit_write,
            "rc": proc.returncode, "seconds": round(time.monotonic() - t0, 3),
            "left_parts": part_files(out), "newest_after": newest_step(out)}


def final_state(out: Path):
    import torch

    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return state


def same_state(a, b, where: str = "") -> list[str]:
    import torch

    if isinstance(a, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape \
            and torch.equal(a, b) else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [where + " (keys)"]
        return [d for k in a for d in same_state(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [where + " (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in same_state(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def metrics(out: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    dupes = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") != "train":
            continue
        if r["step"] in rows:
            dupes.append(r["step"])
        rows[r["step"]] = {k: v for k, v in r.items() if k not in ("time",)}
    return rows if not dupes else {-1: {"duplicates": dupes}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    data = make_data(args.out / "data")
    rnd = random.Random(args.seed)

    ref = args.out / "reference"
    t0 = time.monotonic()
    r = subprocess.run(command(data, ref, args.steps, False), env=env(), capture_output=True)
    ref_seconds = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stderr.decode()[-2000:])
        return 1

    run = args.out / "faulted"
    events = []
    # the kill points: distinct random steps spread over the run, in order (a kill waits for its
    # step's checkpoint, so no run can finish before its kill)
    targets = sorted(rnd.sample(range(2, args.steps - 2), args.kills))
    for i, target in enumerate(targets):
        in_write = i % 2 == 1
        cmd = command(data, run, args.steps, resume=(run / "checkpoints").is_dir())
        ev = kill_run(cmd, run, target=target, delay=rnd.uniform(0.0, 0.05), in_write=in_write,
                      limit=ref_seconds * 3 + 60)
        ev.update(kill=i + 1, target=target, delay=ev.get("delay", 0.0))
        events.append(ev)
        when = "inside a checkpoint write" if ev["in_write"] else f"{ev['delay']:.2f}s after step {ev['target']}"
        tail = "" if ev["killed"] else f" (finished first, rc {ev['rc']})"
        print(f"kill {i + 1:2d}: {when}; newest checkpoint {ev['resumed_from']} -> "
              f"{ev['newest_after']}; parts left {len(ev['left_parts'])}{tail}", flush=True)
    last = subprocess.run(command(data, run, args.steps, resume=(run / "checkpoints").is_dir()),
                          env=env(), capture_output=True)

    violations = []
    if last.returncode != 0:
        violations.append(f"final resume exited {last.returncode}: {last.stderr.decode()[-500:]}")
    for ev in events:
        if not ev["killed"] and ev["rc"] != 0:
            violations.append(f"kill {ev['kill']}: a run exited {ev['rc']} by itself")
        if ev["newest_after"] < ev["resumed_from"]:
            violations.append(f"kill {ev['kill']}: the newest checkpoint went back")
    if not violations:
        a, b = final_state(ref), final_state(run)
        for key in ("step", "nets", "ema", "optimizers", "data"):
            diff = same_state(a.get(key), b.get(key), key)
            violations += [f"final {d} differs" for d in diff[:5]]
        ma, mb = metrics(ref), metrics(run)
        if -1 in mb:
            violations.append(f"metrics log repeats steps {mb[-1]['duplicates'][:10]}")
        elif ma != mb:
            bad = sorted(s for s in set(ma) | set(mb) if ma.get(s) != mb.get(s))
            violations.append(f"metrics differ at steps {bad[:10]}")
        if part_files(run):
            violations.append(f"temporary checkpoint files left: {part_files(run)}")
    summary = {
        "kills": args.kills, "steps": args.steps, "reference_seconds": round(ref_seconds, 2),
        "killed": sum(e["killed"] for e in events),
        "killed_inside_a_checkpoint_write": sum(e["in_write"] for e in events),
        "parts_left_by_kills": sum(bool(e["left_parts"]) for e in events),
        "resumes": sum(e["resumed_from"] > 0 for e in events) + 1,
        "final_bit_equal": not violations, "violations": violations, "events": events,
        "command": " ".join(command(data, run, args.steps, True)[1:]),
    }
    (args.out / "faults.json").write_text(json.dumps(summary, indent=1))
    print(f"{summary['killed']} kills ({summary['killed_inside_a_checkpoint_write']} inside a checkpoint "
          f"write, {summary['parts_left_by_kills']} left a .part file), {summary['resumes']} resumes; "
          f"final state bit-equal to the uninterrupted run: {summary['final_bit_equal']}")
    for v in violations:
        print("VIOLATION:", v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
