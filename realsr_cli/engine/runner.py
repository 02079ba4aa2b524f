"""Run a loaded model over one image: auto tile size, OOM halving, fp32 redo of overflowed tiles.

Auto tile. Activation memory is estimated as ``ACTIVATION_BYTES x (tile*scale)^2 x batch`` (fp32
bytes per output pixel: the architecture's measured ``spec.activation_bytes``, a number or a
function of the config, else one default figure), scaled by the dtype's size relative to fp32.
The whole image runs in one piece when its estimate fits in ``MEMORY_FRACTION`` of the free memory (device memory on CUDA/MPS, available RAM
on CPU) and its sides are within ``spec.default_tile`` x ``spec.whole_image_up_to``; otherwise the
tiling with the least computed area among those whose tiles fit, each side cut into balanced
tiles, rectangular where that is cheaper (:func:`auto_tile`).

OOM. On an out-of-memory error the tile is halved (cache emptied) and the image is redone, down to
``min_tile``; below that, :class:`~realsr_cli.errors.OutOfMemoryError` (exit 5). An explicit
``tile=0`` (no tiling) and non-tileable architectures are never tiled, so OOM is raised at once.

Half precision. A tile whose fp16/bf16 output holds NaN/Inf (the Real-ESRGAN "black image" overflow)
is redone in fp32; one warning per run, the count goes to ``RunResult.fp32_fallbacks``.

Blending. ``tiled_forward``'s defaults (Gaussian ``DEFAULT_SIGMA``, margin ``overlap // 4``) unless
the architecture declares ``tile_sigma`` / ``tile_margin`` (optional ``ArchSpec`` fields, None by
default); RealSRT's Eq. 3 is ``tile_sigma=0.05**0.5, tile_margin=0``.

Noise. Stochastic models get a CPU generator per ``fn`` call, seeded from the run seed and the
coordinates of the tiles in that call (the whole image uses the run seed itself), so one seed with
the same options reproduces the same output on any device.

Size (over STYLE's ~300-line guide): auto tile, OOM halving, the fp32 redo and TTA all wrap the
same tile loop; split apart they would pass its state around.

"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from realsr_cli.engine import device as devices
from realsr_cli.engine.model import LoadedModel
from realsr_cli.engine.tiling import DEFAULT_SIGMA, Tile, grid_side, tiled_forward
from realsr_cli.errors import OutOfMemoryError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "RunOptions",
    "RunResult",
    "auto_tile",
    "estimate_bytes",
    "run_model",
]

Progress = Callable[[int, int], None]

#: fp32 activation bytes per output (HR) pixel at one tile (heuristic, generous)
ACTIVATION_BYTES = 2048
#: share of the free memory the estimate may use (the rest: weights' workspace, fragmentation)
MEMORY_FRACTION = 0.6
#: smallest tile side the OOM fallback tries (raised to spec.min_size / tile_multiple)
MIN_TILE = 32
#: rectangular auto tiles replace the square plan only when they compute at most this share of it
RECT_GAIN = 0.95


@dataclass(frozen=True)
class RunOptions:
    """How to run one image. ``tile``: None = auto, 0 = whole image, N = N LR pixels.

    ``tile_overlap``: None = the architecture's default. ``tile_batch``: tiles per model call.
    ``seed``: noise seed for stochastic models (None = draw one). ``steps``: sampling steps.
    """

    tile: int | None = None
    tile_overlap: int | None = None
    tile_batch: int = 1
    seed: int | None = None
    steps: int | None = None
    #: x8 self-ensemble: the 8 flips/rotations of the input, each run (tiled like the plain
    #: image, stochastic models with the same seed for every view) and mapped back, averaged
    tta: bool = False

    def __post_init__(self) -> None:
        """Validated once, where the options are built (CLI, Python API); ``run_model`` trusts them."""
        if self.tile is not None and self.tile < 0:
            raise UsageError(f"--tile must be auto, 0 or positive, got {self.tile}")
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.tile_batch < 1:
            raise UsageError(f"--tile-batch must be >= 1, got {self.tile_batch}")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {self.steps}")


@dataclass
class RunResult:
    """``sr``: (N,3,sH,sW) float32 on the CPU, not clamped. ``tile``: LR tile side used (0 = the
    whole image in one piece; for rectangular auto tiles the shorter side that cuts the image);
    ``tiles``: tiles run; ``fp32_fallbacks``: half-precision tiles
    redone in fp32; ``seed``: the seed used (None for deterministic models)."""

    sr: Tensor
    tile: int
    tiles: int
    fp32_fallbacks: int
    seed: int | None


def _bytes_per_output_pixel(model: LoadedModel) -> float:
    itemsize = torch.empty((), dtype=model.dtype).element_size()
    declared = model.spec.activation_bytes
    per_pixel = declared(model.config) if callable(declared) else declared or ACTIVATION_BYTES
    return float(per_pixel) * itemsize / 4


def estimate_bytes(model: LoadedModel, h: int, w: int, batch: int = 1) -> float:
    """Estimated activation memory to run ``batch`` LR tiles of ``h`` x ``w`` (module doc)."""
    return _bytes_per_output_pixel(model) * h * w * model.scale**2 * batch


def _min_tile(model: LoadedModel) -> int:
    m = max(1, model.spec.tile_multiple)
    floor = math.ceil(max(MIN_TILE, model.spec.min_size) / m) * m
    return min(floor, max(m, model.spec.default_tile))  # never above the model's own patch cap


def auto_tile(
    model: LoadedModel, height: int, width: int, batch: int = 1, overlap: int | None = None
) -> int | tuple[int, int]:
    """The tiles for ``tile=None``: 0 (whole image) when it fits, else the cheapest tiling that fits.

    The cap is ``spec.default_tile`` times ``spec.whole_image_up_to`` (the whole-image bound; a
    hard cap where that is 1.0). The largest fitting side (a multiple of ``spec.tile_multiple``
    within ``[min tile, cap]``) sets how many square tiles the longer side needs; the side is then
    shrunk to the smallest that still covers it with that many tiles and ``overlap`` (default: the
    architecture's). Rectangular tiles replace that square plan when they compute at most
    ``RECT_GAIN`` of its pixels (tile padding to the grid counted) within the same tile area: each
    image side cut into 1, 2, 3 ... balanced tiles (1 = the whole side, within the cap), e.g. two
    full-width strips where a 2 x 2 grid would overlap more. Returns a square side, or
    (height, width).
    """
    spec = model.spec
    budget = devices.free_memory_bytes(model.device) * MEMORY_FRACTION
    cap = spec.default_tile
    if budget <= 0:  # unknown free memory: trust the architecture's default
        log.debug("free memory unknown on %s; auto tile = default %d", model.device, cap)
        return 0 if max(height, width) <= cap else cap
    whole_cap = int(cap * max(1.0, spec.whole_image_up_to))
    if max(height, width) <= whole_cap and estimate_bytes(model, height, width) <= budget:
        return 0
    side = int(math.sqrt(budget / _bytes_per_output_pixel(model) / model.scale**2 / batch))
    m = max(1, spec.tile_multiple)
    floor = _min_tile(model)
    side = max(min(side // m * m, whole_cap // m * m or m), floor)
    side_area = side * side  # what one tile may hold
    ov = spec.default_overlap if overlap is None else overlap
    longest = max(height, width)
    if ov < side < longest:  # balance: the same number of tiles, each as small as that allows
        n = math.ceil((longest - ov) / (side - ov))
        even = math.ceil((longest + (n - 1) * ov) / n)
        side = max(floor, min(side, math.ceil(even / m) * m))
    # rectangular tiles (each image side cut on its own) where they compute clearly less
    pad = m if m > 1 else 0  # a tile's padding to the grid, as the model pays it
    square = grid_side(height, side, m), grid_side(width, side, m)  # as plan_tiles cuts them
    cost = _plan_cost(height, width, *square, min(ov, side // 2), pad)
    best: tuple[int, int, int] | None = None  # (cost, th, tw)
    for th in _balanced_sides(height, ov, m, floor, whole_cap):
        for tw in _balanced_sides(width, ov, m, floor, whole_cap):
            if th * tw <= side_area:
                c = _plan_cost(height, width, th, tw, ov, pad)
                best = (c, th, tw) if best is None or (c, th, tw) < best else best
    if best is not None and best[0] <= RECT_GAIN * cost:
        log.debug("auto tile %dx%d (budget %.0f MiB on %s)", best[1], best[2], budget / 2**20, model.device)
        return best[1], best[2]
    log.debug("auto tile %d (budget %.0f MiB on %s)", side, budget / 2**20, model.device)
    return side


def _count(length: int, side: int, overlap: int) -> int:
    """How many tiles of ``side`` :func:`~realsr_cli.engine.tiling.plan_tiles` puts along
    ``length`` (``side`` on the grid or the whole length, as :func:`_balanced_sides` gives)."""
    return 1 if side >= length else 1 + math.ceil((length - side) / (side - overlap))


def _plan_cost(height: int, width: int, th: int, tw: int, overlap: int, pad: int) -> int:
    """LR pixels the model computes for ``th`` x ``tw`` tiles (each side on the grid or the whole
    image side): every tile with its padding to the grid, counted without planning the tiles."""
    return _count(height, th, overlap) * _count(width, tw, overlap) * (th + pad) * (tw + pad)


def _balanced_sides(length: int, overlap: int, m: int, floor: int, cap: int) -> list[int]:
    """Tile sides for cutting ``length`` into 1, 2, 3 ... tiles: the whole side (within ``cap``),
    then for each count the smallest grid side that covers it with ``overlap`` (at least
    ``floor``, more than ``overlap``, below ``length``)."""
    sides = [length] if length <= cap else []
    n = 2
    while True:
        even = math.ceil((length + (n - 1) * overlap) / n)
        t = max(floor, math.ceil(even / m) * m)
        if t < length and overlap < t <= cap and t not in sides:
            sides.append(t)
        if t <= floor or n > length:
            return sides
        n += 1


def _seed_for(seed: int, tiles: Sequence[Tile], whole: bool) -> int:
    if whole:
        return seed
    text = f"{seed}:" + ";".join(f"{t.y},{t.x},{t.h},{t.w}" for t in tiles)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class _Runner:
    """One run's state: the model call for a group of tiles, with the fp32 redo and its count."""

    def __init__(
        self, model: LoadedModel, seed: int | None, steps: int | None, whole: tuple[int, int]
    ):
        self.model, self.seed, self.steps, self.whole = model, seed, steps, whole
        self.half = model.dtype in (torch.float16, torch.bfloat16)
        self.fallbacks = 0
        self.tiles = 0

    def _generator(self, tiles: Sequence[Tile]) -> torch.Generator | None:
        if self.seed is None:
            return None
        whole = len(tiles) == 1 and (tiles[0].h, tiles[0].w) == self.whole
        return devices.make_generator(_seed_for(self.seed, tiles, whole))

    def __call__(self, x: Tensor, tiles: Sequence[Tile]) -> Tensor:
        self.tiles += len(tiles)
        out = self.model(x, generator=self._generator(tiles), steps=self.steps)
        if not self.half:
            return out
        rows = x.shape[0] // len(tiles)
        bad = ~torch.isfinite(out).flatten(1).all(dim=1)
        if not bool(bad.any()):
            return out
        bad_tiles = int(bad.view(len(tiles), rows).any(dim=1).sum())
        if self.fallbacks == 0:
            log.warning(
                "%s output overflowed (NaN/Inf) in %s; redoing the affected tiles in fp32",
                self.model.arch,
                str(self.model.dtype).removeprefix("torch."),
            )
        self.fallbacks += bad_tiles
        out = out.clone()  # LoadedModel returns inference tensors; ours may be edited in place
        if self.seed is None:  # deterministic: redo only the bad rows
            out[bad] = self.model(x[bad], dtype=torch.float32, steps=self.steps)
        else:  # same generator -> same noise; keep the good half-precision rows
            redo = self.model(
                x, generator=self._generator(tiles), steps=self.steps, dtype=torch.float32
            )
            out[bad] = redo[bad]
        return out


#: the x8 self-ensemble (Lim et al., EDSR+, 2017): (rot90 turns k, horizontal flip)
TTA_VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def _view(x: Tensor, k: int, flip: bool) -> Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _unview(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1)) if k else x
    return x.flip(-1) if flip else x


