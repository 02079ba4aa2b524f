"""UPSR checkpoints: the two official files (denoiser + ATD g) -> one state dict in our layout, and the
config read back from tensor shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from torch import Tensor

from realsr_cli.models.upsr.config import ATDConfig, UPSRConfig, UPSRDenoiserConfig
from realsr_cli.models.upsr.net import AUX_PREFIX, DENOISER_PREFIX

__all__ = ["convert_official_state_dict", "merge_official", "config_from_state_dict"]


def _unwrap(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Take the BasicSR ``params_ema`` (else ``params``) entry and drop DDP ``module.`` prefixes."""
    for key in ("params_ema", "params"):
        if key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]  # type: ignore[assignment]
            break
    return {str(k).removeprefix("module."): v for k, v in sd.items()}  # type: ignore[misc]


def _part_of(sd: Mapping[str, Tensor]) -> str:
    if any(k.startswith((DENOISER_PREFIX, AUX_PREFIX)) for k in sd):
        return "merged"
    if "time_embed.0.weight" in sd:
        return "denoiser"
    if "relative_position_index_SA" in sd or "conv_first.weight" in sd:
        return "aux"
    raise ValueError(
        "not an UPSR checkpoint: expected the denoiser (upsr.pth) or ATD g (atd_real.pth) keys"
    )


