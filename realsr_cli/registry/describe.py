"""What a weights file holds (`realsr models inspect FILE`: ours or a spandrel-detected one), and
what the registry knows of one catalog entry (:func:`entry_document`, `realsr models list/info`).

:func:`inspect_weights` answers one flat dict with the same keys for both kinds (docs/cli.md,
"Bring your own checkpoint"): which loader takes the file, the architecture, scale, channels,
parameter count, the size requirements and tiling the engine respects, and the precisions the
model supports. Our files are loaded strictly (so a broken file fails here as it would in
``upscale``); others go through spandrel exactly as ``--weights`` would load them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from realsr_cli._config import to_dict
from realsr_cli.errors import UsageError
from realsr_cli.registry import loader

__all__ = ["entry_document", "inspect_weights", "package_default_id", "sha256_status"]

_ARCH_KEYS = ("format", "format_version", "arch", "config", "scale")


def _common(path: Path, loaded_by: str) -> dict[str, Any]:
    return {
        "file": str(path),
        "sha256": loader.file_sha256(path),
        "format": "pickle" if path.suffix.lower() in loader.PICKLE_SUFFIXES else "safetensors",
        "loader": loaded_by,
    }


def _ours(path: Path) -> dict[str, Any]:
    spec, config, net = loader.load_weights(path)
    multiple, tile, overlap = spec.tile_multiple, spec.default_tile, spec.default_overlap
    if spec.tile_rules is not None:
        multiple, tile, overlap = spec.tile_rules(config)
    meta = loader.read_metadata(path)
    return {
        **_common(path, "realsr"),
        "arch": spec.name,
        "arch_id": spec.name,
        "arch_name": spec.title,
        "purpose": "SR",
        "scale": int(spec.scale_of(config)),
        "input_channels": 3,
        "output_channels": 3,
        "parameters": sum(p.numel() for p in net.parameters()),
        "size_requirements": {"minimum": spec.min_size, "multiple_of": multiple, "square": False},
        "tiling": "supported" if spec.tileable else "internal",
        "default_tile": tile,
        "default_overlap": overlap,
        "precision": {"fp32": True, "fp16": spec.half_ok, "bf16": spec.half_ok},
        "stochastic": spec.stochastic,
        "tags": [],
        "config": to_dict(config),
        "metadata": {k: v for k, v in meta.items() if k not in _ARCH_KEYS},
        "spandrel_version": None,
    }


def _community(path: Path) -> dict[str, Any]:
    from realsr_cli.registry import community

    spec, c, _net = community.load(path)
    return {
        **_common(path, "spandrel"),
        "arch": spec.name,
        "arch_id": c.arch_id,
        "arch_name": c.arch_name,
        "purpose": c.purpose,
        "scale": c.scale,
        "input_channels": c.input_channels,
        "output_channels": c.output_channels,
        "parameters": c.parameters,
        "size_requirements": {"minimum": c.min_size, "multiple_of": c.multiple_of, "square": c.square},
        "tiling": c.tiling,
        "default_tile": spec.default_tile,
        "default_overlap": spec.default_overlap,
        "precision": {"fp32": True, "fp16": c.fp16, "bf16": c.bf16},
        "stochastic": False,
        "tags": list(c.tags),
        "config": None,
        "metadata": {},
        "spandrel_version": c.spandrel_version,
    }


def inspect_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe the weights file at ``path`` (see the module doc); WeightsError when unusable."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {p}", hint="check the path")
    return _ours(p) if loader.is_realsr_file(p) else _community(p)


def package_default_id(catalog: Any) -> str | None:
    """The id ``realsr upscale`` runs when no model is named (None for an empty or broken catalog)."""
    try:
        return catalog.default().id
    except Exception:  # nothing to mark as the default
        return None


def entry_document(entry: Any, cached: Path | None, default_id: str | None) -> dict[str, Any]:
    """A catalog entry as the ``models.list``/``models.info`` JSON documents carry it: its fields,
    ``package_default`` (the model run when none is named; ``default`` is the entry its
    architecture's name resolves to), ``cached`` and the cached ``path``."""
    d = entry.to_json()
    d["package_default"] = default_id == entry.id
    d["cached"] = cached is not None
    d["path"] = None if cached is None else str(cached)
    return d


def sha256_status(entry: Any) -> str:
    """Where the hash a download of ``entry`` is checked against comes from, in words."""
    from realsr_cli.registry import hub

    if entry.sha256:
        checked = "the shipped file is" if entry.source.kind == "package" else "every download is"
        return f"recorded in weights.toml ({checked} checked against it)"
    if entry.source.kind == "manual":
        return "none recorded (downloaded by hand: `realsr models download` says where)"
    trusted = hub.trusted_sha256(entry)
    if trusted:
        return f"trusted on first use: {trusted} (trusted.toml)"
    return f"none recorded: `realsr models download {entry.id} --trust` records it on first use"
