"""UGTSR state dicts: no official checkpoint to convert; the config inferred from our own shapes.

UGTSR has no released code or weights. Its checkpoints come from ``realsr train`` and are written by
``realsr train export`` as realsr safetensors files whose metadata carries the config, so they load
without conversion. :func:`config_from_state_dict` still reads the config back from tensor shapes,
for files that lost their metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from realsr_cli.errors import ConfigError, WeightsError
from realsr_cli.models._blocks.state_dict import no_official_checkpoint
from realsr_cli.models.femasr.convert import config_from_state_dict as femasr_config_from_state_dict
from realsr_cli.models.ugtsr.config import UGTSRConfig
from realsr_cli.models.ugtsr.net import UGTSR_PREFIXES

__all__ = ["config_from_state_dict", "convert_official_state_dict"]

_HINT_EXPORT = (
    "UGTSR weights come from our own training: `realsr train export` writes a .safetensors file "
    "that loads directly, without `realsr convert`"
)


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Always raises :class:`WeightsError`: there is no official UGTSR checkpoint format."""
    no_official_checkpoint("UGTSR", _HINT_EXPORT)


def _count(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """Number of distinct integers i among keys ``<prefix><i>.<...>``."""
    found = {key[len(prefix) :].split(".", 1)[0] for key in state_dict if key.startswith(prefix)}
    return sum(1 for head in found if head.isdigit())


def config_from_state_dict(
    state_dict: Mapping[str, Tensor], scale: int | None = None
) -> UGTSRConfig:
    """Infer the :class:`UGTSRConfig` of a state dict in our key layout from its shapes.

    The FeMaSR part comes from :func:`realsr_cli.models.femasr.config_from_state_dict` (applied to
    the keys outside :data:`UGTSR_PREFIXES`, with its defaults for what no tensor stores). Read
    from the tensors: ``top_k``, ``fusion_dim``, ``fusion_blocks``, ``fusion_heads`` and the GDFN
    width (``fusion_ffn_expansion``: the default 2.66 when it gives that width, else
    ``hidden / fusion_dim``, which rebuilds the same width), whether
    Align-Attention and the uncertainty head exist. Not stored in any tensor, hence the defaults:
    ``align_window`` and ``align_heads``.
    """
    femasr_part = {k: v for k, v in state_dict.items() if not k.startswith(UGTSR_PREFIXES)}
    femasr = femasr_config_from_state_dict(femasr_part, scale)
    fields: dict[str, object] = {"femasr": femasr, "top_k": 1}

    if "fusion.proj_in.weight" in state_dict:
        dim, width = tuple(state_dict["fusion.proj_in.weight"].shape[:2])
        if width % femasr.codebook_dim or width // femasr.codebook_dim < 2:
            raise WeightsError(
                f"UGTSR fusion input width {width} is not a multiple (>= 2) of the codebook "
                f"width {femasr.codebook_dim}"
            )
        fields.update(top_k=width // femasr.codebook_dim - 1, fusion_dim=dim)
        fields["fusion_blocks"] = _count(state_dict, "fusion.blocks.")
        try:
            fields["fusion_heads"] = state_dict["fusion.blocks.0.attn.temperature"].shape[0]
        except KeyError:
            raise WeightsError("UGTSR state dict has a fusion module without blocks") from None
        ffn = state_dict.get("fusion.blocks.0.ffn.project_out.weight")
        expansion = 0.0 if ffn is None else ffn.shape[1] / dim
        if ffn is not None and round(dim * UGTSRConfig.fusion_ffn_expansion) == ffn.shape[1]:
            expansion = UGTSRConfig.fusion_ffn_expansion  # the default builds the same width
        fields["fusion_ffn_expansion"] = expansion

    n_align = _count(state_dict, "align.")
    fields["align_attention"] = n_align > 0
    fields["uncertainty"] = any(k.startswith("uncertainty_head.") for k in state_dict)
    try:
        config = UGTSRConfig(**fields)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise WeightsError(f"inconsistent UGTSR state dict: {exc.message}", hint=exc.hint) from exc
    if n_align and n_align != config.align_levels:
        raise WeightsError(
            f"UGTSR state dict has {n_align} Align-Attention modules, its decoder takes "
            f"{config.align_levels} shortcuts"
        )
    return config
