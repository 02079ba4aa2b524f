"""Image I/O: round trips per format and bit depth, metadata, orientation, guards, atomic writes."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from realsr_cli.engine import io as rio
from realsr_cli.errors import ImageIOError, UsageError
from tests.parity import shared_dir

MANIFEST = {"model": "femasr-x4", "weights_sha256": "ab" * 32, "tile": "256", "seed": "7"}
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def inputs():
    """The real test images in ../shared/data (fails loudly when missing)."""
    return shared_dir() / "data" / "RealESRGAN_inputs"


def _rng_image(h=12, w=17, c=3, alpha=False, bit_depth=8, seed=0) -> rio.ImageData:
    """Random pixels already on the ``bit_depth`` grid, so a lossless round trip is exact."""
    rng = np.random.default_rng(seed)
    m = 65535 if bit_depth == 16 else 255
    pix = (rng.integers(0, m + 1, (h, w, c)) / m).astype(np.float32)
    a = (rng.integers(0, m + 1, (h, w)) / m).astype(np.float32) if alpha else None
    return rio.ImageData(pixels=pix, alpha=a, bit_depth=bit_depth)


def _png_bytes(w: int, h: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A hand-made PNG (for layouts Pillow and OpenCV do not write)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("fmt", "suffix", "c", "alpha", "bit_depth"),
    [
        ("PNG", ".png", 3, False, 8),
        ("PNG", ".png", 3, True, 8),
        ("PNG", ".png", 1, False, 8),
        ("PNG", ".png", 1, True, 8),
        ("PNG", ".png", 3, False, 16),
        ("PNG", ".png", 3, True, 16),
        ("PNG", ".png", 1, False, 16),
        ("TIFF", ".tif", 3, True, 8),
        ("TIFF", ".tiff", 1, False, 8),
        ("TIFF", ".tif", 3, False, 16),
        ("TIFF", ".tif", 3, True, 16),
        ("TIFF", ".tif", 1, False, 16),
        ("WEBP", ".webp", 3, True, 8),
        ("BMP", ".bmp", 3, False, 8),
        ("BMP", ".bmp", 1, False, 8),
    ],
)
def test_lossless_round_trip_is_exact(tmp_path, fmt, suffix, c, alpha, bit_depth):
    img = _rng_image(c=c, alpha=alpha, bit_depth=bit_depth)
    dst = tmp_path / f"out{suffix}"
    rio.write_image(dst, img, quality=100)  # WebP at quality 100 is lossless
    back = rio.read_image(dst)
    assert back.format == fmt and back.bit_depth == bit_depth
    assert back.pixels.dtype == np.float32 and back.pixels.shape == img.pixels.shape
    np.testing.assert_array_equal(back.pixels, img.pixels)
    assert back.has_alpha == alpha
    if alpha:
        np.testing.assert_array_equal(back.alpha, img.alpha)


def test_webp_gray_comes_back_as_rgb(tmp_path):
    img = _rng_image(c=1)
    rio.write_image(tmp_path / "g.webp", img, quality=100)
    back = rio.read_image(tmp_path / "g.webp")
    assert back.pixels.shape[2] == 3
    np.testing.assert_array_equal(back.pixels[..., 1:2], img.pixels)


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path, c):
    smooth = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48, 1)
    img = rio.ImageData(pixels=np.repeat(smooth, c, axis=2))
    rio.write_image(tmp_path / "a.jpg", img, quality=95)
    back = rio.read_image(tmp_path / "a.jpg")
    assert back.format == "JPEG" and back.is_gray == (c == 1) and back.bit_depth == 8
    assert np.abs(back.pixels - img.pixels).max() < 0.03


def test_jpeg_drops_alpha_with_a_warning(tmp_path, caplog):
    img = _rng_image(alpha=True)
    with caplog.at_level(logging.WARNING, logger="realsr_cli.engine.io"):
        rio.write_image(tmp_path / "a.jpg", img)
    assert "alpha dropped" in caplog.text
    assert not rio.read_image(tmp_path / "a.jpg").has_alpha


def test_16_bit_request_for_8_bit_format_writes_8_with_a_warning(tmp_path, caplog):
    img = _rng_image(bit_depth=16)
    with caplog.at_level(logging.WARNING, logger="realsr_cli.engine.io"):
        rio.write_image(tmp_path / "a.webp", img, quality=100)
    assert "8-bit" in caplog.text
    assert rio.read_image(tmp_path / "a.webp").bit_depth == 8


def test_bit_depth_override(tmp_path):
    img = _rng_image(bit_depth=8)
    rio.write_image(tmp_path / "a.png", img, bit_depth=16)
    back = rio.read_image(tmp_path / "a.png")
    assert back.bit_depth == 16
    np.testing.assert_allclose(back.pixels, img.pixels, atol=1e-6)
    with pytest.raises(UsageError):
        rio.encode_image(img, format="png", bit_depth=12)


def test_16_bit_gray_alpha_is_read_as_gray(tmp_path):
    # colour type 4 (gray+alpha) at 16 bits: OpenCV expands it to BGRA, we must keep one channel
    rows = b"".join(b"\x00" + np.array([[1000, 60000]] * 5, ">u2").tobytes() for _ in range(3))
    img = rio.decode_image(_png_bytes(5, 3, 16, 4, rows))
    assert img.is_gray and img.bit_depth == 16 and img.pixels.shape == (3, 5, 1)
    np.testing.assert_allclose(img.pixels, 1000 / 65535, rtol=1e-6)
    np.testing.assert_allclose(img.alpha, 60000 / 65535, rtol=1e-6)
    rio.write_image(tmp_path / "ga.png", img)  # documented: written as 16-bit RGBA
    back = rio.read_image(tmp_path / "ga.png")
    assert back.bit_depth == 16
    np.testing.assert_allclose(back.pixels, np.repeat(img.pixels, 3, axis=2), atol=1e-6)
    np.testing.assert_allclose(back.alpha, img.alpha, atol=1e-6)


def test_quantisation_clamps_overshoot_and_rounds():
    pix = np.array([[[-0.2], [0.5], [1.3], [np.nan], [0.2 / 255]]], dtype=np.float32)
    data = rio.encode_image(rio.ImageData(pixels=pix), format="png")
    assert np.asarray(Image.open(io.BytesIO(data))).tolist() == [[0, 128, 255, 0, 0]]


def test_palette_png_with_transparency_becomes_rgba(tmp_path):
    im = Image.new("P", (6, 4))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 3, 4))
    im.save(tmp_path / "p.png", transparency=1)
    img = rio.read_image(tmp_path / "p.png")
    assert not img.is_gray and img.has_alpha and img.bit_depth == 8
    assert img.alpha[0, 0] == 0 and img.alpha[0, 5] == 1
    np.testing.assert_array_equal(img.pixels[0, 5], [1, 0, 0])


def test_cmyk_jpeg_becomes_rgb_without_its_cmyk_profile(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    img = rio.read_image(tmp_path / "c.jpg")
    assert img.pixels.shape == (6, 8, 3) and img.icc_profile is None
    np.testing.assert_allclose(img.pixels[3, 4], [1, 0, 0], atol=0.02)


# ----------------------------------------------------------------------------- real inputs


def test_real_16_bit_rgba_keeps_16_bits_and_alpha(tmp_path, inputs):
    img = rio.read_image(inputs / "tree_alpha_16bit.png")
    assert img.bit_depth == 16 and img.has_alpha and not img.is_gray
    assert (img.width, img.height) == (342, 256) and img.pixels.dtype == np.float32
    raw = Image.open(inputs / "tree_alpha_16bit.png")  # Pillow itself only sees 8 bits
    assert np.abs(img.alpha * 255 - np.asarray(raw)[..., 3]).max() <= 1
    # values that are not multiples of 257 prove real 16-bit data
    assert np.any(np.round(img.pixels * 65535) % 257 != 0)
    assert img.icc_profile and img.icc_profile[16:20] == b"RGB "
    rio.write_image(tmp_path / "t.png", img)
    back = rio.read_image(tmp_path / "t.png")
    assert back.bit_depth == 16 and back.icc_profile == img.icc_profile
    np.testing.assert_array_equal(back.pixels, img.pixels)
    np.testing.assert_array_equal(back.alpha, img.alpha)


@pytest.mark.parametrize(
    ("name", "gray", "alpha"),
    [
        ("children-alpha.png", False, True),
        ("00017_gray.png", True, False),
        ("wolf_gray.jpg", True, False),
        ("0014.jpg", False, False),
        ("OST_009.png", False, False),
    ],
)
def test_real_inputs(tmp_path, inputs, name, gray, alpha):
    img = rio.read_image(inputs / name)
    assert img.is_gray == gray and img.has_alpha == alpha and img.bit_depth == 8
    ref = np.asarray(Image.open(inputs / name).convert("LA" if gray else "RGBA"))
    np.testing.assert_array_equal(np.round(img.pixels * 255), ref[..., :-1])
    if alpha:
        np.testing.assert_array_equal(np.round(img.alpha * 255), ref[..., -1])
    rio.write_image(tmp_path / "o.png", img)
    back = rio.read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(back.pixels, img.pixels)


def test_real_gray_jpeg_keeps_icc_and_exif(tmp_path, inputs):
    img = rio.read_image(inputs / "wolf_gray.jpg")
    assert img.icc_profile and img.icc_profile[16:20] == b"GRAY" and img.exif
    rio.write_image(tmp_path / "w.jpg", img)
    back = rio.read_image(tmp_path / "w.jpg")
    assert back.icc_profile == img.icc_profile
    assert Image.open(tmp_path / "w.jpg").getexif()[0x0131] == "Adobe Photoshop CC 2018 (Windows)"


# ----------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_preserved(tmp_path, suffix):
    src = tmp_path / "src.jpg"
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(src, icc_profile=SRGB, exif=exif)
    img = rio.read_image(src)
    assert img.icc_profile == SRGB and img.exif.startswith(b"Exif\x00\x00")
    rio.write_image(tmp_path / f"out{suffix}", img)
    back = rio.read_image(tmp_path / f"out{suffix}")
    assert back.icc_profile == SRGB
    assert Image.open(tmp_path / f"out{suffix}").getexif()[0x010F] == "TestCam"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_manifest_readable_back(tmp_path, suffix):
    img = _rng_image()
    manifest = {**MANIFEST, "software": "realsr 9.9"}
    rio.write_image(tmp_path / f"m{suffix}", img, manifest=manifest)
    back = rio.read_image(tmp_path / f"m{suffix}")
    assert rio.read_manifest(back) == manifest
    if suffix == ".png":
        assert back.text["Software"] == "realsr 9.9"
        assert back.text["realsr"].startswith("{") and "femasr-x4" in back.text["realsr"]
    else:
        assert Image.open(tmp_path / f"m{suffix}").getexif()[0x0131] == "realsr 9.9"
    assert rio.read_manifest(_rng_image()) is None


def test_png_text_round_trip_and_utf8(tmp_path):
    img = _rng_image()
    img.text = {"Comment": "café", "Title": "日本"}
    rio.write_image(tmp_path / "t.png", img)
    assert rio.read_image(tmp_path / "t.png").text == {"Comment": "café", "Title": "日本"}


def test_16_bit_png_keeps_all_metadata(tmp_path):
    img = _rng_image(bit_depth=16, alpha=True)
    img.icc_profile = SRGB
    rio.write_image(tmp_path / "a.png", img, manifest=MANIFEST)
    back = rio.read_image(tmp_path / "a.png")
    assert back.bit_depth == 16 and back.icc_profile == SRGB and rio.read_manifest(back) == MANIFEST


def test_mismatched_icc_is_dropped():
    img = _rng_image(c=1)
    img.icc_profile = SRGB  # an RGB profile cannot describe a gray PNG
    assert rio.decode_image(rio.encode_image(img, format="png")).icc_profile is None


# ----------------------------------------------------------------------------- orientation

# EXIF orientation -> the Pillow operation a camera's stored pixels need to display upright
_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {**_FIX, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _upright_test_image() -> Image.Image:
    """64x32, four flat 16-aligned quadrants of distinct colours: no symmetry, JPEG-friendly."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:16, :32], arr[:16, 32:] = (250, 10, 10), (10, 250, 10)
    arr[16:, :32], arr[16:, 32:] = (10, 10, 250), (250, 250, 10)
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path, orientation):
    upright = _upright_test_image()
    stored = upright.transpose(_INVERSE[orientation]) if orientation > 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, quality=98, subsampling=0, exif=exif)  # 4:4:4: no chroma bleeding

    img = rio.read_image(path)
    assert (img.width, img.height) == upright.size
    np.testing.assert_allclose(img.pixels, np.asarray(upright) / 255, atol=0.06)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path))) / 255
    np.testing.assert_allclose(img.pixels, expected, atol=1e-6)  # same decoder: exact
    kept = Image.Exif()
    kept.load(img.exif)
    assert kept[0x0112] == 1 and kept[0x010F] == "TestCam"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_tiff(tmp_path, orientation):
    upright = _upright_test_image()
    stored = upright.transpose(_INVERSE[orientation]) if orientation > 1 else upright
    stored.save(tmp_path / "o.tif", exif={0x0112: orientation})
    img = rio.read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(np.round(img.pixels * 255), np.asarray(upright))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_the_opencv_path(tmp_path, orientation):
    # 16-bit PNG with eXIf: OpenCV decodes the pixels, Pillow reads the orientation
    stored = _rng_image(h=6, w=9, bit_depth=16, alpha=True, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.exif = exif.tobytes()
    rio.write_image(tmp_path / "o.png", stored)
    img = rio.read_image(tmp_path / "o.png")
    # reference: Pillow's own transpose of its 8-bit view (the high byte of each sample)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(_high_byte(img.pixels), ref[..., :3])
    np.testing.assert_array_equal(_high_byte(img.alpha), ref[..., 3])
    kept = Image.Exif()
    kept.load(img.exif)
    assert img.bit_depth == 16 and kept[0x0112] == 1


def _high_byte(x: np.ndarray) -> np.ndarray:
    return np.round(x * 65535).astype(np.int64) >> 8


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_dropped_not_fatal():
    data = rio.encode_image(_rng_image(), format="jpeg")
    app1 = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage"  # IFD offset far past the end
    broken = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    img = rio.decode_image(broken)
    assert img.width == 17 and img.height == 12


# ----------------------------------------------------------------------------- errors and guards


def test_bomb_guard_checks_the_header_before_decoding(tmp_path):
    # claims 60000 x 60000 (3.6 GP) with no pixel data: decoding would need ~10 GB
    bomb = _png_bytes(60000, 60000, 8, 2, b"")
    with pytest.raises(ImageIOError) as exc:
        rio.decode_image(bomb, name="bomb.png")
    assert "bomb.png" in exc.value.message and "3,600,000,000" in exc.value.message
    assert "--max-pixels 3600000000" in exc.value.hint
    rio.write_image(tmp_path / "a.png", _rng_image(h=10, w=10))
    with pytest.raises(ImageIOError, match="more than the limit of 99"):
        rio.read_image(tmp_path / "a.png", max_pixels=99)
    assert rio.read_image(tmp_path / "a.png", max_pixels=100).width == 10


@pytest.mark.parametrize("limit", [None, 0])
def test_bomb_guard_off_overrides_pillows_own_limit(tmp_path, monkeypatch, limit):
    import warnings

    rio.write_image(tmp_path / "a.png", _rng_image(h=10, w=10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow would raise past 40 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rio.read_image(tmp_path / "a.png", max_pixels=limit).width == 10
    assert Image.MAX_IMAGE_PIXELS == 20  # restored


def test_missing_directory_and_empty_inputs(tmp_path):
    with pytest.raises(ImageIOError, match="no such file") as exc:
        rio.read_image(tmp_path / "nope.png")
    assert exc.value.exit_code == 4 and exc.value.hint
    with pytest.raises(ImageIOError, match="is a folder") as exc:
        rio.read_image(tmp_path)
    assert exc.value.hint
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageIOError, match="empty.png is empty") as exc:
        rio.read_image(tmp_path / "empty.png")
    assert exc.value.hint


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp", "-16.png"])
def test_truncated_files(tmp_path, suffix):
    img = _rng_image(h=64, w=64, bit_depth=16 if suffix == "-16.png" else 8)
    good = tmp_path / f"good{suffix}"
    rio.write_image(good, img, format=suffix.rsplit(".", 1)[1])
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageIOError) as exc:
        rio.read_image(bad)
    assert str(bad) in exc.value.message and exc.value.hint and isinstance(exc.value, OSError)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello, I am text", "not an image"),
        (b"\xff\xd8\xff\xe0garbage", "not an image|cannot decode"),
        (b"\x89PNG\r\n\x1a\nnot really a png", "not an image|cannot decode"),
    ],
)
def test_corrupt_bytes(data, match):
    with pytest.raises(ImageIOError, match=match) as exc:
        rio.decode_image(data, name="x.bin")
    assert "x.bin" in exc.value.message and exc.value.hint


