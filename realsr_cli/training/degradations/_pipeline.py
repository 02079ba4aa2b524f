"""The base every degradation pipeline class shares (STYLE §3: a literal table of classes).

A pipeline is built as ``Pipeline(config)`` (``config_cls()``, the published defaults, when None),
exposes ``scale`` and is called as ``pipeline(hr, generator) -> lq``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Pipeline"]


class Pipeline:
    """``pipeline(config)``; ``config_cls()`` when None; ``scale`` from the config."""

    config_cls: type
    config: Any

    def __init__(self, config: object | None = None) -> None:
        self.config = config if config is not None else self.config_cls()

    @property
    def scale(self) -> int:
        return self.config.scale
