"""engine/video.py: frames through the engine, timestamps and audio kept, interrupt + resume."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from realsr_cli.engine import api, io
from realsr_cli.engine import video as ev
from realsr_cli.errors import ImageIOError, UsageError

av = pytest.importorskip("av")

#: lossless output settings: RGB in, RGB out, qp 0 -> frames compare exactly
LOSSLESS = ev.VideoOptions(codec="libx264rgb", crf=0, pix_fmt="rgb24")


def make_clip(path: Path, *, n: int = 6, w: int = 32, h: int = 24, fps: int = 10, pts: list[int] | None = None,
              audio: bool = True, title: str = "test clip") -> Path:
    """A small clip: moving gradients (libx264 yuv420p) at ``fps`` plus a mono AAC sine (or Opus in
    .mkv), with a title. ``pts`` (in 1/fps units) makes it variable-frame-rate."""
    with av.open(str(path), "w") as out:
        out.metadata["title"] = title
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = Fraction(1, fps)
        a = None
        if audio:
            a = out.add_stream("aac" if path.suffix == ".mp4" else "libopus", rate=48000 if path.suffix != ".mp4" else 16000)
            a.layout = "mono"
        y, x = np.mgrid[0:h, 0:w]
        stamps = pts or list(range(n))
        for i, t in enumerate(stamps):
            img = np.stack([(x * 8 + i * 30) % 256, (y * 10 + i * 20) % 256, ((x + y) * 5 + i) % 256], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            rate, fmt = a.codec_context.sample_rate, a.codec_context.format.name
            samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * (stamps[-1] + 1) // fps) / rate)).astype(np.float32)
            if fmt == "s16":
                samples = (samples * 32767).astype(np.int16)
            step = a.codec_context.frame_size or 960
            for s in range(0, len(samples), step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, s:s + step]), format=fmt, layout="mono")
                af.sample_rate, af.pts = rate, s
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def decoded(path: Path) -> list:
    with av.open(str(path)) as c:
        return list(c.decode(c.streams.video[0]))


def rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def audio_end(path: Path) -> float:
    """Where the audio stream ends, in seconds after the first video frame (Matroska cannot store
    negative timestamps: AAC's priming packet at -64 ms shifts every stream by +64 ms)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        last = [p for p in c.demux(s) if p.size][-1]
        return float((last.pts + last.duration) * s.time_base) - decoded(path)[0].time


def times(path: Path) -> list[float]:
    """Video frame times relative to the first one."""
    t = [f.time for f in decoded(path)]
    return [round(x - t[0], 6) for x in t]


def expected(model, frame, options=api.UpscaleOptions()) -> np.ndarray:
    """What `realsr upscale` makes of a PNG of ``frame``: the same read, the same engine call,
    the same rounding."""
    image = io.ImageData(pixels=rgb(frame) / np.float32(255))
    out, _ = api.upscale_image(model, image, options)
    return io.quantise(out.pixels, 255)


@pytest.fixture(scope="module")
def model():
    return api.load_model("bicres", device="cpu", precision="fp32")


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "clip.mp4")


def test_frames_size_rate_timestamps_audio_and_metadata_are_kept(model, clip, tmp_path):
    dst = tmp_path / "clip_x4.mp4"
    report = ev.upscale_video(model, clip, dst)
    src_frames, out_frames = decoded(clip), decoded(dst)
    assert (report.frames, len(out_frames)) == (6, 6)
    assert (out_frames[0].width, out_frames[0].height) == (128, 96) == report.output_size
    assert [f.time for f in out_frames] == [f.time for f in src_frames]
    with av.open(str(dst)) as c:
        assert c.streams.video[0].average_rate == 10 and c.metadata.get("title") == "test clip"
        assert c.streams.video[0].codec_context.name == "h264" and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.name == "aac"
    assert audio_end(dst) == audio_end(clip) == pytest.approx(0.6, abs=0.07)
    assert report.audio_streams == 1 and report.fps == 10.0 and report.resumed_frames == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_x4.mp4"]  # no temp or partial left
    # lossy yuv420p: close to the engine's result, not equal
    diff = np.abs(rgb(out_frames[0]).astype(int) - expected(model, src_frames[0])).mean()
    assert diff < 4