def test_unsupported_format(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.gif")
    with pytest.raises(ImageIOError, match="unsupported image format GIF") as exc:
        rio.read_image(tmp_path / "a.gif")
    assert "PNG" in exc.value.hint


def test_output_format_from_suffix(tmp_path):
    assert rio.format_from_suffix("a/B.JPG") == "JPEG"
    assert rio.format_from_suffix("x.tiff") == "TIFF"
    assert rio.is_image_path("x.WebP")
    assert not rio.is_image_path("x.gif") and not rio.is_image_path("x")
    assert rio.suffix_for_format("jpeg") == ".jpg" and rio.suffix_for_format("PNG") == ".png"
    with pytest.raises(ImageIOError, match="extension") as exc:
        rio.write_image(tmp_path / "out.xyz", _rng_image())
    assert ".png" in exc.value.hint
    with pytest.raises(UsageError):
        rio.encode_image(_rng_image(), format="gif")
    rio.write_image(tmp_path / "out.xyz", _rng_image(), format="jpg")  # explicit format wins
    assert rio.read_image(tmp_path / "out.xyz").format == "JPEG"


def test_decode_from_bytes_like_stdin():
    data = rio.encode_image(_rng_image(alpha=True), format="PNG")
    img = rio.decode_image(data)
    assert img.has_alpha and img.format == "PNG"
    np.testing.assert_array_equal(img.pixels, _rng_image(alpha=True).pixels)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path):
    dst = tmp_path / "a" / "b" / "out.png"
    rio.write_image(dst, _rng_image())
    assert sorted(p.name for p in dst.parent.iterdir()) == ["out.png"]
    assert oct(dst.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_encoder_failure_keeps_the_old_destination(tmp_path, monkeypatch):
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(rio, "_encode_pil", boom)
    with pytest.raises(ImageIOError, match="encoder exploded"):
        rio.write_image(dst, _rng_image())
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_interrupted_write_removes_temp_and_keeps_old(tmp_path, monkeypatch, error):
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")

    def fail(fd):
        raise error

    monkeypatch.setattr(rio.os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt if error is KeyboardInterrupt else ImageIOError):
        rio.write_image(dst, _rng_image())
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_write_onto_a_directory_is_an_image_io_error(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageIOError, match="cannot write"):
        rio.write_image(tmp_path / "d.png", _rng_image())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]


