"""Video upscaling: decode with PyAV, run every frame through :func:`api.upscale_image`, encode
(``VideoOptions.batch`` frames per engine call through :func:`api.upscale_images`).

PyAV (the optional extra ``realsr[video]``; its wheels carry FFmpeg) is imported lazily, only here.

Frames. Each decoded frame becomes an 8-bit RGB image (16-bit for sources above 8 bits per
component), exactly as ``realsr upscale`` sees a PNG of it, and goes through the same
:func:`api.upscale_image` with the same :class:`api.UpscaleOptions`: one inference path, so a frame
of the output equals ``realsr upscale`` of that input frame before the codec's loss. The output is
quantised like an image (``round(x * 255)``) and converted to ``pix_fmt`` with the source's colour
matrix and range, which are also tagged on the output (not for RGB pixel formats). A stochastic
model runs every frame with one seed (``--seed``, or one drawn per run and kept for ``--resume``).

Timestamps. The output video stream keeps the source's time base and each frame's own pts (VFR
stays VFR); the average frame rate and sample aspect ratio are copied. Audio streams are copied
packet by packet (no re-encode), interleaved with the video by time; with a ``frames`` limit audio
stops where the last frame ends. Container and stream metadata (title, language ...) are copied.

Safety and resume. The output is written to a hidden temporary file beside ``dst`` and renamed onto
it at the end. On Ctrl-C/SIGTERM (a ``KeyboardInterrupt``) the encoder is flushed and the container
closed, so the temporary file is a playable clip; it becomes ``NAME.partial.EXT`` beside ``dst``,
with ``NAME.partial.json`` recording the input (path, size, mtime, sha256), the settings and the
frames done, and :class:`VideoInterrupted` is raised. ``resume=True`` checks the input and the
settings against that state, then decodes the partial's frames and encodes them again (with the
source's timestamps) instead of upscaling them, and upscales from the next frame on. Re-encoding is
exact for lossless codecs; lossy ones give those frames one more encoding generation (packets of two
encoder runs cannot in general be mixed in one stream: extradata and bitstream formats differ).

Size (over STYLE's ~300-line guide): decoding, encoding, audio remux and the resume state share one
output container's lifetime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realsr_cli.engine import api, io
from realsr_cli.engine import device as devices
from realsr_cli.engine.model import LoadedModel
from realsr_cli.errors import ImageIOError, UsageError
from realsr_cli.registry.loader import file_sha256

log = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "VideoInterrupted", "VideoOptions", "VideoReport", "partial_paths",
           "require_av", "upscale_video"]

INSTALL_HINT = "pip install 'realsr[video]'"
STATE_VERSION = 1
START_OVER = "run again with --overwrite instead of --resume to start over"
#: ``on_frame(done, total, upscaled)``: after each frame written; ``upscaled`` is False for frames
#: carried over from a partial file on ``--resume``
FrameProgress = Callable[[int, int, bool], None]


def require_av() -> Any:
    """The ``av`` module, or a :class:`UsageError` (exit 2) that says how to install it."""
    try:
        import av
    except ImportError:
        raise UsageError("`realsr video` needs PyAV, which is not installed", hint=INSTALL_HINT) from None
    return av


@dataclass(frozen=True)
class VideoOptions:
    """How to encode: ``codec`` (an FFmpeg encoder), ``crf`` (codecs with a CRF option; ignored
    by others), ``pix_fmt``, ``preset`` (None = the codec's default), ``frames`` (None = all)."""

    codec: str = "libx264"
    crf: int = 18
    pix_fmt: str = "yuv420p"
    preset: str | None = None
    frames: int | None = None
    batch: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 63:
            raise UsageError(f"--crf must be 0..63, got {self.crf}", hint="18 is visually lossless for x264")
        if self.frames is not None and self.frames < 1:
            raise UsageError(f"--frames must be >= 1, got {self.frames}")
        if self.batch < 1:
            raise UsageError(f"--frame-batch must be >= 1, got {self.batch}")


@dataclass
class VideoReport:
    """What one ``upscale_video`` run did (``--json``: schema ``video``)."""

    input: str
    output: str
    model: str
    arch: str
    scale: float
    frames: int
    resumed_frames: int
    fps: float | None
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    codec: str
    pix_fmt: str
    crf: int | None
    audio_streams: int
    precision: str
    tile: int
    seed: int | None
    tta: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input, "output": self.output, "model": self.model, "arch": self.arch,
            "scale": self.scale, "frames": self.frames, "resumed_frames": self.resumed_frames,
            "fps": self.fps, "input_size": list(self.input_size), "output_size": list(self.output_size),
            "codec": self.codec, "pix_fmt": self.pix_fmt, "crf": self.crf,
            "audio_streams": self.audio_streams, "audio_copied": self.audio_streams > 0,
            "precision": self.precision, "tile": self.tile, "seed": self.seed, "tta": self.tta,
            "seconds": round(self.seconds, 3),
        }


class VideoInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM stopped the run. ``partial``: the playable partial clip kept (None: nothing
    was kept, e.g. before the first frame); ``done`` of ``total`` frames are in it."""

    def __init__(self, partial: Path | None, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} frames")
        self.partial, self.done, self.total = partial, done, total


def partial_paths(dst: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``clip_x4.mp4`` -> (``clip_x4.partial.mp4``, ``clip_x4.partial.json``)."""
    p = Path(dst)
    return p.with_name(f"{p.stem}.partial{p.suffix}"), p.with_name(f"{p.stem}.partial.json")


# ----------------------------------------------------------------------------- checks


def check_encoder(av: Any, video: VideoOptions) -> dict[str, str]:
    """The encoder options for ``video`` (crf, preset), or a :class:`UsageError` naming what the
    codec accepts."""
    try:
        codec = av.Codec(video.codec, "w")
    except Exception:
        raise UsageError(f"unknown video encoder {video.codec!r}",
                         hint="e.g. libx264, libx265, libvpx-vp9, ffv1 (lossless), libx264rgb") from None
    if codec.type != "video":
        raise UsageError(f"{video.codec!r} is not a video encoder", hint="e.g. --codec libx264")
    formats = [f.name for f in codec.video_formats or []]
    try:
        av.VideoFormat(video.pix_fmt)
    except ValueError:
        raise UsageError(f"unknown pixel format {video.pix_fmt!r}", hint=f"{video.codec} takes: {', '.join(formats)}") from None
    if formats and video.pix_fmt not in formats:
        raise UsageError(f"{video.codec} cannot encode --pix-fmt {video.pix_fmt}", hint=f"use one of: {', '.join(formats)}")
    names = {o.name for o in av.CodecContext.create(video.codec, "w").supported_options.private}
    opts = {"crf": str(video.crf)} if "crf" in names else {}
    if "crf" not in names:
        log.info("%s has no CRF option; --crf is not used", video.codec)
    if video.preset is not None:
        if "preset" not in names:
            raise UsageError(f"{video.codec} has no presets", hint="leave out --preset")
        opts["preset"] = video.preset
    return opts


