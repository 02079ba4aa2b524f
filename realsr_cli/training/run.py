"""Setting up a run: config resolution, run-folder checks, ``config.toml`` (stage lookup:
:func:`realsr_cli.training.stages.get_stage`).

Config precedence (later wins): the stage's defaults (or, with ``--resume``, the config stored
in the checkpoint) <- ``--config FILE.toml`` <- ``--set key=value`` <- ``--data`` /
``--max-steps``. The resolved config is saved as ``RUN_DIR/config.toml`` (and inside every
checkpoint); ``--config RUN_DIR/config.toml`` starts a new run with the same settings.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realsr_cli._config import apply_overrides, from_dict, load_toml, to_dict
from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training.checkpoint import find_checkpoint, has_checkpoints, load_checkpoint

__all__ = [
    "RunPlan",
    "dumps_toml",
    "plan_run",
    "resolve_config",
    "save_config",
]


# ----------------------------------------------------------------------------- config


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update: tables merge, everything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


#: the configs shipped in the package (``realsr_cli/configs/<stage>[-tiny].toml``)
PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


#: suffixes of shipped variant configs: ``-tiny`` (CPU smoke tests), ``-cpu`` (the recipe of the
#: embedded default model); the stage is the name without them, the bare name is the paper recipe
CONFIG_VARIANTS = ("-tiny", "-cpu")


def config_stage(name: str) -> str:
    """The stage a shipped config name belongs to: ``ugtsr-cpu`` -> ``ugtsr``."""
    for suffix in CONFIG_VARIANTS:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def packaged_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``["femasr", "femasr-tiny", ...]``."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.toml"))


def find_config_file(config_file: str | Path) -> Path:
    """A TOML path, or the name of a shipped config (``femasr-tiny`` or ``femasr-tiny.toml``).

    An existing path wins; otherwise the name is looked up in :data:`PACKAGED_CONFIGS`.
    """
    path = Path(config_file)
    if path.exists():
        return path
    name = path.name[:-5] if path.name.endswith(".toml") else path.name
    shipped = PACKAGED_CONFIGS / f"{name}.toml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError(
        f"config file not found: {config_file}",
        hint=f"pass a TOML path or a shipped config name: {', '.join(packaged_configs())}",
    )


def resolve_config(
    config_cls: type,
    *,
    base: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: str | Path | None = None,
    max_steps: int | None = None,
) -> Any:
    """Build the frozen stage config (precedence in the module docstring).

    ``base`` is a stored config dict (resume); ``None`` starts from ``config_cls()`` defaults.
    Unknown keys and wrong types anywhere are a :class:`ConfigError` (exit 2).
    """
    data_dict = to_dict(config_cls()) if base is None else dict(base)
    if config_file is not None:
        data_dict = _merge(data_dict, load_toml(str(find_config_file(config_file))))
    config = from_dict(config_cls, data_dict)
    if overrides:
        config = apply_overrides(config, list(overrides))
    for section in ("run", "data"):
        if not hasattr(config, section):
            raise ConfigError(f"{config_cls.__name__} has no [{section}] section (RunConfig/DataConfig)")
    if data is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, hr_dir=str(data)))
    if max_steps is not None:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, max_steps=max_steps))
    if not config.data.hr_dir:
        raise UsageError("no training data given", hint="pass --data HR_DIR (a folder of HR images)")
    return config


# ----------------------------------------------------------------------------- TOML writer

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v, where)}" for k, v in value.items()
                               if v is not None) + "}"
    raise ConfigError(f"{where}: cannot write a {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text for a nested dict of str/int/float/bool/list/dict (``None`` values are left
    out, as TOML has no null: such keys take their default when read back)."""
    lines: list[str] = []

    def table(node: dict[str, Any], path: list[str]) -> None:
        scalars = [(k, v) for k, v in node.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in node.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            lines.append(("\n" if lines else "") + "[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars:
            if v is None:
                lines.append(f"# {_key(k)} = (none)")
            else:
                lines.append(f"{_key(k)} = {_value(v, '.'.join([*path, k]))}")
        for k, v in tables:
            table(v, [*path, k])

    table(data, [])
    return "\n".join(lines) + "\n"


def save_config(run_dir: str | Path, config: Any) -> Path:
    """Write the resolved config as ``RUN_DIR/config.toml`` (atomically)."""
    path = Path(run_dir) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# resolved config of this run ({type(config).__name__}); reuse with --config\n"
    tmp = path.with_name(".config.toml.part")
    tmp.write_text(header + dumps_toml(to_dict(config)), encoding="utf-8")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- run plan


@dataclass(frozen=True)
class RunPlan:
    """What ``realsr train`` will do: ``config`` in ``run_dir``, resuming from ``resume_from``."""

    stage: str
    config: Any
    run_dir: Path
    resume_from: Path | None


def plan_run(
    stage_cls: type,
    run_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: str | Path | None = None,
    max_steps: int | None = None,
    resume: bool = False,
) -> RunPlan:
    """Check the run folder and resolve the config (from the checkpoint's when resuming).

    A folder that already holds checkpoints needs ``resume=True`` (else :class:`UsageError`,
    exit 2); ``resume=True`` on a folder without checkpoints starts a fresh run.
    """
    out = Path(run_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file", hint="give a folder for the run")
    resume_from = find_checkpoint(out) if resume else None
    if not resume and has_checkpoints(out):
        raise UsageError(
            f"{out} already holds a training run (checkpoints/)",
            hint="pass --resume to continue it, or choose another --out folder",
        )
    base = None
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        if ckpt["stage"] != stage_cls.name:
            raise UsageError(
                f"{out} is a {ckpt['stage']!r} run, not {stage_cls.name!r}",
                hint=f"resume it with `realsr train {ckpt['stage']} --out {out} --resume`",
            )
        base = ckpt["config"]
    config = resolve_config(stage_cls.config_cls, base=base, config_file=config_file,
                            overrides=overrides, data=data, max_steps=max_steps)
    return RunPlan(stage_cls.name, config, out, resume_from)

