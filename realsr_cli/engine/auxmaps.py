"""Auxiliary maps of a run (``--save-aux``): what a model conditions on, as PNGs at LR resolution.

Only architectures whose network has ``auxiliary(lq) -> (depth, kernels)`` support it (SSR today):
``lq`` (B,3,H,W) in [0,1] -> depth (B,1,H,W) in [0,1] and per-pixel kernels (B,k*k,H,W).
For one image ``NAME`` two files are written (atomically) into the aux folder:

``NAME_depth.png``
    16-bit gray, depth in [0,1] as ``round(d * 65535)``.
``NAME_kernel_var.png``
    8-bit RGB heat map (OpenCV inferno colour map) of the spatial variance of each pixel's kernel
    (SSR Fig. 4), normalised per image: black = ``kernel_var_min``, bright yellow =
    ``kernel_var_max``; both are stored as PNG text chunks (squared kernel pixels), with the run
    manifest.

Tiling. Up to :data:`AUX_WHOLE_MAX_PIXELS` LR pixels the maps are computed on the whole image,
unless the upscale itself ran in tiles; then (or beyond the budget, with :data:`AUX_TILE`) they
are computed per LR tile with :func:`~realsr_cli.engine.tiling.tiled_forward` at scale 1 and
blended with the same Gaussian window as the image. The variance is computed per tile before
blending (blending k*k kernel taps would cost k*k channels of memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from realsr_cli.engine import io
from realsr_cli.engine.model import LoadedModel
from realsr_cli.engine.tiling import DEFAULT_SIGMA, Tile, tiled_forward
from realsr_cli.errors import UsageError
from realsr_cli.registry.capabilities import AuxiliaryMaps, has

__all__ = [
    "AUX_TILE",
    "AUX_WHOLE_MAX_PIXELS",
    "AuxMaps",
    "aux_paths",
    "compute_aux",
    "require_aux",
    "supports_aux",
    "write_aux",
]

#: whole-image aux maps up to this many LR pixels (when the upscale was not tiled)
AUX_WHOLE_MAX_PIXELS = 1024 * 1024
#: LR tile side for aux maps beyond that budget
AUX_TILE = 256


def supports_aux(model: LoadedModel) -> bool:
    """Whether ``model``'s network can produce auxiliary maps (the ``AuxiliaryMaps`` capability)."""
    return has(model.net, AuxiliaryMaps)


def require_aux(model: LoadedModel) -> None:
    """Raise :class:`UsageError` (exit 2) when ``model`` has no auxiliary maps."""
    if not supports_aux(model):
        raise UsageError(
            f"--save-aux is not supported by {model.spec.title} ({model.arch}): it has no "
            "auxiliary maps (depth, kernels)",
            hint="use an SSR model (--model ssr or SSR --weights), or drop --save-aux",
        )


@dataclass
class AuxMaps:
    """``depth`` and ``kernel_var``: HxW float32 at LR resolution; ``tiles``: pieces computed."""

    depth: np.ndarray
    kernel_var: np.ndarray
    tiles: int = 1


def _aux_tile(model: LoadedModel, height: int, width: int, run_tile: int) -> int:
    """0 = whole image; else the LR tile side (the upscale's tile when it tiled)."""
    if run_tile > 0:
        return run_tile
    if height * width <= AUX_WHOLE_MAX_PIXELS:
        return 0
    m = max(1, model.spec.tile_multiple)
    return max(m, AUX_TILE // m * m)


@torch.no_grad()
def compute_aux(
    model: LoadedModel,
    lq: Tensor,
    *,
    run_tile: int = 0,
    tile_overlap: int | None = None,
) -> AuxMaps:
    """Aux maps of ``lq`` (1,3,H,W) float32 [0,1] on the CPU; ``run_tile``: the upscale's LR tile
    (0 = whole image) so the maps are tiled like the image (see the module doc)."""
    require_aux(model)
    if lq.ndim != 4 or lq.shape[0] != 1:
        raise UsageError(f"expected lq of shape (1,3,H,W), got {tuple(lq.shape)}")
    net, spec = model.net, model.spec
    lq = lq.detach().to("cpu", torch.float32)
    height, width = lq.shape[-2:]
    tile = _aux_tile(model, height, width, run_tile)
    count = 0

    def fn(x: Tensor, tiles: Sequence[Tile]) -> Tensor:
        nonlocal count
        count += len(tiles)
        with torch.inference_mode():
            depth, kernels = net.auxiliary(x.to(model.device, model.dtype))
            var = net.kernel_variance(kernels.float())
            out = torch.cat([depth.float(), var], dim=1).to("cpu", torch.float32)
        return out.clone()  # a plain tensor: tiled_forward accumulates into it

    side = tile if 0 < tile < max(height, width) else max(height, width)
    overlap = spec.default_overlap if tile_overlap is None else tile_overlap
    overlap = min(overlap, side // 2) if side < max(height, width) else 0
    maps = tiled_forward(
        fn,
        lq,
        scale=1,
        tile=side,
        overlap=overlap,
        multiple=max(1, spec.tile_multiple),
        sigma=spec.tile_sigma or DEFAULT_SIGMA,
        margin=None if spec.tile_margin is None else min(spec.tile_margin, overlap // 2),
    )
    arr = maps[0].numpy()
    return AuxMaps(
        depth=np.clip(arr[0], 0.0, 1.0).astype(np.float32),
        kernel_var=np.maximum(arr[1], 0.0).astype(np.float32),
        tiles=count,
    )


def aux_paths(aux_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """``(aux_dir/STEM_depth.png, aux_dir/STEM_kernel_var.png)``."""
    d = Path(aux_dir)
    return d / f"{stem}_depth.png", d / f"{stem}_kernel_var.png"


def heat_map(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """HxW float -> (HxWx3 float32 RGB in [0,1] inferno heat map, min, max); flat maps are black."""
    lo, hi = float(values.min()), float(values.max())
    norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    q = np.rint(np.clip(norm, 0.0, 1.0) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(q, cv2.COLORMAP_INFERNO)
    return bgr[..., ::-1].astype(np.float32) / 255.0, lo, hi


def write_aux(
    maps: AuxMaps, aux_dir: str | Path, stem: str, *, manifest: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """Write ``STEM_depth.png`` (16-bit gray) and ``STEM_kernel_var.png`` (8-bit heat map,
    ``kernel_var_min``/``kernel_var_max`` in text chunks) atomically; returns both paths."""
    depth_path, var_path = aux_paths(aux_dir, stem)
    depth = io.ImageData(
        pixels=maps.depth[..., None], bit_depth=16, text={"realsr_aux": "depth (relative, 0-1)"}
    )
    rgb, lo, hi = heat_map(maps.kernel_var)
    var = io.ImageData(
        pixels=np.ascontiguousarray(rgb),
        bit_depth=8,
        text={
            "realsr_aux": "kernel variance heat map (inferno, per-image min-max)",
            "kernel_var_min": repr(lo),
            "kernel_var_max": repr(hi),
            "kernel_var_units": "squared kernel pixels",
        },
    )
    io.write_image(depth_path, depth, format="PNG", bit_depth=16, manifest=manifest)
    io.write_image(var_path, var, format="PNG", bit_depth=8, manifest=manifest)
    return depth_path, var_path
