from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.parity import shared_dir


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str


def run_cli(args: list[str], *, stdin: bytes = b"", monkeypatch=None) -> Result:
    """Run `realsr` in-process through main(), capturing exit code, stdout bytes and stderr."""
    from realsr_cli.cli import _output
    from realsr_cli.cli.app import main

    out_buf, err_buf = io.BytesIO(), io.StringIO()

    class _Out(io.TextIOWrapper):
        pass

    stdout = io.TextIOWrapper(out_buf, encoding="utf-8", write_through=True)
    stdin_w = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    old = sys.stdout, sys.stdin, _output.err.file
    sys.stdout, sys.stdin, _output.err.file = stdout, stdin_w, err_buf
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        stdout.flush()
        sys.stdout, sys.stdin, _output.err.file = old
    return Result(code, out_buf.getvalue(), err_buf.getvalue())


def run_subprocess(args: list[str], *, stdin: bytes = b"", cwd: Path | None = None) -> Result:
    p = subprocess.run([sys.executable, "-m", "realsr_cli", *args], input=stdin, capture_output=True, cwd=cwd)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def femasr_weights(tmp_path_factory) -> Path:
    """The reduced FeMaSR x4 parity weights converted with `realsr convert` (official -> ours)."""
    src = shared_dir() / "parity" / "femasr_x4_reduced" / "weights.safetensors"
    dst = tmp_path_factory.mktemp("weights") / "femasr-x4-reduced.safetensors"
    res = run_cli(["convert", str(src), "--arch", "femasr", "-o", str(dst)])
    assert res.code == 0, res.stderr
    return dst


@pytest.fixture(scope="session")
def inputs_dir() -> Path:
    return shared_dir() / "data" / "RealESRGAN_inputs"