@pytest.mark.parametrize("tta", [False, True])
def test_lossless_frames_equal_the_engine_upscale_of_the_decoded_frame(model, clip, tmp_path, tta):
    dst = tmp_path / "x4.mkv"
    options = api.UpscaleOptions(tta=tta)
    report = ev.upscale_video(model, clip, dst, options, LOSSLESS)
    assert report.tta is tta
    src_frames, out_frames = decoded(clip), decoded(dst)
    for i in (0, len(src_frames) - 1):
        np.testing.assert_array_equal(rgb(out_frames[i]), expected(model, src_frames[i], options))
    if tta:  # TTA changes the frame (else the test above proves nothing about --tta)
        assert not np.array_equal(expected(model, src_frames[0], options), expected(model, src_frames[0]))


def test_variable_frame_rate_keeps_each_timestamp(model, tmp_path):
    src = make_clip(tmp_path / "vfr.mkv", pts=[0, 1, 3, 4, 7, 8])
    dst = tmp_path / "vfr_x4.mkv"
    ev.upscale_video(model, src, dst, video=LOSSLESS)
    assert [f.time for f in decoded(src)] == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.7, 0.8])
    assert times(dst) == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.7, 0.8])
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].codec_context.name == "opus"


def test_frames_limit_cuts_video_and_audio(model, clip, tmp_path):
    dst = tmp_path / "two.mp4"
    report = ev.upscale_video(model, clip, dst, video=ev.VideoOptions(frames=2))
    assert report.frames == 2 and len(decoded(dst)) == 2
    assert 0.2 <= audio_end(dst) <= 0.2 + 0.064  # packets that start before the end of frame 2 (AAC: 64 ms)


