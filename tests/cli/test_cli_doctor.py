"""`realsr doctor` on the CPU: the report, the self-test with its thresholds, and its exit codes."""

from __future__ import annotations

import json

import pytest
import torch

from realsr_cli.cli._schemas import validate
from realsr_cli.engine import device, doctor
from tests.cli.conftest import run_cli


def test_doctor_json_reports_and_passes_on_cpu():
    res = run_cli(["doctor", "--device", "cpu", "--json"])
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert validate(doc, "doctor") == [] and doc["ok"] is True
    assert doc["environment"]["torch"] == torch.__version__
    cpu = doc["devices"][0]
    assert cpu["device"] == "cpu" and cpu["precisions"][0] == "fp32"
    assert ("bf16" in cpu["precisions"]) == device.cpu_native_bf16()
    checks = {(c["precision"], c["tiled"]): c for c in doc["checks"]}
    assert set(checks) == {(p, t) for p in cpu["precisions"] for t in (False, True)}
    assert checks[("fp32", False)]["max_abs_diff"] == 0.0 and checks[("fp32", True)]["max_abs_diff"] <= doctor.FP32_TOL
    ids = {w["id"] for w in doc["weights"]}
    assert "ssr-x4-cpu" in ids and all(w["ok"] for w in doc["weights"])  # shipped files re-hashed


def test_doctor_human_output_and_unknown_device():
    res = run_cli(["doctor", "--device", "cpu", "--no-verify"])
    assert res.code == 0 and "self-test" in res.stderr and "all checks passed" in res.stderr
    res = run_cli(["doctor", "--device", "cuda:7"])
    assert res.code == 5 and "not available" in res.stderr


def test_a_failing_self_test_exits_5(monkeypatch):
    """A device whose output is off (here: a tolerance no real run meets) fails with exit 5."""
    monkeypatch.setitem(doctor._TOL, "fp32", -1.0)
    report = doctor.diagnose("cpu", verify_weights=False)
    assert not report.ok and all(not c.ok for c in report.checks if c.precision == "fp32")
    from typer.testing import CliRunner

    from realsr_cli.cli.app import app

    result = CliRunner().invoke(app, ["doctor", "--device", "cpu", "--no-verify"])
    assert result.exit_code == 5


@pytest.mark.parametrize("flags,expected", [("fpu avx512_bf16 sse", True), ("amx_bf16 avx2", True), ("avx2 avx512f", False)])
def test_bf16_is_detected_from_the_cpu_flags_not_guessed(monkeypatch, flags, expected):
    monkeypatch.setattr(device, "_cpu_flags", lambda: flags.split())
    monkeypatch.setattr(device, "_CPU_BF16", None)  # not the cached answer of this machine
    assert device.cpu_native_bf16() is expected
