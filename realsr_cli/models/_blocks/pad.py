"""Symmetric mirror padding: the edge sample repeated, then the image mirrored (``abc|cba|abc``).

FeMaSR's official ``test()`` pads its input this way (bottom/right), and MATLAB's ``imresize`` reads
its border this way (``symmetric``); ``mirror_pad`` continues the reflection periodically for pads
longer than the image, where the official code breaks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mirror_pad", "mirror_pad_all"]


def mirror_pad(x: Tensor, height: int, width: int) -> Tensor:
    """Pad (B,C,H,W) at the bottom/right to (B,C,height,width) with mirrored copies.

    The copy is symmetric (edge pixel repeated): rows ``H-1, H-2, ...`` follow row ``H-1``, as in
    the official ``test()`` (``cat([x, flip(x)])`` then crop). Pads longer than the image, where
    the official code breaks, continue the same reflection periodically.
    """

    def extend(t: Tensor, dim: int, size: int) -> Tensor:
        n = t.shape[dim]
        pieces, total = [t], n
        while total < size:
            pieces.append(t.flip(dim) if len(pieces) % 2 else t)
            total += n
        return torch.cat(pieces, dim).narrow(dim, 0, size) if len(pieces) > 1 else t

    return extend(extend(x, 2, height), 3, width)


def mirror_pad_all(x: Tensor, pad: int) -> Tensor:
    """Pad (B,C,H,W) by ``pad`` on all four sides with :func:`mirror_pad`'s symmetric reflection."""
    h, w = x.shape[-2:]
    x = mirror_pad(x, h + pad, w + pad).flip(-2, -1)  # bottom/right, then the far sides via a flip
    return mirror_pad(x, h + 2 * pad, w + 2 * pad).flip(-2, -1)
