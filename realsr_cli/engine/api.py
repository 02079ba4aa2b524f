"""The stable Python API: load a model, convert a checkpoint, upscale images.

Every CLI subcommand goes through these functions; scripts and notebooks can too::

    import realsr_cli
    model = realsr_cli.load_model("femasr-x4", device="cpu")
    sr = model(lq)            # (B,3,H,W) float32 [0,1] -> (B,3,4H,4W) float32, not clamped

Size (over STYLE's ~300-line guide): it is the public Python API; each entry point keeps its docstring and checks here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from realsr_cli import __version__
from realsr_cli.engine import device as devices
from realsr_cli.engine import io
from realsr_cli.engine.io import check_not_input  # re-exported: the public API has always had it
from realsr_cli.engine.model import LoadedModel, set_dtype
from realsr_cli.engine.runner import RunOptions, RunResult, run_model
from realsr_cli.errors import ImageIOError, UsageError
from realsr_cli.registry.capabilities import ManifestExtra, TileNotes, has

if TYPE_CHECKING:
    from realsr_cli.registry.catalog import Catalog

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

__all__ = [
    "LoadedModel",
    "UpscaleOptions",
    "UpscaleReport",
    "load_model",
    "looks_like_path",
    "convert_checkpoint",
    "upscale_image",
    "upscale_images",
    "output_size",
    "upscale_file",
    "default_output_path",
    "check_aux",
    "check_not_input",
]


_WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")


def looks_like_path(source: str, catalog: Catalog | None = None) -> bool:
    """A weights file rather than a registry name: a weights suffix or a path separator says so;
    otherwise a registry id/alias/architecture wins over a local file or folder of the same name
    (a folder ``femasr`` in the working directory must not hide ``--model femasr``), and an
    existing *file* of another name is a path."""
    if source.lower().endswith(_WEIGHTS_SUFFIXES) or os.sep in source or "/" in source:
        return True
    if catalog is None:
        from realsr_cli.registry.catalog import load_catalog

        catalog = load_catalog()
    if catalog.knows(source):
        return False
    return Path(source).is_file()


def load_model(
    source: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    scale: int | None = None,
    offline: bool | None = None,
    trust_on_first_use: bool = False,
    progress: Progress | None = None,
    depth_estimator: str | torch.nn.Module | None = None,
) -> LoadedModel:
    """Load a model from a registry id/alias (``"femasr-x4"``, ``"femasr"``, community ids such as
    ``"realesrgan-x4plus"``, run through spandrel) or a weights path:
    our safetensors, or any checkpoint spandrel can load (``.pth``/``.safetensors`` of ESRGAN,
    SwinIR, HAT ...; optional extra ``realsr[community]``, see registry/community.py).

    ``scale`` picks the registry entry of that native scale when an alias has several.
    ``None`` loads the default model. Returns a :class:`LoadedModel` in eval mode on ``device``.
    ``depth_estimator`` (SSR only): ``None``/``"auto"``, ``"builtin"``, a depth weights id such
    as ``"depth_anything-v2-small"``, or a module to inject (see :mod:`realsr_cli.engine.depth`);
    ``LoadedModel.notes`` says which one will run.
    """
    from realsr_cli.engine import depth
    from realsr_cli.registry import catalog as catalog_mod
    from realsr_cli.registry import community, hub, loader

    dev = devices.resolve_device(device)  # fail on a missing device before any download
    weights_id: str | None = None
    entry = None
    catalog = catalog_mod.load_catalog()
    if source is not None and looks_like_path(str(source), catalog):
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"weights file not found: {path}", hint="check the path given to --weights")
    else:
        entry = catalog.get(str(source), scale=scale) if source is not None else catalog.default(scale)
        weights_id = entry.id
        if entry.is_community:  # spandrel runs it: say so before a download, not after
            community.require_spandrel(entry)
        path = hub.fetch(entry, offline=offline, trust_on_first_use=trust_on_first_use, progress=progress)

    if entry is not None and entry.is_community:  # checked against the family/scale it is listed as
        spec, config, net = community.load_entry(entry, path)
    else:
        spec, config, net = loader.load_any(path)
    depth_note = depth.attach(
        net, depth_estimator, offline=offline, trust_on_first_use=trust_on_first_use, progress=progress
    )
    ours = not community.is_community(config)
    if not ours:  # spandrel declares fp16 and bf16 support separately
        precision = community.supported_precision(config, precision)
    dtype = devices.resolve_dtype(dev, precision, spec.half_ok, spec.cpu_bf16)
    net.eval().requires_grad_(False)
    set_dtype(net, dtype, dev)  # half precision keeps a model's deciding parts in fp32
    model = LoadedModel(
        spec=spec,
        config=config,
        net=net,
        device=dev,
        dtype=dtype,
        weights_id=weights_id,
        weights_path=str(path),
        weights_sha256=loader.file_sha256(path),
        metadata=loader.read_metadata(path) if ours else {},
        notes=(depth_note,) if depth_note else (),
    )
    if model.channels_last:  # once: the layout then stays through the network
        net.to(memory_format=torch.channels_last)
    return model


def convert_checkpoint(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str],
    *,
    arch: str,
    scale: int | None = None,
) -> Path:
    """Convert official checkpoint file(s) into our safetensors with metadata (see docs/weights.md)."""
    from realsr_cli.registry import convert

    return convert.convert_checkpoint(src, dst, arch=arch, scale=scale)


@dataclass(frozen=True)
class UpscaleOptions(RunOptions):
    """What to do with one image (the engine-level twin of `realsr upscale`'s options): how to run
    the model (the :class:`RunOptions` fields: tile, tile_overlap, tile_batch, seed, steps) and what
    to do with the image around it. Built and validated once (by the CLI or a caller) and passed
    down as is: ``run_model`` takes it directly."""

    scale: float | None = None  # None = the model's native scale
    alpha: Literal["bicubic", "model"] = "bicubic"
    bit_depth: int | None = None  # None = as the input
    quality: int = 95
    format: str | None = None  # None = from the output suffix
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is not None and not self.scale > 0:
            raise UsageError(f"--scale must be positive, got {self.scale}")
        if self.bit_depth not in (None, 8, 16):
            raise UsageError(f"--bit-depth must be 8 or 16, got {self.bit_depth}")
        if self.alpha not in ("bicubic", "model"):
            raise UsageError(f"--alpha must be bicubic or model, got {self.alpha!r}")


@dataclass
class UpscaleReport:
    """What happened to one image (rendered by the CLI, serialised by --json)."""

    input: str
    output: str
    model: str
    arch: str
    scale: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    tile: int
    tiles: int
    precision: str
    seed: int | None
    seconds: float = 0.0
    fp32_fallbacks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "model": self.model,
            "arch": self.arch,
            "scale": self.scale,
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "tile": self.tile,
            "tiles": self.tiles,
            "precision": self.precision,
            "seed": self.seed,
            "seconds": round(self.seconds, 4),
            "fp32_fallbacks": self.fp32_fallbacks,
            **self.extra,
        }


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWxC float32 [0,1] (C = 1 or 3) -> (1,3,H,W) float32."""
    t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    return t.expand(1, 3, *t.shape[-2:]).contiguous() if t.shape[1] == 1 else t


def _to_pixels(t: torch.Tensor, channels: int) -> np.ndarray:
    """(1,3,H,W) float -> HxWxC float32 clamped to [0,1]; C = 1 averages to luma-equal gray."""
    arr = t[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32, copy=False)
    if channels == 1:
        arr = arr.mean(axis=2, keepdims=True)
    return arr


def _precision_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def upscale_image(
    model: LoadedModel,
    image: io.ImageData,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    progress: Progress | None = None,
) -> tuple[io.ImageData, dict[str, Any]]:
    """Upscale one decoded image; gray stays gray, alpha is upscaled separately and re-attached.

    Returns the output image and run info (tile, tiles, seed, fp32_fallbacks, scale).
    """
    target_scale, (out_h, out_w) = output_size(model, options, image.height, image.width)
    result = _run(model, _to_tensor(image.pixels), options, progress)
    pixels = _output_pixels(result.sr, image.pixels.shape[2], (out_h, out_w))

    alpha = None
    if image.alpha is not None:
        if options.alpha == "model":
            a = np.repeat(image.alpha[..., None], 3, axis=2)
            a_res = run_model(model, _to_tensor(a), options, progress=None)
            alpha = _to_pixels(a_res.sr, 1)[..., 0]
            if alpha.shape != (out_h, out_w):
                alpha = io.resize(alpha, (out_h, out_w))
        else:
            alpha = io.resize(image.alpha, (out_h, out_w))
        alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32, copy=False)

    return replace(image, pixels=pixels, alpha=alpha), _run_info(result, target_scale, options)


