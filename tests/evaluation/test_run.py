"""Issue 14: both forms of `realsr eval` are library calls (evaluation/run.py), usable without the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realsr_cli.engine import api
from realsr_cli.errors import UsageError
from realsr_cli.evaluation import folders, pairs, run
from tests.engine.test_runner import LocalNet, loaded


def _png(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


class Recorder(run.EvalEvents):
    def __init__(self):
        self.calls = []

    def warn(self, message):
        self.calls.append(("warn", message))

    def loaded(self, model, total):
        self.calls.append(("loaded", total))

    def done(self, name, error):
        self.calls.append(("done", name, error))


def test_sr_folder_form(tmp_path):
    for i, name in enumerate(("a", "b")):
        _png(tmp_path / "sr" / f"{name}.png", 16, 16, i)
        _png(tmp_path / "hr" / f"{name}.png", 16, 16, i + 10)
    _png(tmp_path / "sr" / "orphan.png", 16, 16, 5)
    events = Recorder()
    opts = folders.DirEvalOptions(scale=None, crop_border=0, reference=True)
    report = run.evaluate_sr_folder(tmp_path / "sr", tmp_path / "hr", opts, events=events)
    assert len(report.images) == 2 and not report.failed
    assert ("warn", "skipping orphan.png: no HR image orphan.* in " + str(tmp_path / "hr")) in events.calls
    assert [c[1] for c in events.calls if c[0] == "done"] == ["a.png", "b.png"]
    with pytest.raises(UsageError, match="needs HR_DIR"):
        run.evaluate_sr_folder(tmp_path / "sr", None, folders.DirEvalOptions(reference=False, lpips=True))


def test_model_form_scores_pairs_and_refuses_an_empty_plan_before_loading(tmp_path):
    _png(tmp_path / "lq" / "x.png", 10, 12, 1)
    _png(tmp_path / "hq" / "x.png", 20, 24, 2)
    events = Recorder()
    report = run.evaluate_model_on_folders(tmp_path / "lq", tmp_path / "hq", lambda: loaded(LocalNet()),
                                                  pairs.EvalOptions(upscale=api.UpscaleOptions(tile=0)),
                                                  events=events)
    assert len(report.images) == 1 and not report.failed and ("loaded", 1) in events.calls
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="has an HR partner"):
        run.evaluate_model_on_folders(tmp_path / "empty", tmp_path / "hq",
                                      lambda: pytest.fail("loaded before checking the plan"),
                                      pairs.EvalOptions())
