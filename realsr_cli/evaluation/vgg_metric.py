"""What the VGG-16-based full-reference metrics (LPIPS, DISTS) share.

- :func:`load_strict`: a metric network = a torchvision VGG-16 ``features`` stack + the metric's
  own tensors, loaded strictly from the two published state dicts;
- :func:`load_cached`: the two files from their ``kind = "aux"`` registry entries, cache only
  (scoring never starts a download; a missing file is a :class:`WeightsError`, exit 3, whose hint
  names the ``realsr models download`` commands), sha256-checked by the hub;
- :func:`vgg16_features`: that ``features`` stack (torchvision's indices and keys), with the
  metric's own pooling;
- :func:`freeze`: its per-channel input constants as buffers, no gradients, eval mode;
- :func:`load_net`: a metric network from its two cached files, on a device;
- :func:`prepare_pair`: an SR/HR pair cropped and quantised to 8 bits as PSNR/SSIM see it;
- :func:`score_pair`: one SR/HR pair's distance under a metric network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from realsr_cli.errors import UsageError, WeightsError

log = logging.getLogger(__name__)

__all__ = [
    "check_inputs", "freeze", "load_cached", "load_net", "load_strict", "prepare_pair",
    "read_state_dict", "score_pair", "vgg16_features",
]

N = TypeVar("N", bound=nn.Module)

#: VGG-16 ``features`` up to relu5_3: output channels of each conv, None = 2x2 pooling
_VGG16 = (64, 64, None, 128, 128, None, 256, 256, 256, None, 512, 512, 512, None, 512, 512, 512)


def vgg16_features(pool: Callable[[int], nn.Module]) -> nn.Sequential:
    """torchvision's VGG-16 ``features`` up to relu5_3 (indices 0..29, keys ``N.weight/bias``):
    3x3 convolutions (padding 1) each followed by a ReLU, and ``pool(channels)`` for each of the
    four poolings (LPIPS: 2x2 max pooling; DISTS: L2 pooling)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16:
        if v is None:
            layers.append(pool(channels))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


def freeze(net: N, **constants: tuple[float, float, float]) -> N:
    """Register each per-channel constant (e.g. ``mean=(...)``) as a (1,3,1,1) float32 buffer of
    ``net``, left out of its state dict, then turn off ``net``'s gradients and put it in eval
    mode: what a metric network's ``__init__`` ends with."""
    for name, values in constants.items():
        net.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
    net.requires_grad_(False)
    net.eval()
    return net


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


def load_net(
    build: Callable[[dict[str, Tensor], dict[str, Tensor]], N],
    metric: str,
    ids: tuple[str, str],
    archs: tuple[str, str],
    *,
    device: str | torch.device = "cpu",
) -> N:
    """A metric network ``build(vgg, own)`` from two catalog entries (``ids``: the VGG-16 and the
    metric's own file, aux entries of ``archs``), read from the registry cache and verified
    against their sha256 (weights.toml's or the one trusted on first use), on ``device`` in
    float32.

    Never downloads (scoring never starts a download): a file that is not in the cache is a
    :class:`WeightsError` (exit 3) whose hint names the ``realsr models download`` commands.
    """
    vgg, own = load_cached(metric, ids, archs)
    return build(vgg, own).to(device)


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


def score_pair(
    net: Callable[[Tensor, Tensor], Tensor], sr: Tensor, hq: Tensor, *, metric: str,
    crop_border: int = 0,
) -> float:
    """``net``'s distance of ``sr`` to ``hq`` (both as :func:`prepare_pair` takes them: cropped,
    then quantised to 8 bits) as a Python float."""
    a, b = prepare_pair(sr, hq, metric=metric, crop_border=crop_border)
    return float(net(a, b)[0])
