"""Reading state dicts back into configs (the models' ``convert.py``): key indices, shapes, and the
refusal of models that have no official checkpoint format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from torch import Tensor

from realsr_cli.errors import WeightsError

__all__ = ["key_indices", "key_shape", "no_official_checkpoint"]


def key_indices(state_dict: Mapping[str, Tensor], prefix: str) -> list[int]:
    """Sorted distinct integers ``i`` of keys ``<prefix><i>.<...>``."""
    found = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def key_shape(
    state_dict: Mapping[str, Tensor], key: str, *, model: str, hint: str
) -> tuple[int, ...]:
    """Shape of ``state_dict[key]``; a missing key is a :class:`WeightsError` naming ``model``."""
    try:
        return tuple(state_dict[key].shape)
    except KeyError:
        raise WeightsError(f"{model} state dict lacks {key!r}", hint=hint) from None


def no_official_checkpoint(model: str, hint: str) -> NoReturn:
    """Raise the :class:`WeightsError` of ``convert_official_state_dict`` for a method whose authors
    released no code or weights (``hint``: where its weights come from instead)."""
    raise WeightsError(
        f"{model} has no official checkpoint to convert (the authors released no code or weights)",
        hint=hint,
    )
