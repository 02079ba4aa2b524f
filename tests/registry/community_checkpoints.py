"""Tiny checkpoints in the exact key layouts of the community models weights.toml lists.

The shipped community entries (Real-ESRGAN x4plus / x2plus / anime 6B, BSRGAN, realesr-general-x4v3,
real-world SwinIR-M) are 5-67 MB files on GitHub; tests cannot fetch them. These builders write
files with the same architecture family, the same state-dict key names and the same container as
the published ones, at tiny widths, so spandrel's detection and hyper-parameter inference run on
the real layouts:

- Real-ESRGAN RRDBNet (BasicSR names ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
  ``conv_up1/2``, ``conv_hr``, ``conv_last``) in a ``params_ema`` container; the x2 model feeds a
  2x pixel-unshuffled input, so ``conv_first`` takes 12 channels and the x4 body stays;
- BSRGAN RRDBNet (KAIR names ``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconv1/2``, ``HRconv``),
  a bare state dict;
- SRVGGNetCompact (``body.0`` conv, ``body.1`` PReLU, ..., the last conv to ``3 * scale**2``) under
  ``params``;
- SwinIR with the real-world model's ``nearest+conv`` upsampler and window 8, under ``params_ema``
  (SwinIR's own keys, built with spandrel's SwinIR class, which keeps the official names).

RRDB's growth channels stay 32 (spandrel infers every other width from the shapes but not this one).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

GROWTH = 32  # RRDB dense-block growth channels, fixed in every published RRDBNet


def _conv(sd: dict[str, Tensor], name: str, out_ch: int, in_ch: int, gen: torch.Generator, gain: float = 1.0) -> None:
    """A 3x3 conv with fan-in scaled random weights (activations neither vanish nor explode)."""
    sd[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * (gain / (9 * in_ch) ** 0.5)
    sd[f"{name}.bias"] = torch.zeros(out_ch)


def _rdb(sd: dict[str, Tensor], prefix: str, conv: str, feat: int, gen: torch.Generator) -> None:
    """One residual dense block: conv1..conv4 grow by GROWTH channels, conv5 returns to ``feat``."""
    for j in range(1, 5):
        _conv(sd, f"{prefix}.{conv}{j}", GROWTH, feat + (j - 1) * GROWTH, gen)
    _conv(sd, f"{prefix}.{conv}5", feat, feat + 4 * GROWTH, gen)


def _finish(sd: dict[str, Tensor], last: str) -> dict[str, Tensor]:
    """Make the random network paint mid-grey texture rather than black: bias the last conv."""
    sd[f"{last}.bias"] = torch.full_like(sd[f"{last}.bias"], 0.5)
    return sd


def realesrgan_state_dict(scale: int = 4, feat: int = 8, blocks: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """Real-ESRGAN's RRDBNet (BasicSR key names); ``scale`` 2 adds the 2x pixel-unshuffle input."""
    gen = torch.Generator().manual_seed(seed)
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    sd: dict[str, Tensor] = {}
    _conv(sd, "conv_first", feat, 3 * unshuffle**2, gen)
    for i in range(blocks):
        for k in (1, 2, 3):
            _rdb(sd, f"body.{i}.rdb{k}", "conv", feat, gen)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(sd, name, feat, feat, gen)
    _conv(sd, "conv_last", 3, feat, gen)
    return _finish(sd, "conv_last")


def bsrgan_state_dict(feat: int = 8, blocks: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """BSRGAN's RRDBNet x4 in KAIR's key names (models/network_rrdbnet.py of cszn/BSRGAN)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    _conv(sd, "conv_first", feat, 3, gen)
    for i in range(blocks):
        for k in (1, 2, 3):
            _rdb(sd, f"RRDB_trunk.{i}.RDB{k}", "conv", feat, gen)
    for name in ("trunk_conv", "upconv1", "upconv2", "HRconv"):
        _conv(sd, name, feat, feat, gen)
    _conv(sd, "conv_last", 3, feat, gen)
    return _finish(sd, "conv_last")


def compact_state_dict(scale: int = 4, feat: int = 8, convs: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """SRVGGNetCompact (realesr-general-x4v3's architecture): conv, PReLU, ``convs`` x (conv, PReLU),
    then a conv to ``3 * scale**2`` channels for the pixel shuffle."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    _conv(sd, "body.0", feat, 3, gen, gain=0.5)
    sd["body.1.weight"] = torch.full((feat,), 0.25)
    for i in range(convs):
        _conv(sd, f"body.{2 + 2 * i}", feat, feat, gen, gain=0.5)
        sd[f"body.{3 + 2 * i}.weight"] = torch.full((feat,), 0.25)
    last = f"body.{2 + 2 * convs}"
    _conv(sd, last, 3 * scale**2, feat, gen, gain=0.5)
    return sd  # the network adds the nearest-upsampled input: already an image


def swinir_realsr_state_dict(seed: int = 0) -> dict[str, Tensor]:
    """SwinIR as in the real-world SwinIR-M (nearest+conv upsampler, window 8, x4, '1conv'), one stage
    of two blocks at embed 12."""
    from tests.registry.community_fixtures import spandrel_or_skip

    spandrel_or_skip()
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    net = SwinIR(img_size=16, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2.0,
                 upscale=4, upsampler="nearest+conv", resi_connection="1conv", img_range=1.0)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def pth_bytes(state_dict: dict[str, Tensor], container: str | None = None) -> bytes:
    """The file as published: ``torch.save`` of the state dict, bare or under ``container``."""
    buf = io.BytesIO()
    torch.save(state_dict if container is None else {container: state_dict}, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Published:
    """One tiny stand-in for a shipped community entry."""

    shipped_id: str  # the weights.toml entry it stands in for
    family: str  # catalog arch (COMMUNITY_ARCHS key)
    spandrel_id: str
    scale: int
    filename: str  # the published file name
    make: Callable[[], bytes]


PUBLISHED: dict[str, Published] = {
    p.shipped_id: p
    for p in (
        Published("realesrgan-x4plus", "esrgan", "ESRGAN", 4, "RealESRGAN_x4plus.pth",
                  lambda: pth_bytes(realesrgan_state_dict(4), "params_ema")),
        Published("realesrgan-x2plus", "esrgan", "ESRGAN", 2, "RealESRGAN_x2plus.pth",
                  lambda: pth_bytes(realesrgan_state_dict(2), "params_ema")),
        Published("realesrgan-x4plus-anime-6b", "esrgan", "ESRGAN", 4, "RealESRGAN_x4plus_anime_6B.pth",
                  lambda: pth_bytes(realesrgan_state_dict(4, blocks=2, seed=1), "params_ema")),
        Published("realesr-general-x4v3", "compact", "Compact", 4, "realesr-general-x4v3.pth",
                  lambda: pth_bytes(compact_state_dict(4), "params")),
        Published("bsrgan-x4", "esrgan", "ESRGAN", 4, "BSRGAN.pth", lambda: pth_bytes(bsrgan_state_dict())),
        Published("swinir-x4-realsr", "swinir", "SwinIR", 4, "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",
                  lambda: pth_bytes(swinir_realsr_state_dict(), "params_ema")),
    )
}
