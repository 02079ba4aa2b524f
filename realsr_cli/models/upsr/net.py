"""UPSR: the auxiliary SR network g, the Swin-UNet denoiser and the 5-step residual-shifting sampler.

Zhang et al., "Uncertainty-guided Perturbation for Image Super-Resolution Diffusion Model", CVPR 2025
(official code: LabShuHangGU/UPSR, ``UPSRRealModel.sample_func``). For an LR image ``lq`` in [0,1]:

1. ``y0 = (lq - 0.5) / 0.5``, reflect-padded bottom/right to a multiple of 64 (``pad_multiple``);
2. ``y = bicubic_x4(y0)`` (not clamped) and ``y_hat = g(y0)`` (ATD, rescaled to [-1,1]);
3. ``w_u = 0.4 + 0.6 min(|y_hat - y| / 2, 0.1) / 0.1`` (Eqs. 5-6);
4. everything moves to the PixelUnshuffle(4) layout (48 channels at LR resolution);
   the denoiser is conditioned on ``PixelUnshuffle(4)(cat[y_hat, y])`` (96 channels);
5. ``x_T = y + kappa sqrt(eta_T) w_u noise`` and, for t = T-1 .. 0,
   ``x0 = PixelUnshuffle(f(x_t / sqrt(eta_t kappa^2 0.3 + 0.25), t, cond))`` and the deterministic
   ResShift DDIM update (``ResShiftSchedule.ddim_step``);
6. ``sr = PixelShuffle(x)`` cropped to 4x the input, clamped to [-1,1], mapped to [0,1].

State dict (strict, official keys 1:1 under two prefixes):

- ``denoiser.<key>``: the official ``upsr.pth`` (``UNetModelSwin``) keys,
- ``aux.<key>``: the official ``atd_real.pth`` (ATD, network g) keys.

``merge_official([upsr_sd, atd_sd])`` (either order) builds it from the two released files;
``convert_official_state_dict`` prefixes one of them (or passes a merged dict through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realsr_cli.diffusion.resshift import ResShiftSchedule, uncertainty_weight
from realsr_cli.models._blocks import sampling as _sampling
from realsr_cli.models._blocks.upscaler import Sampling, Upscaler, grad_off
from realsr_cli.models.upsr.atd import ATD
from realsr_cli.models.upsr.config import UPSRConfig
from realsr_cli.models.upsr.unet import SwinUNet

__all__ = [
    "DENOISER_PREFIX",
    "AUX_PREFIX",
    "UPSRCondition",
    "UPSRNet",
]

DENOISER_PREFIX = "denoiser."
AUX_PREFIX = "aux."


def _reflect_pad(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Reflect-pad bottom/right (``F.pad(mode="reflect")``, repeated when the pad exceeds the image)."""
    while pad_h > 0 or pad_w > 0:
        step_h, step_w = min(pad_h, x.shape[-2] - 1), min(pad_w, x.shape[-1] - 1)
        if (pad_h and step_h == 0) or (pad_w and step_w == 0):  # a 1-pixel side cannot reflect
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


@dataclass(frozen=True)
class UPSRCondition:
    """Everything the sampler derives from the LR image (HR tensors on the [-1,1] scale).

    ``y0`` (B,3,H',W') padded LR; ``y_bicubic``, ``y_hat``, ``un`` (B,3,4H',4W'); ``lq_cond``
    (B,96,H',W') the denoiser's conditioning. H', W' are the padded sizes.
    """

    y0: Tensor
    y_bicubic: Tensor
    y_hat: Tensor
    un: Tensor
    lq_cond: Tensor


