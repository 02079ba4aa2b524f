"""Score existing SR images, no model: against HR references (PSNR, SSIM, LPIPS, DISTS) and/or
alone (NIQE).

Pairing rule: an SR image pairs with the HR image of the same relative path and stem, any image
suffix on either side (``sr/sub/0801.png`` <-> ``hr/sub/0801.jpg``). With ``suffix`` (e.g.
``_x4``, ``_out``) the SR stem must end with it, and it is removed first (``sr/0801_x4.png`` <->
``hr/0801.png``). SR images without a partner (or with several, e.g. ``x.png`` and ``x.jpg``) are
skipped and listed; HR images that no SR image names are listed too. Without an HR folder every
SR image is scored alone (no-reference metrics only).

Scores use :mod:`realsr_cli.evaluation.metrics` (PSNR/SSIM, BasicSR conventions: 8-bit, Y channel,
``crop_border`` px cut from each side), :mod:`realsr_cli.evaluation.lpips` and
:mod:`realsr_cli.evaluation.dists` (RGB, same crop; their weights from the registry cache) and
:mod:`realsr_cli.evaluation.niqe`. ``crop_border``
defaults to ``scale`` (BasicSR's convention), or 0 when the scale is not given. An HR image up
to ``scale - 1`` px larger than its SR image in each side is cropped at the bottom/right (HR
sides not divisible by the scale); any other size mismatch fails that image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realsr_cli.engine import io
from realsr_cli.errors import UsageError
from realsr_cli.evaluation import common, metrics, niqe
from realsr_cli.evaluation.pairs import (
    LearnedMetric,
    fit_hq,
    image_tensor,
    learned_names,
    load_learned,
    score_each,
)

log = logging.getLogger(__name__)

__all__ = ["DirEvalOptions", "DirPair", "DirPlan", "DirReport", "DirScore", "evaluate_dirs",
           "pair_dirs", "score_image"]


@dataclass(frozen=True)
class DirPair:
    """One SR image and its HR partner (None: no-reference); ``name`` is relative to SR_DIR."""

    name: str
    sr: Path
    hr: Path | None = None


@dataclass
class DirPlan:
    pairs: list[DirPair] = field(default_factory=list)
    unpaired_sr: list[tuple[str, str]] = field(default_factory=list)  # (SR name, why)
    unpaired_hr: list[str] = field(default_factory=list)  # HR names no SR image pairs with


def pair_dirs(
    sr_dir: str | Path,
    hr_dir: str | Path | None = None,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    suffix: str = "",
) -> DirPlan:
    """Pair the SR images (sorted; ``pattern`` filters relative path or name) with HR images by
    the module's rule. Raises :class:`UsageError` for a missing folder or SR_DIR == HR_DIR."""
    sr_root = common.existing_folder(sr_dir, "SR")
    hr_root = common.existing_folder(hr_dir, "HR") if hr_dir is not None else None
    if hr_root is not None and sr_root.resolve() == hr_root.resolve():
        raise UsageError("SR_DIR and HR_DIR are the same folder", hint="give two folders")
    skip_in_sr = hr_root.resolve() if hr_root is not None else None
    sr_files = common.list_images(sr_root, recursive, skip_in_sr)
    plan = DirPlan()
    if hr_root is None:
        for p in sr_files:
            rel = p.relative_to(sr_root).as_posix()
            if common.selected(rel, p.name, pattern):
                plan.pairs.append(DirPair(rel, p))
        return plan
    by_key = common.stem_index(hr_root, recursive, sr_root.resolve())
    named: set[str] = set()
    for p in sr_files:
        rel = p.relative_to(sr_root)
        key: str | None = rel.with_suffix("").as_posix()
        if suffix:
            key = key[: -len(suffix)] if key.endswith(suffix) else None
        if key is not None:
            named.add(key)
        if not common.selected(rel.as_posix(), p.name, pattern):
            continue
        if key is None:
            reason = f"the name does not end with {suffix!r} (--suffix)"
            plan.unpaired_sr.append((rel.as_posix(), reason))
            continue
        hr, reason = common.hr_partner(key, by_key, hr_root)
        if hr is not None:
            plan.pairs.append(DirPair(rel.as_posix(), p, hr))
        else:
            plan.unpaired_sr.append((rel.as_posix(), reason))
    for key in sorted(set(by_key) - named):
        plan.unpaired_hr.extend(m.relative_to(hr_root).as_posix() for m in by_key[key])
    return plan


@dataclass(frozen=True)
class DirEvalOptions:
    """``scale``: the SR scale (default crop border; HR size tolerance); ``crop_border`` None =
    ``scale`` or 0; ``niqe``: also NIQE of each SR image; ``reference``: PSNR/SSIM (needs HR);
    ``lpips``: also LPIPS-VGG against HR (needs HR and its weights in the registry cache);
    ``dists``: also DISTS against HR (likewise)."""

    scale: int | None = None
    crop_border: int | None = None
    reference: bool = True
    niqe: bool = False
    lpips: bool = False
    dists: bool = False
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS

    @property
    def crop(self) -> int:
        return self.crop_border if self.crop_border is not None else (self.scale or 0)

    @property
    def learned(self) -> tuple[str, ...]:
        """The learned metrics asked for (LPIPS, DISTS: :func:`evaluate.learned_names`)."""
        return learned_names(self.lpips, self.dists)

    @property
    def metrics(self) -> list[str]:
        reference = ["psnr", "ssim"] if self.reference else []
        return reference + list(self.learned) + (["niqe"] if self.niqe else [])

    @property
    def needs_hr(self) -> bool:
        """Whether a metric compares with a reference (PSNR/SSIM, LPIPS, DISTS)."""
        return self.reference or bool(self.learned)


