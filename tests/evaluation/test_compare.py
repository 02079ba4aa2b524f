"""`realsr compare`'s library: automatic crops find where images differ, explicit crops are checked,
inputs of other sizes line up on one canvas, the grid's geometry and pixels, the page is offline."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realsr_cli.engine import io
from realsr_cli.errors import EXIT_USAGE, UsageError
from realsr_cli.evaluation import compare as cmp


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """(h,w,3) float32 in [0,1]: a small random field, bicubic-enlarged (photo-like, not flat)."""
    small = np.random.default_rng(seed).random((max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return io.resize(small, (h, w), filter="bicubic").clip(0, 1)


def _save(path: Path, px: np.ndarray, alpha: np.ndarray | None = None, bits: int = 8) -> str:
    io.write_image(path, io.ImageData(pixels=px, alpha=alpha, bit_depth=bits), format="PNG")
    return str(path)


def _source(px: np.ndarray, label: str = "x") -> cmp.Source:
    img = io.ImageData(pixels=px)
    return cmp.Source(path=f"{label}.png", label=label, image=img, canvas=cmp.to_canvas(img, (img.width, img.height)))


# ----------------------------------------------------------------------------- automatic crops


def test_pick_crops_finds_a_planted_difference():
    base = _smooth(96, 128, 0)
    other = base.copy()
    other[50:62, 90:102] = 1 - other[50:62, 90:102]  # a 12x12 patch at x=90, y=50
    other[10:14, 10:14] += 0.05  # and a faint one elsewhere
    diff = cmp.difference_map([base, other])
    assert diff.shape == (96, 128) and diff[55, 95] > 0.1 and diff[80, 20] == 0
    (best,) = cmp.pick_crops(diff, 1, 32)
    assert best.auto and (best.w, best.h) == (32, 32)
    assert best.x <= 90 and best.x + 32 >= 102 and best.y <= 50 and best.y + 32 >= 62
    assert best.difference == pytest.approx(float(diff[best.y:best.y + 32, best.x:best.x + 32].mean()))
    three = cmp.pick_crops(diff, 3, 32)
    assert three[0] == best and three == cmp.pick_crops(diff, 3, 32)  # deterministic
    assert [c.difference for c in three] == sorted((c.difference for c in three), reverse=True)
    assert three[1].x <= 10 and three[1].x + 32 >= 14 and three[1].y <= 10 and three[1].y + 32 >= 14
    for i, a in enumerate(three):  # pairwise non-overlapping
        for b in three[i + 1:]:
            assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y


def test_pick_crops_with_three_images_averages_against_the_first():
    a = _smooth(64, 64, 1)
    b, c = a.copy(), a.copy()
    b[40:48, 40:48] = 0.0
    c[40:48, 40:48] = 0.0
    c[0:8, 0:8] = 1 - c[0:8, 0:8]
    diff = cmp.difference_map([a, b, c])
    assert diff[44, 44] == pytest.approx(np.abs(a[44, 44]).mean(), abs=1e-6)  # both differ: full weight
    assert diff[4, 4] == pytest.approx(np.abs(1 - 2 * a[4, 4]).mean() / 2, abs=1e-6)  # one of two: half
    assert cmp.pick_crops(diff, 1, 16)[0].x in range(32, 41)


def test_pick_crops_clamps_to_the_image_and_runs_out_of_room(caplog):
    flat = np.zeros((64, 64), np.float32)
    with caplog.at_level(logging.WARNING, logger="realsr_cli.evaluation.compare"):
        crops = cmp.pick_crops(flat, 5, 32)
    assert [(c.x, c.y) for c in crops] == [(0, 0), (32, 0), (0, 32), (32, 32)]
    assert "only 4 non-overlapping 32x32 crop(s)" in caplog.text
    (whole,) = cmp.pick_crops(np.zeros((20, 50), np.float32), 3, 128)
    assert (whole.x, whole.y, whole.w, whole.h) == (0, 0, 50, 20)


# ----------------------------------------------------------------------------- explicit crops


def test_parse_and_check_explicit_crops():
    assert cmp.parse_crop(" 8, 4,16 ,12") == cmp.Crop(8, 4, 16, 12)
    for bad in ("8,4,16", "a,b,c,d", "1,2,3,4,5", "-1,0,4,4", "0,0,0,4", ""):
        with pytest.raises(UsageError) as exc:
            cmp.parse_crop(bad)
        assert exc.value.exit_code == EXIT_USAGE and exc.value.hint
    cmp.check_crop(cmp.Crop(48, 32, 16, 16), (64, 48))  # touches the bottom-right corner
    with pytest.raises(UsageError, match=r"does not fit in the 64x48 image \(it reaches x=65"):
        cmp.check_crop(cmp.Crop(49, 0, 16, 16), (64, 48))
    with pytest.raises(UsageError, match="y=49"):
        cmp.check_crop(cmp.Crop(0, 33, 16, 16), (64, 48))


def test_compare_uses_and_measures_the_explicit_crops(tmp_path):
    a = _smooth(48, 64, 2)
    b = a.copy()
    b[0:8, 0:8] = 1 - b[0:8, 0:8]
    paths = [_save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b)]
    report = cmp.compare(paths, str(tmp_path / "o.png"), crops=["0,0,8,8", "32,16,16,16"], zoom=1)
    assert [(c.x, c.y, c.w, c.h, c.auto) for c in report.crops] == [(0, 0, 8, 8, False), (32, 16, 16, 16, False)]
    assert report.crops[0].difference > 0.05 and report.crops[1].difference == 0
    with pytest.raises(UsageError, match="does not fit"):
        cmp.compare(paths, str(tmp_path / "p.png"), crops=["60,0,8,8"])
    assert not (tmp_path / "p.png").exists()


# ----------------------------------------------------------------------------- sizes and kinds of input


def test_inputs_of_other_sizes_line_up_on_the_largest(tmp_path, caplog):
    hr = _smooth(48, 64, 3)
    lr = io.resize(hr, (12, 16), filter="area").clip(0, 1)
    paths = [_save(tmp_path / "lr.png", lr), _save(tmp_path / "hr.png", hr)]
    sources = cmp.load_sources(paths)
    assert [s.label for s in sources] == ["lr.png", "hr.png"]
    assert [s.size for s in sources] == [(16, 12), (64, 48)] and [s.resized for s in sources] == [True, False]
    lr8 = io.read_image(paths[0]).pixels
    assert sources[0].canvas.shape == (48, 64, 3)
    assert np.array_equal(sources[0].canvas, lr8.repeat(4, axis=0).repeat(4, axis=1))  # nearest x4
    # gray 16-bit with alpha, and a larger image of another aspect ratio: reduced, warned about
    gray = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32, 1)
    alpha = np.ones((24, 32), np.float32)
    alpha[:, :8] = 0
    wide = _smooth(20, 100, 4)
    paths = [_save(tmp_path / "g16.png", gray, alpha, bits=16), paths[1], _save(tmp_path / "wide.png", wide)]
    with caplog.at_level(logging.WARNING, logger="realsr_cli.evaluation.compare"):
        sources = cmp.load_sources(paths, ["gray", "hr", "wide"])
    assert "wide.png is 100x20, another aspect ratio than 64x48" in caplog.text
    g = sources[0].canvas
    assert g.shape == (48, 64, 3) and np.array_equal(g[..., 0], g[..., 2])  # gray shown as RGB
    assert np.unique(g[:, :16, 0]).tolist() == pytest.approx([0.6, 0.8])  # transparent: the checkerboard
    assert g[0, 63, 0] == pytest.approx(io.read_image(paths[0]).pixels[0, 31, 0])  # 16-bit value kept
    assert sources[2].canvas.shape == (48, 64, 3) and sources[2].resized


def test_inputs_are_checked(tmp_path):
    one = _save(tmp_path / "a.png", _smooth(8, 8, 5))
    with pytest.raises(UsageError, match="at least 2 images"):
        cmp.load_sources([one])
    with pytest.raises(UsageError, match="1 --label for 2 images"):
        cmp.load_sources([one, one], ["only"])
    for bad in ("out.jpg", "out"):
        with pytest.raises(UsageError, match="cannot tell what to write"):
            cmp.output_kind(bad)
    assert cmp.output_kind("x.PNG") == "png" and cmp.output_kind("x.htm") == "html"


# ----------------------------------------------------------------------------- the grid


def test_grid_size_and_cells_are_the_magnified_crops():
    sources = [_source(_smooth(40, 50, i), f"img{i}") for i in range(3)]
    crops = [cmp.Crop(2, 3, 10, 8, 0.1), cmp.Crop(30, 20, 16, 12, 0.05)]
    grid = cmp.draw_grid(sources, crops, zoom=3)
    pad, line = cmp._PAD, cmp._FONT_PX + 8
    col = 16 * 3
    assert grid.dtype == np.uint8 and grid.shape == (
        pad + line + (line + 8 * 3 + pad) + (line + 12 * 3 + pad), pad + 3 * (col + pad), 3)
    for j, s in enumerate(sources):  # the second row's cells, pixel for pixel
        px = io.quantise(s.canvas, 255)[20:32, 30:46]
        y0, x0 = pad + line + (line + 24 + pad) + line, pad + j * (col + pad)
        assert np.array_equal(grid[y0:y0 + 36, x0:x0 + 48], px.repeat(3, axis=0).repeat(3, axis=1))
    # the first row's narrower crop leaves the rest of its column as background; labels are drawn
    y0 = pad + line + line
    assert (grid[y0:y0 + 24, pad + 30:pad + col] == cmp._BG).all()
    assert (grid[pad:pad + line, pad:pad + col] != cmp._BG).any()
    with pytest.raises(UsageError):
        cmp.draw_grid(sources, crops, zoom=0)


# ----------------------------------------------------------------------------- the page


def test_page_is_one_offline_file_with_a_slider():
    a, b = _smooth(16, 24, 6), _smooth(16, 24, 7)
    sources = [_source(a, 'a <b> & "c"'), _source(b, "two")]
    page = cmp.build_html(sources, [cmp.Crop(1, 2, 8, 8, 0.3, True)])
    assert not re.search(r"@[A-Z]+@", page)  # every field filled in
    assert not re.search(r"https?:", page) and "Content-Security-Policy" in page
    assert "default-src 'none'" in page
    srcs = re.findall(r'\ssrc="([^"]*)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    decoded = io.decode_image(base64.b64decode(srcs[0].split(",", 1)[1]))
    assert (decoded.width, decoded.height) == (24, 16)
    assert not re.search(r"<(link|iframe|object|embed)\b", page) and "<script src" not in page
    assert '<input type="range" id="split"' in page and 'data-crop="1,2,8,8"' in page
    assert 'alt="a &lt;b&gt; &amp; &quot;c&quot;"' in page and "<b>" not in page
    assert page.count("<option") == 4 and '<option value="1" selected>two</option>' in page
    assert 'data-width="24" data-height="16"' in page


def test_compare_runs_without_importing_torch(tmp_path):
    """`realsr compare` is image work: it must not pay torch's import (a second or more)."""
    import subprocess
    import sys

    for name in ("a", "b"):
        Image.new("RGB", (16, 16), (10, 200, 30) if name == "a" else (10, 190, 40)).save(tmp_path / f"{name}.png")
    code = ("import sys\n"
            "from realsr_cli.evaluation.compare import compare\n"
            f"compare([{str(tmp_path / 'a.png')!r}, {str(tmp_path / 'b.png')!r}], {str(tmp_path / 'c.png')!r},"
            " crop_size=8)\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False" and (tmp_path / "c.png").is_file()
