"""`realsr train ...` as a user runs it: exit codes, run folder, resume, export -> upscale, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realsr_cli.training.stages import STAGES
from tests.cli.conftest import run_cli
from tests.training.test_trainer import ToyFeMaSRStage, ToyStage, make_images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def toy_stages(monkeypatch):
    monkeypatch.setitem(STAGES, "toy", lambda: ToyStage)
    monkeypatch.setitem(STAGES, "toy-femasr", lambda: ToyFeMaSRStage)


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("hr"), n=3, size=40)


def _train(hr_dir: Path, out: Path, *extra: str):
    return run_cli(["train", "toy", "--data", str(hr_dir), "--out", str(out), "--set", "data.scale=1",
                    "--set", "run.checkpoint_every=0", *extra])


@pytest.mark.parametrize("args", [["train"], ["train", "run"], ["train", "export"], ["train", "stages"]])
def test_help_has_examples(args):
    res = run_cli([*args, "--help"])
    assert res.code == 0 and "Example" in res.stdout.decode()


def test_stages_lists_name_and_summary():
    res = run_cli(["train", "stages", "--json"])
    assert res.code == 0, res.stderr
    rows = {r["stage"]: r["summary"] for r in json.loads(res.stdout)["stages"]}
    assert rows["toy"] == ToyStage.summary and "femasr" in rows


def test_train_then_refuse_then_resume(tmp_path, hr_dir):
    out = tmp_path / "run"
    res = _train(hr_dir, out, "--max-steps", "2", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["step"] == 2 and Path(report["checkpoint"]).is_file()
    assert (out / "config.toml").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "train step 2/2" in res.stderr

    again = _train(hr_dir, out, "--max-steps", "2")
    assert again.code == 2 and "--resume" in again.stderr and "already holds" in again.stderr

    # resume needs neither --data nor the --set overrides: the checkpoint holds the config
    more = run_cli(["train", "toy", "--out", str(out), "--resume", "--max-steps", "3", "--json"])
    assert more.code == 0, more.stderr
    assert json.loads(more.stdout)["step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "optim.nope=1"], "unknown key"),
        (["--set", "optim.lr=fast"], "expected a number"),
        (["--set", "data.scale=2", "--set", "data.patch_size=15"], "not divisible"),
        (["--config", "missing.toml"], "config file not found"),
        # issue 18 (7): these ended in exit 1 "this is a bug"
        (["--set", "optim.lr=nan"], "optim.lr: expected a finite number"),
        (["--set", "optim.lr=inf"], "optim.lr: expected a finite number"),
        (["--set", "run.seed=18446744073709551616"], "does not fit in 64 bits"),
        (["--config", "."], "is a folder, not a config file"),
        (["--config", "__binary__"], "not a text (TOML) file"),
    ],
)
def test_bad_config_exits_2(tmp_path, hr_dir, extra, message):
    if "__binary__" in extra:
        binary = tmp_path / "weights.bin"
        binary.write_bytes(bytes(range(256)) * 8)
        extra = [str(binary) if a == "__binary__" else a for a in extra]
    res = _train(hr_dir, tmp_path / "run", *extra)
    assert res.code == 2 and message in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_stage_and_missing_data_exit_2(tmp_path):
    res = run_cli(["train", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.code == 2 and "unknown training stage" in res.stderr and "toy" in res.stderr
    res = run_cli(["train", "toy", "--out", str(tmp_path / "r")])
    assert res.code == 2 and "--data" in res.stderr
    res = run_cli(["train", "toy", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
    assert res.code == 2 and "not found" in res.stderr


def test_export_then_upscale_with_the_weights(tmp_path, hr_dir):
    out = tmp_path / "run"
    res = run_cli(["train", "toy-femasr", "--data", str(hr_dir), "--out", str(out)])
    assert res.code == 0, res.stderr
    weights = tmp_path / "mine.safetensors"
    res = run_cli(["train", "export", str(out), "-o", str(weights), "--json"])
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["ema"] is True and weights.is_file()
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(src)
    res = run_cli(["upscale", str(src), "--weights", str(weights), "-o", str(tmp_path / "sr.png")])
    assert res.code == 0, res.stderr
    assert Image.open(tmp_path / "sr.png").size == (40, 48)
    ckpt = next((out / "checkpoints").glob("step_*.pt"))
    res = run_cli(["train", "export", str(out), "-o", str(tmp_path / "raw.safetensors"), "--no-ema",
                   "--checkpoint", str(ckpt), "--json"])
    assert res.code == 0 and json.loads(res.stdout)["ema"] is False
    res = run_cli(["train", "export", str(tmp_path), "-o", str(tmp_path / "x.safetensors")])
    assert res.code == 2 and "no checkpoint" in res.stderr


_LAUNCHER = """
import sys
from realsr_cli.training.stages import STAGES
from tests.training.test_trainer import ToyStage
STAGES["toy"] = lambda: ToyStage
from realsr_cli.cli.app import main
main(sys.argv[1:])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path, hr_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _LAUNCHER, "train", "toy", "--data", str(hr_dir), "--out", str(out),
           "--set", "data.scale=1", "--max-steps", "100000", "--set", "run.checkpoint_every=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = stderr.decode()
    assert proc.returncode == 130, text[-2000:]
    assert (out / "checkpoints" / "last.pt").is_file() and "--resume" in text
    res = run_cli(["train", "toy", "--out", str(out), "--resume", "--max-steps", "1", "--json"])
    assert res.code == 0, res.stderr  # already past max_steps: nothing to do, no error