@dataclass
class DirScore:
    name: str
    sr: str
    hr: str | None
    size: tuple[int, int]  # SR (w, h)
    scores: dict[str, float] = field(default_factory=dict)  # metric -> value
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sr": self.sr, "hr": self.hr,
                               "size": list(self.size)}
        out |= {k: common.finite(v) for k, v in self.scores.items()}
        out["seconds"] = round(self.seconds, 4)
        return out


@dataclass
class DirReport:
    sr_dir: str
    hr_dir: str | None
    scale: int | None
    crop_border: int
    metrics: list[str]
    images: list[DirScore] = field(default_factory=list)
    unpaired_sr: list[tuple[str, str]] = field(default_factory=list)
    unpaired_hr: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean(self) -> dict[str, float]:
        """Mean of each metric over the scored images (empty when none was scored)."""
        n = len(self.images)
        return {k: sum(s.scores[k] for s in self.images) / n for k in self.metrics} if n else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "sr_dir": self.sr_dir,
            "hr_dir": self.hr_dir,
            "scale": self.scale,
            "crop_border": self.crop_border,
            "y_channel": True,
            "metrics": list(self.metrics),
            "count": len(self.images),
            "mean": {k: common.finite(v) for k, v in self.mean.items()},
            "images": [s.to_json() for s in self.images],
            "unpaired_sr": [{"sr": n, "reason": r} for n, r in self.unpaired_sr],
            "unpaired_hr": [{"hr": n} for n in self.unpaired_hr],
            "failed": [{"sr": n, "error": m} for n, m in self.failed],
            "seconds": round(self.seconds, 3),
        }


_SIZE_HINT = "SR and HR must have the same size (HR may be up to scale-1 px larger: give --scale)"


def score_image(
    pair: DirPair,
    options: DirEvalOptions = DirEvalOptions(),
    *,
    learned: Mapping[str, LearnedMetric] | None = None,
) -> DirScore:
    """Read ``pair.sr`` (and ``pair.hr``) and score it with ``options.metrics``. ``learned``:
    the scorers of ``options.learned`` (:func:`evaluate.load_learned`; loaded here when None)."""
    t0 = time.perf_counter()
    sr_img = io.read_image(pair.sr, max_pixels=options.max_pixels)
    sr = image_tensor(sr_img.pixels)
    crop = options.crop
    score = DirScore(pair.name, str(pair.sr), str(pair.hr) if pair.hr else None,
                     (sr_img.width, sr_img.height))
    if options.needs_hr:
        if pair.hr is None:
            raise UsageError(f"{pair.name}: PSNR/SSIM/LPIPS/DISTS need an HR image",
                             hint="give HR_DIR")
        hr_img = io.read_image(pair.hr, max_pixels=options.max_pixels)
        size = (sr_img.height, sr_img.width)
        hr = image_tensor(fit_hq(hr_img.pixels, size, options.scale or 1, pair.name, _SIZE_HINT))
        if options.reference:
            score.scores["psnr"] = metrics.psnr(sr, hr, crop_border=crop)
            score.scores["ssim"] = metrics.ssim(sr, hr, crop_border=crop)
        if learned is None:
            learned = load_learned(options.learned)
        score.scores |= {name: metric(sr, hr, crop) for name, metric in learned.items()}
    if options.niqe:
        score.scores["niqe"] = niqe.niqe(sr, crop_border=crop)
    score.seconds = time.perf_counter() - t0
    return score


def evaluate_dirs(
    plan: DirPlan,
    options: DirEvalOptions,
    *,
    sr_dir: str | Path,
    hr_dir: str | Path | None = None,
    on_done: Callable[[DirPair, DirScore | None, str | None], None] | None = None,
    learned: Mapping[str, LearnedMetric] | None = None,
) -> DirReport:
    """Score every pair of ``plan``; a failing image is recorded and scoring goes on.

    With ``options.lpips`` / ``options.dists`` the LPIPS / DISTS weights are loaded once, before
    any image (``learned`` given: those scorers): weights missing from the cache stop the run
    (:class:`WeightsError`, exit 3) instead of failing every image."""
    if not options.metrics:
        raise UsageError("no metric to compute",
                         hint="give HR_DIR (PSNR/SSIM/LPIPS/DISTS) and/or --niqe")
    if options.learned and hr_dir is None:
        raise UsageError(f"{options.learned[0].upper()} compares with a reference: it needs HR_DIR",
                         hint="give HR_DIR")
    if learned is None:
        learned = load_learned(options.learned)
    t0 = time.perf_counter()
    report = DirReport(
        sr_dir=str(sr_dir),
        hr_dir=str(hr_dir) if hr_dir is not None else None,
        scale=options.scale,
        crop_border=options.crop,
        metrics=options.metrics,
        unpaired_sr=list(plan.unpaired_sr),
        unpaired_hr=list(plan.unpaired_hr),
    )
    report.images, report.failed = score_each(
        plan.pairs,
        lambda pair: score_image(pair, options, learned=learned),
        on_done,
    )
    report.seconds = time.perf_counter() - t0
    return report
