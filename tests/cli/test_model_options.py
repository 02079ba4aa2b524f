"""The model options are declared once (``_options.MODEL_OPTIONS``) and parsed once
(``_common.model_options``): every command that runs a model takes the same rows."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from realsr_cli.cli import _common
from realsr_cli.cli._options import IMAGE_FILE_OPTIONS, MODEL_OPTIONS
from realsr_cli.cli.app import app
from realsr_cli.errors import UsageError

ALL = [name for name, _, _ in MODEL_OPTIONS]


def _params(command: str) -> list[str]:
    click_cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return [p.name for p in click_cmd.params]


@pytest.mark.parametrize(
    ("command", "skipped"),
    [
        ("upscale", set()),
        ("batch", set()),
        ("video", set(IMAGE_FILE_OPTIONS)),
        ("eval", {"scale", "tile_batch", "tta", *IMAGE_FILE_OPTIONS}),
    ],
)
def test_every_model_command_takes_the_shared_rows_in_table_order(command, skipped):
    params = _params(command)
    shared = [p for p in params if p in ALL and p not in skipped]
    assert shared == [n for n in ALL if n not in skipped]
    assert "run" not in params
    if command == "eval":
        assert "scale" in params  # eval's own --scale (an int for SR_DIR) stays its own


def _scratch_app(seen: dict) -> typer.Typer:
    scratch = typer.Typer()

    @scratch.command()
    @_common.model_options(skip=("save_aux",))
    def go(
        name: Annotated[str, typer.Argument()],
        *,
        run: _common.ModelArgs,
        flag: Annotated[bool, typer.Option("--flag")] = False,
    ) -> None:
        seen.update(name=name, run=run, flag=flag)

    return scratch


def test_the_command_gets_one_parsed_and_validated_object():
    seen: dict = {}
    res = CliRunner().invoke(_scratch_app(seen), ["x", "--tile", "256", "--tile-overlap", "8", "--seed", "3",
                                                  "--precision", "fp32", "--flag", "-f", "png"])
    assert res.exit_code == 0, res.output
    run = seen["run"]
    assert (seen["name"], seen["flag"]) == ("x", True)
    assert (run.options.tile, run.options.tile_overlap, run.options.seed) == (256, 8, 3)
    assert (run.precision, run.options.format, run.options.alpha, run.save_aux) == ("fp32", "png", "bicubic", None)


def test_skipped_rows_are_not_options_and_keep_their_defaults():
    seen: dict = {}
    res = CliRunner().invoke(_scratch_app(seen), ["x", "--save-aux", "d"])
    assert res.exit_code == 2  # no such option
    res = CliRunner().invoke(_scratch_app(seen), ["x"])
    assert res.exit_code == 0, res.output
    assert seen["run"].save_aux is None and seen["run"].options.tile is None


def test_a_bad_value_is_a_usage_error_before_the_command_runs():
    seen: dict = {}
    res = CliRunner().invoke(_scratch_app(seen), ["x", "--tile", "big"])
    assert isinstance(res.exception, UsageError) and "--tile 'big'" in str(res.exception)
    assert seen == {}


def test_a_command_without_run_is_refused():
    def no_run(name: str) -> None:
        pass

    with pytest.raises(TypeError, match="no `run` parameter"):
        _common.model_options()(no_run)
