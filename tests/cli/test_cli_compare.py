"""`realsr compare` end to end on real images: PNG grid, HTML page, --json, usage errors; and the
page in a real headless browser (Debian's chromium): the slider moves the split, the selectors pick
the images, zoom magnifies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realsr_cli.cli._schemas import validate
from realsr_cli.engine import io
from tests.cli.conftest import run_cli
from tests.parity import shared_dir


@pytest.fixture(scope="module")
def bird(tmp_path_factory) -> dict[str, str]:
    """Set5's bird (288x288), its x4 area-downscaled LR (72x72) and the bicubic x4 of that LR."""
    tmp = tmp_path_factory.mktemp("bird")
    hr = str(shared_dir() / "data" / "Set5" / "bird.png")
    lr = io.resize(io.read_image(hr).pixels, (72, 72), filter="area").clip(0, 1)
    io.write_image(tmp / "lr.png", io.ImageData(pixels=lr))
    bicubic = io.resize(io.read_image(tmp / "lr.png").pixels, (288, 288), filter="bicubic").clip(0, 1)
    io.write_image(tmp / "bicubic.png", io.ImageData(pixels=bicubic))
    return {"lr": str(tmp / "lr.png"), "bicubic": str(tmp / "bicubic.png"), "hr": hr}


def test_png_grid_of_real_images_with_json(bird, tmp_path):
    out = tmp_path / "cmp.png"
    res = run_cli(["compare", bird["lr"], bird["bicubic"], bird["hr"], "-o", str(out), "--zoom", "2",
                   "--crop-size", "64", "--label", "LR x4", "-l", "bicubic", "-l", "HR", "--json"])
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert validate(doc, "compare") == [], doc
    assert doc["output"] == str(out) and doc["format"] == "png" and doc["size"] == [288, 288] and doc["zoom"] == 2
    assert [(i["label"], i["size"], i["resized"]) for i in doc["images"]] == [
        ("LR x4", [72, 72], True), ("bicubic", [288, 288], False), ("HR", [288, 288], False)]
    crops = doc["crops"]
    assert len(crops) == 3 and all(c["auto"] and (c["w"], c["h"]) == (64, 64) for c in crops)
    assert crops[0]["difference"] >= crops[1]["difference"] >= crops[2]["difference"] > 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB" and list(im.size) == doc["grid_size"]
        assert im.size[0] > 3 * 128 and im.size[1] > 3 * 128
    assert "LR x4: 72x72 shown at 288x288" in res.stderr and "crop 1 (auto)" in res.stderr
    assert not list(tmp_path.glob("*.tmp"))
    # the same command again gives the same bytes (deterministic crops and drawing)
    again = tmp_path / "again.png"
    res = run_cli(["compare", bird["lr"], bird["bicubic"], bird["hr"], "-o", str(again), "--zoom", "2",
                   "--crop-size", "64", "--label", "LR x4", "-l", "bicubic", "-l", "HR"])
    assert res.code == 0 and res.stdout == b"" and again.read_bytes() == out.read_bytes()