@torch.no_grad()
def run_model(
    model: LoadedModel,
    lq: Tensor,
    options: RunOptions = RunOptions(),
    *,
    progress: Progress | None = None,
) -> RunResult:
    """Upscale ``lq`` (N,3,H,W) float32 in [0,1] on the CPU -> :class:`RunResult` (sr on the CPU).

    With ``options.tta`` the 8 views of :data:`TTA_VIEWS` each go through the same run (same
    tiling policy, same seed) and their outputs, mapped back, are averaged; ``tiles`` and
    ``fp32_fallbacks`` then count over all views."""
    if lq.ndim != 4:
        raise UsageError(f"expected lq of shape (N,3,H,W), got {tuple(lq.shape)}")
    if not options.tta:
        return _run_once(model, lq, options, progress)
    if model.spec.stochastic and options.seed is None:  # one seed for every view
        options = replace(options, seed=devices.make_generator(None).initial_seed())
    total = None
    tiles = fallbacks = 0
    first: RunResult | None = None
    for i, (k, flip) in enumerate(TTA_VIEWS):
        def view_progress(done: int, n: int, i: int = i) -> None:
            if progress is not None:
                progress(i * n + done, len(TTA_VIEWS) * n)

        res = _run_once(model, _view(lq, k, flip), options, view_progress)
        sr = _unview(res.sr, k, flip)
        total = sr if total is None else total.add_(sr)
        tiles, fallbacks = tiles + res.tiles, fallbacks + res.fp32_fallbacks
        first = first or res
    assert total is not None and first is not None
    return RunResult(sr=total.div_(len(TTA_VIEWS)), tile=first.tile, tiles=tiles,
                     fp32_fallbacks=fallbacks, seed=first.seed)


