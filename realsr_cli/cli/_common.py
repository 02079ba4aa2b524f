"""Small glue shared by upscale and batch: turn parsed options into engine calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from realsr_cli.cli import _output
from realsr_cli.cli._options import parse_tile
from realsr_cli.errors import UsageError

if TYPE_CHECKING:
    from realsr_cli.engine import api


def load(
    model: str | None,
    weights: str | None,
    scale: float | None,
    device: str,
    precision: str,
    offline: bool,
    view: _output.ProgressView,
    depth_estimator: str = "auto",
) -> api.LoadedModel:
    from realsr_cli.engine import api
    from realsr_cli.engine import device as devices

    if model and weights:
        raise UsageError("--model and --weights are exclusive", hint="give one of them")
    native = int(scale) if scale is not None and float(scale).is_integer() else None
    loaded = api.load_model(
        weights or model,
        device=device,
        precision=precision,
        scale=native,
        offline=True if offline else None,
        progress=view.bytes,
        depth_estimator=depth_estimator,
    )
    if loaded.device.type == "cpu":  # large activations reuse freed memory (engine/device.py)
        devices.tune_cpu_allocator()
    return loaded


def options(
    *,
    scale: float | None = None,
    tile: str = "auto",
    tile_overlap: int | None = None,
    tile_batch: int = 1,
    seed: int | None = None,
    steps: int | None = None,
    alpha: str = "bicubic",
    bit_depth: int | None = None,
    quality: int = 95,
    fmt: str | None = None,
    max_pixels: int | None = None,
    tta: bool = False,
) -> api.UpscaleOptions:
    """The one place the CLI builds (and so validates) the engine's options; every command that
    runs a model (upscale, batch, eval) calls it and passes the result down unchanged."""
    from realsr_cli.engine import api

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels or None}
    return api.UpscaleOptions(
        scale=scale,
        tile=parse_tile(tile),
        tile_overlap=tile_overlap,
        tile_batch=tile_batch,
        seed=seed,
        steps=steps,
        alpha=alpha,  # type: ignore[arg-type]
        bit_depth=bit_depth,
        quality=quality,
        format=fmt,
        tta=tta,
        **kwargs,
    )


def describe(model: api.LoadedModel) -> str:
    from realsr_cli.engine import api

    name = model.weights_id or model.weights_path
    notes = "".join(f"; {note}" for note in model.notes)
    return f"{name} ({model.spec.title} x{model.scale}) on {model.device}, {api._precision_name(model.dtype)}{notes}"
