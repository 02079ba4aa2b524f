"""`realsr train STAGE ...`, `realsr train export RUN_DIR`, `realsr train stages`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.errors import OutOfMemoryError, UsageError


class _StageFirstGroup(TyperGroup):
    """``realsr train STAGE ...`` is short for ``realsr train run STAGE ...``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_StageFirstGroup,
    help="Train a model stage on a folder of HR images, then export registry-ready weights.\n\n"
    "Examples:\n\n"
    "  realsr train stages\n\n"
    "  realsr train femasr-hrp --data ./DF2K_HR --out runs/hrp\n\n"
    "  realsr train femasr --data ./DF2K_HR --out runs/x4 --config x4.toml --set optim.lr=2e-4\n\n"
    "  realsr train femasr --out runs/x4 --resume --max-steps 300000\n\n"
    "  realsr train export runs/x4 -o femasr-x4-mine.safetensors",
    no_args_is_help=True,
)

_STAGE_HELP = "Stage to train (see `realsr train stages`), e.g. femasr-hrp."


def _is_main_process() -> bool:
    from realsr_cli.training.distributed import env_info

    return env_info().is_main


def _show_record(record: dict[str, Any], total: int) -> None:
    """One metrics line, e.g. ``train step 100/1000  lr 0.0001  l1 0.0312  (12s)``."""
    values = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
              for k, v in record.items() if k not in ("kind", "step", "time")]
    line = f"{record['kind']} step {record['step']}/{total}  " + "  ".join(values)
    if "time" in record:
        line += f"  ({record['time']:.0f}s)"
    _output.info(line)


@app.command("run", no_args_is_help=True)
def run(
    stage: Annotated[str, typer.Argument(help=_STAGE_HELP, show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Run folder (config, metrics, checkpoints, samples).",
                                     show_default=False)],
    data: Annotated[str | None, typer.Option("--data", help="Folder of HR training images (recursive); "
                                             "sets data.hr_dir.")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="TOML file over the stage defaults, or a shipped config name (e.g. femasr-tiny; see `realsr train stages`).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one key, e.g. --set optim.lr=2e-4 "
                                                   "(repeatable, type-checked).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Sets run.max_steps.", min=1)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train STAGE (`realsr train STAGE ...` is short for `realsr train run STAGE ...`).

    Config: stage defaults, then --config, then --set, then --data/--max-steps. Ctrl-C writes a
    checkpoint and exits 130; --resume continues exactly. Under torchrun every GPU trains.

    Examples:

      realsr train femasr-hrp --data ./DF2K_HR --out runs/hrp --set data.batch_size=16

      realsr train femasr --out runs/x4 --resume

      torchrun --nproc_per_node 4 -m realsr_cli train femasr --data ./DF2K_HR --out runs/x4
    """
    from realsr_cli.engine.device import is_oom
    from realsr_cli.training import run as train_run
    from realsr_cli.training.stages import get_stage
    from realsr_cli.training.trainer import TrainHooks, TrainingInterrupted, train

    stage_cls = get_stage(stage)
    plan = train_run.plan_run(stage_cls, out, config_file=config, overrides=set_ or [], data=data,
                              max_steps=max_steps, resume=resume)
    main = _is_main_process()
    if not main:  # under torchrun only rank 0 talks
        logging.getLogger("realsr_cli").setLevel(logging.ERROR)
    total = plan.config.run.max_steps
    if main:
        start = f"resuming {plan.resume_from}" if plan.resume_from else "new run"
        _output.info(f"{stage}: {start} in {plan.run_dir}, {total} steps, data {plan.config.data.hr_dir}")
    with _output.progress(enabled=main) as view:
        steps = view.steps
        hooks = TrainHooks(
            on_start=lambda first, n: steps(first, n),
            on_step=lambda done, _losses: steps(done, total),
            on_record=lambda record: _show_record(record, total),
        )
        try:
            result = train(stage_cls, plan.config, plan.run_dir, resume_from=plan.resume_from, hooks=hooks)
        except TrainingInterrupted as exc:
            if main:
                _output.info(f"checkpoint at step {exc.step}: {exc.checkpoint}")
                _output.info(f"continue with: realsr train {stage} --out {out} --resume")
            raise
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            raise OutOfMemoryError(
                f"out of memory while training: {exc}",
                hint="lower data.batch_size or data.patch_size (--set data.batch_size=8), or use "
                "more GPUs with torchrun; then continue with --resume",
            ) from exc
    if not main:
        return
    if json_out:
        _output.emit_json(_schemas.stamp("train.run", result.to_json()))
    _output.success(f"trained to step {result.step}; checkpoint {result.checkpoint}")


@app.command("export", no_args_is_help=True)
def export(
    run_dir: Annotated[str, typer.Argument(help="Run folder written by `realsr train`.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Weights file to write (.safetensors).",
                                        show_default=False)],
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Export the EMA weights (when the run kept them).")] = True,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Checkpoint file (default: "
                                                   "RUN_DIR/checkpoints/last.pt).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a run's weights as registry-ready safetensors (for `realsr upscale --weights`).

    Examples:

      realsr train export runs/x4 -o femasr-x4-mine.safetensors

      realsr train export runs/x4 -o step50k.safetensors --checkpoint runs/x4/checkpoints/step_0050000.pt --no-ema
    """
    from realsr_cli.training.checkpoint import export_checkpoint, find_checkpoint

    path = checkpoint or find_checkpoint(run_dir)
    if path is None:
        raise UsageError(f"no checkpoint in {run_dir}", hint="give a run folder written by `realsr train`, "
                         "or --checkpoint FILE")
    report = export_checkpoint(path, output, use_ema=ema)
    if json_out:
        _output.emit_json(_schemas.stamp("train.export", report.to_json()))
    _output.success(f"{report.path}: {report.arch} from {report.stage} step {report.step}"
                    f" ({'EMA' if report.ema else 'raw'} weights)")


@app.command("stages")
def stages(json_out: JsonOpt = False) -> None:
    """List the trainable stages, one per line.

    Example: realsr train stages --json
    """
    from realsr_cli.training.run import config_stage, packaged_configs
    from realsr_cli.training.stages import STAGES

    shipped = set(packaged_configs())
    rows = []
    for name, factory in sorted(STAGES.items()):
        configs = sorted(c for c in shipped if config_stage(c) == name)  # NAME, NAME-tiny, NAME-cpu ...
        rows.append((name, factory().summary, configs))
    if json_out:
        stage_list = [{"stage": n, "summary": s, "configs": c} for n, s, c in rows]
        _output.emit_json(_schemas.stamp("train.stages", {"stages": stage_list}))
        return
    _output.table(
        "realsr train stages",
        ["stage", "summary", "shipped configs (--config NAME)"],
        [[n, s, ", ".join(c)] for n, s, c in rows],
    )
