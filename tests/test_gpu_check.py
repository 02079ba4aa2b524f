"""bench/gpu_check.py cannot rot: its CPU subset (``--device cpu --quick``) runs in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.parity import shared_dir

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def test_gpu_check_cpu_subset_passes_and_writes_its_report(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
         "--parity", str(shared_dir() / "parity")],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and set(report["sections"]) == {
        "doctor", "parity", "nan_retry", "oom_shrink", "auto_tile", "seeded_diffusion", "amp_train", "ddp",
        "throughput"}
    parity = report["sections"]["parity"]["rows"]
    assert any(r["precision"] == "fp32" and r["codes_equal"] == 1.0 for r in parity)
    nan = report["sections"]["nan_retry"]
    assert "skipped" in nan or nan["fp32_fallbacks"] >= 1  # skipped only without native bf16
    assert report["sections"]["oom_shrink"]["final_tile"] < 512
    assert "| parity | pass |" in (out / "report.md").read_text()
