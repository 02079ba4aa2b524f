"""`realsr` entry point: mounts one command per module; maps errors to messages and exit codes."""

from __future__ import annotations

import logging
import sys

import click
import typer

from realsr_cli import __version__
from realsr_cli.cli import _output
from realsr_cli.cli import batch as batch_cmd
from realsr_cli.cli import compare as compare_cmd
from realsr_cli.cli import convert as convert_cmd
from realsr_cli.cli import degrade as degrade_cmd
from realsr_cli.cli import doctor as doctor_cmd
from realsr_cli.cli import eval as eval_cmd
from realsr_cli.cli import export as export_cmd
from realsr_cli.cli import models as models_cmd
from realsr_cli.cli import train as train_cmd
from realsr_cli.cli import upscale as upscale_cmd
from realsr_cli.cli import video as video_cmd
from realsr_cli.errors import (
    EXIT_DEVICE,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    RealSRError,
)

log = logging.getLogger("realsr_cli")

app = typer.Typer(
    name="realsr",
    help="Real-world image super-resolution: FeMaSR, UGTSR, RealSRT, UPSR, SSR.\n\n"
    "Examples:\n\n"
    "  realsr upscale photo.jpg -o photo_x4.png\n\n"
    "  cat a.png | realsr upscale - -o - > b.png\n\n"
    "  realsr batch ./in ./out --recursive\n\n"
    "  realsr models list",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"realsr {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging on stderr."),
) -> None:
    _output.setup(verbose=verbose)


app.command("upscale", no_args_is_help=True)(upscale_cmd.upscale)
app.command("video", no_args_is_help=True)(video_cmd.video)
app.command("batch", no_args_is_help=True)(batch_cmd.batch)
app.command("convert", no_args_is_help=True)(convert_cmd.convert)
app.command("degrade", no_args_is_help=True)(degrade_cmd.degrade)
app.command("eval", no_args_is_help=True)(eval_cmd.eval_cmd)
app.command("compare", no_args_is_help=True)(compare_cmd.compare)
app.command("export", no_args_is_help=True)(export_cmd.export)
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(models_cmd.app, name="models")
app.add_typer(train_cmd.app, name="train")


def _is_click_usage(exc: BaseException) -> bool:
    return isinstance(exc, (click.exceptions.ClickException, typer.TyperException)) or (
        hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int)
    )


_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _show_completion_for(args: list[str]) -> bool:
    """``--show-completion SHELL``: print that shell's script. typer treats the option as a flag
    when it can detect the current shell and ignores a named one (``--show-completion zsh``
    printed the bash script); a named shell wins here."""
    if len(args) == 2 and args[0] == "--show-completion" and args[1] in _SHELLS:
        from typer.completion import get_completion_script

        typer.echo(get_completion_script(prog_name="realsr", complete_var="_REALSR_COMPLETE", shell=args[1]))
        return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turn every failure into a message and an exit code."""
    _output.setup()
    if _show_completion_for(sys.argv[1:] if argv is None else list(argv)):
        return
    try:
        rv = app(args=argv, prog_name="realsr", standalone_mode=False)
    except RealSRError as exc:
        _output.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort, click.exceptions.Abort):
        _output.interrupted()
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError as exc:  # includes torch.OutOfMemoryError
        _output.error(f"out of memory: {exc}", "try a smaller --tile (e.g. --tile 128) or --device cpu")
        sys.exit(EXIT_DEVICE)
    except BrokenPipeError:
        sys.exit(EXIT_UNEXPECTED)
    except Exception as exc:
        if _is_click_usage(exc):  # bad option/argument/command (typer may vendor its own click)
            exc.show(file=sys.stderr)  # type: ignore[attr-defined]
            sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)  # type: ignore[attr-defined]
        # a bug: say so, keep the traceback for --verbose
        log.debug("unexpected error", exc_info=True)
        _output.error(
            f"unexpected error: {type(exc).__name__}: {exc}",
            "this is a bug in realsr; run again with --verbose and report the traceback",
        )
        sys.exit(EXIT_UNEXPECTED)
    sys.exit(rv if isinstance(rv, int) else 0)
