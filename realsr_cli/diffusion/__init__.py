"""Small pure diffusion schedules (no parameters, no ``nn.Module``), shared by sampling and training.

- :mod:`realsr_cli.diffusion.resshift` -- residual shifting (ResShift, Yue et al. NeurIPS 2023), with
  UPSR's uncertainty-guided noise weighting (Zhang et al. CVPR 2025): ``ResShiftSchedule``,
  ``uncertainty_weight``.
- :mod:`realsr_cli.diffusion.masking` -- RealSRT's mask schedule gamma(r) = 1 - sqrt(r).
- :mod:`realsr_cli.diffusion.ddpm` -- DDPM training schedule with DDIM-style sampling (SSR):
  ``DDPMSchedule``.

Every schedule follows the same shape (STYLE §5): ``set_timesteps``, ``add_noise``, ``step``, an
explicit ``generator=``; random draws happen on the CPU and are then moved (STYLE §6).
"""
