"""Settings that make a network trace (ONNX export) independently of the example's size.

Both leave every value unchanged: :class:`VectorQuantizer` searches the codebook in row chunks
(memory) and one chunk gives the same indices; :class:`SwinBlock` reuses a shifted-window mask
stored for one input size and computes it per call without one. Networks return these from their
``export_overrides()`` (the ``ExportOverrides`` capability of ``registry/capabilities.py``).
"""

from __future__ import annotations

from torch import nn

from realsr_cli.models._blocks.swin import SwinBlock
from realsr_cli.models._blocks.vq import VectorQuantizer

__all__ = ["tracing_overrides"]


def tracing_overrides(net: nn.Module) -> list[tuple[nn.Module, str, object]]:
    """(module, attribute, value) for every quantizer and Swin block inside ``net``."""
    out: list[tuple[nn.Module, str, object]] = []
    for module in net.modules():
        if isinstance(module, VectorQuantizer):
            out.append((module, "chunk_rows", 1 << 62))  # one chunk: no traced split sizes
        elif isinstance(module, SwinBlock):
            out.append((module, "input_resolution", ()))  # never the stored, size-bound mask
    return out
