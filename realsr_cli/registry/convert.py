"""Official checkpoints -> realsr safetensors (keys checked, config inferred, metadata added).

``convert_checkpoint("FeMaSR_SRX4_model_g.pth", "femasr-x4.safetensors", arch="femasr")``:

1. read each file: ``.pth/.pt/.ckpt/.bin`` with ``torch.load(weights_only=True)`` only — a file that
   needs arbitrary unpickling (Python objects beyond tensors and containers) is refused, never
   executed — or ``.safetensors`` holding the official keys;
2. unwrap the BasicSR-style containers (``params_ema`` preferred, then ``params``, ``state_dict``,
   ``model``) and DataParallel ``module.`` prefixes;
3. several files (``ArchSpec.official_files > 1``, UPSR: denoiser + auxiliary g) are merged by the
   spec's ``merge_official`` if it declares one, else by key prefix per file
   (``official_file_prefixes``, default: none, clashing keys are an error);
4. ``spec.convert_official`` maps official keys to ours, ``spec.infer_config`` reads the config
   from the tensor shapes, the network is built and loaded ``strict=True`` as a check;
5. the file is written atomically with metadata ``source_sha256`` / ``source_files``
   (comma-joined, in the order given).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from realsr_cli.errors import ConfigError, RealSRError, WeightsError
from realsr_cli.registry.archs import ArchSpec, StateDict, get_arch
from realsr_cli.registry.loader import (
    PICKLE_SUFFIXES,
    file_sha256,
    load_state_dict_strict,
    save_weights,
)

log = logging.getLogger(__name__)

__all__ = ["convert_checkpoint", "read_official_state_dict", "unwrap_state_dict", "merge_state_dicts"]

#: container keys of training frameworks, in order of preference (EMA weights first)
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
_SAFETENSORS = ".safetensors"
_REPICKLE_HINT = (
    "if you trust the file, re-save only its state dict in a separate environment, e.g. "
    "torch.save(torch.load(f, weights_only=False)['params'], 'clean.pth'), and convert that"
)

PathLike = str | os.PathLike[str]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, *, name: str = "checkpoint") -> StateDict:
    """The tensor dict inside a loaded checkpoint.

    Follows ``params_ema`` > ``params`` > ``state_dict`` > ``model`` (up to three levels), keeps
    only tensors (drops step counters and the like) and strips a DataParallel ``module.`` prefix
    shared by every key.
    """
    for _ in range(3):
        if not isinstance(obj, Mapping) or _is_state_dict(obj):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise WeightsError(
            f"{name} holds no tensors (top-level keys: {keys or 'none'})",
            hint=f"expected a state dict, possibly under one of {', '.join(WRAPPER_KEYS)}",
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def read_official_state_dict(path: PathLike) -> StateDict:
    """Load one official checkpoint file safely and unwrap its state dict."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}", hint="check the path")
    suffix = p.suffix.lower()
    if suffix == _SAFETENSORS:
        try:
            return unwrap_state_dict(load_file(str(p), device="cpu"), name=p.name)
        except SafetensorError as exc:
            raise WeightsError(f"{p.name} is not a readable safetensors file ({exc})") from exc
    if suffix not in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{p.name}: unsupported checkpoint type {suffix or '(no suffix)'}",
            hint=f"pass a {', '.join(PICKLE_SUFFIXES)} or {_SAFETENSORS} file",
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not our kind of refusal: garbage or exotic pickle opcodes
            raise WeightsError(
                f"{p.name} is not a readable PyTorch checkpoint (corrupt, or pickle data that safe "
                "loading does not accept)",
                hint=_REPICKLE_HINT,
            ) from exc
        raise WeightsError(
            f"{p.name} stores Python objects besides tensors ({found[1]}); realsr refuses to unpickle "
            "them, because unpickling can run arbitrary code",
            hint=_REPICKLE_HINT,
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint ({exc})") from exc
    return unwrap_state_dict(obj, name=p.name)


def merge_state_dicts(spec: ArchSpec, state_dicts: Sequence[StateDict], names: Sequence[str]) -> StateDict:
    """One dict from several official files (see the module docstring, step 3)."""
    if len(state_dicts) == 1:
        return dict(state_dicts[0])
    merge = spec.merge_official
    if merge is not None:
        try:
            return dict(merge(list(state_dicts)))
        except (ValueError, KeyError) as exc:
            raise WeightsError(f"cannot combine {', '.join(names)} into one {spec.name} checkpoint: {exc}") from exc
    prefixes = tuple(spec.official_file_prefixes or ("",) * len(state_dicts))
    if len(prefixes) != len(state_dicts):
        raise WeightsError(f"{spec.name} declares {len(prefixes)} file prefixes for {len(state_dicts)} files")
    merged: StateDict = {}
    for prefix, sd, name in zip(prefixes, state_dicts, names, strict=True):
        part = {prefix + k: v for k, v in sd.items()}
        clash = sorted(merged.keys() & part.keys())
        if clash:
            raise WeightsError(
                f"{name} repeats keys of an earlier file: {', '.join(clash[:3])}",
                hint=f"pass each of the {len(state_dicts)} {spec.name} checkpoints once",
            )
        merged.update(part)
    return merged


def _as_list(src: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(src, (str, os.PathLike)):
        return [Path(src)]
    return [Path(s) for s in src]


def convert_checkpoint(
    src: PathLike | Sequence[PathLike],
    dst: PathLike,
    *,
    arch: str,
    scale: int | None = None,
) -> Path:
    """Convert official checkpoint file(s) of ``arch`` into a realsr safetensors file at ``dst``.

    ``scale`` is only needed where the shapes cannot tell it (it is checked otherwise).
    Returns ``dst``. Raises WeightsError (with a hint) for anything that does not convert.
    """
    spec = get_arch(arch)
    srcs = _as_list(src)
    out = Path(dst)
    if out.suffix.lower() != _SAFETENSORS:
        raise WeightsError(f"output {out.name} must end in {_SAFETENSORS}", hint=f"e.g. -o {arch}-x4.safetensors")
    if len(srcs) != spec.official_files:
        raise WeightsError(
            f"{spec.name} converts from {spec.official_files} official file(s), got {len(srcs)}",
            hint="see docs/weights.md for the files each architecture needs",
        )
    if any(s.resolve() == out.resolve() for s in srcs if s.exists()):
        raise WeightsError(f"output {out} would overwrite its own source", hint="choose another -o path")
    names = [s.name for s in srcs]
    state_dicts = [read_official_state_dict(s) for s in srcs]
    hashes = [file_sha256(s) for s in srcs]

    merged = merge_state_dicts(spec, state_dicts, names)
    what = f"{' + '.join(names)} (as {spec.name})"
    try:
        state_dict = spec.convert_official(merged)
        config = spec.infer_config(state_dict, scale)
    except RealSRError as exc:
        raise WeightsError(f"{what}: {exc.message}", hint=exc.hint or _arch_hint(spec)) from exc
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise WeightsError(f"{what}: cannot read the {spec.name} layout ({exc})", hint=_arch_hint(spec)) from exc
    got_scale = int(spec.scale_of(config))
    if scale is not None and got_scale != scale:
        raise WeightsError(f"{what} is a x{got_scale} checkpoint, not x{scale}", hint="drop --scale or fix it")
    try:
        net = spec.build(config)
    except ConfigError as exc:
        raise WeightsError(f"{what}: inferred an invalid config ({exc.message})", hint=_arch_hint(spec)) from exc
    load_state_dict_strict(net, state_dict, what=what)
    del net
    extra = {"source_sha256": ",".join(hashes), "source_files": ",".join(names)}
    save_weights(out, arch=spec.name, config=config, state_dict=state_dict, extra_metadata=extra)
    log.info("converted %s -> %s (%s x%d)", ", ".join(names), out, spec.name, got_scale)
    return out


def _arch_hint(spec: ArchSpec) -> str:
    return f"is this really an official {spec.title} checkpoint? check --arch (and --scale)"
