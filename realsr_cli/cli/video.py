"""`realsr video IN OUT`: every frame of a video through the engine, audio and timestamps kept."""

from __future__ import annotations

import time
from collections import deque
from typing import Annotated

import typer

from realsr_cli.cli import _common, _output, _schemas
from realsr_cli.cli._options import IMAGE_FILE_OPTIONS, JsonOpt
from realsr_cli.errors import EXIT_INTERRUPTED


@_common.model_options(skip=IMAGE_FILE_OPTIONS)
def video(
    input: Annotated[str, typer.Argument(help="Input video (anything FFmpeg reads).", show_default=False)],
    output: Annotated[str, typer.Argument(help="Output video; the container comes from the suffix (.mp4, .mkv ...).",
                                          show_default=False)],
    *,
    run: _common.ModelArgs,
    codec: Annotated[str, typer.Option("--codec", help="FFmpeg video encoder, e.g. libx264, libx265, libvpx-vp9, "
                                       "ffv1 (lossless), libx264rgb.")] = "libx264",
    crf: Annotated[int, typer.Option("--crf", help="Constant rate factor (codecs that have one): lower is better "
                                     "and bigger; 0 is lossless for x264.", min=0, max=63)] = 18,
    pix_fmt: Annotated[str, typer.Option("--pix-fmt", help="Pixel format, e.g. yuv420p (plays everywhere), "
                                         "yuv444p, rgb24 (libx264rgb).")] = "yuv420p",
    preset: Annotated[str | None, typer.Option("--preset", help="Encoder speed preset, e.g. slow, medium, "
                                               "veryfast (x264/x265).")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Only the first N frames (to try settings).",
                                               min=1)] = None,
    frame_batch: Annotated[int, typer.Option("--frame-batch", help="Frames per engine call (same-size frames, "
                                             "deterministic models; e.g. 8 on a GPU).", min=1)] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its partial file.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUTPUT (and discard a partial "
                                            "one).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale a video: every frame through the model, encoded with --codec/--crf; audio copied.

    Ctrl-C keeps a playable OUT.partial.EXT; --resume continues it.

    Examples:

      realsr video clip.mp4 clip_x4.mp4

      realsr video clip.mp4 clip_x4.mp4 --frames 30 --crf 23 --preset veryfast

      realsr video clip.mp4 clip_x4.mkv --codec ffv1 --pix-fmt bgr0 --tile 256

      realsr video clip.mp4 clip_x4.mp4 --resume
    """
    from realsr_cli.engine import distributed as engine_dist
    from realsr_cli.engine import video as engine_video

    vopts = engine_video.VideoOptions(codec=codec, crf=crf, pix_fmt=pix_fmt, preset=preset, frames=frames,
                                      batch=frame_batch)
    engine_video.check_encoder(engine_video.require_av(), vopts)  # before the model loads
    with engine_dist.sigterm_as_interrupt(), _output.progress() as view:
        m = run.load(view)
        _output.info(f"model: {_common.describe(m)}")
        on_frame = _FrameReport(view)
        try:
            report = engine_video.upscale_video(m, input, output, run.options, vopts, resume=resume, overwrite=overwrite,
                                                on_frame=on_frame, progress=on_frame.tiles)
        except engine_video.VideoInterrupted as stop:
            if stop.partial is None:
                _output.error(f"interrupted after {stop.done} of {stop.total} frames", "nothing was kept; run again")
            else:
                _output.error(f"interrupted: {stop.done} of {stop.total} frames are in {stop.partial} (playable)",
                              "run the same command with --resume to continue")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if json_out:
        _output.emit_json(_schemas.stamp("video", report.to_json()))
    else:
        w, h = report.output_size
        audio = f", {report.audio_streams} audio stream(s) copied" if report.audio_streams else ""
        resumed = f", {report.resumed_frames} from the partial" if report.resumed_frames else ""
        _output.success(f"{report.input} -> {report.output} ({report.frames} frames{resumed}, {w}x{h}{audio}, "
                        f"{report.seconds:.1f}s)")


class _FrameReport:
    """Frames done / total with frames/s and ETA: the progress bar on a terminal, else a line at
    most every 10 s (``frames 12/40 (30%), 2.1 frames/s, ETA 13 s``)."""

    def __init__(self, view: _output.ProgressView, every: float = 10.0) -> None:
        self.view, self.every, self.last = view, every, time.monotonic()
        self.line = isinstance(view, _output.LineProgressView)
        self.times: deque[float] = deque(maxlen=30)  # when the recent upscaled frames finished
        self.started = False

    def tiles(self, done: int, total: int) -> None:
        if not self.line:
            self.view.tiles(done, total)

    def __call__(self, done: int, total: int, upscaled: bool) -> None:
        now = time.monotonic()
        if not self.started:
            self.view.images(total)
            self.started = True
        if upscaled:
            self.times.append(now)
        span = self.times[-1] - self.times[0] if self.times else 0.0
        fps = (len(self.times) - 1) / span if span > 0 else 0.0
        speed = f"{fps:.2f} frames/s" if fps else "starting"
        if not self.line:
            self.view.reset_tiles()
            self.view.advance_image(speed)  # the bar: "images <speed> ━━━ done/total elapsed ETA"
        elif now - self.last >= self.every and done < total:
            self.last = now
            eta = f", ETA {(total - done) / fps:.0f} s" if fps else ""
            _output.info(f"frames {done}/{total} ({100 * done / max(1, total):.0f}%), {speed}{eta}")