# ----------------------------------------------------------------------------- resize


@pytest.mark.parametrize("shape", [(10, 14), (10, 14, 1), (10, 14, 3), (10, 14, 4)])
def test_resize_shapes_and_dtype(shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    up = rio.resize(x, (25, 31))
    down = rio.resize(x, (5, 7))
    assert up.shape == (25, 31, *shape[2:]) and down.shape == (5, 7, *shape[2:])
    assert up.dtype == np.float32 and down.dtype == np.float32


def test_resize_quality():
    const = np.full((8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(rio.resize(const, (24, 24)), 0.25, atol=1e-6)
    # area downscaling by 2 is the 2x2 mean
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(rio.resize(x, (2, 2)), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(rio.resize(x, (4, 4)), x)
    np.testing.assert_allclose(rio.resize(x, (8, 8), filter="lanczos").mean(), x.mean(), atol=0.2)
    with pytest.raises(ValueError):
        rio.resize(x, (0, 3))
    with pytest.raises(ValueError):
        rio.resize(x, (3, 3), filter="sinc")


def test_image_data_validates_layout():
    with pytest.raises(ValueError):
        rio.ImageData(pixels=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        rio.ImageData(pixels=np.zeros((4, 4, 3), np.float32), alpha=np.zeros((3, 4), np.float32))
    img = rio.ImageData(pixels=np.zeros((4, 5, 1), np.float32))
    assert (img.height, img.width, img.is_gray, img.has_alpha) == (4, 5, True, False)


def _bad_exif_jpeg(path) -> None:
    """A JPEG whose APP1 "Exif" payload is not TIFF-structured (common in real photo collections)."""
    Image.new("RGB", (16, 16), (100, 50, 20)).save(path, exif=b"Exif\x00\x00" + b"\x13\x37not-tiff" * 4)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".png"])
def test_unreadable_exif_is_dropped_with_a_warning_and_the_image_still_writes(tmp_path, caplog, suffix):
    """Issue 18 (1): such a file failed after the compute with 'not a TIFF file' (exit 4)."""
    src = tmp_path / "bad_exif.jpg"
    _bad_exif_jpeg(src)
    with caplog.at_level(logging.WARNING):
        img = rio.read_image(src)
    assert img.exif is None and "unreadable EXIF" in caplog.text
    dst = tmp_path / f"out{suffix}"
    rio.write_image(dst, img, manifest={"software": "realsr test"})
    assert Image.open(dst).size == (16, 16)


def test_metadata_that_cannot_be_written_never_costs_the_image(tmp_path, caplog, monkeypatch):
    """If the metadata still fails to encode, the pixels are written without it, with a warning."""
    real = rio._exif_with_manifest

    def boom(exif, manifest):
        if exif or manifest:
            raise ValueError("broken metadata")
        return real(exif, manifest)

    monkeypatch.setattr(rio, "_exif_with_manifest", boom)
    img = _rng_image()
    img = rio.ImageData(pixels=img.pixels, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00")
    with caplog.at_level(logging.WARNING):
        rio.write_image(tmp_path / "o.jpg", img, manifest={"software": "x"})
    assert "written without ICC, EXIF and manifest" in caplog.text
    assert Image.open(tmp_path / "o.jpg").size == (17, 12)
