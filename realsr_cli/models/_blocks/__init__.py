"""Layers shared by several models.

- ``conv``: norm/activation wrappers, the pre-activation ``ResBlock``, down/up-sampling stages.
- ``swin``: (shifted) window attention, Swin transformer blocks and the residual Swin group (RSTB).
- ``reference``: ``reference_mode()``, the opt-in untuned formulation (explicit attention, masks
  rebuilt per call) that ``bench/`` times against ours.
- ``vq``: nearest-neighbour vector quantizer over a learned codebook, with distances and top-k.
- ``unet``: the diffusion UNet's blocks (timestep embedding, scale-shift ResBlock, down/up) of UPSR
  and SSR.
- ``rrdb``: ESRGAN's residual-in-residual dense block (SSR's NBSR).
- ``pad``: symmetric (edge-repeating) mirror padding (FeMaSR's ``test()`` padding, MATLAB's border).
- ``tracing``: value-preserving settings for ONNX tracing (the ``ExportOverrides`` capability).
- ``upscaler``: the engine's model contract, ``upscale(lq, *, generator, steps, noise)``, in one
  base class (``Upscaler``; ``DeterministicUpscaler`` for models that ignore the sampling inputs).
- ``sampling``: what the diffusion samplers share (UPSR, SSR): padded size, initial noise, timesteps.
- ``state_dict``: reading configs back from state dicts (key indices and shapes) and the refusal of
  methods without an official checkpoint format.

Attribute names follow the official checkpoints that use these layers, because state-dict keys are
public API (STYLE.md §2).
"""
