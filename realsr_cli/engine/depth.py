"""Which depth estimator an SSR model runs (``--depth-estimator``), and loading it.

SSR conditions on a depth map of the LR image (the DE of SSR Algorithm 1). Two kinds exist:

``builtin``
    The small depth head inside every realsr SSR weights file (``depth_estimator.*``), trained
    with SSR by ``realsr train``. Always available, offline.
a depth weights id, e.g. ``depth_anything-v2-small``
    A published monocular depth network from the weights catalog (``kind = "aux"`` entries whose
    arch is in :data:`~realsr_cli.registry.archs.DEPTH_ARCHITECTURES`): downloaded and verified
    like any weights (``realsr models download ID``; ``--offline``: cache only), loaded strictly,
    and swapped in for the built-in head for this run (the SSR file is not changed).
``auto`` (the default)
    :data:`DEFAULT_ESTIMATOR` when its weights are already in the cache, else ``builtin``. ``auto``
    never downloads: a 99 MB download is never a side effect of upscaling. The note returned by
    :func:`attach` says which ran and, for the fallback, how to get the published one.

The run manifest's ``depth_estimator`` entry names the estimator that ran (SSRNet.manifest_extra),
plus ``depth_estimator_sha256`` for a published one.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from realsr_cli.errors import UsageError
from realsr_cli.registry.capabilities import DepthConditioned, has

log = logging.getLogger(__name__)

__all__ = ["AUTO", "BUILTIN", "DEFAULT_ESTIMATOR", "attach", "depth_ids", "load_estimator"]

AUTO = "auto"
BUILTIN = "builtin"
#: the published estimator ``auto`` uses when cached (Apache-2.0, 24.8M parameters)
DEFAULT_ESTIMATOR = "depth_anything-v2-small"
#: network input side for published estimators (Depth Anything's published 518 px)
DEFAULT_INPUT_SIZE = 518

_BUILTIN_NOTE = "depth estimator: builtin SSR depth head"


def depth_ids(catalog: Any) -> list[str]:
    """Ids of the catalog's depth-estimator weights."""
    from realsr_cli.registry.archs import DEPTH_ARCHITECTURES

    return [e.id for e in catalog.entries if e.is_aux and e.arch in DEPTH_ARCHITECTURES]


def _entry(name: str) -> Any:
    from realsr_cli.registry import catalog as catalog_mod
    from realsr_cli.registry.archs import DEPTH_ARCHITECTURES

    catalog = catalog_mod.load_catalog()
    entry = catalog.get(name, allow_aux=True)
    if not (entry.is_aux and entry.arch in DEPTH_ARCHITECTURES):
        raise UsageError(
            f"{name!r} is not a depth estimator",
            hint=f"use {AUTO}, {BUILTIN} or one of: {', '.join(depth_ids(catalog)) or '(none)'}",
        )
    return entry


def load_estimator(
    name: str,
    *,
    offline: bool | None = None,
    trust_on_first_use: bool = False,
    progress: Any = None,
    input_size: int = DEFAULT_INPUT_SIZE,
) -> nn.Module:
    """The SSR depth estimator of catalog id ``name``: fetched (cache first), loaded strictly,
    wrapped to SSR's contract ((B,3,H,W) [0,1] -> (B,1,H,W) [0,1]), on the CPU in float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from realsr_cli.errors import WeightsError
    from realsr_cli.registry import hub, loader
    from realsr_cli.registry.archs import get_depth_arch

    entry = _entry(name)
    spec = get_depth_arch(entry.arch)
    path = hub.fetch(entry, offline=offline, trust_on_first_use=trust_on_first_use, progress=progress)
    net = spec.build(spec.config_for(entry.variant or ""))
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{entry.id}: cannot read {path.name} ({exc})",
                           hint=f"download it again: `realsr models download {entry.id}`") from exc
    loader.load_state_dict_strict(net, tensors, what=f"{entry.id} ({path.name})")
    sha = hub.expected_sha256(entry) or loader.file_sha256(path)
    label = f"{entry.id} ({spec.title}, {entry.license})"
    return spec.estimator(net.eval(), input_size=input_size, label=label, sha256=sha)


def _auto_cached() -> Any:
    """The default estimator's entry when its verified file is in the cache, else None."""
    from realsr_cli.errors import RealSRError
    from realsr_cli.registry import hub

    try:
        entry = _entry(DEFAULT_ESTIMATOR)
    except RealSRError:  # a catalog without it (e.g. a user's own weights.toml)
        return None
    return entry if hub.cached_path(entry) is not None else None


def attach(
    net: nn.Module,
    choice: str | nn.Module | None,
    *,
    offline: bool | None = None,
    trust_on_first_use: bool = False,
    progress: Any = None,
) -> str | None:
    """Give an SSR network the depth estimator ``choice`` (module docstring); returns a one-line
    note saying which estimator will run (None for networks without a depth estimator).

    ``choice``: ``None``/``"auto"``, ``"builtin"``, a depth weights id, or a ready module with
    SSR's contract (injected as is). Raises :class:`UsageError` for an explicit choice on a network
    that takes no depth estimator, or an id that names no depth weights.
    """
    takes_depth = has(net, DepthConditioned) and isinstance(net.depth_estimator, nn.Module)
    choice = AUTO if choice is None else choice
    if not takes_depth:
        if isinstance(choice, str) and choice == AUTO:
            return None
        raise UsageError(
            "--depth-estimator applies to SSR models only",
            hint="drop --depth-estimator, or use an SSR model (--model ssr)",
        )
    if isinstance(choice, nn.Module):
        net.depth_estimator = choice
        return f"depth estimator: injected {type(choice).__name__}"
    if choice == BUILTIN:
        return _BUILTIN_NOTE
    if choice == AUTO:
        entry = _auto_cached()
        if entry is None:
            return (f"{_BUILTIN_NOTE} ({DEFAULT_ESTIMATOR} is not downloaded: "
                    f"`realsr models download {DEFAULT_ESTIMATOR}` to use it)")
        choice = entry.id
        offline = True  # auto never downloads
    estimator = load_estimator(
        choice, offline=offline, trust_on_first_use=trust_on_first_use, progress=progress
    )
    net.depth_estimator = estimator
    log.debug("depth estimator %s, input %d px", choice, estimator.input_size)
    return f"depth estimator: {estimator.manifest_label}, input {estimator.input_size} px"
