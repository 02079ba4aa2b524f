"""Community checkpoints for tests: spandrel (or a skip that says why) and tiny models built here.

The checkpoints are made in-process from spandrel's own architecture classes at tiny widths and
saved the way people publish them (a bare state dict ``.pth``, a training container, or
``.safetensors`` without realsr metadata), so detection runs on real key layouts.

torchvision on CPU-only torch. spandrel imports torchvision. Where the only torchvision wheel is a
CUDA build next to a CPU torch (this project's CI: torch 2.13.0+cpu from a local wheel, torchvision
0.28.0 from PyPI), ``import torchvision`` fails in its ``_meta_registrations`` with "operator
torchvision::nms does not exist", because its C++ ops cannot load (pytorch/vision#9085).
:func:`spandrel_or_skip` then declares the two operator names that module registers fake kernels
for (no implementation: calling them still fails) so torchvision's pure-Python parts import. The
architectures tested here never call torchvision ops; realsr itself does not do this (it reports
the broken install, see registry/community.py ``import_spandrel``).
"""

from __future__ import annotations

import builtins
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

SKIP_REASON = (
    "spandrel, the optional `realsr[community]` extra, is not installed "
    "(pip install 'realsr[community]'); community checkpoints cannot be tested"
)
_TORCHVISION_OPS: list[Any] = []  # the torch.library fragment must stay alive


def _torchvision_python_only() -> None:
    """Make a torchvision whose C++ ops cannot load importable (module doc); no-op otherwise."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # not installed: spandrel's own import fails and the test is skipped
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _TORCHVISION_OPS:
            raise
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):  # the fake registrations in torchvision/_meta_registrations.py
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(lib)
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "spandrel")]:
            del sys.modules[name]  # drop the half-imported packages before importing again
        importlib.import_module("torchvision")


def spandrel_or_skip() -> Any:
    _torchvision_python_only()
    return pytest.importorskip("spandrel", reason=SKIP_REASON)


# --------------------------------------------------------------------------- tiny models


def compact(scale: int = 2, feat: int = 8, convs: int = 2, in_ch: int = 3, out_ch: int = 3, seed: int = 0) -> nn.Module:
    """Real-ESRGAN Compact (SRVGGNetCompact): ``convs + 2`` 3x3 convs, so an LR receptive-field
    radius of ``convs + 2`` pixels; the output adds the nearest-upsampled input."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=in_ch, num_out_ch=out_ch, num_feat=feat, num_conv=convs, upscale=scale).eval()


def esrgan(scale: int = 2, feat: int = 8, blocks: int = 1, seed: int = 0) -> nn.Module:
    """ESRGAN (RRDBNet, old layout) with one RRDB block; the last conv is re-scaled and biased to
    0.5 so the random network paints mid-grey texture (std ~0.1) rather than near-black."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(num_filters=feat, num_blocks=blocks, scale=scale).eval()
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(6.0)
        last.bias.fill_(0.5)
    return net


def swinir(scale: int = 2, seed: int = 0) -> nn.Module:
    """SwinIR (pixelshuffledirect), one stage of two blocks, window 4, embed 12: spandrel says
    minimum 16 px, tiling discouraged, no fp16 (bf16 ok)."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    return SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
                  upscale=scale, upsampler="pixelshuffledirect").eval()


BUILDERS = {"Compact": compact, "ESRGAN": esrgan, "SwinIR": swinir}


def save(net: nn.Module, path: Path, *, container: str | None = None) -> Path:
    """Save ``net``'s state dict as published: ``.safetensors`` (no metadata) or ``.pth``, optionally
    inside a training container such as ``{"params_ema": ..., "iter": 7}``."""
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd if container is None else {container: sd, "iter": 7}, path)
    return path


class _OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def malicious_pth(path: Path, marker: Path, protocol: int = 2) -> Path:
    """A .pth whose pickle runs code when loaded unsafely (it creates ``marker``), next to a real
    tensor, as a poisoned community upload would look. ``protocol`` 2 is torch.save's default (the
    call appears as a GLOBAL opcode); 4 frames the data differently."""
    sd = {"conv.weight": torch.zeros(3, 3, 3, 3), "payload": _OpensAFile(marker)}
    torch.save(sd, path, pickle_protocol=protocol)
    return path
