"""DDP through the real interface: ``torchrun --nproc_per_node 2`` on the CPU with Gloo.

Two ranks with half the global batch each must train exactly what one process with the whole
batch trains (the data and degradations are keyed per sample, DDP averages the gradients):
losses and weights agree to 1e-5. The 2-rank checkpoint then resumes in one process.

Run as a module, this file is the torchrun worker: ``-m tests.training.test_ddp RUN_DIR HR_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realsr_cli.training.checkpoint import load_checkpoint
from realsr_cli.training.trainer import Trainer, TrainHooks
from tests.training.test_trainer import ToyGANStage, make_images, toy_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def ddp_config(hr_dir: str | Path, max_steps: int = STEPS):
    """Global batch 4 (2 per rank), degradation on, validation every 2 steps on rank 0."""
    root = Path(hr_dir).parent
    val = {"lq_dir": str(root / "val_lq"), "hq_dir": str(root / "val_hq")}
    return toy_config(Path(hr_dir), run={"max_steps": max_steps, "checkpoint_every": 0},
                      data={"batch_size": 4}, val=val)


def _data(root: Path) -> Path:
    hr_dir = make_images(root / "hr", n=5)
    make_images(root / "val_hq", n=1, size=16)
    make_images(root / "val_lq", n=1, size=8)
    for folder in ("val_hq", "val_lq"):
        (root / folder / "tiny.png").unlink()
    return hr_dir


def _losses(run_dir: Path) -> dict[int, dict[str, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == "train"}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    out = {f"{n}.{k}": v for n, sd in ckpt["nets"].items() for k, v in sd.items()}
    out.update({f"ema.{k}": v for k, v in ckpt["ema"].items()})
    return out


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_torchrun_two_cpu_ranks_match_one_process(tmp_path):
    hr_dir = _data(tmp_path)
    single: dict[int, dict[str, float]] = {}
    hooks = TrainHooks(on_step=lambda step, losses: single.__setitem__(step, losses))
    Trainer(ToyGANStage, ddp_config(hr_dir, STEPS + 1), tmp_path / "single", hooks=hooks).run()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.training.test_ddp", str(tmp_path / "ddp"), str(hr_dir)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp = _losses(tmp_path / "ddp")
    assert sorted(ddp) == list(range(1, STEPS + 1))
    for step, record in ddp.items():
        for key, value in single[step].items():
            assert record[key] == pytest.approx(value, abs=1e-5), (step, key)
    vals = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in vals if r["kind"] == "val"] == [2, 3]  # rank 0 validated, no hang
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == STEPS

    # the 2-rank checkpoint resumes in one process and lands where the single run did
    resumed: dict[int, dict[str, float]] = {}
    hooks = TrainHooks(on_step=lambda step, losses: resumed.__setitem__(step, losses))
    Trainer(ToyGANStage, ddp_config(hr_dir, STEPS + 1), tmp_path / "ddp",
            resume_from=tmp_path / "ddp" / "checkpoints" / "last.pt", hooks=hooks).run()
    for key, value in single[STEPS + 1].items():
        assert resumed[STEPS + 1][key] == pytest.approx(value, abs=1e-5), key
    _assert_close(_weights(tmp_path / "single"), _weights(tmp_path / "ddp"))


def _worker(run_dir: str, hr_dir: str) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(ToyGANStage, ddp_config(hr_dir), run_dir)
    assert trainer.dist.world_size == 2 and trainer.sampler.local_batch == 2
    trainer.run()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
