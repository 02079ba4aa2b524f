"""Image I/O for the engine: PNG, JPEG, WebP, TIFF, BMP with their metadata; atomic writes; resize.

Pixels are HxWxC float32 in [0,1], C = 1 (gray) or 3 (RGB); alpha is a separate HxW float32 in
[0,1]. Gray stays one channel, gray+alpha too.

Reading: Pillow parses the header and the pixel count is checked against ``max_pixels`` before
anything is decoded (Pillow's own global limit is off while we decode, so ours is the only one).
8-bit images decode with Pillow, 16-bit PNG/TIFF with OpenCV ``IMREAD_UNCHANGED`` (Pillow reads
16-bit colour as 8 bits). Palette+transparency becomes RGBA; CMYK becomes RGB (its CMYK ICC
profile is dropped). The EXIF orientation (read by Pillow for both decoders) is applied and reset
to 1 in the EXIF kept. ICC profile, EXIF and PNG text chunks are kept and written again (but not
XMP, which may repeat the stale orientation); a TIFF source keeps only its EXIF sub-IFD.

Writing: values are clamped to [0,1] and rounded, ``round(x * maxval)``. 16 bits only in PNG and
TIFF, elsewhere 8 with a warning. JPEG and BMP cannot store alpha: it is dropped with a warning,
never composited. WebP has no gray mode: gray is written as RGB. JPEG is 4:4:4; WebP at quality
100 is lossless. ICC and EXIF go into PNG (``iCCP``/``eXIf``, inserted by us), JPEG, WebP and
8-bit TIFF (uncompressed: Pillow's compressed TIFF writer rejects an EXIF sub-IFD). 16-bit pixels
are encoded by OpenCV: a 16-bit TIFF carries no metadata, and 16-bit gray+alpha is written as RGBA
(neither library writes 16-bit gray+alpha).

Run manifest (model, weights sha256, tile, precision, seed, version; strings) = one compact JSON
object with sorted keys, stored in PNG as a ``tEXt`` chunk with keyword ``realsr`` (plus
``Software``), in JPEG/WebP/TIFF as EXIF ``UserComment`` (ASCII; replaces the source's) plus EXIF
``Software``, in BMP nowhere. :func:`read_manifest` reads it back.

Size (over STYLE's ~300-line guide): every format's metadata rules (ICC, EXIF, PNG chunks, 16-bit) must sit beside the one encoder that applies them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from realsr_cli.errors import ImageIOError, UsageError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2**28  # ~268 MP, e.g. 16384 x 16384
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".webp": "WEBP"}
_SUFFIXES |= {".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}  # Pillow calls some camera JPEGs MPO
_SUPPORTED_HINT = "supported formats: PNG, JPEG, WebP, TIFF, BMP"
_MANIFEST_KEY = "realsr"
_XMP_KEY = "XML:com.adobe.xmp"  # not carried: it may repeat the now stale orientation
_EXIF_PREFIX = b"Exif\x00\x00"
_ASCII_COMMENT = b"ASCII\x00\x00\x00"  # UserComment character-code header
_ORIENTATION, _SOFTWARE, _EXIF_IFD, _USER_COMMENT = 0x0112, 0x0131, 0x8769, 0x9286
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_FILTERS = {"bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4, "area": cv2.INTER_AREA}
_FILTERS |= {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
# EXIF orientation -> the operation that makes an HxW[xC] array upright
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class ImageData:
    """A decoded image and the metadata carried to the output.

    ``pixels`` HxWxC float32 in [0,1], C = 1 (gray) or 3 (RGB); ``alpha`` HxW float32 in [0,1]
    or None; ``bit_depth`` 8 or 16, of the source; ``exif`` as in a JPEG APP1 segment (starts
    with ``b"Exif\\0\\0"``), orientation 1; ``format`` one of :data:`SUPPORTED_FORMATS`;
    ``text`` the PNG text chunks.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str = "PNG"
    text: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3 or self.pixels.shape[2] not in (1, 3):
            raise ValueError(f"pixels must be HxWx1 or HxWx3, got shape {self.pixels.shape}")
        if self.alpha is not None and self.alpha.shape != self.pixels.shape[:2]:
            raise ValueError(f"alpha shape {self.alpha.shape} != pixels {self.pixels.shape[:2]}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


def _canonical_format(name: str) -> str:
    fmt = name.upper().lstrip(".")
    fmt = _ALIASES.get(fmt, fmt)
    if fmt not in SUPPORTED_FORMATS:
        raise UsageError(f"unknown image format {name!r}", hint="use png, jpeg, webp, tiff or bmp")
    return fmt


def format_from_suffix(path: str | os.PathLike[str]) -> str:
    """``"x.JPG"`` -> ``"JPEG"``; an unknown or missing extension is an :class:`ImageIOError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ImageIOError(
            f"cannot tell the image format of {path} from its extension ({suffix or 'none'})",
            hint=f"use one of {', '.join(sorted(_SUFFIXES))}, or pass --format",
        )
    return _SUFFIXES[suffix]


def suffix_for_format(name: str) -> str:
    """``"jpeg"``/``"JPG"`` -> ``".jpg"``: the usual extension of a format name (any case)."""
    return {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt := _canonical_format(name), f".{fmt.lower()}")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the extension names a supported format (batch mode's file filter)."""
    return Path(path).suffix.lower() in _SUFFIXES


# ----------------------------------------------------------------------------- reading

_pil_limit_lock = threading.Lock()


@contextlib.contextmanager
def _our_pixel_limit_only() -> Iterator[None]:
    """Pillow's global bomb check (warns past ~89 MP, raises past ~179 MP) is off while we decode:
    ``max_pixels`` is the only limit. Our decodes are serialised so the old value is restored."""
    with _pil_limit_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageData:
    """Read an image file; see :func:`decode_image`. Every failure is an :class:`ImageIOError`."""
    p = Path(path)
    if p.is_dir():
        raise ImageIOError(f"{p} is a folder, not an image", hint="give an image file")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageIOError(f"{p}: no such file", hint="check the path and spelling") from None
    except OSError as exc:
        msg = f"cannot read {p}: {exc.strerror or exc}"
        raise ImageIOError(msg, hint="check the file's permissions") from exc
    return decode_image(data, max_pixels=max_pixels, name=str(p))


def decode_image(
    data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "<stdin>"
) -> ImageData:
    """Decode an encoded image (file contents, stdin) into an upright :class:`ImageData`.

    Raises :class:`ImageIOError` naming ``name`` for empty, corrupt, truncated, unsupported or
    too large input (more than ``max_pixels`` pixels; ``None`` or 0 = no limit).
    """
    if not data:
        raise ImageIOError(f"{name} is empty (0 bytes)", hint="check that it was fully written")
    try:
        with _our_pixel_limit_only():
            im = Image.open(io.BytesIO(data))
            fmt = _ALIASES.get(str(im.format), str(im.format))
            if fmt not in SUPPORTED_FORMATS:
                raise ImageIOError(f"{name}: unsupported image format {fmt}", hint=_SUPPORTED_HINT)
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise ImageIOError(
                    f"{name} is {w}x{h} = {w * h:,} pixels, more than the limit of "
                    f"{max_pixels:,} (decompression-bomb guard)",
                    hint=f"if you trust the file, pass --max-pixels {w * h} (0 = no limit)",
                )
            bits, gray = _source_layout(im, data)
            colour, alpha = _decode_cv2(data, gray) if bits > 8 else _decode_pil(im, gray)
            text = {str(k): str(v) for k, v in im.text.items()} if fmt == "PNG" else {}  # type: ignore[attr-defined]
            icc = None if im.mode == "CMYK" else im.info.get("icc_profile") or None
            orientation, kept_exif = _exif_of(im)
    except (ImageIOError, MemoryError):
        raise
    except UnidentifiedImageError:
        msg = f"{name} is not an image, or not in a supported format"
        raise ImageIOError(msg, hint=_SUPPORTED_HINT) from None
    except Exception as exc:  # Pillow and OpenCV raise many types for damaged data
        msg = f"cannot decode {name}: {exc}"
        raise ImageIOError(msg, hint="the file is corrupt or truncated: export it again") from exc
    upright = _UPRIGHT.get(orientation, lambda a: a)
    return ImageData(
        pixels=np.ascontiguousarray(upright(colour)),
        alpha=None if alpha is None else np.ascontiguousarray(upright(alpha)),
        bit_depth=16 if bits > 8 else 8,
        icc_profile=icc,
        exif=kept_exif,
        format=fmt,
        text=text,
    )


def _source_layout(im: Image.Image, data: bytes) -> tuple[int, bool]:
    """(bits per sample, is gray) from the PNG header, or Pillow's mode and the TIFF tags."""
    if im.format == "PNG" and data[12:16] == b"IHDR":
        return data[24], data[25] in (0, 4)  # IHDR bit depth; colour type gray, gray+alpha
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return 16, True
    bits = im.tag_v2.get(258, 8) if im.format == "TIFF" else 8  # type: ignore[attr-defined]
    return max(bits) if isinstance(bits, tuple) else int(bits), im.mode in _GRAY_MODES


def _decode_pil(im: Image.Image, gray: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """8-bit decode with Pillow -> (HxWxC colour, HxW alpha or None), float32 in [0,1]."""
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        colour, alpha = rgba[..., :1] if gray else rgba[..., :3], rgba[..., 3] / np.float32(255)
    else:
        colour, alpha = np.asarray(im.convert("L" if gray else "RGB")), None
        colour = colour[..., None] if colour.ndim == 2 else colour
    return colour / np.float32(255), alpha


def _decode_cv2(data: bytes, gray: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit decode with OpenCV -> (HxWxC colour, HxW alpha or None), float32 in [0,1]."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("OpenCV could not decode the pixel data")
    if arr.dtype != np.uint16:
        msg = f"unsupported sample type {arr.dtype}"
        raise ImageIOError(msg, hint="convert the image to 8 or 16 bits per channel")
    arr = arr[..., None] / np.float32(65535) if arr.ndim == 2 else arr / np.float32(65535)
    c = arr.shape[2]
    alpha = arr[..., c - 1] if c in (2, 4) else None
    colour = arr[..., :1] if gray or c < 3 else arr[..., 2::-1]  # OpenCV order is BGR(A)
    return colour, alpha


def _exif_of(im: Image.Image) -> tuple[int, bytes | None]:
    """(EXIF orientation, the EXIF to carry with its orientation reset to 1). An unreadable EXIF
    block is dropped with a warning rather than failing the image."""
    try:
        exif = im.getexif()
        orientation = exif.get(_ORIENTATION, 1)
        if im.format == "TIFF":  # IFD0 describes the old file: carry only the EXIF sub-IFD
            kept, sub = Image.Exif(), exif.get_ifd(_EXIF_IFD)
            kept[_EXIF_IFD] = dict(sub)
            return orientation, kept.tobytes() if sub else None
        raw = im.info.get("exif") or None
        if raw and not exif:  # a block Pillow cannot parse (getexif() says {} without raising)
            body = raw[len(_EXIF_PREFIX):] if raw.startswith(_EXIF_PREFIX) else raw
            Image.Exif().load(body)  # raises on a payload that is not TIFF-structured
            if body[:4] not in (b"II*\x00", b"MM\x00*"):
                raise ValueError("the EXIF payload is not a TIFF structure")
        if raw and orientation != 1:
            exif[_ORIENTATION] = 1
            raw = exif.tobytes()
        return orientation, raw if not raw or raw.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + raw
    except Exception as exc:
        log.warning("ignoring unreadable EXIF data: %s", exc)
        return 1, None


def read_manifest(img: ImageData) -> dict[str, str] | None:
    """The run manifest stored by :func:`encode_image` (PNG text, EXIF UserComment) or None."""
    raw: str | bytes | None = img.text.get(_MANIFEST_KEY)
    if raw is None and img.exif:
        exif = Image.Exif()
        exif.load(img.exif)
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
        if isinstance(comment, bytes) and comment.startswith(_ASCII_COMMENT):
            raw = comment[len(_ASCII_COMMENT) :]
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


# ----------------------------------------------------------------------------- writing


def encode_image(
    img: ImageData,
    *,
    format: str,
    bit_depth: int | None = None,
    quality: int = 95,
    manifest: dict[str, str] | None = None,
) -> bytes:
    """Encode ``img`` as ``format`` (png, jpeg/jpg, webp, tiff/tif, bmp; any case).

    ``bit_depth`` None keeps the source's; ``quality`` 1-100 is for JPEG and WebP. Alpha,
    metadata and ``manifest`` handling: see the module docstring.
    """
    fmt = _canonical_format(format)
    depth = img.bit_depth if bit_depth is None else bit_depth
    if depth not in (8, 16):
        raise UsageError(f"bit depth must be 8 or 16, got {depth}")
    if depth == 16 and fmt not in ("PNG", "TIFF"):
        log.warning("%s holds 8 bits per channel: writing 8-bit (PNG and TIFF hold 16)", fmt)
        depth = 8
    colour, alpha = img.pixels, img.alpha
    if alpha is not None and fmt in ("JPEG", "BMP"):
        log.warning("%s cannot store transparency: alpha dropped (use PNG, WebP or TIFF)", fmt)
        alpha = None
    if colour.shape[2] == 1 and (fmt == "WEBP" or (depth == 16 and alpha is not None)):
        colour = np.repeat(colour, 3, axis=2)  # see the module docstring
    icc = img.icc_profile
    if icc and icc[16:20] != (b"GRAY" if colour.shape[2] == 1 else b"RGB "):
        log.info("ICC profile for colour space %r does not fit the output: dropped", icc[16:20])
        icc = None
    max_val = 65535 if depth == 16 else 255
    arr = quantise(colour, max_val)
    if alpha is not None:
        arr = np.concatenate([arr, quantise(alpha[..., None], max_val)], axis=2)
    try:
        return _encode_with_metadata(img, fmt, arr, depth, icc, manifest, quality)
    except MemoryError:
        raise
    except Exception as exc:
        if not (icc or img.exif or img.text or manifest):
            raise ImageIOError(f"cannot encode the image as {fmt}: {exc}", hint="try another output format") from exc
        # never let metadata cost a computed image: write the pixels without it
        log.warning("cannot write the metadata into the %s output (%s): written without ICC, EXIF "
                    "and manifest", fmt, exc)
    try:
        return _encode_with_metadata(replace(img, icc_profile=None, exif=None, text={}), fmt, arr, depth,
                                     None, None, quality)
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot encode the image as {fmt}: {exc}", hint="try another output format") from exc


def _encode_with_metadata(
    img: ImageData, fmt: str, arr: np.ndarray, depth: int, icc: bytes | None,
    manifest: dict[str, str] | None, quality: int,
) -> bytes:
    """Encode ``arr`` (quantised pixels) as ``fmt`` with the image's metadata (may raise)."""
    if depth == 16:
        if fmt == "TIFF" and (icc or img.exif or manifest):
            log.warning(
                "16-bit TIFF is written without ICC, EXIF and manifest (PNG keeps them)"
            )
        data = _encode_cv2(fmt, arr)
    else:
        exif = img.exif if fmt == "PNG" else _exif_with_manifest(img.exif, manifest)
        data = _encode_pil(fmt, arr, quality=quality, icc=icc, exif=exif)
    if fmt == "PNG":
        text = {k: v for k, v in img.text.items() if k != _XMP_KEY}
        if manifest:
            text["Software"] = str(manifest.get("software", "realsr"))
            text[_MANIFEST_KEY] = _manifest_json(manifest)
        data = _png_insert_chunks(data, icc=icc, exif=img.exif, text=text)
    return data


def quantise(x: np.ndarray, max_val: int) -> np.ndarray:
    """float (overshoot clamped to [0,1], NaN -> 0) -> uint8/uint16 ``round(x * max_val)``."""
    q = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
    np.nan_to_num(q, copy=False, nan=0.0)
    q *= max_val
    np.rint(q, out=q)
    return q.astype(np.uint16 if max_val > 255 else np.uint8)


def _manifest_json(manifest: dict[str, str]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def _exif_with_manifest(exif: bytes | None, manifest: dict[str, str] | None) -> bytes | None:
    """EXIF bytes with the manifest as UserComment and Software set (unchanged without one)."""
    if not manifest:
        return exif
    out = Image.Exif()
    if exif:
        out.load(exif)
    out[_SOFTWARE] = str(manifest.get("software", "realsr"))
    sub = dict(out.get_ifd(_EXIF_IFD))
    sub[_USER_COMMENT] = _ASCII_COMMENT + _manifest_json(manifest).encode()
    out[_EXIF_IFD] = sub
    return out.tobytes()


def _encode_pil(
    fmt: str, arr: np.ndarray, *, quality: int, icc: bytes | None, exif: bytes | None
) -> bytes:
    """8-bit HxWxC (C = 1..4) with Pillow; PNG metadata is inserted by the caller."""
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    opts: dict[str, object] = {}
    if fmt == "JPEG":
        opts = {"quality": quality, "subsampling": 0}
    elif fmt == "WEBP":
        opts = {"quality": quality, "lossless": quality >= 100}
    if fmt in ("JPEG", "WEBP", "TIFF"):
        opts |= {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}
    buf = io.BytesIO()
    im.save(buf, format=fmt, **opts)
    return buf.getvalue()


def _encode_cv2(fmt: str, arr: np.ndarray) -> bytes:
    """16-bit HxWxC (C = 1, 3, 4) PNG or TIFF with OpenCV, without metadata."""
    c = arr.shape[2]
    bgr = np.ascontiguousarray(arr[..., 0] if c == 1 else arr[..., [2, 1, 0, 3][:c]])
    params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if fmt == "PNG" else []
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tif", bgr, params)
    if not ok:
        raise ValueError("OpenCV could not encode the image")
    return buf.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_insert_chunks(
    png: bytes, *, icc: bytes | None, exif: bytes | None, text: dict[str, str]
) -> bytes:
    """Insert iCCP, eXIf and tEXt (iTXt when not Latin-1) chunks right after IHDR."""
    if png[12:16] != b"IHDR":
        raise ValueError("the PNG encoder did not start with an IHDR chunk")
    chunks = []
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(_png_chunk(b"eXIf", exif.removeprefix(_EXIF_PREFIX)))
    for key, value in text.items():
        keyword = key.encode("latin-1", "replace")[:79]  # PNG keywords: 1-79 Latin-1 bytes
        try:
            chunks.append(_png_chunk(b"tEXt", keyword + b"\x00" + value.encode("latin-1")))
        except UnicodeEncodeError:  # iTXt: uncompressed, no language, no translated keyword
            chunks.append(_png_chunk(b"iTXt", keyword + b"\x00" * 5 + value.encode("utf-8")))
    end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, crc
    return png[:end] + b"".join(chunks) + png[end:]


def check_not_input(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> None:
    """Refuse (exit 2) an output that is the input file itself — also through links, ``..`` or a
    hard link — unless ``overwrite``: an upscale must never silently replace the original."""
    if overwrite or "-" in (str(src), str(dst)):
        return
    try:
        same = os.path.samefile(src, dst)
    except OSError:  # dst does not exist (yet), or src is unreadable: nothing to protect
        return
    if same:
        raise UsageError(
            f"the output {dst} is the input file {src}: refusing to replace the original",
            hint="choose another -o path, or add --overwrite to replace the input on purpose",
        )


def write_image(
    path: str | os.PathLike[str],
    img: ImageData,
    *,
    format: str | None = None,
    bit_depth: int | None = None,
    quality: int = 95,
    manifest: dict[str, str] | None = None,
) -> None:
    """Encode ``img`` (see :func:`encode_image`; format from the extension unless given) and
    write it atomically: to ``.<name>.<random>.tmp`` in the destination folder (created as
    needed), fsync, ``os.replace``. On any error or interrupt the temp file is removed and an
    existing ``path`` is left untouched."""
    dst = Path(path)
    fmt = _canonical_format(format) if format else format_from_suffix(dst)
    data = encode_image(img, format=fmt, bit_depth=bit_depth, quality=quality, manifest=manifest)
    write_bytes_atomic(dst, data)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` atomically: to ``.<name>.<random>.tmp`` in the destination folder (created
    as needed), fsync, ``os.replace``. On any error or interrupt the temp file is removed and an
    existing ``path`` is left untouched; an OS error is an :class:`ImageIOError` (exit 4)."""
    dst = Path(path)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            msg = f"cannot write {dst}: {exc.strerror or exc}"
            raise ImageIOError(msg, hint="check the path, permissions and free space") from exc
        raise


# ----------------------------------------------------------------------------- resizing


def resize(pixels: np.ndarray, size: tuple[int, int], *, filter: str = "auto") -> np.ndarray:
    """Resize an HxW or HxWxC (C = 1..4) array to ``size = (h, w)``: float32, not clamped,
    same rank. ``filter``: ``auto`` (area when no side grows, else bicubic), ``bicubic``,
    ``lanczos``, ``area``, ``bilinear`` or ``nearest``."""
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be positive, got {size}")
    src = np.ascontiguousarray(pixels, dtype=np.float32)
    if filter == "auto":
        filter = "area" if h <= src.shape[0] and w <= src.shape[1] else "bicubic"
    if filter not in _FILTERS:
        raise ValueError(f"unknown resize filter {filter!r}: use auto, {', '.join(_FILTERS)}")
    if (h, w) == src.shape[:2]:
        return src.copy()
    return cv2.resize(src, (w, h), interpolation=_FILTERS[filter]).reshape(h, w, *src.shape[2:])
