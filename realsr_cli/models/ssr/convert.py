"""SSR state dicts: no official checkpoint to convert; the config read back from our own shapes."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks.state_dict import no_official_checkpoint
from realsr_cli.models.ssr.config import (
    DepthHeadConfig,
    DKENetConfig,
    NBSRConfig,
    SSRConfig,
    SSRDenoiserConfig,
)

__all__ = ["convert_official_state_dict", "config_from_state_dict"]


_HINT_TRAIN = (
    "SSR weights come from our own training: `realsr train` then `realsr train export` writes a "
    ".safetensors file that loads directly, without `realsr convert`"
)


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Always raises :class:`WeightsError`: the SSR authors released no code or weights."""
    no_official_checkpoint("SSR", _HINT_TRAIN)


def _count(sd: Mapping[str, Tensor], prefix: str) -> int:
    i = 0
    while any(k.startswith(f"{prefix}{i}.") for k in sd):
        i += 1
    return i


def config_from_state_dict(sd: Mapping[str, Tensor], scale: int | None = None) -> SSRConfig:
    """Infer :class:`SSRConfig` from the shapes of a state dict in our layout.

    Read from tensors: every width, kernel size, block counts, ``amf_norm`` (BatchNorm keeps
    running statistics), ``concat_lq``, ``concat_sr``, whether our depth head is present. Not
    stored in tensors, hence the defaults: ``svkr_iterations``, ``svkr_gamma``, ``target`` and the
    whole ``schedule``.
    """
    if scale not in (None, 4):
        raise WeightsError(f"SSR is x4; scale {scale} does not match the checkpoint")
    try:
        taps = sd["dkenet.tail.weight"].shape[0]
        dk_ch = sd["dkenet.head.weight"].shape[0]
        hidden = sd["dkenet.block1.conv1.affine.0.0.weight"].shape[0]
        dkenet = DKENetConfig(
            kernel_size=math.isqrt(taps),
            channels=dk_ch,
            depth_channels=sd["dkenet.depth_branch.head.weight"].shape[0],
            maconv_reduction=max(1, (dk_ch // 2) // hidden),
        )
        nbsr = NBSRConfig(
            num_feat=sd["nbsr.conv_first.weight"].shape[0],
            growth=sd["nbsr.body.0.blocks.0.convs.0.weight"].shape[0],
            num_blocks=_count(sd, "nbsr.body."),
            kernel_feat=sd["nbsr.kernel_encoder.0.weight"].shape[0],
        )
        has_head = "depth_estimator.enc1.0.weight" in sd
        depth = (
            DepthHeadConfig(channels=sd["depth_estimator.enc1.0.weight"].shape[0])
            if has_head
            else DepthHeadConfig()
        )
        p = "denoiser."
        mc = sd[p + "time_embed.0.weight"].shape[1]
        levels = _count(sd, p + "enc_amf.")
        widths = [sd[f"{p}enc_amf.{i}.kernel.alpha.2.weight"].shape[0] for i in range(levels)]
        mult = tuple(w // mc for w in widths)
        denoiser = SSRDenoiserConfig(
            model_channels=mc,
            channel_mult=mult,
            num_res_blocks=_count(sd, p + "enc_blocks.0."),
            lr_width=sd[p + "lr_encoder.stem.0.weight"].shape[0] // mult[0],
            lr_blocks=_count(sd, p + "lr_encoder.levels.0."),
            aux_width=sd[p + "depth_encoder.stem.0.weight"].shape[0] // mult[0],
            kernel_embed=sd[p + "kernel_encoder.stem.0.weight"].shape[0],
            amf_hidden=sd[p + "enc_amf.0.kernel.alpha.0.weight"].shape[0],
            amf_norm="bn" if p + "enc_amf.0.kernel.norm.running_mean" in sd else "gn",
            concat_lq=sd[p + "conv_in.weight"].shape[1] % 48 == 3,
            concat_sr=sd[p + "conv_in.weight"].shape[1] >= 2 * 48,
        )
        return SSRConfig(
            depth_head=has_head, dkenet=dkenet, nbsr=nbsr, depth=depth, denoiser=denoiser
        )
    except KeyError as exc:
        raise WeightsError(f"incomplete SSR state dict: no key {exc}") from None
    except ConfigError as exc:
        raise WeightsError(f"inconsistent SSR state dict: {exc.message}", hint=exc.hint) from exc
