"""Our weights files: safetensors + metadata, written atomically and loaded strictly.

A realsr weights file is a safetensors file whose string metadata says what it holds
(docs/internals.md, docs/weights.md)::

    format = "realsr"   format_version = "1"   arch = "femasr"   scale = "4"
    config = '{"scale": 4, ...}'   realsr_version = "0.1.0"   (+ source_sha256, source_files ...)

:func:`load_weights` rebuilds the architecture from that metadata alone and loads the tensors with
``strict=True``: a file either matches the network exactly or is refused with a message that names
the missing, unexpected and mis-shaped keys. Pickled checkpoints (``.pth``) are never loaded here;
``realsr convert`` turns them into this format first. :func:`load_any` (what ``--weights`` uses)
hands every file that is not ours to registry/community.py (spandrel, optional).

Size (over STYLE's ~300-line guide): writing and strictly reading one file format (metadata, shape
checks, meta-device build, aligned adoption).

"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realsr_cli import __version__
from realsr_cli._config import config_from_json, config_to_json
from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.registry.archs import ArchSpec, get_arch

if TYPE_CHECKING:  # torch loads lazily: `realsr models list` reads metadata without it
    from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PICKLE_SUFFIXES",
    "save_weights",
    "read_metadata",
    "load_weights",
    "load_any",
    "is_realsr_file",
    "load_state_dict_strict",
    "file_sha256",
]

FORMAT = "realsr"
FORMAT_VERSION = "1"
#: metadata keys written by :func:`save_weights` itself (``extra_metadata`` may not override them)
RESERVED_KEYS = ("format", "format_version", "arch", "config", "scale", "realsr_version")
#: suffixes of pickled PyTorch checkpoints: refused by the loader, accepted by ``realsr convert``
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")

_CONVERT_HINT = "convert it with `realsr convert FILE --arch ARCH -o FILE.safetensors`"
_SHOW = 5  # how many keys an error message lists per kind


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unshared(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors; tensors that share storage (tied weights) are cloned, because
    safetensors refuses aliasing."""
    from torch import Tensor

    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        t = value.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def save_weights(
    path: str | os.PathLike[str],
    *,
    arch: str,
    config: Any,
    state_dict: Mapping[str, Tensor],
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state_dict`` as a realsr safetensors file at ``path``, atomically.

    The tensors go to a temporary file in the destination folder that is renamed over ``path``
    only once complete, so a crash never leaves a half-written weights file behind.
    ``extra_metadata`` (strings, e.g. ``source_sha256``) is stored next to the standard keys.
    """
    from safetensors.torch import save_file

    spec = get_arch(arch)
    if not isinstance(config, spec.config_cls):
        raise WeightsError(f"config for {arch!r} must be a {spec.config_cls.__name__}, got {type(config).__name__}")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config_to_json(config),
        "scale": str(int(spec.scale_of(config))),
        "realsr_version": __version__,
    }
    for key, value in (extra_metadata or {}).items():
        if key in RESERVED_KEYS:
            raise WeightsError(f"extra metadata may not override {key!r}")
        if not isinstance(value, str):
            raise WeightsError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
        metadata[key] = value

    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        save_file(_unshared(state_dict), tmp_name, metadata=metadata)
        os.replace(tmp_name, dst)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.debug("wrote %s (%s x%s, %d tensors)", dst, arch, metadata["scale"], len(state_dict))
    return dst


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path.name} is a pickled PyTorch checkpoint; realsr only loads .safetensors",
            hint=_CONVERT_HINT,
        )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (``{}`` when it has none)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    _refuse_pickle(p)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}", hint="check the path")
    try:
        with safe_open(str(p), framework="numpy") as fh:  # metadata only: no torch needed
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{p.name} is not a readable safetensors file ({exc})", hint=_CONVERT_HINT) from exc


def _spec_and_config(meta: Mapping[str, str], where: str) -> tuple[ArchSpec, Any]:
    """Architecture and frozen config described by our metadata."""
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise WeightsError(
            f"{where} has no realsr metadata (arch, config): it is not a realsr weights file",
            hint="official checkpoints must be " + _CONVERT_HINT.replace("convert it", "converted"),
        )
    version = meta.get("format_version", "")
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{where} has weights format version {version!r}; this realsr reads version {FORMAT_VERSION}",
            hint="upgrade realsr (pip install -U realsr) or re-convert the checkpoint",
        )
    spec = get_arch(meta["arch"])
    if "config" not in meta:
        raise WeightsError(f"{where} lacks the 'config' metadata of its {spec.name} network", hint=_CONVERT_HINT)
    try:
        config = config_from_json(spec.config_cls, meta["config"])
    except ConfigError as exc:
        raise WeightsError(f"{where}: invalid {spec.name} config in metadata: {exc}", hint=exc.hint) from exc
    if "scale" in meta and meta["scale"] != str(spec.scale_of(config)):
        raise WeightsError(f"{where}: metadata scale {meta['scale']} disagrees with its config")
    return spec, config


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _mismatch(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raise WeightsError naming the first few missing keys (the network needs them, the file
    lacks them), unexpected keys (the file has them, the network does not) and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} (file {found[k]}, network {expected[k]})" for k in expected if k in found and found[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
    if problems:
        raise WeightsError(
            f"{what} does not match the network: " + "; ".join(problems),
            hint="was it converted for another architecture or config? re-convert the official "
            "checkpoint with `realsr convert --arch ARCH`",
        )


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a plain-words error (:func:`_mismatch`)."""
    _mismatch({k: tuple(v.shape) for k, v in module.state_dict().items()},
              {k: tuple(v.shape) for k, v in state_dict.items()}, what)
    try:
        module.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:  # e.g. dtypes that cannot be copied
        raise WeightsError(f"{what} could not be loaded: {exc}") from exc


#: in-place random fills: on the meta device there is nothing to fill, and ``normal_`` there goes
#: through torch's reference decompositions, whose first use imports torch._dynamo (~1 s)
_RANDOM_FILLS = frozenset({"normal_", "uniform_", "random_", "bernoulli_", "exponential_",
                           "log_normal_", "cauchy_", "geometric_", "erfinv_"})


def build_on_meta(spec: ArchSpec, config: Any) -> nn.Module:
    """``spec.build(config)`` on the meta device: shapes and structure, no memory, no random
    initialisation (random fills are skipped; a meta tensor holds no values)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _SkipRandomFills(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in _RANDOM_FILLS:  # Tensor.normal_ or nn.init.normal_(tensor=...)
                target = args[0] if args else kwargs.get("tensor")
                if getattr(target, "is_meta", False):
                    return target
            return func(*args, **kwargs)

    with torch.device("meta"), _SkipRandomFills():
        return spec.build(config)


def _check_shapes_first(spec: ArchSpec, config: Any, path: Path) -> nn.Module:
    """Build the network on the meta device (no memory) and compare its keys and shapes with the
    file's header: a config in the metadata that does not match the tensors (e.g. a 4 KB header
    asking for a 20M-entry codebook) is refused (exit 3) before anything is allocated. Returns the
    meta network (checked), for :func:`_adopt`."""
    from safetensors import SafetensorError, safe_open

    try:
        net = build_on_meta(spec, config)
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    except Exception as exc:  # a config the architecture cannot build at all
        raise WeightsError(f"{path.name}: its {spec.name} config cannot be built ({exc})", hint=_CONVERT_HINT) from exc
    try:
        with safe_open(str(path), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path.name}: cannot read its tensor header ({exc})", hint="download or convert it again") from exc
    _mismatch(expected, found, path.name)
    return net


def load_weights(path: str | os.PathLike[str]) -> tuple[ArchSpec, Any, nn.Module]:
    """Build the network a realsr safetensors file describes and load it strictly.

    Returns ``(spec, config, net)``; ``net`` is on the CPU in float32 (as built) and in eval mode.
    """
    from safetensors import SafetensorError

    p = Path(path)
    meta = read_metadata(p)
    if meta.get("partial") == "true":
        stage = meta.get("stage", "an upstream training stage")
        raise WeightsError(
            f"{p.name} holds only part of a {meta.get('arch', '?')} model (the output of the "
            f"`{stage}` training stage), so it cannot upscale on its own",
            hint="use it as the input file of the next training stage (see docs/training.md)",
        )
    spec, config = _spec_and_config(meta, p.name)
    meta_net = _check_shapes_first(spec, config, p)  # before any real allocation (hostile metadata)
    try:
        tensors = _read_aligned(p)
    except (SafetensorError, OSError) as exc:  # truncated data section and the like
        raise WeightsError(f"{p.name}: cannot read its tensors ({exc})", hint="download or convert it again") from exc
    net = _adopt(meta_net, tensors, what=p.name)
    if net is None:  # the constructor computes tensors the file does not hold: build, then copy
        net = spec.build(config)
        load_state_dict_strict(net, tensors, what=p.name)
    return spec, config, net.eval()


#: safetensors dtype names -> torch dtype attribute names
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _read_aligned(path: Path) -> dict[str, Tensor]:
    """The file's tensors, each read with plain file reads straight into its own freshly allocated
    (hence aligned) CPU memory: peak memory is the weights once. (Not through safetensors' memory
    map: its pages count in the process's RSS while mapped, so mapping and copying peaked at twice
    the file; and its views sit at arbitrary byte offsets — unaligned weights take other SIMD paths
    in the CPU kernels and change results in the last bits.) The header was validated by
    :func:`_check_shapes_first`; sizes are checked again here, a short read is an :class:`OSError`."""
    import json
    import struct

    import torch

    out: dict[str, Tensor] = {}
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
        base = 8 + size
        for key, info in header.items():
            if key == "__metadata__":
                continue
            dtype = getattr(torch, _DTYPES.get(info["dtype"], ""), None)
            start, end = info["data_offsets"]
            buf = torch.empty(end - start, dtype=torch.uint8)
            if not isinstance(dtype, torch.dtype) or buf.numel() != math.prod(info["shape"]) * dtype.itemsize:
                raise OSError(f"tensor {key!r}: dtype {info['dtype']} and shape {info['shape']} do not "
                              f"match its {buf.numel()} bytes")
            fh.seek(base + start)
            view, done = memoryview(buf.numpy()), 0
            while done < len(view):
                n = fh.readinto(view[done:])
                if not n:
                    raise OSError(f"tensor {key!r}: the file ends {len(view) - done} bytes early")
                done += n
            out[key] = buf.view(dtype).reshape(info["shape"])
    return out


def _adopt(net: nn.Module, tensors: dict[str, Tensor], *, what: str) -> nn.Module | None:
    """``net`` (built on the meta device, its keys and shapes already checked against the file's
    header by :func:`_check_shapes_first`) with the file's tensors as its own:
    ``load_state_dict(assign=True)``, so loading costs one copy of the weights (the file read)
    instead of three (random init, file, copy). Tensors are brought to the dtype the network is
    built with first (float32), as a copy would. None when the network keeps tensors outside its
    state dict (non-persistent buffers, plain tensor attributes): those would stay on the meta
    device, so the caller builds it for real."""
    import itertools

    import torch

    own = net.state_dict()
    adopted = {k: (v.to(own[k].dtype) if v.dtype != own[k].dtype else v) for k, v in tensors.items()}
    try:
        net.load_state_dict(adopted, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{what} could not be loaded: {exc}") from exc
    left = any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())) or any(
        isinstance(v, torch.Tensor) and v.is_meta for m in net.modules() for v in vars(m).values()
    )
    return None if left else net


def is_realsr_file(path: str | os.PathLike[str]) -> bool:
    """True for a safetensors file with realsr metadata (``format = "realsr"``), even a broken one."""
    p = Path(path)
    return p.suffix.lower() not in PICKLE_SUFFIXES and read_metadata(p).get("format") == FORMAT


def load_any(path: str | os.PathLike[str]) -> tuple[ArchSpec, Any, nn.Module]:
    """Ours (:func:`load_weights`, strict) when the file has realsr metadata; any other checkpoint
    (``.pth``, foreign ``.safetensors``) through spandrel, see :mod:`realsr_cli.registry.community`.
    """
    if is_realsr_file(path):
        return load_weights(path)
    from realsr_cli.registry import community  # lazy: torch (+ spandrel) only when needed

    return community.load(path)
