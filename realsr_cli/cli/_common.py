"""Glue shared by the commands that run a model (upscale, batch, video, eval): their options,
declared once in ``_options.MODEL_OPTIONS`` and parsed once into :class:`ModelArgs`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realsr_cli.cli import _output
from realsr_cli.cli._options import MODEL_OPTIONS, parse_tile
from realsr_cli.errors import UsageError

if TYPE_CHECKING:
    from realsr_cli.engine import api


@dataclass(frozen=True)
class ModelArgs:
    """The parsed model options of one command: which model to load and how, and the validated
    :class:`~realsr_cli.engine.api.UpscaleOptions` every image of the command runs with."""

    model: str | None
    weights: str | None
    scale: float | None
    device: str
    precision: str
    offline: bool
    depth_estimator: str
    save_aux: str | None
    options: api.UpscaleOptions

    def load(self, view: _output.ProgressView, device: str | None = None) -> api.LoadedModel:
        """Load the model (``device`` overrides ``--device``: batch's per-rank GPU); download
        bytes go to ``view``."""
        from realsr_cli.engine import api
        from realsr_cli.engine import device as devices

        if self.model and self.weights:
            raise UsageError("--model and --weights are exclusive", hint="give one of them")
        scale = self.scale
        native = int(scale) if scale is not None and float(scale).is_integer() else None
        loaded = api.load_model(
            self.weights or self.model,
            device=device or self.device,
            precision=self.precision,
            scale=native,
            offline=True if self.offline else None,
            progress=view.bytes,
            depth_estimator=self.depth_estimator,
        )
        if loaded.device.type == "cpu":  # large activations reuse freed memory (engine/device.py)
            devices.tune_cpu_allocator()
        return loaded


def model_options(*, skip: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command that has a parameter ``run: ModelArgs``: the rows of
    ``MODEL_OPTIONS`` (less ``skip``) take its place as ordinary options in ``--help``, and the
    command is called with them parsed into one :class:`ModelArgs` (skipped ones at their
    defaults)."""
    skipped = set(skip)
    rows = [row for row in MODEL_OPTIONS if row[0] not in skipped]
    defaults = {name: default for name, _, default in MODEL_OPTIONS}
    taken = {name for name, _, _ in rows}  # a skipped name may be a command's own option (eval's --scale)

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        params: list[inspect.Parameter] = []
        for p in own.parameters.values():
            if p.name == "run":
                params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                           for n, a, d in rows]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.default is not p.empty else p)
        if len(params) == len(own.parameters):
            raise TypeError(f"{command.__name__} has no `run` parameter for the model options")

        @functools.wraps(command)
        def parsed(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) if name in taken else default for name, default in defaults.items()}
            return command(*args, run=parse(**given), **kwargs)

        parsed.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        parsed.__annotations__ = {p.name: p.annotation for p in params}
        return parsed

    return wrap


def parse(**given: Any) -> ModelArgs:
    """The one place the CLI builds (and so validates) the engine's options."""
    from realsr_cli.engine import api

    max_pixels = given["max_pixels"]
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels or None}
    options = api.UpscaleOptions(
        scale=given["scale"],
        tile=parse_tile(given["tile"]),
        tile_overlap=given["tile_overlap"],
        tile_batch=given["tile_batch"],
        seed=given["seed"],
        steps=given["steps"],
        alpha=getattr(given["alpha"], "value", given["alpha"]),
        bit_depth=given["bit_depth"],
        quality=given["quality"],
        format=given["fmt"],
        tta=given["tta"],
        **kwargs,
    )
    return ModelArgs(
        model=given["model"], weights=given["weights"], scale=given["scale"], device=given["device"],
        precision=getattr(given["precision"], "value", given["precision"]), offline=given["offline"],
        depth_estimator=given["depth_estimator"], save_aux=given["save_aux"], options=options,
    )


def describe(model: api.LoadedModel) -> str:
    from realsr_cli.engine import api

    name = model.weights_id or model.weights_path
    notes = "".join(f"; {note}" for note in model.notes)
    return f"{name} ({model.spec.title} x{model.scale}) on {model.device}, {api._precision_name(model.dtype)}{notes}"
