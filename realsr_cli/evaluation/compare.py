"""Side-by-side comparisons of images of one scene (``realsr compare``): a PNG grid of crops and a
self-contained HTML page with a before/after slider.

**Canvas.** Every image is brought to the size of the largest input (most pixels), the *canvas*,
so crops line up: a smaller image is enlarged with nearest-neighbour (each source pixel stays a
visible block; an LR input lines up exactly with its x4 output), an image that is larger in a side
is reduced by pixel area. Crops are in canvas pixels. Gray inputs are shown as RGB, alpha over a
checkerboard of 8-px squares, 16-bit inputs at 8 bits.

**Automatic crops.** The difference map is, per canvas pixel, the mean over the other images and
the channels of ``|image_k - image_0|`` (values in [0,1]). Windows of ``size x size`` canvas px
(clamped to the canvas) are scored by their mean difference at positions every
``max(1, size // 16)`` px (plus the last position on each side); the best window is taken, every
window overlapping it is dropped, and so on: non-overlapping, best first, deterministic (ties go to
the top-left one). Each crop reports its mean difference, explicit ones too.

**PNG grid.** A label row (one column per image), then per crop a caption line and the crop of
every image, magnified ``zoom`` times with nearest-neighbour.

**HTML page.** One file: the images as PNG ``data:`` URIs, inline CSS and JS, a
Content-Security-Policy that forbids any network access. The images are shown at canvas size
(``image-rendering: pixelated``, the same nearest-neighbour enlargement); the right image is
clipped at the split line, which is a fraction of the view's width (``<input type=range
id=split>``, 0-1000). Wheel or buttons zoom, drag pans, dragging the line moves the split, a crop
button fits that crop. The URL fragment sets the state (``#split=0.25&left=0&right=2&zoom=4``,
``zoom=fit``, ``crop=1``): for bookmarks and the browser test.

Size (over STYLE's ~300-line guide): the page's CSS and JS sit beside the code that fills them in.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from realsr_cli.engine import io
from realsr_cli.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "CompareReport", "Crop", "Source", "build_html", "canvas_size", "check_crop", "compare",
    "difference_map", "draw_grid", "load_sources", "measure", "output_kind", "parse_crop",
    "pick_crops",
]

_CHECKER = 8  # canvas px per checkerboard square behind transparent pixels
_CHECKER_SHADES = (0.6, 0.8)
_CROP_RE = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*$")
_KINDS = {".png": "png", ".html": "html", ".htm": "html"}


@dataclass(frozen=True)
class Crop:
    """A ``w x h`` window at ``(x, y)`` (top-left) in canvas pixels; ``difference`` is its mean
    absolute difference in [0,1] (see :func:`difference_map`); ``auto``: chosen by
    :func:`pick_crops`."""

    x: int
    y: int
    w: int
    h: int
    difference: float | None = None
    auto: bool = False

    def to_json(self) -> dict[str, Any]:
        diff = None if self.difference is None else round(float(self.difference), 6)
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "auto": self.auto, "difference": diff}


@dataclass
class Source:
    """One input: its path, label, decoded image and its canvas view, (H,W,3) float32 in [0,1]."""

    path: str
    label: str
    image: io.ImageData
    canvas: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the file."""
        return self.image.width, self.image.height

    @property
    def resized(self) -> bool:
        return self.size != (self.canvas.shape[1], self.canvas.shape[0])

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "size": list(self.size), "resized": self.resized}


@dataclass
class CompareReport:
    """What :func:`compare` wrote: ``kind`` is ``png`` or ``html``; ``size`` the canvas (w, h);
    ``grid_size`` the PNG's (w, h) (None for a page)."""

    output: str
    kind: str
    size: tuple[int, int]
    sources: list[Source]
    crops: list[Crop]
    zoom: int
    grid_size: tuple[int, int] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output, "format": self.kind, "size": list(self.size),
            "grid_size": None if self.grid_size is None else list(self.grid_size),
            "images": [s.to_json() for s in self.sources], "crops": [c.to_json() for c in self.crops],
            "zoom": self.zoom, "seconds": round(self.seconds, 3),
        }


# ----------------------------------------------------------------------------- inputs


