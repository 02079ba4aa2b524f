"""RealSRT training stages (Peng et al., "Confidence-Based Iterative Generation for Real-World Image
Super-Resolution", ECCV 2024). Four stages, run in this order (Sec. 4.1):

1. ``realsrt-vqgan`` (:class:`RealSRTVQGANStage`, Sec. 3.1): the image tokenizer (VQGAN, f = 8,
   K = 512) on HR patches: pixel + perceptual (weight 0.1) + commitment (beta 0.25) + adversarial
   (hinge, adaptive weight of Esser et al.) losses; Adam, lr 4e-5, batch 64, 200 epochs.
2. ``realsrt-generator`` (:class:`RealSRTGeneratorStage`, Sec. 3.2, Eq. 1): the frozen tokenizer
   gives HR tokens Y_HR and LR tokens Y_LR (of the bicubic-upsampled LR patch); a ratio
   gamma(r) = 1 - sqrt(r), r ~ U(0, 1), of the HR tokens is replaced by [M]; cross-entropy of the
   generator's logits on the masked positions only. AdamW, lr 1e-4 -> 1e-7 (cosine), batch 64,
   800k steps, EMA 0.999.
3. ``realsrt-critic`` (:class:`RealSRTCriticStage`, Sec. 3.2, Eq. 2): tokenizer and generator
   frozen; the generator fills the masked positions (argmax, as the official code; Token-Critic's
   sampling is ``loss.tokens = "sample"``), the critic predicts per token whether it was masked;
   binary cross-entropy over all tokens. Same optimiser/schedule/EMA as the generator.
4. ``realsrt-ccm`` (:class:`RealSRTCCMStage`, Sec. 3.3): everything but the conditional controlling
   module frozen; the frozen masked transformer generates HR tokens from the LR patch (T steps, in
   float32 as at inference), the CCM + frozen decoder turn them into the HR image, trained with
   the tokenizer's losses (pixel, perceptual 0.1, adaptive adversarial on ``zero_out.weight`` as
   in the official code). Adam, lr 4e-5, batch 8, 80k steps, EMA 0.999.

Handoff format. Every stage exports a *complete* ``realsrt`` network (arch ``realsrt``, the
``[model]`` section as its config, loadable strictly by :func:`realsr_cli.registry.loader.
load_weights` and by ``realsr upscale --weights``): the parts trained so far plus a deterministic
fresh initialisation of the rest (seeded by ``run.seed``; the token embeddings of generator and
critic are copies of the codebook, the CCM's encoder a copy of the tokenizer's encoder and its
``zero_out`` zeros, so the CCM adds exactly nothing until trained). The next stage names that file
in its ``[inputs]`` section and reads only the parts it builds on:

====================  =========================  ======================================
stage                 input (``[inputs]``)        parts taken from the file
====================  =========================  ======================================
realsrt-generator     ``vqgan_weights``           ``vae.*`` (tokenizer)
realsrt-critic        ``generator_weights``       ``vae.*``, ``generator.*``
realsrt-ccm           ``critic_weights``          ``vae.*``, ``generator.*``, ``critic.*``
====================  =========================  ======================================

Everything else is initialised fresh. The file's ``[model]`` shapes of the parts taken must
equal the stage's (a :class:`ConfigError` lists the differences). Because every handoff file is a
full model, any ``realsrt`` file works as an input (e.g. the converted official checkpoint, to
retrain only the CCM). Checkpoints of stages 2-4 also hold the frozen parts (net ``frozen``,
:class:`FrozenParts`), so ``realsr train export`` needs no input file. The ``realsrt-critic``
export is the paper's ablation (b) (no CCM effect); the ``realsrt-ccm`` export is the full model.

Decisions where the paper is silent (official code consulted for facts):

- Pixel loss: MSE (the official ``compute_loss`` and CCM training use ``F.mse_loss``); L1 is
  available as ``loss.l1``. Perceptual: the five VGG-16 taps of LPIPS (no learned LPIPS heads in
  this project) with MSE, weight 0.1 (Sec. 4.1).
- Codebook: updated by EMA k-means with decay 0.99 and restart of unused codes, as the official
  VQGAN (``loss.codebook_update = "ema"``); ``"loss"`` uses the VQ-VAE codebook loss instead.
- Adversarial: Real-ESRGAN's U-Net discriminator with spectral norm and hinge loss (the official
  code uses a PatchGAN), generator term ``-E[D(x^)]`` times the adaptive weight
  ``||grad L_nll|| / (||grad L_adv|| + 1e-4)`` (clamped to [0, 1e4]) on the last decoder
  convolution (VQGAN) or ``zero_out`` (CCM), times ``loss.adversarial`` = 0.8 (taming-transformers'
  VQGAN configs; the paper gives no value). ``loss.adversarial_start`` delays it (default 0).
- Adam betas (0.5, 0.9) for the GAN stages (taming-transformers), AdamW with PyTorch's defaults
  (betas (0.9, 0.999), weight decay 0.01) for generator and critic.
- The token embeddings of generator and critic stay frozen copies of the codebook (official code).

The package has one module per stage (``vqgan``, ``generator``, ``critic``, ``ccm``), their
configs (``config``) and what they share (``parts``).
"""

from __future__ import annotations

from realsr_cli.training.stages.realsrt.ccm import (
    RealSRTCCMStage,
)
from realsr_cli.training.stages.realsrt.config import (
    ARCH,
    CCM_PREFIXES,
    CRITIC_PREFIX,
    GENERATOR_PREFIX,
    TOKENIZER_PREFIX,
    RealSRTCCMInputsConfig,
    RealSRTCCMStageConfig,
    RealSRTCriticInputsConfig,
    RealSRTCriticLossConfig,
    RealSRTCriticStageConfig,
    RealSRTGeneratorInputsConfig,
    RealSRTGeneratorStageConfig,
    RealSRTImageLossConfig,
    RealSRTVQGANLossConfig,
    RealSRTVQGANStageConfig,
)
from realsr_cli.training.stages.realsrt.critic import (
    RealSRTCriticStage,
)
from realsr_cli.training.stages.realsrt.generator import (
    RealSRTGeneratorStage,
)
from realsr_cli.training.stages.realsrt.parts import (
    CCMNet,
    FrozenBaseStage,
    FrozenParts,
    VQGANOutput,
    VQGANTrainingNet,
    adaptive_adversarial_weight,
    assemble_state_dict,
    generate_with_generator_confidence,
    sample_tokens,
)
from realsr_cli.training.stages.realsrt.vqgan import (
    RealSRTVQGANStage,
)

__all__ = [
    "ARCH",
    "CCM_PREFIXES",
    "CRITIC_PREFIX",
    "GENERATOR_PREFIX",
    "TOKENIZER_PREFIX",
    "adaptive_adversarial_weight",
    "assemble_state_dict",
    "CCMNet",
    "FrozenBaseStage",
    "FrozenParts",
    "generate_with_generator_confidence",
    "RealSRTCCMInputsConfig",
    "RealSRTCCMStage",
    "RealSRTCCMStageConfig",
    "RealSRTCriticInputsConfig",
    "RealSRTCriticLossConfig",
    "RealSRTCriticStage",
    "RealSRTCriticStageConfig",
    "RealSRTGeneratorInputsConfig",
    "RealSRTGeneratorStage",
    "RealSRTGeneratorStageConfig",
    "RealSRTImageLossConfig",
    "RealSRTVQGANLossConfig",
    "RealSRTVQGANStage",
    "RealSRTVQGANStageConfig",
    "sample_tokens",
    "VQGANOutput",
    "VQGANTrainingNet",
]
