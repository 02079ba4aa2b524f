"""The two forms of `realsr eval` as library calls: score a model on LR/HR folder pairs
(:func:`evaluate_model_on_folders`) or score SR images already made (:func:`evaluate_sr_folder`).
Each checks its inputs, pairs the folders, runs and returns the report; what a caller shows is up
to it (:class:`EvalEvents`: the CLI prints warnings and a progress bar with them).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from realsr_cli.engine import api
from realsr_cli.errors import UsageError
from realsr_cli.evaluation import folders, pairs

__all__ = ["EvalEvents", "evaluate_model_on_folders", "evaluate_sr_folder"]

_PAIR_HINT = "names must match: SR_DIR/a/x.png <-> HR_DIR/a/x.<any suffix> (a tag: --suffix _x4)"


class EvalEvents:
    """Hooks of the evaluation runs; override what you need (the defaults do nothing)."""

    def session(self) -> AbstractContextManager[Any]:
        """Entered around loading and scoring (e.g. a progress display)."""
        return nullcontext()

    def warn(self, message: str) -> None:
        """Something skipped or noteworthy (unpaired images, the crop border used)."""

    def info(self, message: str) -> None:
        """A line of information (the crop border used)."""

    def loaded(self, model: api.LoadedModel, total: int) -> None:
        """Model form: the model is loaded; ``total`` pairs will be scored."""

    def started(self, total: int) -> None:
        """Scoring ``total`` pairs starts."""

    def done(self, name: str, error: str | None) -> None:
        """One pair finished (``error`` when it failed; scoring goes on)."""

    def tiles(self, done: int, total: int) -> None:
        """Tile progress of the image in flight (model form)."""


def evaluate_model_on_folders(
    lq_dir: str | Path,
    hq_dir: str | Path,
    load: Callable[[], api.LoadedModel],
    options: pairs.EvalOptions,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    hr_prior: str | None = None,
    events: EvalEvents | None = None,
) -> pairs.EvalReport:
    """Run the model ``load()`` returns on every LR image with an HR partner and score it (every
    pair ends in ``report.images`` or ``report.failed``). No pair at all is a :class:`UsageError`
    (exit 2), before the model loads."""
    events = events or EvalEvents()
    plan = pairs.pair_folders(lq_dir, hq_dir, recursive=recursive, pattern=pattern, exclude=options.save_dir)
    for name, reason in plan.missing:
        events.warn(f"skipping {name}: {reason}")
    if not plan.pairs:
        raise UsageError(f"no LR image in {lq_dir} has an HR partner in {hq_dir}",
                         hint="names must match: LR_DIR/a/x.png <-> HR_DIR/a/x.<any suffix>")
    with events.session():
        model = load()
        prior = pairs.load_prior(model, hr_prior) if hr_prior else None
        events.loaded(model, len(plan.pairs))
        events.started(len(plan.pairs))
        report = pairs.evaluate(model, plan, options, prior=prior, hr_prior=hr_prior,
                                on_done=lambda p, s, e: events.done(p.name, e), progress=events.tiles)
    return report


def evaluate_sr_folder(
    sr_dir: str | Path,
    hr_dir: str | Path | None,
    options: folders.DirEvalOptions,
    *,
    recursive: bool = False,
    pattern: str | None = None,
    suffix: str = "",
    events: EvalEvents | None = None,
) -> folders.DirReport:
    """Score the SR images in ``sr_dir`` as they are (against ``hr_dir`` when given; every image
    ends in ``report.images`` or ``report.failed``). Metrics that need a reference without one, no
    metric at all, or no image are :class:`UsageError` (exit 2)."""
    events = events or EvalEvents()
    for flag, on in (("--lpips", options.lpips), ("--dists", options.dists)):
        if on and hr_dir is None:
            raise UsageError(f"{flag} compares with a reference: it needs HR_DIR",
                             hint=f"give HR_DIR (realsr eval {sr_dir} HR_DIR {flag})")
    if not options.metrics:
        raise UsageError("without HR_DIR only no-reference metrics can be computed",
                         hint=f"add --niqe (realsr eval {sr_dir} --niqe), or give HR_DIR")
    if suffix and hr_dir is None:
        raise UsageError("--suffix pairs SR with HR names; it needs HR_DIR")
    plan = folders.pair_dirs(sr_dir, hr_dir, recursive=recursive, pattern=pattern, suffix=suffix)
    for name, reason in plan.unpaired_sr:
        events.warn(f"skipping {name}: {reason}")
    if plan.unpaired_hr:
        shown = ", ".join(plan.unpaired_hr[:5]) + (", ..." if len(plan.unpaired_hr) > 5 else "")
        events.warn(f"{len(plan.unpaired_hr)} HR image(s) have no SR image: {shown}")
    if not plan.pairs:
        if hr_dir is None:
            raise UsageError(f"no images in {sr_dir}", hint="give a folder of images (-r: sub-folders)")
        raise UsageError(f"no SR image in {sr_dir} has an HR partner in {hr_dir}", hint=_PAIR_HINT)
    if hr_dir is not None and options.scale is None and options.crop_border is None:
        events.info("crop border 0: give --scale S to crop S px from each side, as BasicSR does")
    with events.session():
        events.started(len(plan.pairs))
        report = folders.evaluate_dirs(plan, options, sr_dir=sr_dir, hr_dir=hr_dir,
                                       on_done=lambda p, s, e: events.done(p.name, e))
    return report
