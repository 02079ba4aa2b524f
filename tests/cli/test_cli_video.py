"""`realsr video`: frames equal `realsr upscale` of the same frame, --json, Ctrl-C + --resume, exit codes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from realsr_cli.cli._schemas import validate
from tests.cli.conftest import run_cli

LOSSLESS = ["--codec", "libx264rgb", "--crf", "0", "--pix-fmt", "rgb24"]


@pytest.fixture
def av():
    return pytest.importorskip("av")


@pytest.fixture
def clip(av, tmp_path):
    from tests.engine.test_video import make_clip

    return make_clip(tmp_path / "clip.mp4")


def frames_of(av, path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


@pytest.mark.parametrize("extra", [[], ["--tta"]])
def test_first_and_last_frame_equal_realsr_upscale_of_that_frame(av, clip, tmp_path, extra):
    out = tmp_path / "clip_x4.mkv"
    res = run_cli(["video", str(clip), str(out), *LOSSLESS, *extra, "--json"])
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert validate(doc, "video") == []
    assert (doc["frames"], doc["output_size"], doc["fps"], doc["audio_copied"], doc["tta"]) == (
        6, [128, 96], 10.0, True, bool(extra))
    src, got = frames_of(av, clip), frames_of(av, out)
    assert len(got) == 6
    for i in (0, 5):
        png = tmp_path / f"frame{i}.png"
        Image.fromarray(src[i]).save(png)
        up = run_cli(["upscale", str(png), "-o", str(tmp_path / f"frame{i}_x4.png"), *extra])
        assert up.code == 0, up.stderr
        np.testing.assert_array_equal(got[i], np.asarray(Image.open(tmp_path / f"frame{i}_x4.png")))


def test_ctrl_c_exits_130_with_a_playable_partial_and_resume_finishes(av, clip, tmp_path, monkeypatch):
    from realsr_cli.engine import api

    real, calls = api.upscale_image, []

    def interrupted_on_the_third_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "upscale_image", interrupted_on_the_third_frame)
    out = tmp_path / "x4.mp4"
    res = run_cli(["video", str(clip), str(out), "--json"])
    assert res.code == 130 and res.stdout == b""
    assert "2 of 6 frames" in res.stderr and "--resume" in res.stderr and "x4.partial.mp4" in res.stderr
    assert len(frames_of(av, tmp_path / "x4.partial.mp4")) == 2 and not out.exists()

    again = run_cli(["video", str(clip), str(out)])
    assert again.code == 2 and "--resume" in again.stderr
    changed = run_cli(["video", str(clip), str(out), "--resume", "--crf", "20"])
    assert changed.code == 2 and "crf: 18 -> 20" in changed.stderr

    monkeypatch.setattr(api, "upscale_image", real)
    res = run_cli(["video", str(clip), str(out), "--resume", "--json"])
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert validate(doc, "video") == [] and (doc["frames"], doc["resumed_frames"]) == (6, 2)
    assert len(frames_of(av, out)) == 6 and not (tmp_path / "x4.partial.mp4").exists()


def test_missing_pyav_exits_2_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    res = run_cli(["video", str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")])
    assert res.code == 2 and "pip install 'realsr[video]'" in res.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--crf", "64"], 2, None),  # click's range check (its message goes to the real stderr)
        (["--frames", "0"], 2, None),
        (["--codec", "nope"], 2, "unknown video encoder"),
        (["--pix-fmt", "rgb24"], 2, "libx264 cannot encode --pix-fmt rgb24"),
        (["--scale", "1.1"], 2, "divisible by 2"),
        (["--tile", "-3"], 2, "--tile"),
    ],
)
def test_bad_options_exit_2(av, clip, tmp_path, args, code, message):
    res = run_cli(["video", str(clip), str(tmp_path / "o.mp4"), *args])
    assert res.code == code and (message is None or message in res.stderr), res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_existing_output_and_missing_input(av, clip, tmp_path):
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"keep me")
    res = run_cli(["video", str(clip), str(taken)])
    assert res.code == 2 and "--overwrite" in res.stderr and taken.read_bytes() == b"keep me"
    res = run_cli(["video", str(clip), str(taken), "--overwrite", "--frames", "1"])
    assert res.code == 0, res.stderr
    assert len(frames_of(av, taken)) == 1
    res = run_cli(["video", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")])
    assert res.code == 4 and "not found" in res.stderr
