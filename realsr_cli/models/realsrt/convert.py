"""Official RealSRT checkpoints -> our layout, and the config inferred from a state dict's shapes.

The released ``net_g_80000.pth`` holds the full ``RealSRT(use_critic=True, use_ccm=True)`` state
dict under ``params_ema`` (the registry unwraps it). Our keys are the official keys, so conversion
only drops what inference never reads: the codebook's EMA statistics
``vae.quantizer.codebooks.<i>.cluster_size_ema`` / ``.embed_ema`` (buffers of the VQGAN's EMA
codebook updates during tokenizer training). Everything else is kept 1:1, including tensors that
look redundant but are stored separately in the official file and can differ from their origin:
``generator.token_emb`` / ``critic.token_emb`` (initialised from the codebook), ``pos_emb``
(the fixed sin-cos table), the LayerNorm ``beta`` buffers (zeros) and the unused padding row K of
every embedding.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks.state_dict import key_indices, key_shape
from realsr_cli.models.realsrt.config import (
    CCMConfig,
    RealSRTConfig,
    TransformerConfig,
    VQGANConfig,
)

__all__ = ["TRAINING_ONLY_SUFFIXES", "config_from_state_dict", "convert_official_state_dict"]

#: official key endings (under ``vae.quantizer.``) that inference never reads
TRAINING_ONLY_SUFFIXES = (".cluster_size_ema", ".embed_ema")

#: the official model is x4 only; no tensor records the scale
DEFAULT_SCALE = 4

_HINT = "is this a RealSRT checkpoint? convert the official net_g_80000.pth with `realsr convert --arch realsrt`"


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return a new dict without the training-only EMA buffers; idempotent on our own layout."""
    return {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith("vae.quantizer.") and k.endswith(TRAINING_ONLY_SUFFIXES))
    }


def _shape(state_dict: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    return key_shape(state_dict, key, model="RealSRT", hint=_HINT)


def _tokenizer(state_dict: Mapping[str, Tensor]) -> VQGANConfig:
    """Widths and depth of the VQGAN from the layer sequence of ``vae.encoder.model``."""
    prefix = "vae.encoder.model."
    rows, embed_dim = _shape(state_dict, "vae.quantizer.codebooks.0.weight")
    image_channels = _shape(state_dict, prefix + "0.weight")[1]
    levels: list[list[int]] = [[]]  # residual-block widths per resolution level
    for i in key_indices(state_dict, prefix)[1:]:
        if f"{prefix}{i}.block.2.weight" in state_dict:
            levels[-1].append(_shape(state_dict, f"{prefix}{i}.block.2.weight")[0])
        elif f"{prefix}{i}.conv.weight" in state_dict:
            levels.append([])
    mid = levels[-1][-2:]  # two extra residual blocks after the coarsest level
    levels[-1] = levels[-1][:-2]
    depth = len(levels[0])
    if len(mid) != 2 or depth == 0 or any(len(lv) != depth or len(set(lv)) != 1 for lv in levels):
        raise WeightsError(
            "RealSRT VQGAN encoder has an unexpected layer sequence "
            f"(residual widths per level {levels} + {mid})",
            hint=_HINT,
        )
    return VQGANConfig(
        image_channels=image_channels,
        channels=tuple(lv[0] for lv in levels),
        num_res_blocks=depth,
        embed_dim=embed_dim,
        n_embed=rows - 1,
    )


def _transformer(state_dict: Mapping[str, Tensor], prefix: str) -> TransformerConfig:
    dim = _shape(state_dict, prefix + "enc_in.weight")[0]
    dec_depth = len(key_indices(state_dict, prefix + "dec_blocks."))
    if dec_depth == 0:
        raise WeightsError(f"RealSRT state dict has no {prefix}dec_blocks", hint=_HINT)
    _, heads, _, dim_head = _shape(state_dict, prefix + "dec_blocks.0.0.null_kv")
    hidden = _shape(state_dict, prefix + "dec_blocks.0.2.3.gamma")[0]
    ff_mult = max(1, round(hidden * 3 / (2 * dim)))
    if int(dim * ff_mult * 2 / 3) != hidden:
        raise WeightsError(
            f"{prefix}: feed-forward width {hidden} is not int(dim * mult * 2/3) for dim {dim}"
        )
    return TransformerConfig(
        dim=dim,
        dim_out=_shape(state_dict, prefix + "to_logits.weight")[0],
        seq_len=_shape(state_dict, prefix + "pos_emb")[1],
        enc_depth=len(key_indices(state_dict, prefix + "enc_blocks.")),
        dec_depth=dec_depth,
        heads=heads,
        dim_head=dim_head,
        ff_mult=ff_mult,
    )


def config_from_state_dict(
    state_dict: Mapping[str, Tensor], scale: int | None = None
) -> RealSRTConfig:
    """Infer the :class:`RealSRTConfig` of a state dict in our (= official) layout from its shapes.

    Read from the tensors: tokenizer widths, residual depth, codebook size and width; width,
    depths, heads, head width, feed-forward multiple, output size and sequence length of the
    generator and the critic; whether a CCM is present. Not stored in any tensor: ``scale``
    (official: 4, also the default here), the attention logit scale (8), the default number of
    steps (4) and the mask schedule (square root). ``lr_patch`` follows from the token grid:
    ``sqrt(seq_len) * f / scale`` (64 for the release).
    """
    scale = DEFAULT_SCALE if scale is None else scale
    tokenizer = _tokenizer(state_dict)
    generator = _transformer(state_dict, "generator.")
    critic = _transformer(state_dict, "critic.")
    grid = round(generator.seq_len**0.5)
    hr_side = grid * tokenizer.downsample
    if hr_side % scale:
        raise WeightsError(
            f"a {grid}x{grid} token grid ({hr_side} px) cannot come from an x{scale} LR patch",
            hint="RealSRT checkpoints are x4: drop --scale or pass --scale 4",
        )
    ccm = CCMConfig(enabled=any(k.startswith("trainable_copy_encoder.") for k in state_dict))
    try:
        return RealSRTConfig(
            scale=scale,
            lr_patch=hr_side // scale,
            tokenizer=tokenizer,
            generator=generator,
            critic=critic,
            ccm=ccm,
        )
    except ConfigError as exc:
        raise WeightsError(
            f"inconsistent RealSRT state dict: {exc.message}", hint=exc.hint
        ) from exc