def output_kind(path: str | os.PathLike[str]) -> str:
    """``png`` or ``html`` from the output's suffix; anything else is a :class:`UsageError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in _KINDS:
        raise UsageError(f"cannot tell what to write from the output name {path} ({suffix or 'no suffix'})",
                         hint="end -o with .png (a grid of crops) or .html (a page with a slider)")
    return _KINDS[suffix]


def parse_crop(text: str) -> Crop:
    """``"x,y,w,h"`` (canvas pixels) -> :class:`Crop`; bad syntax or sizes are a :class:`UsageError`."""
    m = _CROP_RE.match(text)
    if not m:
        raise UsageError(f"--crop {text!r} is not x,y,w,h", hint="e.g. --crop 120,64,128,128 (pixels)")
    x, y, w, h = (int(g) for g in m.groups())
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise UsageError(f"--crop {text!r}: x and y must be >= 0, w and h >= 1",
                         hint="e.g. --crop 120,64,128,128 (pixels)")
    return Crop(x, y, w, h)


def check_crop(crop: Crop, size: tuple[int, int]) -> None:
    """A :class:`UsageError` unless ``crop`` lies inside a canvas of ``size = (w, h)``."""
    w, h = size
    if crop.x + crop.w > w or crop.y + crop.h > h:
        raise UsageError(
            f"--crop {crop.x},{crop.y},{crop.w},{crop.h} does not fit in the {w}x{h} image "
            f"(it reaches x={crop.x + crop.w}, y={crop.y + crop.h})",
            hint=f"crops are in pixels of the largest input ({w}x{h}): x+w <= {w}, y+h <= {h}",
        )


def canvas_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The ``(w, h)`` with the most pixels (the first of equals)."""
    return max(sizes, key=lambda s: s[0] * s[1])