class Stop:
    """on_frame that presses Ctrl-C after ``at`` frames."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, []

    def __call__(self, done, total, upscaled):
        self.calls.append((done, total, upscaled))
        if done == self.at:
            raise KeyboardInterrupt


def test_interrupt_keeps_a_playable_partial_and_resume_finishes_it(model, clip, tmp_path):
    dst = tmp_path / "x4.mkv"
    with pytest.raises(ev.VideoInterrupted) as stop:
        ev.upscale_video(model, clip, dst, video=LOSSLESS, on_frame=Stop(3))
    partial, state_path = ev.partial_paths(dst)
    assert (stop.value.partial, stop.value.done, stop.value.total) == (partial, 3, 6)
    assert not dst.exists() and len(decoded(partial)) == 3  # playable: 3 frames and audio
    assert 0.3 <= audio_end(partial) <= 0.3 + 0.064
    state = json.loads(state_path.read_text())
    assert state["frames_done"] == 3 and state["input"]["size"] == clip.stat().st_size

    with pytest.raises(UsageError, match="interrupted run left"):  # neither --resume nor --overwrite
        ev.upscale_video(model, clip, dst, video=LOSSLESS)
    calls = Stop(99)
    report = ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True, on_frame=calls)
    assert (report.frames, report.resumed_frames) == (6, 3)
    assert [c[2] for c in calls.calls] == [False] * 3 + [True] * 3  # only the rest went through the model
    assert not partial.exists() and not state_path.exists()
    src_frames, out_frames = decoded(clip), decoded(dst)
    assert times(dst) == times(clip) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    for i in (0, 2, 3, 5):  # carried over and new frames alike
        np.testing.assert_array_equal(rgb(out_frames[i]), expected(model, src_frames[i]))
    assert audio_end(dst) == pytest.approx(audio_end(clip), abs=0.064)  # mkv keeps no end trim


def test_second_interrupt_while_resuming_extends_the_partial(model, clip, tmp_path):
    dst = tmp_path / "x4.mkv"
    with pytest.raises(ev.VideoInterrupted):
        ev.upscale_video(model, clip, dst, video=LOSSLESS, on_frame=Stop(2))
    with pytest.raises(ev.VideoInterrupted) as stop:  # Ctrl-C among the carried frames: partial unchanged
        ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True, on_frame=Stop(1))
    assert stop.value.done == 2 and len(decoded(ev.partial_paths(dst)[0])) == 2
    with pytest.raises(ev.VideoInterrupted) as stop:
        ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True, on_frame=Stop(4))
    assert stop.value.done == 4 and len(decoded(ev.partial_paths(dst)[0])) == 4
    assert ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True).resumed_frames == 4


def test_interrupt_before_the_first_frame_leaves_nothing(model, clip, tmp_path):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(ev.VideoInterrupted) as info:
        ev.upscale_video(model, clip, tmp_path / "x4.mp4", progress=stop)
    assert info.value.partial is None and info.value.done == 0
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_resume_refuses_other_options_or_a_changed_input(model, clip, tmp_path):
    dst = tmp_path / "x4.mkv"
    with pytest.raises(ev.VideoInterrupted):
        ev.upscale_video(model, clip, dst, video=LOSSLESS, on_frame=Stop(2))
    other = ev.VideoOptions(codec="libx264rgb", crf=1, pix_fmt="rgb24")
    with pytest.raises(UsageError, match="crf: 0 -> 1"):
        ev.upscale_video(model, clip, dst, video=other, resume=True)
    with pytest.raises(UsageError, match="tile: None -> 16"):
        ev.upscale_video(model, clip, dst, api.UpscaleOptions(tile=16), LOSSLESS, resume=True)
    with open(clip, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UsageError, match="changed since"):
        ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True)
    report = ev.upscale_video(model, clip, dst, video=LOSSLESS, overwrite=True)  # starts over
    assert (report.frames, report.resumed_frames) == (6, 0) and not ev.partial_paths(dst)[0].exists()


def test_a_stochastic_model_keeps_one_seed_across_resume(model, clip, tmp_path):
    noisy = dataclasses.replace(model, spec=dataclasses.replace(model.spec, stochastic=True))
    dst = tmp_path / "x4.mkv"
    with pytest.raises(ev.VideoInterrupted):
        ev.upscale_video(noisy, clip, dst, video=LOSSLESS, on_frame=Stop(2))
    seed = json.loads(ev.partial_paths(dst)[1].read_text())["settings"]["seed"]
    assert isinstance(seed, int)  # drawn once for the run
    with pytest.raises(UsageError, match=f"seed: {seed} -> {seed + 1}"):
        ev.upscale_video(noisy, clip, dst, api.UpscaleOptions(seed=seed + 1), LOSSLESS, resume=True)
    assert ev.upscale_video(noisy, clip, dst, video=LOSSLESS, resume=True).seed == seed


def test_resume_without_a_partial_starts_from_the_first_frame(model, clip, tmp_path):
    report = ev.upscale_video(model, clip, tmp_path / "x4.mp4", resume=True)
    assert (report.frames, report.resumed_frames) == (6, 0)
    with pytest.raises(UsageError, match="no interrupted run to resume"):  # done: nothing to resume
        ev.upscale_video(model, clip, tmp_path / "x4.mp4", resume=True)


def test_an_interrupted_overwrite_keeps_the_old_output_and_resume_replaces_it(model, clip, tmp_path):
    dst = tmp_path / "x4.mkv"
    ev.upscale_video(model, clip, dst, video=ev.VideoOptions(codec="ffv1", pix_fmt="bgr0", frames=1))
    old = dst.read_bytes()
    with pytest.raises(ev.VideoInterrupted):
        ev.upscale_video(model, clip, dst, video=LOSSLESS, overwrite=True, on_frame=Stop(2))
    assert dst.read_bytes() == old  # replaced only when complete
    with pytest.raises(UsageError, match="exclusive"):
        ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True, overwrite=True)
    report = ev.upscale_video(model, clip, dst, video=LOSSLESS, resume=True)
    assert (report.frames, report.resumed_frames) == (6, 2) and len(decoded(dst)) == 6


@pytest.mark.parametrize(
    ("video", "options", "match"),
    [
        (ev.VideoOptions(codec="nope"), api.UpscaleOptions(), "unknown video encoder"),
        (ev.VideoOptions(codec="aac"), api.UpscaleOptions(), "not a video encoder"),
        (ev.VideoOptions(pix_fmt="rgb24"), api.UpscaleOptions(), "libx264 cannot encode --pix-fmt rgb24"),
        (ev.VideoOptions(codec="ffv1", preset="slow"), api.UpscaleOptions(), "has no presets"),
        (ev.VideoOptions(), api.UpscaleOptions(scale=1.1), r"35x26, but yuv420p needs sides divisible by 2"),
    ],
)
def test_bad_settings_are_refused_before_any_frame(model, clip, tmp_path, video, options, match):
    with pytest.raises(UsageError, match=match):
        ev.upscale_video(model, clip, tmp_path / "x.mp4", options, video)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_odd_sizes_work_with_a_pixel_format_without_subsampling(model, clip, tmp_path):
    report = ev.upscale_video(model, clip, tmp_path / "x.mkv", api.UpscaleOptions(scale=1.1),
                              ev.VideoOptions(pix_fmt="yuv444p", frames=1))
    assert report.output_size == (35, 26) and (decoded(tmp_path / "x.mkv")[0].width) == 35


def test_output_exists_input_missing_and_not_a_video(model, clip, tmp_path):
    (tmp_path / "taken.mp4").write_bytes(b"x")
    with pytest.raises(UsageError, match="exists"):
        ev.upscale_video(model, clip, tmp_path / "taken.mp4")
    with pytest.raises(ImageIOError, match="not found"):
        ev.upscale_video(model, tmp_path / "missing.mp4", tmp_path / "o.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ImageIOError, match="cannot read"):
        ev.upscale_video(model, tmp_path / "text.mp4", tmp_path / "o.mp4")
    with pytest.raises(UsageError, match="refusing to replace the original"):
        ev.upscale_video(model, clip, clip, overwrite=True)


def test_audio_codec_the_container_cannot_hold_is_refused(model, tmp_path):
    src = make_clip(tmp_path / "opus.mkv")
    with pytest.raises(UsageError, match="cannot hold the audio codec"):
        ev.upscale_video(model, src, tmp_path / "o.avi")


def test_missing_pyav_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(UsageError) as info:
        ev.require_av()
    assert info.value.hint == "pip install 'realsr[video]'" and info.value.exit_code == 2


def test_frame_batches_give_the_single_frame_results(model, clip, tmp_path, monkeypatch):
    """``batch=4`` sends 4 frames per engine call (then the last 2): same frames, timestamps and
    count as one frame per call, pixels within one 8-bit step (the CPU kernels may round a batch
    differently); ``upscale_images`` falls back to one call per image where batching would change
    the result (alpha)."""
    one, four = tmp_path / "one.mkv", tmp_path / "four.mkv"
    ev.upscale_video(model, clip, one, video=LOSSLESS)
    calls = []
    real = api.run_model

    def counting(m, lq, *a, **k):
        calls.append(lq.shape[0])
        return real(m, lq, *a, **k)

    monkeypatch.setattr(api, "run_model", counting)
    report = ev.upscale_video(model, clip, four, video=dataclasses.replace(LOSSLESS, batch=4))
    assert calls == [4, 2] and report.frames == 6
    assert times(one) == times(four)
    for x, y in zip(decoded(one), decoded(four), strict=True):
        assert np.abs(rgb(x).astype(int) - rgb(y).astype(int)).max() <= 1
    calls.clear()
    rgba = io.ImageData(pixels=np.full((8, 8, 3), 0.5, np.float32), alpha=np.ones((8, 8), np.float32))
    out = api.upscale_images(model, [rgba, rgba], api.UpscaleOptions())
    assert calls == [1, 1] and all(o.alpha is not None for o, _ in out)
    with pytest.raises(UsageError, match="frame-batch"):
        ev.VideoOptions(batch=0)