def output_size(model: LoadedModel, options: UpscaleOptions, height: int, width: int) -> tuple[float, tuple[int, int]]:
    """The scale an image is upscaled by (``options.scale``, else the model's) and its output
    ``(height, width)``."""
    scale = float(options.scale) if options.scale else float(model.scale)
    return scale, (max(1, round(height * scale)), max(1, round(width * scale)))


def _run(model: LoadedModel, lq: torch.Tensor, options: UpscaleOptions, progress: Progress | None) -> RunResult:
    """:func:`run_model`, then the tile note community models give when tiled against advice."""
    result = run_model(model, lq, options, progress=progress)
    if has(model.net, TileNotes):
        model.net.note_tiles(result.tiles)
    return result


def _run_info(result: RunResult, scale: float, options: UpscaleOptions) -> dict[str, Any]:
    """The run info :func:`upscale_image` returns with each image."""
    return {"tile": result.tile, "tiles": result.tiles, "seed": result.seed,
            "fp32_fallbacks": result.fp32_fallbacks, "scale": scale, "tta": options.tta}


def _output_pixels(sr: torch.Tensor, channels: int, size: tuple[int, int]) -> np.ndarray:
    """(1,3,H,W) model output -> HxWxC pixels of ``size`` (resized when ``--scale`` is not the
    model's own)."""
    pixels = _to_pixels(sr, channels)
    if pixels.shape[:2] != size:  # --scale other than native: model, then resize
        pixels = io.resize(pixels, size)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
    return pixels


