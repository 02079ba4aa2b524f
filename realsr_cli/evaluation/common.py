"""What both evaluation forms share: finding image files, pairing them with HR images by relative
path and stem, JSON-safe numbers."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from pathlib import Path

from realsr_cli.engine import io
from realsr_cli.errors import UsageError

__all__ = ["existing_folder", "finite", "hr_partner", "list_images", "selected", "stem_index"]


def existing_folder(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path`; a :class:`UsageError` naming it as ``what`` (e.g. "HR") when
    it is not a folder."""
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"{what} folder not found: {root}", hint="give an existing folder")
    return root


def list_images(root: Path, recursive: bool, skip: Path | None = None) -> list[Path]:
    """Image files in ``root`` (``recursive``: the whole tree), sorted, leaving out anything inside
    ``skip`` (e.g. the folder SR images are being saved to)."""
    found = root.rglob("*") if recursive else root.iterdir()
    keep = []
    for p in sorted(found):
        if not p.is_file() or not io.is_image_path(p):
            continue
        if skip is not None and skip in p.resolve().parents:
            continue
        keep.append(p)
    return keep


def selected(rel: str, name: str, pattern: str | None) -> bool:
    """Whether an image is kept by ``pattern`` (None or "": every image): the pattern matches its
    relative path ``rel`` or its file ``name`` (:func:`fnmatch.fnmatch`)."""
    return not pattern or any(fnmatch.fnmatch(n, pattern) for n in (rel, name))


def stem_index(root: Path, recursive: bool, skip: Path | None = None) -> dict[str, list[Path]]:
    """The images of ``root`` (:func:`list_images`) by relative path without suffix
    (``sub/0801``), each with every file of that stem (``0801.png``, ``0801.jpg`` ...)."""
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(root, recursive, skip):
        by_stem.setdefault(p.relative_to(root).with_suffix("").as_posix(), []).append(p)
    return by_stem


def hr_partner(
    key: str, by_stem: Mapping[str, list[Path]], hr_root: Path
) -> tuple[Path | None, str]:
    """The one HR image of stem ``key`` in ``by_stem`` (:func:`stem_index` of ``hr_root``) and
    "", or None and why there is none (no such image, or several)."""
    matches = by_stem.get(key, [])
    if len(matches) == 1:
        return matches[0], ""
    if not matches:
        return None, f"no HR image {key}.* in {hr_root}"
    return None, f"several HR images match: {', '.join(m.name for m in matches)}"


def finite(x: float) -> float | None:
    """JSON has no infinity: identical images (PSNR inf) are reported as null."""
    return x if math.isfinite(x) else None