class UPSRNet(Upscaler):
    """UPSR x4: ``denoiser`` (Swin-UNet, official ``network_g``) + ``aux`` (ATD g, ``network_mse``).

    ``aux`` may be injected (a pretrained g shared between models, STYLE §1); it must map (B,3,H,W)
    in [0,1] to (B,3,4H,4W) on the [0,1] scale. By default an ATD is built from ``config.aux``.
    """

    def __init__(self, config: UPSRConfig | None = None, aux: nn.Module | None = None) -> None:
        super().__init__()
        cfg = self.config = config or UPSRConfig()
        s = cfg.scale
        if s != 4:
            raise ValueError(f"the UPSR denoiser head upsamples x4; scale {s} is not supported")
        if cfg.denoiser.in_channels != 3 * s * s or cfg.denoiser.lq_channels != 6 * s * s:
            raise ValueError("denoiser in_channels/lq_channels must be 3*scale^2 / 6*scale^2")
        if aux is None and cfg.aux.scale != s:
            raise ValueError(f"aux.scale {cfg.aux.scale} != scale {s}")
        self.denoiser = SwinUNet(cfg.denoiser)
        self.aux = aux if aux is not None else ATD(cfg.aux)

    # ------------------------------------------------------------------ pieces
    def make_schedule(self, steps: int | None = None) -> ResShiftSchedule:
        """A fresh schedule from ``config.diffusion`` with ``steps`` (default: all T) sampling steps."""
        d = self.config.diffusion
        sched = ResShiftSchedule(
            d.num_timesteps,
            kappa=d.kappa,
            min_noise_level=d.min_noise_level,
            etas_end=d.etas_end,
            power=d.power,
            input_var=d.input_var,
        )
        sched.set_timesteps(d.num_timesteps if steps is None else steps)
        return sched

    def denoise(self, x_in: Tensor, t: Tensor, lq_cond: Tensor) -> Tensor:
        """One denoiser call f: x_in (B,48,h,w) = ``schedule.scale_input(x_t, t)``, t int64 (B,),
        lq_cond (B,96,h,w) -> predicted x0 (B,3,4h,4w) in HR pixels ([-1,1] scale)."""
        return self.denoiser(x_in, t, lq_cond)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """LR size after the official padding to a multiple of ``pad_multiple``."""
        return _sampling.padded_size(height, width, self.config.pad_multiple)

    def noise_shape(self, lq_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """Shape of the prior noise for an LR batch of shape (B,3,H,W): (B,3,4H',4W'), padded sizes."""
        return _sampling.noise_shape(lq_shape, self.config.pad_multiple, self.config.scale)

    def condition(self, lq: Tensor) -> UPSRCondition:
        """Pre-processing of ``sample_func``: lq (B,3,H,W) in [0,1] -> :class:`UPSRCondition`."""
        cfg, s = self.config, self.config.scale
        h, w = lq.shape[-2:]
        hp, wp = self.padded_size(h, w)
        y0 = _reflect_pad((lq - 0.5) / 0.5, hp - h, wp - w)
        y_bicubic = F.interpolate(y0, scale_factor=s, mode="bicubic", align_corners=False)
        y_hat = (self.aux(y0 * 0.5 + 0.5) - 0.5) / 0.5
        un = uncertainty_weight(
            y_hat, y_bicubic, psi_max=cfg.diffusion.psi_max, min_weight=cfg.diffusion.min_weight
        )
        lq_cond = F.pixel_unshuffle(torch.cat([y_hat, y_bicubic], dim=1), s)
        return UPSRCondition(y0=y0, y_bicubic=y_bicubic, y_hat=y_hat, un=un, lq_cond=lq_cond)

    # ------------------------------------------------------------------ sampling
    def _sample(
        self, lq: Tensor, sampling: Sampling, trace: dict[str, Tensor] | None
    ) -> Tensor:
        s = self.config.scale
        sched = self.make_schedule(sampling.steps)
        cond = self.condition(lq)
        noise = _sampling.initial_noise(lq, self.noise_shape(lq.shape), sampling)
        y, un = F.pixel_unshuffle(cond.y_bicubic, s), F.pixel_unshuffle(cond.un, s)
        x = sched.prior_sample(y, F.pixel_unshuffle(noise, s), un=un)
        for k, tt in enumerate(_sampling.timestep_batches(sched.timesteps, lq)):
            x0 = F.pixel_unshuffle(self.denoise(sched.scale_input(x, tt), tt, cond.lq_cond), s)
            x = sched.ddim_step(
                x0, tt, x, y, eta=self.config.diffusion.ddim_eta, generator=sampling.generator
            )
            if trace is not None:
                trace[f"step{k}.sample"], trace[f"step{k}.pred_xstart"] = x, x0
        h, w = lq.shape[-2:]
        result = F.pixel_shuffle(x, s)[..., : h * s, : w * s].clamp(-1.0, 1.0)
        if trace is not None:
            trace.update(
                y0=cond.y0,
                y_bicubic=cond.y_bicubic,
                y_hat=cond.y_hat,
                un=cond.un,
                lq_cond=cond.lq_cond,
                noise_hr=noise,
                result_pm1=result,
            )
        return result * 0.5 + 0.5

    def _upscale(self, lq: Tensor, sampling: Sampling) -> Tensor:
        """:meth:`upscale`'s part: lq (B,3,H,W) float in [0,1] -> sr (B,3,4H,4W) in [0,1] (the
        official clamp to [-1,1]).

        ``noise``: the prior noise, (B,3,4H',4W') at the padded size (:meth:`noise_shape`); when None
        it is drawn from ``generator`` on the CPU and moved. ``steps``: sampling steps (default and
        maximum: ``config.diffusion.num_timesteps`` = 5), official respacing.
        """
        return self._sample(lq, sampling, None)

    def trace(
        self,
        lq: Tensor,
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """:meth:`upscale` keeping every intermediate, named as in the parity fixtures.

        Keys: ``y0``, ``y_bicubic``, ``y_hat``, ``un``, ``lq_cond``, ``noise_hr``, ``step{k}.sample``
        and ``step{k}.pred_xstart`` (48-channel PixelUnshuffle layout; k=0 is the first model call),
        ``result_pm1`` (cropped and clamped, [-1,1]) and ``out01`` (= upscale's output).
        """
        trace: dict[str, Tensor] = {}
        with grad_off():
            trace["out01"] = self._sample(lq, Sampling(generator, steps, noise), trace)
        return trace


# ---------------------------------------------------------------------- official checkpoints