def _run_once(model: LoadedModel, lq: Tensor, options: RunOptions, progress: Progress | None) -> RunResult:
    spec = model.spec
    lq = lq.detach().to("cpu", torch.float32)
    height, width = lq.shape[-2:]
    seed = devices.make_generator(options.seed).initial_seed() if spec.stochastic else None
    overlap = spec.default_overlap if options.tile_overlap is None else options.tile_overlap

    if not spec.tileable or options.tile == 0:
        tile = 0
    elif options.tile is None:
        tile = auto_tile(model, height, width, options.tile_batch, options.tile_overlap)
    else:
        m = max(1, spec.tile_multiple)
        tile = max(m, options.tile // m * m)  # the tiler's grid; report what actually runs
        if tile != options.tile:
            log.info(
                "--tile %d rounded to %d (a multiple of %d for %s)",
                options.tile,
                tile,
                m,
                spec.name,
            )
        if tile < spec.min_size:
            raise UsageError(
                f"--tile {tile} is below {spec.name}'s minimum size {spec.min_size}",
                hint=f"use --tile {_min_tile(model)} or larger",
            )
    may_shrink = spec.tileable and options.tile != 0
    sigma = spec.tile_sigma or DEFAULT_SIGMA
    spec_margin: int | None = spec.tile_margin

    while True:
        runner = _Runner(model, seed, options.steps, (height, width))
        side = _split_side(tile, height, width)
        tile_overlap = _overlap_for(side, overlap, explicit=options.tile_overlap is not None)
        margin = None if spec_margin is None else min(spec_margin, tile_overlap // 2)
        try:
            sr = tiled_forward(
                runner,
                lq,
                scale=model.scale,
                tile=tile if isinstance(tile, tuple) else side,
                overlap=tile_overlap,
                multiple=max(1, spec.tile_multiple),
                batch=options.tile_batch,
                sigma=sigma,
                margin=margin,
                progress=progress,
            )
            break
        except Exception as exc:
            if not devices.is_oom(exc):
                raise
            failed = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        devices.release_memory(model.device)  # outside `except`: the traceback's tensors are gone
        next_tile = _smaller(model, tile, height, width) if may_shrink else 0
        if next_tile == 0:
            raise OutOfMemoryError(
                f"out of memory on {model.device} at {_describe(side, height, width)}: {failed}",
                hint=_oom_hint(model, may_shrink),
            )
        log.warning(
            "out of memory at %s; retrying with tile %d", _describe(side, height, width), next_tile
        )
        tile = next_tile

    sr = sr.to("cpu", torch.float32)
    return RunResult(
        sr=sr.clone() if sr.is_inference() else sr,  # a plain tensor callers may edit in place
        tile=0 if runner.tiles == 1 else side,
        tiles=runner.tiles,
        fp32_fallbacks=runner.fallbacks,
        seed=seed,
    )


def _overlap_for(side: int, overlap: int, *, explicit: bool) -> int:
    """The architecture's default overlap shrinks with the tile (at most half of it); an explicit
    one is kept unless it does not fit in the tile."""
    if explicit and overlap < side:
        return overlap
    if explicit:
        log.warning("--tile-overlap %d does not fit in tile %d; using %d", overlap, side, side // 2)
    return min(overlap, side // 2)


def _split_side(tile: int | tuple[int, int], height: int, width: int) -> int:
    """The side that limits the overlap: a square tile's side (the longer image side when it
    covers the image); for (h, w) tiles the shorter of the sides that actually cut the image."""
    if isinstance(tile, tuple):
        cut = [t for t, n in zip(tile, (height, width), strict=True) if t < n]
        return min(cut) if cut else max(height, width)
    return tile if 0 < tile < max(height, width) else max(height, width)


def _smaller(model: LoadedModel, tile: int | tuple[int, int], height: int, width: int) -> int:
    """Half of ``tile`` (0 = whole image: half its longer side; (h, w): half the longer) on the
    multiple grid; 0 = give up."""
    tile = max(tile) if isinstance(tile, tuple) else tile
    current = tile if 0 < tile < max(height, width) else max(height, width)
    m = max(1, model.spec.tile_multiple)
    nxt = current // 2 // m * m
    return nxt if nxt >= _min_tile(model) else 0


def _describe(side: int, height: int, width: int) -> str:
    return "the whole image" if side >= max(height, width) else f"tile {side}"


def _oom_hint(model: LoadedModel, may_shrink: bool) -> str:
    cpu = model.device.type == "cpu"
    if not model.spec.tileable:
        return "this model cannot be tiled; use a smaller image" + (
            "" if cpu else " or --device cpu"
        )
    if not may_shrink:
        return "try --tile 256 (or smaller)" + ("" if cpu else " or --device cpu")
    return "try --tile 64" + (" or close other programs" if cpu else " or --device cpu")
