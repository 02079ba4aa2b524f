"""SSRNet: SVKR (depth + spatially variant kernels) -> modality encoders -> AMF-conditioned DDIM.

SSR (Adaptive Multi-modal Fusion of Spatially Variant Kernel Refinement with Diffusion Model for
Blind Image Super-Resolution, Fig. 3a). For an LR image ``lq`` (B,3,H,W) in [0,1]:

1. ``lq`` is reflect-padded bottom/right to a multiple of ``config.size_multiple`` (H', W');
2. SVKR (Algorithm 1): depth D_T (B,1,H',W') and per-pixel kernels K_T (B,k*k,H',W');
3. the modality encoders turn (K_T, D_T, lq) into per-level features f_1, f_2, f_3;
4. ``x_T ~ N(0, I)`` of shape (B,3,4H',4W') from the seeded CPU generator (or ``noise=``), then
   DDIM steps with the eps-prediction denoiser, conditioned by AMF at every level (Eq. 3);
5. the result is cropped to (B,3,4H,4W) and mapped from [-1,1] to [0,1] (not clamped).

State dict: ``depth_estimator.*`` (our :class:`DepthHead`, when ``config.depth_head``), ``dkenet.*``,
``nbsr.*``, ``denoiser.*`` (including ``denoiser.{lr,depth,kernel}_encoder.*``). No official weights
exist; :func:`convert_official_state_dict` always raises. :func:`config_from_state_dict` reads the
architecture back from shapes (schedule and SVKR settings are not stored in tensors: defaults).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.diffusion.ddpm import DDPMSchedule
from realsr_cli.errors import ConfigError
from realsr_cli.models._blocks import sampling as _sampling
from realsr_cli.models._blocks.upscaler import Sampling, Upscaler, grad_off
from realsr_cli.models.ssr.amf import ModalityFeatures
from realsr_cli.models.ssr.config import (
    SSRConfig,
)
from realsr_cli.models.ssr.denoiser import SSRDenoiser
from realsr_cli.models.ssr.depth import DepthHead
from realsr_cli.models.ssr.dkenet import DKENet
from realsr_cli.models.ssr.nbsr import NBSR
from realsr_cli.models.ssr.svkr import SVKRResult, svkr

__all__ = [
    "SSRCondition",
    "SSRNet",
    "kernel_variance",
    "pad_to_multiple",
]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad (B,C,H,W) bottom/right to multiples of ``multiple``: reflect, replicate where a side is
    too short to reflect."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def kernel_variance(kernels: Tensor) -> Tensor:
    """Spatial variance of each per-pixel kernel, the heat map of SSR Fig. 4.

    kernels (B,k*k,H,W), non-negative taps summing to 1 (row-major) -> (B,1,H,W):
    ``sum_p K(p) |p - mu|^2`` with ``mu = sum_p K(p) p``, in squared kernel-pixel units.
    """
    k = math.isqrt(kernels.shape[1])
    if k * k != kernels.shape[1]:
        raise ValueError(f"expected k*k kernel taps, got {kernels.shape[1]} channels")
    ax = torch.arange(k, dtype=kernels.dtype, device=kernels.device) - (k - 1) / 2
    ys = ax.repeat_interleave(k).view(1, -1, 1, 1)
    xs = ax.repeat(k).view(1, -1, 1, 1)
    mx = (kernels * xs).sum(1, keepdim=True)
    my = (kernels * ys).sum(1, keepdim=True)
    return (kernels * ((xs - mx) ** 2 + (ys - my) ** 2)).sum(1, keepdim=True)


@dataclass
class SSRCondition:
    """Everything sampling derives from the LR image once: ``lq`` (B,3,H',W') padded, on [-1,1];
    ``depth`` (B,1,H',W'); ``kernels`` (B,k*k,H',W'); ``features`` the encoded modalities;
    ``sr`` SVKR's estimate I_T (B,3,4H',4W') on [-1,1] when the config uses it, else None."""

    lq: Tensor
    depth: Tensor
    kernels: Tensor
    features: ModalityFeatures
    sr: Tensor | None = None