def _checkerboard(h: int, w: int) -> np.ndarray:
    yy, xx = np.indices((h, w))
    dark, light = _CHECKER_SHADES
    return np.where(((yy // _CHECKER) + (xx // _CHECKER)) % 2 == 0, light, dark).astype(np.float32)


def to_canvas(img: io.ImageData, size: tuple[int, int]) -> np.ndarray:
    """``img`` as (H,W,3) float32 in [0,1] at ``size = (w, h)``: RGB, alpha over a checkerboard;
    nearest-neighbour when no side shrinks, else area."""
    w, h = size
    grows = w >= img.width and h >= img.height
    px = io.resize(img.pixels, (h, w), filter="nearest" if grows else "area")
    px = np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px
    if img.alpha is not None:
        a = io.resize(img.alpha, (h, w), filter="nearest" if grows else "area")[..., None]
        px = px * a + _checkerboard(h, w)[..., None] * (1 - a)
    return np.clip(px, 0.0, 1.0).astype(np.float32)


def load_sources(paths: Sequence[str], labels: Sequence[str] = (), *,
                 max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> list[Source]:
    """Read ``paths`` (2 or more) and bring them to one canvas; ``labels`` (empty: the file names,
    else one per image)."""
    if len(paths) < 2:
        raise UsageError(f"compare needs at least 2 images, got {len(paths)}",
                         hint="e.g. realsr compare lr.png sr.png -o cmp.html")
    if labels and len(labels) != len(paths):
        raise UsageError(f"{len(labels)} --label for {len(paths)} images",
                         hint="give one --label per image, in the order of the images, or none")
    images = [io.read_image(p, max_pixels=max_pixels) for p in paths]
    size = canvas_size([(im.width, im.height) for im in images])
    sources = []
    for i, (p, im) in enumerate(zip(paths, images, strict=True)):
        if abs(im.width / im.height - size[0] / size[1]) > 0.01 * size[0] / size[1]:
            log.warning("%s is %dx%d, another aspect ratio than %dx%d: stretched to fit",
                        p, im.width, im.height, *size)
        label = labels[i] if labels else Path(p).name
        sources.append(Source(path=str(p), label=label, image=im, canvas=to_canvas(im, size)))
    return sources


# ----------------------------------------------------------------------------- crops


def difference_map(canvases: Sequence[np.ndarray]) -> np.ndarray:
    """(H,W) float32: per pixel, the mean over images 1.. and channels of ``|img_k - img_0|``."""
    ref = canvases[0]
    total = np.zeros(ref.shape[:2], np.float32)
    for other in canvases[1:]:
        total += np.abs(other - ref).mean(axis=2)
    return total / max(1, len(canvases) - 1)


def _positions(length: int, window: int, step: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, length - window + 1, step), length - window])


def _integral(diff: np.ndarray) -> np.ndarray:
    ii = np.zeros((diff.shape[0] + 1, diff.shape[1] + 1), np.float64)
    ii[1:, 1:] = diff.astype(np.float64).cumsum(0).cumsum(1)
    return ii


def measure(crop: Crop, diff: np.ndarray) -> Crop:
    """``crop`` with its mean difference over ``diff`` filled in."""
    window = diff[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w]
    return Crop(crop.x, crop.y, crop.w, crop.h, difference=float(window.mean()), auto=crop.auto)


def pick_crops(diff: np.ndarray, n: int, size: int) -> list[Crop]:
    """Up to ``n`` non-overlapping ``size x size`` windows of ``diff`` (H,W) with the highest mean,
    best first (see the module docstring). Fewer when no more fit."""
    if n < 1 or size < 1:
        raise UsageError(f"need at least one crop of at least 1 px (got {n} of {size} px)")
    height, width = diff.shape
    w, h = min(size, width), min(size, height)
    step = max(1, size // 16)
    ys, xs = _positions(height, h, step), _positions(width, w, step)
    ii = _integral(diff)
    sums = (ii[np.ix_(ys + h, xs + w)] - ii[np.ix_(ys, xs + w)]
            - ii[np.ix_(ys + h, xs)] + ii[np.ix_(ys, xs)])
    scores = sums / (w * h)
    free = np.ones(scores.shape, bool)
    picks: list[Crop] = []
    while len(picks) < n and free.any():
        r, c = np.unravel_index(int(np.argmax(np.where(free, scores, -np.inf))), scores.shape)
        y, x = int(ys[r]), int(xs[c])
        picks.append(Crop(x, y, w, h, difference=max(0.0, float(scores[r, c])), auto=True))
        free &= ~((np.abs(ys - y) < h)[:, None] & (np.abs(xs - x) < w)[None, :])
    if len(picks) < n:
        log.warning("only %d non-overlapping %dx%d crop(s) fit in %dx%d (asked for %d)",
                    len(picks), w, h, width, height, n)
    return picks


# ----------------------------------------------------------------------------- PNG grid

_BG, _FG, _DIM = (32, 32, 32), (235, 235, 235), (160, 160, 160)
_PAD, _FONT_PX = 6, 14


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 (FreeType)
    except TypeError:  # older Pillow: its small bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def draw_grid(sources: Sequence[Source], crops: Sequence[Crop], zoom: int = 1) -> np.ndarray:
    """The grid as (H,W,3) uint8: a label row, then per crop a caption and one cell per image
    (the crop magnified ``zoom`` times, nearest-neighbour); cells are left-aligned in columns as
    wide as the widest crop."""
    if zoom < 1:
        raise UsageError(f"--zoom must be at least 1, got {zoom}")
    if not crops:
        raise UsageError("no crop to draw", hint="pass --crop x,y,w,h or --crops N")
    font, line = _font(_FONT_PX), _FONT_PX + 8
    col = max(c.w for c in crops) * zoom
    width = _PAD + len(sources) * (col + _PAD)
    height = _PAD + line + sum(line + c.h * zoom + _PAD for c in crops)
    if width * height > io.DEFAULT_MAX_PIXELS:
        raise UsageError(f"the grid would be {width}x{height} pixels", hint="use a smaller --zoom or --crop-size")
    grid = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(grid)
    for j, src in enumerate(sources):
        x0 = _PAD + j * (col + _PAD)
        draw.text((x0 + col // 2, _PAD + line // 2), _fit_text(draw, src.label, font, col), fill=_FG, font=font, anchor="mm")
    pixels = [io.quantise(s.canvas, 255) for s in sources]
    y0 = _PAD + line
    for i, c in enumerate(crops):
        diff = "" if c.difference is None else f"   difference {c.difference:.4f}"
        caption = f"{i + 1}: x={c.x} y={c.y} {c.w}x{c.h}{diff}"
        draw.text((_PAD, y0 + line // 2), _fit_text(draw, caption, font, width - 2 * _PAD), fill=_DIM, font=font, anchor="lm")
        y0 += line
        for j, px in enumerate(pixels):
            cell = px[c.y:c.y + c.h, c.x:c.x + c.w].repeat(zoom, axis=0).repeat(zoom, axis=1)
            grid.paste(Image.fromarray(cell), (_PAD + j * (col + _PAD), y0))
        y0 += c.h * zoom + _PAD
    return np.asarray(grid)


# ----------------------------------------------------------------------------- HTML page

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="realsr compare">
<title>@TITLE@</title>
<style>
html, body { margin: 0; height: 100%; overflow: hidden; background: #202020; color: #eee; font: 14px system-ui, sans-serif; }
body { display: flex; flex-direction: column; }
header { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; padding: 6px 10px; background: #2c2c2c; }
header .hint { color: #999; }
#split { flex: 1 1 160px; }
#view { position: relative; flex: 1; overflow: hidden; cursor: grab; touch-action: none; }
#stage { position: absolute; left: 0; top: 0; transform-origin: 0 0; }
#stage img { position: absolute; left: 0; top: 0; width: 100%; height: 100%; image-rendering: pixelated;
  background: repeating-conic-gradient(#999 0 25%, #ccc 0 50%) 0 0 / 16px 16px; user-select: none; -webkit-user-drag: none; }
#line { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #ffd400; z-index: 3; cursor: ew-resize; }
#line::before { content: ""; position: absolute; top: 0; bottom: 0; left: -6px; right: -6px; }
.tag { position: absolute; top: 8px; z-index: 4; padding: 2px 6px; background: rgba(0, 0, 0, .6); border-radius: 3px; pointer-events: none; }
#label-left { left: 8px; } #label-right { right: 8px; }
</style>
</head>
<body>
<header>
<label>left <select id="left">@LEFT@</select></label>
<input type="range" id="split" min="0" max="1000" value="500" aria-label="split position">
<label>right <select id="right">@RIGHT@</select></label>
<span><button id="zoom-out" title="zoom out">&minus;</button> <output id="zoom-level">100%</output> <button id="zoom-in" title="zoom in">+</button>
<button id="zoom-1" title="one image pixel per screen pixel">1:1</button> <button id="zoom-fit">fit</button></span>
<span>crops: @CROPS@</span>
<span class="hint">wheel: zoom &middot; drag: pan &middot; drag the yellow line: move the split</span>
</header>
<main id="view">
<div id="stage" data-width="@W@" data-height="@H@" style="width: @W@px; height: @H@px">
@IMAGES@
</div>
<div id="line"></div><div class="tag" id="label-left"></div><div class="tag" id="label-right"></div>
</main>
<script>
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view"), stage = $("stage"), line = $("line"), split = $("split");
  const left = $("left"), right = $("right"), layers = [...stage.querySelectorAll("img")];
  const W = +stage.dataset.width, H = +stage.dataset.height;
  let z = 1, tx = 0, ty = 0, drag = null, frac = split.value / 1000;  // frac: where the split is
  let anchor = null;  // how to redo the view when the window changes size (null once zoomed or panned)

  function render() {  // the split is a fraction of the view's width, the clip in image pixels
    const at = frac * view.clientWidth, l = +left.value, r = +right.value;
    stage.style.transform = `translate(${tx}px, ${ty}px) scale(${z})`;
    layers.forEach((img, i) => {
      img.style.display = i === l || i === r ? "block" : "none";
      img.style.zIndex = i === r ? 2 : 1;
      img.style.clipPath = i === r && l !== r ? `inset(0 0 0 ${Math.max(0, (at - tx) / z)}px)` : "none";
    });
    line.style.left = `${at}px`;
    $("label-left").textContent = layers[l].alt;
    $("label-right").textContent = layers[r].alt;
    $("zoom-level").textContent = `${Math.round(z * 100)}%`;
  }
  function zoomAt(nz, cx, cy) {  // keep the image point under (cx, cy) in place
    nz = Math.min(64, Math.max(0.01, nz));
    anchor = null;
    tx = cx - (cx - tx) * nz / z; ty = cy - (cy - ty) * nz / z; z = nz;
    render();
  }
  function show(x, y, w, h) {  // fit this image rectangle into the view
    const vw = view.clientWidth, vh = view.clientHeight;
    z = Math.min(vw / w, vh / h); tx = (vw - w * z) / 2 - x * z; ty = (vh - h * z) / 2 - y * z;
    anchor = () => show(x, y, w, h);
    render();
  }
  const centre = (nz) => zoomAt(nz, view.clientWidth / 2, view.clientHeight / 2);

  view.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = view.getBoundingClientRect();
    zoomAt(z * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });
  view.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, split: e.target === line };
    view.setPointerCapture(e.pointerId);
  });
  view.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (drag.split) {
      split.value = (e.clientX - view.getBoundingClientRect().left) / view.clientWidth * 1000;
      frac = split.value / 1000;
    }
    else { tx += e.clientX - drag.x; ty += e.clientY - drag.y; anchor = null; }
    drag.x = e.clientX; drag.y = e.clientY;
    render();
  });
  view.addEventListener("pointerup", () => { drag = null; });
  split.addEventListener("input", () => { frac = split.value / 1000; render(); });
  left.addEventListener("change", render);
  right.addEventListener("change", render);
  window.addEventListener("resize", () => (anchor ? anchor() : render()));
  $("zoom-in").addEventListener("click", () => centre(z * 1.5));
  $("zoom-out").addEventListener("click", () => centre(z / 1.5));
  $("zoom-1").addEventListener("click", () => centre(1));
  $("zoom-fit").addEventListener("click", () => show(0, 0, W, H));
  const cropButtons = [...document.querySelectorAll("[data-crop]")];
  cropButtons.forEach((b) => b.addEventListener("click", () => show(...b.dataset.crop.split(",").map(Number))));

  function fromHash() {  // #split=0.25&left=0&right=2&zoom=4|fit&crop=1
    const p = new URLSearchParams(location.hash.slice(1)), n = layers.length;
    const pick = (key, el) => { if (p.has(key)) el.value = String(Math.min(n - 1, Math.max(0, +p.get(key) || 0))); };
    pick("left", left); pick("right", right);
    const crop = cropButtons[(+p.get("crop") || 0) - 1], zoom = p.get("zoom");
    show(0, 0, W, H);
    if (crop) crop.click();
    else if (zoom && zoom !== "fit") { centre(+zoom || 1); anchor = () => { show(0, 0, W, H); centre(+zoom || 1); }; }
    if (p.has("split")) { split.value = 1000 * +p.get("split"); split.dispatchEvent(new Event("input")); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
</script>
</body>
</html>
"""


def _data_uri(img: io.ImageData) -> str:
    """8-bit PNG of the image (pixels and alpha only: no metadata) as a ``data:`` URI."""
    png = io.encode_image(io.ImageData(pixels=img.pixels, alpha=img.alpha), format="PNG", bit_depth=8)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def build_html(sources: Sequence[Source], crops: Sequence[Crop]) -> str:
    """The self-contained page (see the module docstring) as a string."""
    h, w = sources[0].canvas.shape[:2]
    esc = html.escape

    def options(selected: int) -> str:
        return "".join(f'<option value="{i}"{" selected" if i == selected else ""}>{esc(s.label)}</option>'
                       for i, s in enumerate(sources))

    images = "\n".join(f'<img alt="{esc(s.label)}" title="{esc(s.path)}" src="{_data_uri(s.image)}">' for s in sources)
    buttons = " ".join(f'<button data-crop="{c.x},{c.y},{c.w},{c.h}" title="x={c.x} y={c.y} {c.w}x{c.h}">'
                       f"{i + 1}</button>" for i, c in enumerate(crops))
    fields = {"@TITLE@": esc("realsr compare: " + " | ".join(s.label for s in sources)),
              "@LEFT@": options(0), "@RIGHT@": options(1), "@CROPS@": buttons or "none",
              "@W@": str(w), "@H@": str(h), "@IMAGES@": images}
    return re.sub("|".join(map(re.escape, fields)), lambda m: fields[m.group(0)], _PAGE)


# ----------------------------------------------------------------------------- the command


def compare(paths: Sequence[str], output: str, *, labels: Sequence[str] = (), crops: Sequence[str] = (),
            n_crops: int = 3, crop_size: int = 128, zoom: int = 2,
            max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> CompareReport:
    """Read ``paths``, choose the crops (``crops`` as ``"x,y,w,h"`` strings, else ``n_crops``
    automatic ones of ``crop_size`` px) and write ``output`` (``.png`` grid or ``.html`` page)."""
    t0 = time.perf_counter()
    kind = output_kind(output)
    explicit = [parse_crop(c) for c in crops]
    if n_crops < 1 or crop_size < 1 or zoom < 1:
        raise UsageError("--crops, --crop-size and --zoom must be at least 1")
    for p in paths:  # a comparison never replaces one of the images it compares
        try:
            io.check_not_input(p, output)
        except UsageError as exc:
            raise UsageError(exc.message, hint="choose another -o path") from None
    sources = load_sources(paths, labels, max_pixels=max_pixels)
    size = (sources[0].canvas.shape[1], sources[0].canvas.shape[0])
    for c in explicit:
        check_crop(c, size)
    diff = difference_map([s.canvas for s in sources])
    chosen = [measure(c, diff) for c in explicit] if explicit else pick_crops(diff, n_crops, crop_size)
    dst = Path(output)
    if kind == "png":
        grid = draw_grid(sources, chosen, zoom)
        io.write_image(dst, io.ImageData(pixels=grid.astype(np.float32) / 255), format="PNG", bit_depth=8)
        grid_size: tuple[int, int] | None = (grid.shape[1], grid.shape[0])
    else:
        io.write_bytes_atomic(dst, build_html(sources, chosen).encode("utf-8"))
        grid_size = None
    return CompareReport(output=output, kind=kind, size=size, sources=sources, crops=chosen, zoom=zoom,
                         grid_size=grid_size, seconds=time.perf_counter() - t0)
