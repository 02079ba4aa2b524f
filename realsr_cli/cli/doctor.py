"""`realsr doctor`: the environment, the weights cache and a self-test per device (library:
:mod:`realsr_cli.engine.doctor`)."""

from __future__ import annotations

from typing import Annotated

import typer

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.errors import EXIT_DEVICE, EXIT_MODEL

_DEVICE_HELP = "Self-test only this device (cpu, cuda, cuda:N, mps); default: every device found."


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**30:.1f} GiB"


def doctor(
    device: Annotated[str, typer.Option("--device", "-d", help=_DEVICE_HELP)] = "all",
    self_test: Annotated[bool, typer.Option("--self-test/--no-self-test", help="Run the per-device self-test.")] = True,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Re-hash the cached weights files.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Check this installation: versions, devices, weights cache, and a tiled/untiled self-test in
    every precision each device runs natively. Exit 0 when all is well, 5 when a self-test fails,
    3 when a cached weights file fails its sha256.

    Examples:

      realsr doctor

      realsr doctor --device cuda --json > doctor.json
    """
    from realsr_cli.engine.doctor import diagnose

    report = diagnose(device, self_test=self_test, verify_weights=verify)
    if json_out:
        _output.emit_json(_schemas.stamp("doctor", report.to_json()))
    else:
        _output.key_values("realsr doctor", list(report.environment.items()))
        _output.table("devices", ["device", "name", "capability", "memory free", "native precisions"], [
            [d["device"], d.get("name", ""), d.get("compute_capability", ""), _gib(d.get("memory_free_bytes")),
             ", ".join(d["precisions"])] for d in report.devices], keep=("device",))
        cache = report.cache
        _output.info(f"cache: {cache['folder']} ({_gib(cache['free_bytes'])} free)")
        if report.weights:
            _output.table("cached weights", ["id", "size", "sha256"], [
                [w["id"], f"{w['bytes'] / 2**20:.1f} MB",
                 {True: "ok", False: "MISMATCH", None: "not checked"}[w.get("ok")]] for w in report.weights],
                keep=("id",))
        _output.info("extras: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in report.extras.items()))
        if report.checks:
            _output.table("self-test (max |diff| vs CPU fp32, [0,1] scale)",
                          ["device", "precision", "tiled", "max |diff|", "tolerance", "result"], [
                [c.device, c.precision, "yes" if c.tiled else "no",
                 "-" if c.max_abs_diff is None else f"{c.max_abs_diff:.2e}", f"{c.tolerance:g}",
                 "pass" if c.ok else f"FAIL{': ' + c.error if c.error else ''}"] for c in report.checks])
    if not all(c.ok for c in report.checks):
        if not json_out:
            _output.error("a self-test failed", "paste this output (or --json) into a bug report")
        raise typer.Exit(EXIT_DEVICE)
    if not report.ok:
        if not json_out:
            _output.error("a cached weights file does not match its sha256",
                          "run `realsr models download ID` again (see `realsr models verify ID`)")
        raise typer.Exit(EXIT_MODEL)
    if not json_out:
        _output.success("all checks passed")
