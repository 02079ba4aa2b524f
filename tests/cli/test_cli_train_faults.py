"""Training checkpoints under faults (issue 18): a full disk during a checkpoint write, a writer
killed mid-write, a truncated checkpoint on resume. The 20x kill -9 soak is bench/fault_training.py
(docs/reliability.md); these are its fast, deterministic pieces."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from realsr_cli.errors import EXIT_IMAGE_IO, FileWriteError, UsageError
from realsr_cli.training import checkpoint as ckpt
from realsr_cli.training.stages import STAGES
from tests.cli.conftest import run_cli
from tests.training.test_trainer import ToyStage, make_images


@pytest.fixture(autouse=True)
def toy_stage(monkeypatch):
    monkeypatch.setitem(STAGES, "toy", lambda: ToyStage)


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("hr"), n=3, size=40)


def _state(step: int) -> dict:
    return {"format": ckpt.CHECKPOINT_FORMAT, "format_version": 1, "step": step,
            "nets": {"g": {"w": torch.full((64,), float(step))}}}


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, _state(1))
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"\0" * 1000)  # part of the file reached the disk, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(FileWriteError) as info:
        ckpt.save_checkpoint(run, _state(2))
    monkeypatch.setattr(torch, "save", real_save)
    err = info.value
    assert err.exit_code == EXIT_IMAGE_IO and "step 2" in err.message and "No space left" in err.message
    assert "last.pt" in err.hint and "intact" in err.hint
    folder = ckpt.checkpoint_dir(run)
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_0000001.pt"]  # no .part left
    assert ckpt.load_checkpoint(ckpt.find_checkpoint(run))["step"] == 1


def test_a_writer_killed_mid_write_leaves_nothing_the_next_save_keeps(tmp_path):
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, _state(1))
    folder = ckpt.checkpoint_dir(run)
    stale = folder / ".step_0000002.pt.x1y2z3.part"  # what mkstemp left when kill -9 hit torch.save
    stale.write_bytes(b"PK\x03\x04 half a zip")
    assert ckpt.find_checkpoint(run).name == "last.pt"
    assert ckpt.load_checkpoint(ckpt.find_checkpoint(run))["step"] == 1  # resume ignores it
    ckpt.save_checkpoint(run, _state(2))
    assert not stale.exists()
    assert ckpt.load_checkpoint(folder / "last.pt")["step"] == 2


def test_truncated_checkpoint_is_named_with_what_to_do(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2):
        ckpt.save_checkpoint(run, _state(step))
    folder = ckpt.checkpoint_dir(run)
    newest = folder / "step_0000002.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # last.pt is a hard link: truncated too
    with pytest.raises(UsageError) as info:
        ckpt.load_checkpoint(ckpt.find_checkpoint(run))
    err = info.value
    assert str(folder / "last.pt") in err.message and "truncated" in err.message
    assert "step_0000001.pt" in err.hint and "step_0000002.pt.bad" in err.hint


def test_cli_resume_from_a_truncated_checkpoint_exits_2_naming_it(tmp_path, hr_dir):
    out = tmp_path / "run"
    base = ["train", "toy", "--data", str(hr_dir), "--out", str(out), "--set", "data.scale=1",
            "--set", "run.checkpoint_every=1"]
    res = run_cli([*base, "--max-steps", "2"])
    assert res.code == 0, res.stderr
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    res = run_cli([*base, "--max-steps", "3", "--resume"])
    err = res.stderr
    assert res.code == 2 and str(last) in err and "step_0000001.pt" in err, err
