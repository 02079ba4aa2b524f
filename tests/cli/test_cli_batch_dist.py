"""`realsr batch` under a real `torchrun --nproc-per-node 2` (Gloo, CPU): two ranks write exactly
what one process writes, each file by one rank, rank 0 reports for both, both exit 6 for a bad
file, and `--skip-existing` resumes a run by redoing only the missing outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_cli.engine import io as rio
from tests.cli.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
WORLD = 2

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")


def _torchrun(args: list[str]) -> tuple[dict[int, int], dict, str]:
    """Run `torchrun -m realsr_cli batch ARGS --json`: ({rank: exit code of each failed rank},
    the JSON summary on stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           "-m", "realsr_cli", "batch", *args, "--json"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: torchrun stops its workers (they run in their own sessions)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"torchrun timed out:\n{stderr[-3000:]}")
    # torchrun itself exits 1 when a worker fails; its report names each failed rank's exit code
    failed = {int(r): int(c) for r, c in re.findall(r"rank\s*:\s*(\d+) \(local_rank.*\n\s*exitcode\s*:\s*(-?\d+)",
                                                     stderr)}
    assert (proc.returncode == 0) == (not failed), stderr[-3000:]
    assert stdout.strip(), stderr[-6000:]
    return failed, json.loads(stdout), stderr


def _all_exited_6(failed: dict[int, int]) -> bool:
    """Every rank exits 6 after rank 0's report; torchrun SIGTERMs whichever ranks are still
    exiting when the first one is seen (-15 in its report, or 130 once our handler has it)."""
    return set(failed) == set(range(WORLD)) and 6 in failed.values() and set(failed.values()) <= {6, -15, 130}


def _inputs(src: Path) -> Path:
    rng = np.random.default_rng(7)
    sizes = {"a.png": (12, 16), "b.jpg": (10, 14), "c.png": (16, 12), "sub/d.png": (9, 13), "sub/e.png": (8, 8)}
    for name, (h, w) in sizes.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(src / name)
    Image.fromarray(rng.integers(0, 256, size=(8, 10), dtype=np.uint8), "L").save(src / "sub" / "gray.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return src


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _same_pixels(a: Path, b: Path) -> bool:
    x, y = rio.read_image(a), rio.read_image(b)
    return x.pixels.shape == y.pixels.shape and np.array_equal(x.pixels, y.pixels)


def test_torchrun_two_ranks_match_one_process_and_resume(tmp_path, femasr_weights):
    src = _inputs(tmp_path / "in")
    # fp32: bf16 (auto on a CPU with native bf16) depends on the thread count, and each rank
    # runs with fewer threads than one process (docs/cli.md, "Many GPUs / many machines")
    common = ["-r", "--weights", str(femasr_weights), "--tile", "0", "--precision", "fp32"]
    single = run_cli(["batch", str(src), str(tmp_path / "one"), *common, "--json"])
    assert single.code == 6, single.stderr
    one = json.loads(single.stdout)

    out = tmp_path / "two"
    failed, doc, stderr = _torchrun([str(src), str(out), *common])
    assert _all_exited_6(failed), (failed, stderr[-3000:])  # rank 0's code, on every rank
    assert stderr.count("done: 6, skipped: 0, failed: 1 of 7") == 1  # one summary, from rank 0
    assert stderr.count("error: 1 of 7 image(s) failed") == 1

    # one merged summary with the same keys and counts as one process, plus the ranks
    for key in ("schema", "total", "done", "skipped", "failed"):
        assert doc[key] == one[key], key
    assert [r["input"] for r in doc["images"]] == [r["input"] for r in one["images"]]
    assert doc["world_size"] == WORLD and len(doc["ranks"]) == WORLD and not doc["interrupted"]
    plan = [str(src / n) for n in ("a.png", "b.jpg", "broken.png", "c.png", "sub/d.png", "sub/e.png",
                                   "sub/gray.png")]
    for rank, part in enumerate(doc["ranks"]):
        seen = part["inputs"]["done"] + part["inputs"]["failed"] + part["inputs"]["skipped"]
        assert part["rank"] == rank and sorted(seen) == sorted(plan[rank::WORLD])  # jobs r, r+N, ...
        assert part["total"] == len(seen) and part["device"] == "cpu"
    assert doc["ranks"][0]["inputs"]["failed"] == [str(src / "broken.png")]

    # the union of the outputs is pixel-identical to one process's, and nothing else was left
    assert _files(out) == _files(tmp_path / "one") == [
        "a.png", "b.jpg", "c.png", "sub/d.png", "sub/e.png", "sub/gray.png"]
    for name in _files(out):
        assert _same_pixels(out / name, tmp_path / "one" / name), name

    # resume: delete one output of each rank; only those two are redone
    gone = [Path(doc["ranks"][r]["inputs"]["done"][0]).relative_to(src).as_posix() for r in range(WORLD)]
    kept = {n: (out / n).stat().st_mtime_ns for n in _files(out) if n not in gone}
    for name in gone:
        (out / name).unlink()
    failed, again, _ = _torchrun([str(src), str(out), *common, "--skip-existing"])
    assert _all_exited_6(failed), failed  # the broken file still fails
    assert (again["done"], again["skipped"], len(again["failed"])) == (2, 4, 1)
    assert sorted(again["inputs"]["done"]) == sorted(str(src / n) for n in gone)
    assert [len(r["inputs"]["done"]) for r in again["ranks"]] == [1, 1]
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # not rewritten
    for name in gone:
        assert _same_pixels(out / name, tmp_path / "one" / name), name
