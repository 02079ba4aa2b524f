"""Shared option aliases, so every command spells and documents them the same way, and the one
table of the options every model-running command takes (:data:`MODEL_OPTIONS`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from realsr_cli.errors import UsageError


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class AlphaMode(str, Enum):
    bicubic = "bicubic"
    model = "model"


def parse_tile(value: str | None) -> int | None:
    """``auto`` -> None (pick the largest that fits), ``0`` -> no tiling, ``N`` -> N LR pixels."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"--tile {value!r}: expected auto, 0 (no tiling) or a tile size in pixels, e.g. 256") from None
    if n < 0:
        raise UsageError("--tile must be >= 0")
    return n


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Registry id or alias (see `realsr models list`), e.g. femasr-x4."),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", "-w", help="A realsr .safetensors file (from `realsr convert` or `train export`), or a community "
                           ".pth/.safetensors (ESRGAN, SwinIR, ...; needs realsr[community])."),
]
ScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--scale",
        "-s",
        help="Output scale. Picks the model of that native scale if one exists; otherwise runs the "
        "model and resizes with a high-quality filter.",
        min=0.01,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N | mps.")]
PrecisionOpt = Annotated[
    Precision, typer.Option("--precision", help="auto = fp16 on CUDA where the model allows it, bf16 on a CPU with native "
                        "bf16 where measured safe for the model, else fp32; fp32 is exact.")
]
TileOpt = Annotated[
    str,
    typer.Option("--tile", "-t", help="auto | 0 (whole image) | N: LR tile side in pixels."),
]
TileOverlapOpt = Annotated[
    int | None, typer.Option("--tile-overlap", help="Overlap between tiles in LR pixels (default: per model).", min=0)
]
TileBatchOpt = Annotated[int, typer.Option("--tile-batch", help="Tiles per forward pass.", min=1)]
TtaOpt = Annotated[
    bool,
    typer.Option("--tta", help="x8 self-ensemble: average the model over the 8 flips/rotations (8x the time)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed for diffusion/token models.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Sampling steps for diffusion/token models.", min=1)]
BitDepthOpt = Annotated[
    int | None, typer.Option("--bit-depth", help="8 or 16 (default: as the input).", min=8, max=16)
]
QualityOpt = Annotated[int, typer.Option("--quality", "-q", help="JPEG/WebP quality.", min=1, max=100)]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", "-f", help="png | jpeg | webp | tiff | bmp (default: from the output suffix; png on stdout)."),
]
AlphaOpt = Annotated[
    AlphaMode, typer.Option("--alpha", help="How to upscale an alpha channel: bicubic, or run the model on it.")
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option("--max-pixels", help="Refuse inputs with more pixels (decompression-bomb guard; 0 = no limit).", min=0),
]
SaveAuxOpt = Annotated[
    str | None,
    typer.Option(
        "--save-aux",
        help="Also write the model's auxiliary maps at LR size into this folder: NAME_depth.png "
        "(16-bit) and NAME_kernel_var.png (heat map). SSR only.",
        show_default=False,
    ),
]
DepthEstimatorOpt = Annotated[
    str,
    typer.Option(
        "--depth-estimator",
        help="SSR only: the depth estimator. auto = depth_anything-v2-small when downloaded, else "
        "builtin (the SSR file's own depth head); builtin; or a depth weights id from "
        "`realsr models list` (downloaded when needed).",
    ),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only cached weights; never download.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]


# The options of the commands that run a model, in --help order: (parameter, alias, default).
# `_common.model_options` adds them to upscale, batch, video and eval (eval takes a subset) and
# parses them once into a `_common.ModelArgs`; a new run option is one row here.
MODEL_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("model", ModelOpt, None),
    ("weights", WeightsOpt, None),
    ("scale", ScaleOpt, None),
    ("device", DeviceOpt, "auto"),
    ("precision", PrecisionOpt, Precision.auto),
    ("tile", TileOpt, "auto"),
    ("tile_overlap", TileOverlapOpt, None),
    ("tile_batch", TileBatchOpt, 1),
    ("tta", TtaOpt, False),
    ("seed", SeedOpt, None),
    ("steps", StepsOpt, None),
    ("bit_depth", BitDepthOpt, None),
    ("quality", QualityOpt, 95),
    ("fmt", FormatOpt, None),
    ("alpha", AlphaOpt, AlphaMode.bicubic),
    ("max_pixels", MaxPixelsOpt, None),
    ("save_aux", SaveAuxOpt, None),
    ("depth_estimator", DepthEstimatorOpt, "auto"),
    ("offline", OfflineOpt, False),
)
# What happens to a written image file, and SSR's side outputs: not options of `realsr video`.
IMAGE_FILE_OPTIONS = ("bit_depth", "quality", "fmt", "alpha", "max_pixels", "save_aux", "depth_estimator")