def _subsampling(av: Any, pix_fmt: str) -> int:
    """1, 2 or 4: what output width and height must be a multiple of (chroma subsampling)."""
    return max(1, 64 // av.VideoFormat(pix_fmt).chroma_width(64))


def _open_input(av: Any, src: Path) -> Any:
    if not src.is_file():
        raise ImageIOError(f"input video not found: {src}", hint="check the path")
    try:
        container = av.open(str(src))
    except av.error.FFmpegError as exc:
        raise ImageIOError(f"cannot read {src} as a video: {exc}", hint="is it a video file?") from None
    if not container.streams.video:
        container.close()
        raise ImageIOError(f"{src} has no video stream", hint="give a video file")
    return container


def _count_frames(av: Any, src: Path, stream: Any) -> int:
    if stream.frames:
        return int(stream.frames)
    with av.open(str(src)) as c:  # the header does not say (e.g. Matroska): count the packets
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


# ----------------------------------------------------------------------------- resume state


def _settings(model: LoadedModel, options: api.UpscaleOptions, video: VideoOptions) -> dict[str, Any]:
    """What must not change between an interrupted run and its ``--resume``."""
    return {
        "model": model.weights_id or Path(model.weights_path or "").name,
        "weights_sha256": model.weights_sha256 or "",
        "precision": api._precision_name(model.dtype),
        "scale": options.scale, "tile": options.tile, "tile_overlap": options.tile_overlap,
        "tta": options.tta, "steps": options.steps, "seed": options.seed,
        "codec": video.codec, "crf": video.crf, "pix_fmt": video.pix_fmt, "preset": video.preset,
        "frames": video.frames,
    }


def _load_state(state_path: Path, src: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The recorded state, after checking that the input and the settings are those of the
    interrupted run (a seed it drew is taken over when none is given now)."""
    again = "rerun with the options of the interrupted run, or with --overwrite instead of --resume to start over"
    try:
        state = json.loads(state_path.read_text())
        recorded, frames_done = state["settings"], int(state["frames_done"])
        size, mtime_ns, sha = state["input"]["size"], state["input"]["mtime_ns"], state["input"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read the resume state {state_path}: {exc}", hint=START_OVER) from None
    if state.get("version") != STATE_VERSION or frames_done < 1:
        raise UsageError(f"{state_path} is not a resume state this version understands", hint=START_OVER)
    stat = src.stat()
    if stat.st_size != size or (stat.st_mtime_ns != mtime_ns and file_sha256(src) != sha):
        raise UsageError(f"the input {src} changed since the interrupted run",
                         hint=START_OVER)
    if settings["seed"] is None:
        settings = {**settings, "seed": recorded.get("seed")}
    changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v]
    if changed:
        raise UsageError("the options differ from the interrupted run (" + "; ".join(changed) + ")", hint=again)
    return state


def _state_file(state_path: Path, src: Path, settings: dict[str, Any], done: int, sha: str | None) -> Path:
    """The state written to a temporary file beside ``state_path`` (renamed by the caller)."""
    stat = src.stat()
    state = {
        "version": STATE_VERSION,
        "input": {"path": str(src.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                  "sha256": sha or file_sha256(src)},
        "settings": settings,
        "frames_done": done,
    }
    tmp = state_path.with_name(f".{state_path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    return tmp


# ----------------------------------------------------------------------------- the run


class _AudioCopy:
    """Audio packets of the source, muxed unchanged into ``out`` as the video time advances."""

    def __init__(self, av: Any, src: Path, out: Any, streams: list[Any]) -> None:
        self._in = av.open(str(src))
        self._map = {}
        for s in streams:
            o = out.add_stream_from_template(s)
            o.metadata.update(s.metadata)
            self._map[s.index] = o
        chosen = [self._in.streams[i] for i in self._map]
        self._packets = self._in.demux(*chosen) if chosen else iter(())
        self._next: Any = None

    def until(self, out: Any, t: Fraction | None) -> None:
        """Mux the packets that start before ``t`` seconds (None: all that are left)."""
        while True:
            if self._next is None:
                self._next = next(self._packets, None)
                if self._next is None:
                    return
                if self._next.dts is None or not self._next.size:  # demuxer flush packets
                    self._next = None
                    continue
            p = self._next
            if t is not None and p.dts * p.time_base >= t:
                return
            p.stream = self._map[p.stream.index]
            out.mux(p)
            self._next = None

    def close(self) -> None:
        self._in.close()


def _rgb_frame(frame: Any, high: bool) -> io.ImageData:
    """A decoded frame as ``realsr upscale`` would read a PNG of it."""
    fmt, top = ("rgb48le", 65535) if high else ("rgb24", 255)
    arr = frame.reformat(format=fmt, src_color_range=frame.color_range or None).to_ndarray()
    return io.ImageData(pixels=arr / np.float32(top), bit_depth=16 if high else 8)


def _video_frame(av: Any, image: io.ImageData, high: bool, pix_fmt: str, color: dict[str, Any]) -> Any:
    fmt, top = ("rgb48le", 65535) if high else ("rgb24", 255)
    rgb = av.VideoFrame.from_ndarray(io.quantise(image.pixels, top), format=fmt)  # rounded like images
    return rgb.reformat(format=pix_fmt, dst_colorspace=color.get("colorspace"), dst_color_range=color.get("color_range"))


_UNSPECIFIED = {"colorspace": 2, "color_range": 0, "color_primaries": 2, "color_trc": 2}  # FFmpeg's values


def _color_tags(av: Any, vin: Any, pix_fmt: str) -> dict[str, int]:
    """The source's colour tags that are set (none for RGB outputs: they have no YUV matrix)."""
    if av.VideoFormat(pix_fmt).is_rgb:
        return {}
    cc = vin.codec_context
    return {k: int(getattr(cc, k)) for k, unset in _UNSPECIFIED.items() if int(getattr(cc, k) or unset) != unset}


@dataclass
class _Out:
    """The output being written: container, video stream, audio copy, and what is in it so far."""

    container: Any
    stream: Any
    audio: _AudioCopy
    step: int  # one frame's duration in the time base (from the average rate)
    time_base: Fraction
    done: int = 0  # frames encoded
    carried: int = 0  # of which taken over from the partial
    last_pts: int | None = None

    def write(self, frame: Any, pts: int) -> None:
        frame.pts, frame.time_base = pts, self.time_base
        self.container.mux(self.stream.encode(frame))
        self.last_pts, self.done = pts, self.done + 1
        self.audio.until(self.container, pts * self.time_base)

    def finish(self, audio_to_end: bool) -> None:
        """Flush the encoder, copy the audio (all of it, or up to the end of the last frame), close."""
        self.container.mux(self.stream.encode(None))
        end = None if audio_to_end or self.last_pts is None else (self.last_pts + self.step) * self.time_base
        self.audio.until(self.container, end)
        self.container.close()


def _open_output(av: Any, tmp: Path, dst: Path, inp: Any, video: VideoOptions, enc_opts: dict[str, str],
                 size: tuple[int, int], src: Path) -> _Out:
    vin = inp.streams.video[0]
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    try:
        out = av.open(str(tmp), "w")
    except (ValueError, av.error.FFmpegError) as exc:
        raise UsageError(f"cannot write a video named {dst.name}: {exc}", hint="use .mp4, .mkv, .mov or .webm") from None
    try:
        out.metadata.update({k: v for k, v in inp.metadata.items() if k.lower() != "encoder"})
        try:
            vout = out.add_stream(video.codec, rate=rate)
        except ValueError as exc:
            raise UsageError(str(exc), hint="pick another --codec, or write .mkv (takes most codecs)") from None
        vout.width, vout.height = size
        vout.pix_fmt = video.pix_fmt
        vout.codec_context.time_base = vout.time_base = vin.time_base
        vout.codec_context.options = enc_opts
        vout.metadata.update({k: v for k, v in vin.metadata.items() if k.lower() not in ("encoder", "duration")})
        if vin.codec_context.sample_aspect_ratio:
            vout.codec_context.sample_aspect_ratio = vin.codec_context.sample_aspect_ratio
        for k, v in _color_tags(av, vin, video.pix_fmt).items():
            setattr(vout.codec_context, k, v)
        unsupported = [s.codec_context.name for s in inp.streams.audio if s.codec_context.name not in out.supported_codecs]
        if unsupported:
            raise UsageError(f"{dst.suffix or dst.name} cannot hold the audio codec(s) {', '.join(unsupported)}",
                             hint="write .mkv (takes any audio codec) or .mov")
        audio = _AudioCopy(av, src, out, list(inp.streams.audio))
        try:
            out.start_encoding()
        except (ValueError, av.error.FFmpegError) as exc:
            audio.close()
            raise UsageError(f"cannot encode {video.codec} {video.pix_fmt} {size[0]}x{size[1]} into {dst.suffix}: {exc}",
                             hint="try --codec libx264 --pix-fmt yuv420p with .mp4, or .mkv") from None
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()
        raise
    step = max(1, round(1 / (rate * vin.time_base)))
    return _Out(out, vout, audio, step, vin.time_base)


def _decoded(av: Any, path: Path) -> Iterator[Any]:
    with av.open(str(path)) as c:
        yield from c.decode(c.streams.video[0])


def upscale_video(
    model: LoadedModel,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    options: api.UpscaleOptions = api.UpscaleOptions(),
    video: VideoOptions = VideoOptions(),
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_frame: FrameProgress | None = None,
    progress: api.Progress | None = None,
) -> VideoReport:
    """Upscale the video ``src`` into ``dst`` (module doc: timestamps, audio, resume).

    Raises :class:`VideoInterrupted` on Ctrl-C/SIGTERM (after keeping a playable partial),
    :class:`UsageError` for bad settings or a refused resume, :class:`ImageIOError` for unreadable
    inputs."""
    av = require_av()
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    enc_opts = check_encoder(av, video)
    partial, state_path = partial_paths(dst)
    api.check_not_input(src, dst)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite are exclusive",
                         hint="--resume continues an interrupted run, --overwrite starts over")
    settings = _settings(model, options, video)
    state = None
    left = partial.exists() or state_path.exists()
    if resume and left:  # that run was allowed to replace dst
        if not (partial.is_file() and state_path.is_file()):
            raise UsageError(f"{partial} cannot be resumed: it or its state {state_path.name} is missing", hint=START_OVER)
        state = _load_state(state_path, src, settings)
        settings = state["settings"]
    elif left and not overwrite:
        raise UsageError(f"an interrupted run left {partial}",
                         hint="add --resume to continue it, or --overwrite to start over")
    if dst.exists() and not overwrite and state is None:
        raise UsageError(f"{dst} exists" + (" (and there is no interrupted run to resume)" if resume else ""),
                         hint="add --overwrite to replace it")
    if resume and state is None:
        log.info("no interrupted run of %s to resume; starting from the first frame", dst)
    api.check_output_writable(dst)
    if model.spec.stochastic:  # one seed for every frame, kept for --resume
        seed = settings["seed"] if settings["seed"] is not None else devices.make_generator(None).initial_seed()
        options, settings = replace(options, seed=seed), {**settings, "seed": seed}
    keep = state["frames_done"] if state is not None else 0

    inp = _open_input(av, src)
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    w, h = vin.codec_context.width, vin.codec_context.height
    target, (out_h, out_w) = api.output_size(model, options, h, w)
    size = (out_w, out_h)
    n_audio, fps = len(inp.streams.audio), float(vin.average_rate) if vin.average_rate else None
    high = vin.format is not None and max(c.bits for c in vin.format.components) > 8
    out_high = max(c.bits for c in av.VideoFormat(video.pix_fmt).components) > 8
    color = _color_tags(av, vin, video.pix_fmt)
    tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.tmp{dst.suffix}")
    o: _Out | None = None
    carry: Iterator[Any] = iter(())
    info: dict[str, Any] = {"tile": 0, "seed": options.seed}
    total = 0
    try:
        m = _subsampling(av, video.pix_fmt)
        if size[0] % m or size[1] % m:
            raise UsageError(f"the output would be {size[0]}x{size[1]}, but {video.pix_fmt} needs sides divisible by {m}",
                             hint="use --pix-fmt yuv444p (or --codec libx264rgb --pix-fmt rgb24), or a --scale "
                             "that gives even sides")
        total = _count_frames(av, src, vin)
        total = min(total, video.frames) if video.frames else total
        o = _open_output(av, tmp, dst, inp, video, enc_opts, size, src)
        if state is not None:
            carry = _decoded(av, partial)
        pending: list[tuple[io.ImageData, int]] = []  # decoded frames waiting for one batched engine call

        def flush() -> None:
            results = api.upscale_images(model, [im for im, _ in pending], options, progress=progress)
            info.update(results[-1][1])  # tile and seed of the run, for the report
            for (upscaled, _), (_, frame_pts) in zip(results, pending, strict=True):
                o.write(_video_frame(av, upscaled, out_high, video.pix_fmt, color), frame_pts)
                if on_frame is not None:
                    on_frame(o.done, max(total, o.done), True)  # total: the header's count
            pending.clear()

        last = o.last_pts
        for frame in inp.decode(vin):
            if video.frames is not None and o.done + len(pending) >= video.frames:
                break
            pts = frame.pts if frame.pts is not None else (0 if last is None else last + o.step)
            if last is not None and pts <= last:  # missing or repeated pts: keep them increasing
                pts = last + o.step
            last = pts
            if o.done < keep:  # done before the interruption: taken from the partial, not recomputed
                vf = next(carry, None)
                if vf is None:
                    raise UsageError(f"{partial} holds fewer frames than its state says",
                                     hint=START_OVER)
                vf.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
                o.carried += 1
                o.write(vf, pts)
                if on_frame is not None:
                    on_frame(o.done, max(total, o.done), False)
                continue
            pending.append((_rgb_frame(frame, high), pts))
            if len(pending) >= video.batch:
                flush()
        if pending:
            flush()
        if o.done < keep:
            raise UsageError(f"the input has fewer frames than the partial {partial}", hint=START_OVER)
        o.finish(audio_to_end=video.frames is None)
        os.replace(tmp, dst)
    except KeyboardInterrupt:
        _close(carry)
        kept = _keep_partial(o, tmp, partial, state_path, src, settings, state)
        raise VideoInterrupted(kept[0], kept[1], total if o is not None else 0) from None
    finally:
        _close(carry)
        for closer in (o.audio if o is not None else None, inp):
            with contextlib.suppress(Exception):
                if closer is not None:
                    closer.close()
        if tmp.exists():
            with contextlib.suppress(Exception):
                if o is not None:
                    o.container.close()
            tmp.unlink(missing_ok=True)
    for stale in (partial, state_path):
        stale.unlink(missing_ok=True)
    return VideoReport(
        input=str(src), output=str(dst), model=settings["model"], arch=model.arch, scale=target, frames=o.done,
        resumed_frames=o.carried, fps=fps, input_size=(w, h), output_size=size, codec=video.codec,
        pix_fmt=video.pix_fmt, crf=video.crf if "crf" in enc_opts else None, audio_streams=n_audio,
        precision=settings["precision"], tile=info["tile"], seed=info["seed"], tta=options.tta,
        seconds=time.perf_counter() - t0,
    )


def _close(gen: Iterator[Any]) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        close()


def _keep_partial(o: _Out | None, tmp: Path, partial: Path, state_path: Path, src: Path,
                  settings: dict[str, Any], state: dict[str, Any] | None) -> tuple[Path | None, int]:
    """After Ctrl-C: flush and close the container so ``tmp`` plays, then make it the partial
    (with its state): returns (partial, frames in it). Without a frame upscaled in this run the
    old partial, if any, stays as it was; a second interrupt while finishing drops ``tmp``."""
    before = (partial, state["frames_done"]) if state is not None else (None, 0)
    if o is None or o.done <= o.carried:
        return before
    new_state = None
    try:
        o.finish(audio_to_end=False)
        new_state = _state_file(state_path, src, settings, o.done, state["input"]["sha256"] if state else None)
        os.replace(tmp, partial)  # the partial first: a state never counts more frames than its clip has
        os.replace(new_state, state_path)
    except KeyboardInterrupt:
        return before
    finally:
        if new_state is not None:
            new_state.unlink(missing_ok=True)
    return partial, o.done
