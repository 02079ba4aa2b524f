"""BicRes state dicts: no official checkpoint (the model is realsr's own); config from shapes."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from realsr_cli.errors import WeightsError
from realsr_cli.models.bicres.config import BicResConfig

__all__ = ["config_from_state_dict", "convert_official_state_dict"]


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Always raises :class:`WeightsError`: BicRes is realsr's own model, with no other format."""
    raise WeightsError(
        "bicres is realsr's own architecture: there is no official checkpoint to convert",
        hint="`realsr train export` writes a .safetensors file that loads directly",
    )


def config_from_state_dict(state_dict: Mapping[str, Tensor], scale: int | None = None) -> BicResConfig:
    """Read ``width``, ``depth``, ``scale`` and ``act`` back from the tensors (module docstring of
    :mod:`~realsr_cli.models.bicres.net`); ``base`` is not stored in any tensor (default bicubic)."""
    try:
        width = int(state_dict["head.weight"].shape[0])
        out = int(state_dict["tail.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"not a bicres state dict: no {exc.args[0]!r} tensor") from None
    convs = sorted({int(k.split(".")[1]) for k in state_dict
                    if k.startswith("body.") and k.endswith(".bias")})
    s = round((out / 3) ** 0.5)
    if 3 * s * s != out or (scale is not None and scale != s):
        raise WeightsError(f"bicres tail has {out} channels: not 3*scale^2 for scale {scale or s}")
    if "head_act.weight" in state_dict:
        act = "prelu"
    else:
        act = "lrelu"  # not recoverable from tensors: lrelu and relu have no parameters
    return BicResConfig(scale=s, width=width, depth=len(convs), act=act)