class SSRNet(Upscaler):
    """SSR x4: ``depth_estimator`` + ``dkenet`` + ``nbsr`` (SVKR) and ``denoiser`` (with encoders).

    ``depth_estimator``: any module mapping (B,3,H,W) in [0,1] to (B,1,H,W) depth in [0,1] (e.g. a
    published MiDaS/DPT-style network wrapped by the registry). When None, our trainable
    :class:`DepthHead` is built from ``config.depth`` (``config.depth_head`` must be True). The
    module is stored as ``self.depth_estimator``, so its parameters are part of the state dict.
    """

    def __init__(
        self, config: SSRConfig | None = None, depth_estimator: nn.Module | None = None
    ) -> None:
        super().__init__()
        cfg = self.config = config or SSRConfig()
        if depth_estimator is None:
            if not cfg.depth_head:
                raise ConfigError(
                    "this SSR config has no depth head (depth_head=false)",
                    hint="inject a depth estimator: SSRNet(config, depth_estimator=module)",
                )
            depth_estimator = DepthHead(cfg.depth)
        self.depth_estimator = depth_estimator
        k = cfg.dkenet.kernel_size
        self.dkenet = DKENet(cfg.dkenet)
        self.nbsr = NBSR(cfg.nbsr, kernel_size=k, scale=cfg.scale)
        self.denoiser = SSRDenoiser(cfg.denoiser, kernel_size=k, scale=cfg.scale)

    # ------------------------------------------------------------------ pieces
    def estimate_depth(self, img: Tensor) -> Tensor:
        """DE: (B,3,H,W) in [0,1] -> (B,1,H,W) in [0,1]."""
        return self.depth_estimator(img)

    def svkr(self, lq: Tensor, *, keep_estimates: bool = False) -> SVKRResult:
        """Algorithm 1 on lq (B,3,h,w) in [0,1]: D_T (B,1,h,w) and K_T (B,k*k,h,w)."""
        return svkr(
            lq,
            depth_fn=self.estimate_depth,
            kernel_fn=self.dkenet,
            sr_fn=self.nbsr,
            iterations=self.config.svkr_iterations,
            gamma=self.config.svkr_gamma,
            keep_estimates=keep_estimates,
        )

    def svkr_for_denoiser(self, lq: Tensor) -> tuple[SVKRResult, Tensor | None]:
        """SVKR on lq (B,3,h,w) in [0,1] plus what the denoiser takes from it besides D_T, K_T:
        the estimate I_T on the [-1,1] scale when the config uses it (``target = "residual"`` or
        ``concat_sr``: one more NBSR call), else None."""
        if not self.config.uses_sr_estimate:
            return self.svkr(lq), None
        est = self.svkr(lq, keep_estimates=True)
        return est, est.estimates[-1] * 2 - 1

    def make_schedule(self, steps: int | None = None) -> DDPMSchedule:
        """A fresh schedule from ``config.schedule`` with ``steps`` DDIM steps (default: config)."""
        s = self.config.schedule
        sched = DDPMSchedule(
            s.num_timesteps,
            beta_schedule=s.beta_schedule,
            beta_start=s.beta_start,
            beta_end=s.beta_end,
            clip_x0=s.clip_x0 or None,
        )
        sched.set_timesteps(s.sampling_steps if steps is None else steps)
        return sched

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """LR size after padding to a multiple of ``config.size_multiple``."""
        return _sampling.padded_size(height, width, self.config.size_multiple)

    def noise_shape(self, lq_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Initial noise shape for an LR batch (B,3,H,W): (B,3,4H',4W') at the padded size."""
        return _sampling.noise_shape(lq_shape, self.config.size_multiple, self.config.scale)

    def condition(self, lq: Tensor) -> SSRCondition:
        """Pad lq (B,3,H,W) in [0,1], run SVKR and the modality encoders -> :class:`SSRCondition`."""
        lq_pad = pad_to_multiple(lq, self.config.size_multiple)
        est, sr = self.svkr_for_denoiser(lq_pad)
        lq_pm1 = lq_pad * 2 - 1
        feats = self.denoiser.encode(lq_pm1, est.depth, est.kernels)
        return SSRCondition(
            lq=lq_pm1, depth=est.depth, kernels=est.kernels, features=feats, sr=sr
        )

    def predict_eps(
        self, x_t: Tensor, t: Tensor, cond: SSRCondition, schedule: DDPMSchedule | None = None
    ) -> Tensor:
        """eps_theta(x_t, t | cond): x_t (B,3,4H',4W') on [-1,1], t int64 (B,) -> eps, same shape.

        A v-prediction denoiser (``schedule.prediction = "v"``) is converted to eps with
        ``schedule`` (default: :meth:`make_schedule`; only alpha_bar is used).
        """
        out = self.denoiser(x_t, t, cond.features, cond.lq, cond.sr)
        if self.config.schedule.prediction == "eps":
            return out
        return (schedule or self.make_schedule()).eps_from_v(out, t, x_t)

    # ------------------------------------------------------------------ inference
    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        """:meth:`upscale`'s part: lq (B,3,H,W) float in [0,1] -> sr (B,3,4H,4W) on the [0,1]
        scale, not clamped.

        ``noise``: x_T, shaped :meth:`noise_shape` (padded size); when None it is drawn from
        ``generator`` on the CPU in fp32 and moved. ``steps``: DDIM steps (default
        ``config.schedule.sampling_steps``). With ``schedule.eta > 0`` each step also draws noise
        from ``generator``.
        """
        cond = self.condition(lq)
        sched = self.make_schedule(sampling.steps)
        x = _sampling.initial_noise(lq, self.noise_shape(lq.shape), sampling)
        eta = self.config.schedule.eta
        for tt in _sampling.timestep_batches(sched.timesteps, lq):
            eps = self.predict_eps(x, tt, cond, sched)
            x = sched.step(eps, tt, x, eta=eta, generator=sampling.generator)
        if self.config.target == "residual":
            assert cond.sr is not None
            x = x + cond.sr
        s = self.config.scale
        h, w = lq.shape[-2:]
        return x[..., : h * s, : w * s] * 0.5 + 0.5

    def auxiliary(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """What SSR conditions on, for ``--save-aux``: lq (B,3,H,W) in [0,1] ->
        (depth (B,1,H,W) in [0,1], kernels (B,k*k,H,W)), computed on the padded image as
        :meth:`upscale` does and cropped."""
        with grad_off():
            h, w = lq.shape[-2:]
            est = self.svkr(pad_to_multiple(lq, self.config.size_multiple))
            return est.depth[..., :h, :w], est.kernels[..., :h, :w]

    #: AuxiliaryMaps capability (registry/capabilities.py): the map written next to the depth
    kernel_variance = staticmethod(kernel_variance)

    def manifest_extra(self) -> dict[str, str]:
        """Run-manifest entries (see ``engine.api.manifest_for``): which depth estimator ran
        (an injected module's ``manifest_label``/``manifest_sha256`` when it has them)."""
        de = self.depth_estimator
        label = getattr(de, "manifest_label", None)
        if isinstance(de, DepthHead):
            name = "ssr-depth-head (trained in realsr; no published depth model)"
        elif isinstance(label, str) and label:
            name = label
        else:
            name = f"{type(de).__module__}.{type(de).__qualname__}"
        extra = {"depth_estimator": name}
        sha = getattr(de, "manifest_sha256", None)
        if isinstance(sha, str) and sha:
            extra["depth_estimator_sha256"] = sha
        return extra


# ---------------------------------------------------------------------- state dicts