def upscale_images(
    model: LoadedModel,
    images: Sequence[io.ImageData],
    options: UpscaleOptions = UpscaleOptions(),
    *,
    progress: Progress | None = None,
) -> list[tuple[io.ImageData, dict[str, Any]]]:
    """:func:`upscale_image` of several images with one engine call (a batch of N) where that
    gives the same images: all the same size and channels, none with alpha, and a deterministic
    model (a stochastic one draws its noise per batch, so its frames would differ from single
    runs). Otherwise, and for one image, one call per image. Batched outputs equal the single
    ones up to the CPU kernels' batch-size-dependent rounding (below one 8-bit step)."""
    if (len(images) < 2 or model.spec.stochastic
            or any(im.alpha is not None for im in images)
            or len({(im.height, im.width, im.pixels.shape[2]) for im in images}) != 1):
        return [upscale_image(model, im, options, progress=progress) for im in images]
    target_scale, size = output_size(model, options, images[0].height, images[0].width)
    result = _run(model, torch.cat([_to_tensor(im.pixels) for im in images]), options, progress)
    return [(replace(im, pixels=_output_pixels(result.sr[i:i + 1], im.pixels.shape[2], size)),
             _run_info(result, target_scale, options)) for i, im in enumerate(images)]


def default_output_path(src: str | Path, model_scale: float) -> Path:
    """``photo.jpg`` -> ``photo_x4.jpg`` next to the input."""
    p = Path(src)
    s = int(model_scale) if float(model_scale).is_integer() else model_scale
    return p.with_name(f"{p.stem}_x{s}{p.suffix or '.png'}")


