"""Stages that build on the export of the previous stage of the same method (RealSRT, SSR).

Such a stage's ``[inputs]`` section names that file (:class:`UpstreamInputs`: ``path()`` and
``require()``, with the ``allow_random_*`` escape for smoke tests), and the stage copies the parts
it builds on from it (:func:`load_upstream_parts`: arch and config sections checked first).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from realsr_cli.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

__all__ = ["UpstreamInputs", "config_differences", "load_upstream_parts"]


class UpstreamInputs:
    """Base of an ``[inputs]`` dataclass with two fields: ``<part>_weights`` (the path of the
    upstream export) and ``allow_random_<part>`` (a random part instead; tests and smoke runs).

    Subclasses set :attr:`weights_field` (``"<part>_weights"``), :attr:`producer` (the stage that
    writes the file) and :attr:`export_hint` (how to make it, the start of the error's hint, with
    ``{producer}`` filled in).
    """

    weights_field: ClassVar[str]
    producer: ClassVar[str]
    export_hint: ClassVar[str]

    def path(self) -> str:
        """The configured upstream file (``""`` when unset)."""
        return getattr(self, self.weights_field)

    def require(self, stage: str) -> None:
        """Raise :class:`ConfigError` when no file is set and random parts are not allowed."""
        field = self.weights_field
        random_field = field.replace("_weights", "")
        if self.path() or getattr(self, f"allow_random_{random_field}"):
            return
        raise ConfigError(
            f"{stage}: inputs.{field} is not set; this stage builds on the output of the "
            f"`{self.producer}` stage",
            hint=(
                self.export_hint.format(producer=self.producer)
                + f"inputs.{field} = \"PATH\" in the config or --set inputs.{field}=PATH "
                f"(inputs.allow_random_{random_field} = true is for smoke tests only)"
            ),
        )


def config_differences(theirs: Any, ours: Any, names: Sequence[str]) -> list[str]:
    """``"model.<name>: file <theirs>, config <ours>"`` for each config field in ``names`` (in
    that order) whose values differ."""
    return [
        f"model.{name}: file {getattr(theirs, name)!r}, config {getattr(ours, name)!r}"
        for name in names
        if getattr(theirs, name) != getattr(ours, name)
    ]


def load_upstream_parts(
    net: nn.Module,
    path: str | Path,
    *,
    arch: str,
    file_kind: str,
    parts: Sequence[str],
    prefixes: tuple[str, ...],
    fields: Sequence[str],
    stage: str,
    producer: str,
) -> None:
    """Copy the tensors of ``net`` under ``prefixes`` (the ``parts``) from the realsr file at
    ``path``, in place, without gradients.

    The file must hold an ``arch`` network (else :class:`WeightsError` saying the stage needs
    ``file_kind``, e.g. "a realsrt file") whose config equals ``net.config`` in ``fields`` (else
    :class:`ConfigError` listing :func:`config_differences`).
    """
    from realsr_cli.registry.loader import load_weights

    name = Path(path).name
    spec, config, src = load_weights(path)
    if spec.name != arch:
        raise WeightsError(
            f"{name} holds a {spec.name!r} network; {stage} needs {file_kind}",
            hint=f"use the export of a `{producer}` run",
        )
    diff = config_differences(config, net.config, fields)
    if diff:
        raise ConfigError(
            f"{stage}: {name} does not fit the [model] section: " + "; ".join(diff),
            hint=f"set the [model] section to the values of the `{producer}` run that made {name}",
        )
    theirs = src.state_dict()
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if key.startswith(prefixes):
                value.copy_(theirs[key])
    log.info("%s: loaded %s from %s", stage, ", ".join(parts), name)