def convert_official_state_dict(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """One official file -> our layout: ``upsr.pth`` keys get ``denoiser.``, ``atd_real.pth`` keys
    ``aux.``; keys are otherwise unchanged (1:1). An already merged dict passes through."""
    flat = _unwrap(sd)
    part = _part_of(flat)
    if part == "merged":
        return dict(flat)
    prefix = DENOISER_PREFIX if part == "denoiser" else AUX_PREFIX
    return {prefix + k: v for k, v in flat.items()}


def merge_official(state_dicts: Sequence[Mapping[str, object]]) -> dict[str, Tensor]:
    """The two official files (denoiser ``upsr.pth`` and g ``atd_real.pth``, any order) -> one dict."""
    merged: dict[str, Tensor] = {}
    for sd in state_dicts:
        part = convert_official_state_dict(sd)
        clash = merged.keys() & part.keys()
        if clash:
            raise ValueError(
                f"both files define {sorted(clash)[:3]}...: pass one denoiser and one g checkpoint"
            )
        merged.update(part)
    for prefix, name in (
        (DENOISER_PREFIX, "denoiser (upsr.pth)"),
        (AUX_PREFIX, "auxiliary g (atd_real.pth)"),
    ):
        if not any(k.startswith(prefix) for k in merged):
            raise ValueError(f"the {name} checkpoint is missing")
    return merged


def _strip(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    """Number of consecutive indices i for which ``pattern.format(i)`` is a key."""
    i = 0
    while pattern.format(i) in sd:
        i += 1
    return i


def _denoiser_config(sd: Mapping[str, Tensor], scale: int) -> UPSRDenoiserConfig:
    mc = sd["time_embed.0.weight"].shape[1]
    out_channels = sd["conv_last.weight"].shape[0]
    in_channels = out_channels * scale * scale
    lq_channels = sd["input_blocks.0.0.weight"].shape[1] - in_channels
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    mult: list[int] = []
    blocks: list[int] = []
    attn_levels: list[int] = []
    first_mask: tuple[int, int] | None = None  # (level, number of windows) of the first stored mask
    ch, count = mc, 0
    for i in indices[1:]:  # input_blocks.0 is the input conv
        if f"input_blocks.{i}.0.op.weight" in sd:  # a Downsample closes the level
            mult.append(ch // mc)
            blocks.append(count)
            count = 0
            continue
        ch = sd[f"input_blocks.{i}.0.in_layers.2.weight"].shape[0]
        level = len(mult)
        if count == 0 and f"input_blocks.{i}.1.patch_embed.proj.weight" in sd:
            attn_levels.append(level)
            mask = sd.get(f"input_blocks.{i}.1.blocks.1.attn_mask")
            if mask is not None and first_mask is None:
                first_mask = (level, mask.shape[0])
        count += 1
    mult.append(ch // mc)
    blocks.append(count)
    swin = "middle_block.1."
    embed = sd[swin + "patch_embed.proj.weight"].shape[0]
    windows = [v.shape[0] for k, v in sd.items() if k.endswith("attn.relative_position_index")]
    window = math.isqrt(max(windows))
    image_size = 64
    if first_mask is not None:
        lvl, n_windows = first_mask
        image_size = (math.isqrt(n_windows) * window) << lvl
    heads = sd[swin + "blocks.0.attn.relative_position_bias_table"].shape[1]
    return UPSRDenoiserConfig(
        image_size=image_size,
        in_channels=in_channels,
        lq_channels=lq_channels,
        out_channels=out_channels,
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=tuple(blocks),
        attention_resolutions=tuple(image_size >> lvl for lvl in attn_levels),
        num_head_channels=embed // heads,
        swin_depth=_count(sd, swin + "blocks.{}.norm1.weight"),
        swin_embed_dim=embed,
        window_size=window,
        mlp_ratio=sd[swin + "blocks.0.mlp.fc1.weight"].shape[0] / embed,
        num_feat=sd["conv_up1.weight"].shape[0],
    )


def _atd_config(sd: Mapping[str, Tensor]) -> ATDConfig:
    embed, in_channels = sd["conv_first.weight"].shape[:2]
    groups = _count(sd, "layers.{}.conv.weight")
    layer0 = "layers.0.residual_group.layers.0."
    num_tokens = sd["layers.0.residual_group.td"].shape[0]
    return ATDConfig(
        scale=math.isqrt(sd["upsample.0.weight"].shape[0] // in_channels),
        in_channels=in_channels,
        embed_dim=embed,
        depths=tuple(
            _count(sd, f"layers.{g}.residual_group.layers.{{}}.norm1.weight") for g in range(groups)
        ),
        num_heads=tuple(
            sd[f"layers.{g}.residual_group.layers.0.attn_win.relative_position_bias_table"].shape[1]
            for g in range(groups)
        ),
        window_size=math.isqrt(sd["relative_position_index_SA"].shape[0]),
        num_tokens=num_tokens,
        reduced_dim=sd[layer0 + "attn_atd.wq.weight"].shape[0],
        convffn_kernel_size=sd[layer0 + "convffn.dwconv.depthwise_conv.0.weight"].shape[-1],
        mlp_ratio=sd[layer0 + "convffn.fc1.weight"].shape[0] / embed,
    )


def config_from_state_dict(sd: Mapping[str, Tensor], scale: int | None = None) -> UPSRConfig:
    """Infer :class:`UPSRConfig` from the shapes of a state dict in our layout (prefixed keys).

    Works for the released and the reduced fixtures. Not recoverable from shapes, hence defaults:
    ATD's ``category_size`` (128), the diffusion settings, ``pad_multiple``; the denoiser's
    ``image_size`` comes from the stored shifted-window masks (64 when there are none).
    """
    if not any(k.startswith((DENOISER_PREFIX, AUX_PREFIX)) for k in sd):
        raise ValueError(
            "expected keys under denoiser./aux.: convert official checkpoints with merge_official"
        )
    try:
        aux = _atd_config(_strip(sd, AUX_PREFIX))
        if scale is not None and scale != aux.scale:
            raise ValueError(f"scale {scale} does not match the checkpoint (x{aux.scale})")
        denoiser = _denoiser_config(_strip(sd, DENOISER_PREFIX), aux.scale)
    except KeyError as exc:
        raise ValueError(f"incomplete UPSR state dict: no key {exc}") from None
    return UPSRConfig(scale=aux.scale, denoiser=denoiser, aux=aux)
