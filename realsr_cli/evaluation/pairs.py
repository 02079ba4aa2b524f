"""Paired evaluation: upscale a folder of LR images, score each against its HR image.

Scores are PSNR and SSIM with BasicSR's conventions (:mod:`realsr_cli.evaluation.metrics`), and with
``EvalOptions.niqe`` the no-reference NIQE of each SR image (:mod:`realsr_cli.evaluation.niqe`), with
``EvalOptions.lpips`` LPIPS-VGG against the HR image (:mod:`realsr_cli.evaluation.lpips`), with
``EvalOptions.dists`` DISTS against the HR image (:mod:`realsr_cli.evaluation.dists`). With an HR
prior (a FeMaSR HQ-stage VQGAN, ``lq_stage=false``, scale 1: what ``femasr-hrp`` training exports)
and a model whose network has ``match_indices`` (FeMaSR, UGTSR), also the codebook matching
accuracy: how often the code the SR network picks from its LR input is the code the prior's own
encoder picks from the HR image (top-1), and how often that code is among the network's k nearest
(top-k). Both index maps are computed on the model's padded grid and cropped to the positions that
cover real pixels.

LR and HR images pair by relative path and stem (``sub/0801.png`` <-> ``sub/0801.jpg``). An HR
image larger than LR x scale by less than one LR pixel (sides not divisible by the scale) is
cropped at the bottom/right, as BasicSR's paired validation does; other size mismatches fail that
image. LR images without an HR partner are skipped and listed.

Size (over STYLE's ~300-line guide): the pairing, the per-image scoring with its four optional
metrics and the codebook accuracy share the options and the report of one evaluation form.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from realsr_cli.engine import api, io
from realsr_cli.errors import RealSRError, UsageError
from realsr_cli.evaluation import common, dists, lpips, metrics, niqe
from realsr_cli.registry.capabilities import CodebookMatching, has

log = logging.getLogger(__name__)

__all__ = [
    "EvalOptions",
    "EvalPair",
    "EvalPlan",
    "EvalReport",
    "ImageScore",
    "LearnedMetric",
    "codebook_match",
    "evaluate",
    "fit_hq",
    "image_tensor",
    "learned_names",
    "load_learned",
    "load_prior",
    "pair_folders",
    "score_pair",
]


#: a learned full-reference metric with its weights loaded: (sr, hr, crop_border) -> score
LearnedMetric = Callable[[Tensor, Tensor, int], float]


def learned_names(lpips_on: bool, dists_on: bool) -> tuple[str, ...]:
    """The learned metrics asked for, in report order (LPIPS, then DISTS)."""
    return (("lpips",) if lpips_on else ()) + (("dists",) if dists_on else ())


def load_learned(
    names: tuple[str, ...], device: str | torch.device = "cpu"
) -> dict[str, LearnedMetric]:
    """Load the weights of each learned metric in ``names`` once, from the registry cache (never
    downloads; missing: :class:`WeightsError`, exit 3), and return its scorer by name."""
    return {name: _bind(_LEARNED[name][1], _LEARNED[name][0](device=device)) for name in names}


#: name -> (loader of the network, score function(sr, hr, net, crop_border=))
_LEARNED: dict[str, tuple[Callable[..., Any], Callable[..., float]]] = {
    "lpips": (lpips.load_lpips, lpips.lpips),
    "dists": (dists.load_dists, dists.dists),
}


def _bind(score: Callable[..., float], net: Any) -> LearnedMetric:
    return lambda sr, hr, crop: score(sr, hr, net, crop_border=crop)


@dataclass(frozen=True)
class EvalPair:
    """One LR image and its HR partner; ``name`` is the LR path relative to the LR folder."""

    name: str
    lq: Path
    hq: Path


@dataclass
class EvalPlan:
    pairs: list[EvalPair] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (LR name, why skipped)


@dataclass(frozen=True)
class EvalOptions:
    """``crop_border`` None = the model's scale; ``top_k`` ranks for the codebook accuracy;
    ``save_dir``: also write each SR image there (PNG, LR tree mirrored); ``niqe``: also the
    no-reference NIQE of each SR image (:mod:`realsr_cli.evaluation.niqe`, same crop border);
    ``lpips``: also LPIPS-VGG against HR (same crop border; weights from the registry cache);
    ``dists``: also DISTS against HR (likewise)."""

    upscale: api.UpscaleOptions = api.UpscaleOptions()
    crop_border: int | None = None
    y_channel: bool = True
    top_k: tuple[int, ...] = (1, 3, 5)
    save_dir: Path | None = None
    niqe: bool = False
    lpips: bool = False
    dists: bool = False

    @property
    def learned(self) -> tuple[str, ...]:
        """The learned metrics asked for (:func:`learned_names`)."""
        return learned_names(self.lpips, self.dists)


@dataclass
class ImageScore:
    name: str
    lq: str
    hq: str
    size: tuple[int, int]  # SR (w, h)
    psnr: float
    ssim: float
    codebook: dict[str, float] | None = None
    output: str | None = None
    seconds: float = 0.0
    niqe: float | None = None
    learned: dict[str, float] = field(default_factory=dict)  # lpips / dists, when scored

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "lq": self.lq,
            "hq": self.hq,
            "output": self.output,
            "size": list(self.size),
            "psnr": common.finite(self.psnr),
            "ssim": self.ssim,
        }
        out |= self.learned
        if self.niqe is not None:
            out["niqe"] = self.niqe
        if self.codebook is not None:
            out["codebook"] = self.codebook
        out["seconds"] = round(self.seconds, 4)
        return out


@dataclass
class EvalReport:
    model: str
    arch: str
    scale: int
    crop_border: int
    y_channel: bool
    hr_prior: str | None = None
    top_k: tuple[int, ...] = ()
    niqe: bool = False
    learned: tuple[str, ...] = ()
    images: list[ImageScore] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean(self) -> dict[str, float]:
        """Means over the scored images: psnr, ssim, lpips, dists and niqe (when scored) and
        (with a prior) every codebook key."""
        if not self.images:
            return {}
        n = len(self.images)
        out = {
            "psnr": sum(s.psnr for s in self.images) / n,
            "ssim": sum(s.ssim for s in self.images) / n,
        }
        for name in self.learned:
            out[name] = sum(s.learned.get(name, 0.0) for s in self.images) / n
        if self.niqe:
            out["niqe"] = sum(s.niqe or 0.0 for s in self.images) / n
        scored = [s.codebook for s in self.images if s.codebook is not None]
        for key in scored[0] if scored else ():
            out[key] = sum(c[key] for c in scored) / len(scored)
        return out

    def to_json(self) -> dict[str, Any]:
        mean = {k: common.finite(v) if k == "psnr" else v for k, v in self.mean.items()}
        return {
            "model": self.model,
            "arch": self.arch,
            "scale": self.scale,
            "crop_border": self.crop_border,
            "y_channel": self.y_channel,
            "hr_prior": self.hr_prior,
            "top_k": list(self.top_k) if self.hr_prior else None,
            "count": len(self.images),
            "mean": mean,
            "images": [s.to_json() for s in self.images],
            "missing_hq": [{"lq": n, "reason": r} for n, r in self.missing],
            "failed": [{"lq": n, "error": m} for n, m in self.failed],
            "seconds": round(self.seconds, 3),
        }


# ----------------------------------------------------------------------------- pairing


def pair_folders(
    lq_dir: str | Path,
    hq_dir: str | Path,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    exclude: str | Path | None = None,
) -> EvalPlan:
    """Pair every LR image (sorted; ``pattern`` filters relative path or name) with the HR image
    of the same relative path and stem. Images under ``exclude`` (e.g. the save folder) are
    ignored."""
    lq_root, hq_root = common.existing_folder(lq_dir, "LR"), common.existing_folder(hq_dir, "HR")
    skip = Path(exclude).resolve() if exclude is not None else None
    by_stem = common.stem_index(hq_root, recursive, skip)
    plan = EvalPlan()
    for p in common.list_images(lq_root, recursive, skip):
        rel = p.relative_to(lq_root)
        if not common.selected(rel.as_posix(), p.name, pattern):
            continue
        hq, why = common.hr_partner(rel.with_suffix("").as_posix(), by_stem, hq_root)
        if hq is not None:
            plan.pairs.append(EvalPair(rel.as_posix(), p, hq))
        else:
            plan.missing.append((rel.as_posix(), why))
    return plan


# ----------------------------------------------------------------------------- codebook matching


def load_prior(model: api.LoadedModel, source: str | Path) -> api.LoadedModel:
    """Load the HR prior for ``model``'s codebook accuracy on the same device and precision.

    Raises :class:`UsageError` when ``model`` cannot report its matches (no ``match_indices``),
    or the file is not an HQ-stage network (scale 1 with ``match_indices``).
    """
    if not has(model.net, CodebookMatching):
        raise UsageError(
            f"--hr-prior needs a codebook-matching model (FeMaSR, UGTSR); {model.arch} has none",
            hint="drop --hr-prior, or evaluate a femasr/ugtsr model",
        )
    prior = api.load_model(
        source, device=str(model.device), precision=api._precision_name(model.dtype)
    )
    if prior.scale != 1 or not has(prior.net, CodebookMatching) or prior.net.lq_stage:
        raise UsageError(
            f"{source} is not an HR prior ({prior.arch} x{prior.scale})",
            hint="give the HQ-stage VQGAN (lq_stage=false, scale 1) that `femasr-hrp` exports",
        )
    return prior


def _check_top_k(model: api.LoadedModel, prior: api.LoadedModel, ks: tuple[int, ...]) -> None:
    if not ks or any(k < 1 for k in ks):
        raise UsageError(f"--top-k values must be >= 1, got {list(ks)}")
    sizes = [m.net.codebook_size for m in (model, prior)]
    if sizes[0] != sizes[1]:
        raise UsageError(
            f"the model's codebook has {sizes[0]} codes, the prior's {sizes[1]}",
            hint="give the prior the model was trained with",
        )
    if max(ks) > sizes[0]:
        raise UsageError(f"--top-k {max(ks)} exceeds the codebook size {sizes[0]}")


@torch.inference_mode()
def codebook_match(
    model: api.LoadedModel, prior: api.LoadedModel, lq: Tensor, hq: Tensor, ks: tuple[int, ...]
) -> dict[str, float]:
    """Codebook matching accuracy of one pair (see :func:`metrics.codebook_accuracy`).

    ``lq`` (1,3,h,w) and ``hq`` (1,3,s*h,s*w) float in [0,1]. The LR image is padded by the
    model's ``pad_lq``; the HR image mirror-padded to s times that size, so both code grids
    cover the same area; both maps are then cropped to the ``ceil(h / d)`` x ``ceil(w / d)``
    codes that touch real pixels (d = LR pixels per code).
    """
    s = model.scale
    h, w = lq.shape[-2:]
    if tuple(hq.shape[-2:]) != (h * s, w * s):
        raise UsageError(f"HR {tuple(hq.shape[-2:])} is not LR {(h, w)} x{s}")
    padded = model.net.pad_lq(lq.to(model.device, model.dtype))
    chosen, candidates = model.net.match_indices(padded, max(ks))
    ph, pw = padded.shape[-2:]
    hq_padded = model.net.pad_to(hq.to(prior.device, prior.dtype), ph * s, pw * s)
    gt = prior.net.match_indices(hq_padded, 1)[0][:, :1]
    gh, gw = chosen.shape[-2:]
    if tuple(gt.shape[-2:]) != (gh, gw):
        raise UsageError(
            f"the prior's code grid {tuple(gt.shape[-2:])} differs from the model's {(gh, gw)}",
            hint="the prior and the model must share the codebook resolution (same channels)",
        )
    vh, vw = -(-h * gh // ph), -(-w * gw // pw)  # ceil(h / (ph / gh))
    crop = (..., slice(0, vh), slice(0, vw))
    return metrics.codebook_accuracy(
        chosen[crop].cpu(), candidates[crop].cpu(), gt[crop].cpu(), ks=ks
    )


# ----------------------------------------------------------------------------- scoring


def image_tensor(pixels: np.ndarray) -> Tensor:
    """HxWxC (C = 1 or 3) float32 [0,1] -> (1,3,H,W) float32; gray is repeated to RGB."""
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    return t.expand(3, -1, -1).unsqueeze(0).contiguous() if t.shape[0] == 1 else t.unsqueeze(0)


def fit_hq(
    hq: np.ndarray,
    size: tuple[int, int],
    scale: int,
    name: str,
    hint: str = "the HR image must be the LR image's size times the model's scale",
) -> np.ndarray:
    """Crop HR (h, w) to the SR size ``size`` (h, w) when it is at most ``scale - 1`` px larger
    in each side (HR sides not divisible by the scale); any other mismatch is a UsageError."""
    sh, sw = size
    h, w = hq.shape[:2]
    if 0 <= h - sh < max(1, scale) and 0 <= w - sw < max(1, scale):
        return hq[:sh, :sw]
    raise UsageError(f"{name}: HR is {w}x{h} but the SR image is {sw}x{sh}", hint=hint)


def score_pair(
    model: api.LoadedModel,
    pair: EvalPair,
    options: EvalOptions = EvalOptions(),
    *,
    prior: api.LoadedModel | None = None,
    progress: api.Progress | None = None,
    learned: Mapping[str, LearnedMetric] | None = None,
) -> ImageScore:
    """Upscale ``pair.lq`` (engine path, with tiling), score it against ``pair.hq``
    (``learned``: the scorers of ``options.learned`` from :func:`load_learned`; loaded here when
    None)."""
    t0 = time.perf_counter()
    lq_img = io.read_image(pair.lq, max_pixels=options.upscale.max_pixels)
    hq_img = io.read_image(pair.hq, max_pixels=options.upscale.max_pixels)
    sr_img, info = api.upscale_image(model, lq_img, options.upscale, progress=progress)
    scale = max(1, round(info["scale"]))
    hq_pixels = fit_hq(hq_img.pixels, (sr_img.height, sr_img.width), scale, pair.name)
    sr, hq = image_tensor(sr_img.pixels), image_tensor(hq_pixels)
    crop = model.scale if options.crop_border is None else options.crop_border
    score = ImageScore(
        name=pair.name,
        lq=str(pair.lq),
        hq=str(pair.hq),
        size=(sr_img.width, sr_img.height),
        psnr=metrics.psnr(sr, hq, crop_border=crop, y_channel=options.y_channel),
        ssim=metrics.ssim(sr, hq, crop_border=crop, y_channel=options.y_channel),
    )
    if learned is None:
        learned = load_learned(options.learned, model.device)
    score.learned = {name: metric(sr, hq, crop) for name, metric in learned.items()}
    if options.niqe:
        score.niqe = niqe.niqe(sr, crop_border=crop)
    if prior is not None:
        lq = image_tensor(lq_img.pixels)
        score.codebook = codebook_match(model, prior, lq, hq, options.top_k)
    if options.save_dir is not None:
        dst = Path(options.save_dir) / Path(pair.name).with_suffix(".png")
        io.write_image(dst, sr_img, format="PNG", manifest=api.manifest_for(model, info))
        score.output = str(dst)
    score.seconds = time.perf_counter() - t0
    return score


def score_each(pairs: list[Any], score: Callable[[Any], Any],
               on_done: Callable[[Any, Any, str | None], None] | None = None) -> tuple[list[Any], list[tuple[str, str]]]:
    """``score`` every pair, going on past failures: ``(scores, [(pair.name, message), ...])``.
    ``on_done(pair, score or None, message or None)`` after each."""
    scores: list[Any] = []
    failed: list[tuple[str, str]] = []
    for pair in pairs:
        try:
            result = score(pair)
        except RealSRError as exc:
            msg = exc.message + (f" ({exc.hint})" if exc.hint else "")
            failed.append((pair.name, msg))
            log.debug("failed: %s", pair.name, exc_info=True)
            if on_done:
                on_done(pair, None, msg)
            continue
        scores.append(result)
        if on_done:
            on_done(pair, result, None)
    return scores, failed


def evaluate(
    model: api.LoadedModel,
    plan: EvalPlan,
    options: EvalOptions = EvalOptions(),
    *,
    prior: api.LoadedModel | None = None,
    hr_prior: str | None = None,
    on_done: Callable[[EvalPair, ImageScore | None, str | None], None] | None = None,
    progress: api.Progress | None = None,
) -> EvalReport:
    """Score every pair of ``plan``; a failing pair is recorded and evaluation goes on.

    ``prior`` (from :func:`load_prior`) adds the codebook accuracy; ``hr_prior`` names it in the
    report. With ``options.lpips`` / ``options.dists`` the LPIPS / DISTS weights are loaded once,
    first, on the model's device (missing from the cache: :class:`WeightsError`, exit 3).
    """
    if prior is not None:
        _check_top_k(model, prior, options.top_k)
    learned = load_learned(options.learned, model.device)
    t0 = time.perf_counter()
    crop = model.scale if options.crop_border is None else options.crop_border
    report = EvalReport(
        model=model.weights_id or Path(model.weights_path or "").name,
        arch=model.arch,
        scale=model.scale,
        crop_border=crop,
        y_channel=options.y_channel,
        hr_prior=(hr_prior or prior.weights_path) if prior is not None else None,
        top_k=tuple(sorted(set(options.top_k))),
        niqe=options.niqe,
        learned=options.learned,
        missing=list(plan.missing),
    )
    report.images, report.failed = score_each(
        plan.pairs,
        lambda pair: score_pair(
            model, pair, options, prior=prior, progress=progress, learned=learned
        ),
        on_done,
    )
    report.seconds = time.perf_counter() - t0
    return report