def test_explicit_crops_and_html_of_gray_16bit_alpha_inputs(tmp_path):
    data = shared_dir() / "data" / "RealESRGAN_inputs"
    names = ["00017_gray.png", "tree_alpha_16bit.png", "children-alpha.png"]  # 500x351, 342x256, 566x350
    page = tmp_path / "sub" / "cmp.html"
    res = run_cli(["compare", *[str(data / n) for n in names], "-o", str(page),
                   "--crop", "0,0,100,50", "--crop", "466,300,100,50", "--json"])
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert validate(doc, "compare") == [] and doc["format"] == "html" and doc["grid_size"] is None
    assert doc["size"] == [566, 350] and [i["label"] for i in doc["images"]] == names
    assert [(c["x"], c["y"], c["auto"]) for c in doc["crops"]] == [(0, 0, False), (466, 300, False)]
    text = page.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == 3 and not re.search(r"https?:", text)
    assert 'data-crop="466,300,100,50"' in text and "another aspect ratio" in res.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--crop", "500,0,100,100"], 2, "does not fit in the 288x288 image"),
        (["--crop", "10,10,64"], 2, "is not x,y,w,h"),
        (["--label", "only one"], 2, "1 --label for 2 images"),
        (["--zoom", "0"], 2, "--zoom"),
        (["-o", "OUT.jpg"], 2, "cannot tell what to write"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(bird, tmp_path, capsys, args, code, message):
    out = tmp_path / "cmp.png"
    res = run_cli(["compare", bird["lr"], bird["hr"], "-o", str(out), *args, "--json"])
    assert res.code == code, res.stderr
    assert message in res.stderr + capsys.readouterr().err and res.stdout == b""  # click writes to sys.stderr
    assert list(tmp_path.iterdir()) == []


def test_one_image_is_a_usage_error_and_a_missing_one_an_io_error(bird, tmp_path):
    res = run_cli(["compare", bird["hr"], "-o", str(tmp_path / "c.png")])
    assert res.code == 2 and "at least 2 images" in res.stderr and "hint:" in res.stderr
    res = run_cli(["compare", bird["hr"], str(tmp_path / "nope.png"), "-o", str(tmp_path / "c.png")])
    assert res.code == 4 and "no such file" in res.stderr


# ----------------------------------------------------------------------------- a real browser

WINDOW = (800, 600)


def _browser() -> str | None:
    named = os.environ.get("REALSR_CHROMIUM")
    if named:
        return named
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def _screenshot(browser: str, page: Path, fragment: str, tmp: Path) -> np.ndarray:
    shot = tmp / f"shot{len(list(tmp.glob('shot*.png')))}.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=3000", f"--screenshot={shot}", f"{page.as_uri()}#{fragment}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _near(px: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (np.abs(px - colour) <= 10).all(axis=-1)


def _first(row: np.ndarray, colour: tuple[int, int, int], start: int = 0) -> int:
    """The first column at or after ``start`` whose pixel is ``colour`` (within 10)."""
    hits = np.flatnonzero(_near(row[start:], colour))
    assert hits.size, f"no pixel near {colour} in the row"
    return start + int(hits[0])


def _middle_row(shot: np.ndarray, x: int, colour: tuple[int, int, int]) -> np.ndarray:
    """The row in the middle of those whose pixel at column ``x`` is ``colour``."""
    rows = np.flatnonzero(_near(shot[:, x], colour))
    assert rows.size > 20, f"column {x} has no run of {colour}"
    return shot[int(rows[rows.size // 2])]


def test_page_in_a_headless_browser(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser: install Debian's `chromium` (or set REALSR_CHROMIUM) to run this test")
    black, white, red = (0, 0, 0), (255, 255, 255), (255, 0, 0)
    paths = []
    for name, colour in (("black", black), ("white", white), ("red", red)):
        px = np.broadcast_to(np.array(colour, np.float32) / 255, (90, 160, 3)).copy()
        io.write_image(tmp_path / f"{name}.png", io.ImageData(pixels=px))
        paths.append(str(tmp_path / f"{name}.png"))
    page = tmp_path / "cmp.html"
    res = run_cli(["compare", *paths, "-o", str(page), "--crops", "1", "--crop-size", "16"])
    assert res.code == 0, res.stderr
    shots = {f: _screenshot(browser, page, f, tmp_path) for f in ("split=0.25", "split=0.75", "split=0.5&left=2&right=0",
                                                                  "zoom=2")}
    # left image (black) up to the split line, right image (white) after it: the split follows the slider
    splits = {}
    for f in ("split=0.25", "split=0.75"):
        line = _middle_row(shots[f], 80, black)
        splits[f] = _first(line, white)
        assert _near(line[WINDOW[0] - 80], white)
        assert abs(_first(line, (255, 212, 0)) - splits[f]) <= 3  # the yellow line marks it
    assert abs(splits["split=0.25"] - 0.25 * WINDOW[0]) <= 3 and abs(splits["split=0.75"] - 0.75 * WINDOW[0]) <= 3
    # the selectors: red on the left, black on the right of the middle
    line = _middle_row(shots["split=0.5&left=2&right=0"], 80, red)
    assert _near(line[WINDOW[0] - 80], black)
    assert abs(_first(line, black, 80) - WINDOW[0] / 2) <= 3
    # zoom=2: one image pixel per 2 screen pixels, centred: the black/white image is 320 px wide
    line = _middle_row(shots["zoom=2"], WINDOW[0] // 2 - 80, black)
    left_edge = _first(line, black)
    right_edge = _first(line, white, left_edge)
    assert abs(left_edge - (WINDOW[0] / 2 - 160)) <= 3 and abs(right_edge - WINDOW[0] / 2) <= 3
    assert _near(line[5], (32, 32, 32)) and _near(line[WINDOW[0] - 5], (32, 32, 32))  # the background


def test_output_that_is_one_of_the_inputs_is_refused(bird, tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(Path(bird["bicubic"]).read_bytes())
    before = a.read_bytes()
    res = run_cli(["compare", bird["lr"], str(a), "-o", str(tmp_path / "." / "a.png")])
    assert res.code == 2 and "refusing to replace the original" in res.stderr
    assert "choose another -o path" in res.stderr and "--overwrite" not in res.stderr
    assert a.read_bytes() == before
