"""What both evaluation forms share: finding image files, JSON-safe numbers."""

from __future__ import annotations

import math
from pathlib import Path

from realsr_cli.engine import io

__all__ = ["finite", "list_images"]


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


def finite(x: float) -> float | None:
    """JSON has no infinity: identical images (PSNR inf) are reported as null."""
    return x if math.isfinite(x) else None