def manifest_for(model: LoadedModel, info: dict[str, Any]) -> dict[str, str]:
    """Run manifest written into the output (PNG text chunks / EXIF).

    A network may add architecture-specific entries with an optional ``manifest_extra()``
    method returning ``dict[str, str]`` (e.g. SSR's ``depth_estimator``); they never replace
    the standard keys.
    """
    manifest = {
        "software": f"realsr {__version__}",
        "model": model.weights_id or Path(model.weights_path or "").name,
        "arch": model.arch,
        "weights_sha256": model.weights_sha256 or "",
        "scale": str(info["scale"]),
        "tile": str(info["tile"]),
        "precision": _precision_name(model.dtype),
        "seed": "" if info.get("seed") is None else str(info["seed"]),
        "device": str(model.device),
    }
    if info.get("tta"):
        manifest["tta"] = "x8"
    if has(model.net, ManifestExtra):
        for key, value in model.net.manifest_extra().items():
            manifest.setdefault(str(key), str(value))
    return manifest


def upscale_file(
    model: LoadedModel,
    src: str | Path,
    dst: str | Path,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    stdin: bytes | None = None,
    stdout: Callable[[bytes], Any] | None = None,
    progress: Progress | None = None,
    aux_dir: str | Path | None = None,
) -> UpscaleReport:
    """Read ``src`` (or ``stdin`` bytes when src is ``-``), upscale, write ``dst`` atomically
    (or hand the encoded bytes to ``stdout`` when dst is ``-``).

    ``aux_dir``: also write the model's auxiliary maps there (``NAME_depth.png``,
    ``NAME_kernel_var.png``, NAME = the input's stem or ``stdin``; see
    :mod:`realsr_cli.engine.auxmaps`); :class:`UsageError` before any work when the model has none.
    """
    import time

    from realsr_cli.engine import auxmaps

    t0 = time.perf_counter()
    if aux_dir is not None:
        auxmaps.require_aux(model)
    if str(src) == "-":
        if stdin is None:
            raise UsageError("input '-' needs image bytes on standard input")
        image = io.decode_image(stdin, max_pixels=options.max_pixels, name="<stdin>")
    else:
        image = io.read_image(src, max_pixels=options.max_pixels)

    out, info = upscale_image(model, image, options, progress=progress)
    manifest = manifest_for(model, info)
    maps = None
    if aux_dir is not None:
        maps = auxmaps.compute_aux(
            model, _to_tensor(image.pixels), run_tile=info["tile"], tile_overlap=options.tile_overlap
        )
    if str(dst) == "-":
        if stdout is None:
            raise UsageError("output '-' needs a writable standard output")
        fmt = options.format or "PNG"
        stdout(io.encode_image(out, format=fmt, bit_depth=options.bit_depth, quality=options.quality, manifest=manifest))
    else:
        io.write_image(
            dst, out, format=options.format, bit_depth=options.bit_depth, quality=options.quality, manifest=manifest
        )
    extra: dict[str, Any] = {}
    if maps is not None and aux_dir is not None:
        stem = "stdin" if str(src) == "-" else Path(src).stem
        depth_path, var_path = auxmaps.write_aux(maps, aux_dir, stem, manifest=manifest)
        extra["aux"] = {"depth": str(depth_path), "kernel_var": str(var_path)}
    return UpscaleReport(
        input=str(src),
        output=str(dst),
        model=manifest["model"],
        arch=model.arch,
        scale=info["scale"],
        input_size=(image.width, image.height),
        output_size=(out.width, out.height),
        tile=info["tile"],
        tiles=info["tiles"],
        precision=manifest["precision"],
        seed=info["seed"],
        seconds=time.perf_counter() - t0,
        fp32_fallbacks=info["fp32_fallbacks"],
        extra=extra,
    )


def check_aux(model: LoadedModel, aux_dir: str | Path) -> None:
    """Fail early (before running a model) when ``--save-aux`` cannot work: the model has no
    auxiliary maps (:class:`UsageError`) or ``aux_dir`` cannot be written."""
    from realsr_cli.engine import auxmaps

    auxmaps.require_aux(model)
    check_output_writable(Path(aux_dir) / "aux.png")


def check_output_writable(dst: str | Path) -> None:
    """Fail early (before running a model) when the output folder cannot be written."""
    if str(dst) == "-":
        return
    parent = Path(dst).resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise ImageIOError(f"cannot write to {parent}", hint="choose another output folder with -o")
