"""Community checkpoints for tests: spandrel (or a skip that says why) and tiny models built here.

The checkpoints are made in-process from spandrel's own architecture classes at tiny widths and
saved the way people publish them (a bare state dict ``.pth``, a training container, or
``.safetensors`` without realsr metadata), so detection runs on real key layouts.

torchvision on CPU-only torch: spandrel imports torchvision, whose compiled ops do not load next
to this project's CPU torch; realsr's own ``registry.community.import_spandrel`` makes its Python
parts importable (see ``_torchvision_without_compiled_ops`` there), and these fixtures go through
the same function — no shim of their own.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

SKIP_REASON = (
    "spandrel, the optional `realsr[community]` extra, is not installed "
    "(pip install 'realsr[community]'); community checkpoints cannot be tested"
)
def spandrel_or_skip() -> Any:
    from realsr_cli.registry.community import _torchvision_without_compiled_ops

    _torchvision_without_compiled_ops()
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
