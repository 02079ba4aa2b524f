"""Optional capabilities of a model network, declared once and asked for by name.

Every network the registry builds has ``upscale`` (``registry/archs.py``). Some have more, and the
engine and evaluation use that through these protocols — ``has(net, AuxiliaryMaps)`` — never by
probing attribute names or importing model code. A model package provides a capability by
implementing the protocol's members; the tests in ``tests/registry/test_capabilities.py`` list
which architectures provide which.

=====================  ==============================================  ====================
capability              what the engine/evaluation does with it        provided by
=====================  ==============================================  ====================
``TileNotes``           told how many tiles an upscale used            community models
``ManifestExtra``       extra entries for the output's run manifest    SSR, community
``AuxiliaryMaps``       ``--save-aux``: depth + kernel-variance maps    SSR
``DepthConditioned``    ``--depth-estimator``: swap its depth network   SSR
``CodebookMatching``    ``realsr eval --hr-prior``: code accuracy       FeMaSR, UGTSR
``ExportOverrides``     value-preserving settings while ONNX-tracing    FeMaSR, UGTSR
``DecidingParts``       fp16/bf16 runs keep these modules in fp32       FeMaSR, UGTSR
=====================  ==============================================  ====================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "AuxiliaryMaps",
    "CodebookMatching",
    "DecidingParts",
    "DepthConditioned",
    "ExportOverrides",
    "ManifestExtra",
    "TileNotes",
    "has",
]


@runtime_checkable
class TileNotes(Protocol):
    def note_tiles(self, tiles: int) -> None:
        """Called after each upscale with the number of tiles it ran (1 = whole image)."""


@runtime_checkable
class ManifestExtra(Protocol):
    def manifest_extra(self) -> dict[str, str]:
        """Entries added to the output image's run manifest (existing keys are kept)."""


@runtime_checkable
class AuxiliaryMaps(Protocol):
    def auxiliary(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """lq (B,3,H,W) in [0,1] -> (depth (B,1,H,W) in [0,1], per-pixel kernels (B,k*k,H,W))."""

    def kernel_variance(self, kernels: Tensor) -> Tensor:
        """(B,k*k,H,W) kernels -> (B,1,H,W) spatial variance (the heat map written to disk)."""


@runtime_checkable
class DepthConditioned(Protocol):
    #: the module that estimates depth from the LR image; the engine may replace it
    depth_estimator: nn.Module


@runtime_checkable
class CodebookMatching(Protocol):
    #: number of codebook entries
    codebook_size: int
    #: True for an SR network (LR encoder), False for an HQ-stage prior (scale 1)
    lq_stage: bool

    def pad_lq(self, lq: Tensor) -> Tensor:
        """The padding ``upscale`` applies before the network (bottom/right)."""

    def pad_to(self, x: Tensor, height: int, width: int) -> Tensor:
        """Pad (B,C,H,W) at the bottom/right to (height, width) the same way."""

    def match_indices(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """(chosen (B,1,h,w), k nearest candidates (B,k,h,w)) code indices of a padded input."""


@runtime_checkable
class ExportOverrides(Protocol):
    def export_overrides(self) -> list[tuple[nn.Module, str, object]]:
        """(module, attribute, value) settings that make tracing size-independent without
        changing values; the exporter applies them and restores the originals afterwards."""


@runtime_checkable
class DecidingParts(Protocol):
    def fp32_parts(self) -> list[nn.Module]:
        """The modules that decide discrete choices (code indices, tokens). When the network runs in
        fp16/bf16 the engine keeps these in fp32, so half precision never changes a choice; every
        module then casts its floating inputs to its own parameters' dtype (``engine/model.py``)."""


def has(net: object, capability: type) -> bool:
    """Whether ``net`` provides ``capability`` (one of this module's protocols)."""
    return isinstance(net, capability)
