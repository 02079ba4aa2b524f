"""The seeded fast subset of bench/fuzz_io.py (issue 18): 60 malformed, extreme and valid-but-odd
images through upscale, batch, degrade and eval — no traceback, documented exit codes, no partial
files, every decodable input gets a decodable output. The full 2000-image run: docs/reliability.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "fuzz_io.py"


def test_fuzz_subset_has_no_violation(tmp_path):
    spec = importlib.util.spec_from_file_location("fuzz_io", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    report = fuzz.run(tmp_path, count=60, seed=1, sample=4, timeout=300)
    assert report["violations"] == [], report["violations"]
    assert report["files"] >= 50 and report["batch_outputs"] >= report["oracle_decodable"] - 10
    assert set(report["exit_codes"]) <= fuzz.DOCUMENTED
    damaged = {c["damage"] for c in report["cases"] if c.get("file")}
    assert {"none", "truncate", "flip"} <= damaged
