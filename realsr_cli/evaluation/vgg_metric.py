"""What the VGG-16-based full-reference metrics (LPIPS, DISTS) share.

- :func:`load_strict`: a metric network = a torchvision VGG-16 ``features`` stack + the metric's
  own tensors, loaded strictly from the two published state dicts;
- :func:`load_cached`: the two files from their ``kind = "aux"`` registry entries, cache only
  (scoring never starts a download; a missing file is a :class:`WeightsError`, exit 3, whose hint
  names the ``realsr models download`` commands), sha256-checked by the hub;
- :func:`prepare_pair`: an SR/HR pair cropped and quantised to 8 bits as PSNR/SSIM see it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from realsr_cli.errors import UsageError, WeightsError

log = logging.getLogger(__name__)

__all__ = ["load_cached", "load_strict", "prepare_pair", "read_state_dict"]

N = TypeVar("N", bound=nn.Module)


def load_strict(
    net: N, vgg: Mapping[str, Tensor], own: Mapping[str, Tensor], *, metric: str, hint: str
) -> N:
    """Load ``net`` (with a ``features`` VGG stack) from torchvision VGG-16 tensors (only its
    ``features.N.*`` are taken; ``classifier.*`` and the like are ignored) and the metric's own
    tensors, strictly: a missing, unexpected or misshaped tensor is a :class:`WeightsError`."""
    wanted = {f"features.{k}" for k in net.features.state_dict()}  # type: ignore[union-attr]
    tensors = {k: v for k, v in vgg.items() if k in wanted}
    tensors |= {k: v for k, v in own.items() if not k.startswith("features.")}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}"
              for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape]
    if missing or extra or shapes:
        problems = [f"missing {', '.join(missing[:4])}" if missing else "",
                    f"unexpected {', '.join(extra[:4])}" if extra else "",
                    "; ".join(sorted(shapes)[:4])]
        raise WeightsError(
            f"{metric} weights do not fit {metric}-VGG: " + "; ".join(p for p in problems if p),
            hint=hint,
        )
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return net


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """A flat state dict of tensors from ``.pth`` (``torch.load(weights_only=True)``) or
    ``.safetensors``, on the CPU."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not safetensors ...
        raise WeightsError(f"{what}: cannot read {path.name} ({exc})",
                           hint=f"download it again: `realsr models download {what}`") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{what}: {path.name} is not a flat state dict of tensors")
    return dict(obj)


def load_cached(
    metric: str, ids: Sequence[str], archs: Sequence[str]
) -> list[dict[str, Tensor]]:
    """The state dicts of the catalog entries ``ids`` (aux entries of ``archs``, in order), read
    from the registry cache and re-hashed; never downloads (module docstring)."""
    from realsr_cli.registry import hub
    from realsr_cli.registry.catalog import load_catalog

    catalog = load_catalog()
    entries = [catalog.get(name, allow_aux=True) for name in ids]
    for entry, arch in zip(entries, archs, strict=True):
        if not entry.is_aux or entry.arch != arch:
            raise UsageError(f"{entry.id} is not {arch} weights",
                             hint=f"{metric} needs {arch} weights such as {' / '.join(ids)}")
    missing = [e for e in entries if hub.cached_path(e) is None]
    if missing:
        cmds = [f"`realsr models download {e.id}{'' if e.sha256 else ' --trust'}`"
                for e in missing]
        raise WeightsError(
            f"{metric} needs weights that are not in the cache: "
            f"{', '.join(e.id for e in missing)}",
            hint="run " + " and ".join(cmds) + f" once (online); {metric} then works offline",
        )
    paths = [hub.fetch(e, offline=True) for e in entries]  # re-hashed, cache only
    log.info("%s: %s", metric, ", ".join(f"{e.id} ({p})" for e, p in zip(entries, paths, strict=True)))
    return [read_state_dict(p, e.id) for e, p in zip(entries, paths, strict=True)]


def check_inputs(x: Tensor, y: Tensor, *, metric: str) -> None:
    """Raise :class:`UsageError` unless ``x`` and ``y`` are (B,3,H,W) of one size, at least 16x16
    (the VGG-16 taps' smallest useful input): what the metric nets' ``forward`` accepts."""
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise UsageError(f"{metric} needs two (B,3,H,W) images of one size, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if min(x.shape[-2:]) < 16:
        raise UsageError(f"{metric} needs at least 16x16 pixels, got {x.shape[-1]}x{x.shape[-2]}")


def prepare_pair(sr: Tensor, hq: Tensor, *, metric: str, crop_border: int = 0) -> tuple[Tensor, Tensor]:
    """``sr``, ``hq``: (1,3,H,W) or (3,H,W) float in [0,1], same size -> both (1,3,H',W'), with
    ``crop_border`` pixels cut from every side and quantised to 8 bits (``round(255 x) / 255``
    after clamping, as PSNR/SSIM do)."""
    a, b = (t if t.ndim == 4 else t.unsqueeze(0) for t in (sr, hq))
    if a.shape != b.shape:
        raise UsageError(f"{metric}: SR {tuple(a.shape)} and HR {tuple(b.shape)} differ in size")
    if crop_border:
        c = crop_border
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    a, b = (torch.round(t.float().nan_to_num(0.0).clamp(0, 1) * 255) / 255 for t in (a, b))
    return a, b
