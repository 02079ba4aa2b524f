"""Layers shared by several models.

- ``conv``: norm/activation wrappers, the pre-activation ``ResBlock``, down/up-sampling stages.
- ``swin``: (shifted) window attention, Swin transformer blocks and the residual Swin group (RSTB).
- ``reference``: ``reference_mode()``, the opt-in untuned formulation (explicit attention, masks
  rebuilt per call) that ``bench/`` times against ours.
- ``vq``: nearest-neighbour vector quantizer over a learned codebook, with distances and top-k.

Attribute names follow the official checkpoints that use these layers, because state-dict keys are
public API (STYLE.md §2).
"""
