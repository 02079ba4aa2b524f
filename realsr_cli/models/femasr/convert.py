"""Official FeMaSR checkpoints -> our layout, and the config inferred from a state dict's shapes.

Our keys are the official keys, so conversion only drops what inference never reads. The released
``FeMaSR_SRX{2,4}_model_g.pth`` (state dict under ``params``) carry training-only tensors:
``sft_fusion_group.*`` and ``multiscale_encoder.upsampler.*`` (modules of an earlier code version),
``conv_semantic.*`` and ``vgg_feat_extractor.*`` (the semantic regularisation of Stage I, Eq. 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks.state_dict import key_indices, key_shape
from realsr_cli.models.femasr.config import FeMaSRConfig

__all__ = ["TRAINING_ONLY_PREFIXES", "convert_official_state_dict", "config_from_state_dict"]

#: official key prefixes that inference never reads (dropped by :func:`convert_official_state_dict`)
TRAINING_ONLY_PREFIXES = (
    "sft_fusion_group.",
    "multiscale_encoder.upsampler.",
    "conv_semantic.",
    "vgg_feat_extractor.",
)

#: codebook-grid side of every official configuration; fixes ``gt_resolution`` (a label only)
_CODEBOOK_RESOLUTION = 32

_HINT_CONVERT = (
    "is this a FeMaSR checkpoint? convert the official .pth with `realsr convert --arch femasr`"
)


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return a new dict without the training-only keys; idempotent on our own layout."""
    return {k: v for k, v in state_dict.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def _shape(state_dict: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    return key_shape(state_dict, key, model="FeMaSR", hint=_HINT_CONVERT)


def _swin_position(key: str) -> tuple[int, int, int] | None:
    """(encoder stage, RSTB, Swin block) of a key ``multiscale_encoder.blocks.E.swin_blks.R.residual_group.blocks.B.*``."""
    parts = key.split(".")
    if len(parts) < 9 or parts[:2] != ["multiscale_encoder", "blocks"]:
        return None
    if (parts[3], parts[5], parts[6]) != ("swin_blks", "residual_group", "blocks"):
        return None
    numbers = (parts[2], parts[4], parts[7])
    if not all(n.isdigit() for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1]), int(numbers[2])


def _swin_fields(state_dict: Mapping[str, Tensor]) -> tuple[int | None, dict[str, object]]:
    """Locate the Swin layers of E_l: (their index in ``multiscale_encoder.blocks``, config fields)."""
    layout: dict[int, dict[int, set[int]]] = {}
    for key in state_dict:
        pos = _swin_position(key)
        if pos is not None:
            enc, rstb, blk = pos
            layout.setdefault(enc, {}).setdefault(rstb, set()).add(blk)
    if not layout:
        return None, {}
    if len(layout) > 1:
        raise WeightsError(
            f"FeMaSR state dict has Swin layers in several encoder stages {sorted(layout)}"
        )
    enc, rstbs = next(iter(layout.items()))
    head = f"multiscale_encoder.blocks.{enc}.swin_blks.0.residual_group.blocks."
    dim = _shape(state_dict, head + "0.norm1.weight")[0]
    table, heads = _shape(state_dict, head + "0.attn.relative_position_bias_table")
    window = (math.isqrt(table) + 1) // 2
    hidden = _shape(state_dict, head + "0.mlp.fc1.weight")[0]
    fields: dict[str, object] = {
        "swin_dim": dim,
        "swin_heads": heads,
        "swin_window": window,
        "swin_blocks": len(rstbs),
        "swin_depth": len(rstbs[min(rstbs)]),
        "swin_mlp_ratio": hidden / dim,
    }
    mask_key = head + "1.attn_mask"
    if mask_key in state_dict:  # (nW, N, N) for a square reference map of side sqrt(nW) * window
        fields["swin_input_resolution"] = math.isqrt(state_dict[mask_key].shape[0]) * window
    return enc, fields


def _norm_type(state_dict: Mapping[str, Tensor]) -> str:
    prefix = "decoder_group.0.block.2.conv.0.norm."
    if prefix + "running_mean" in state_dict:
        return "bn"
    if prefix + "weight" in state_dict:
        return "gn"
    raise WeightsError(
        "FeMaSR state dict has no normalisation parameters: 'in' and 'none' norms cannot be told apart",
        hint="build the model from an explicit FeMaSRConfig (norm_type='in' or 'none')",
    )


def config_from_state_dict(
    state_dict: Mapping[str, Tensor], scale: int | None = None
) -> FeMaSRConfig:
    """Infer the :class:`FeMaSRConfig` of a state dict in our (= official) key layout from its shapes.

    Read from the tensors: channel widths (decoder convs), codebook size/width, LQ vs HQ stage (Swin
    layers present), scale (number of stride-2 encoder stages vs decoder stages), Swin width, depth,
    heads, window, MLP ratio, RSTB count and mask resolution, norm type (GroupNorm vs BatchNorm) and
    PReLU. Not stored in any tensor, hence the official defaults: ``act_type`` (``"silu"`` unless
    PReLU), ``use_residual`` and ``use_quantize`` (True), ``gt_resolution`` (codebook grid 32).

    ``scale`` (e.g. from ``--scale``) must agree with the inferred one; it is only needed when the
    state dict has no encoder stages to count. Raises :class:`WeightsError` on anything else.
    """
    n_codebooks = len(key_indices(state_dict, "quantize_group."))
    if n_codebooks != 1:
        raise WeightsError(
            f"FeMaSR state dict has {n_codebooks} codebooks; only single-scale codebooks are supported",
            hint=_HINT_CONVERT if n_codebooks == 0 else None,
        )
    codebook_size, codebook_dim = _shape(state_dict, "quantize_group.0.embedding.weight")
    n_stages = len(key_indices(state_dict, "decoder_group."))
    if n_stages == 0:
        raise WeightsError("FeMaSR state dict has no decoder stages", hint=_HINT_CONVERT)
    channels = [_shape(state_dict, "decoder_group.0.block.1.weight")[1]]
    channels += [
        _shape(state_dict, f"decoder_group.{i}.block.1.weight")[0] for i in range(n_stages)
    ]
    in_width, in_channel = _shape(state_dict, "multiscale_encoder.in_conv.weight")[:2]

    swin_index, swin = _swin_fields(state_dict)
    lq_stage = swin_index is not None
    n_down = swin_index if lq_stage else len(key_indices(state_dict, "multiscale_encoder.blocks."))
    inferred = 1 << (n_stages - n_down) if (n_down and n_down <= n_stages) else None
    if inferred is None and scale is None:
        raise WeightsError(
            "cannot infer the FeMaSR scale from this state dict (no stride-2 encoder stages found)",
            hint="pass the scale explicitly, e.g. --scale 4",
        )
    if inferred is not None and scale is not None and scale != inferred:
        raise WeightsError(
            f"these FeMaSR weights are x{inferred}, not x{scale}",
            hint=f"drop --scale or pass --scale {inferred}",
        )
    scale = inferred if inferred is not None else scale

    fields = dict(
        scale=scale,
        lq_stage=lq_stage,
        in_channel=in_channel,
        gt_resolution=_CODEBOOK_RESOLUTION << n_stages,
        channels=tuple(channels),
        codebook_size=codebook_size,
        codebook_dim=codebook_dim,
        norm_type=_norm_type(state_dict),
        act_type="prelu" if "decoder_group.0.block.2.conv.1.func.weight" in state_dict else "silu",
        **swin,
    )
    try:
        config = FeMaSRConfig(**fields)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise WeightsError(f"inconsistent FeMaSR state dict: {exc.message}", hint=exc.hint) from exc
    if in_width != channels[config.encode_depth]:
        raise WeightsError(
            f"FeMaSR encoder input width {in_width} does not match channel width "
            f"{channels[config.encode_depth]} expected for x{config.scale}",
            hint="pass the right --scale for these weights",
        )
    return config
