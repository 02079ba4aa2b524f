from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from realsr_cli._config import apply_overrides, config_from_json, config_to_json, from_dict, to_dict
from realsr_cli.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass(frozen=True)
class Cfg:
    name: str = "x"
    steps: int = 10
    ema: bool = True
    widths: tuple[int, ...] = (1, 2)
    optim: Optim = field(default_factory=Optim)
    note: str | None = None


def test_round_trip_json():
    c = Cfg(steps=3, widths=(4, 5, 6), optim=Optim(lr=2e-4))
    assert config_from_json(Cfg, config_to_json(c)) == c
    assert to_dict(c)["widths"] == [4, 5, 6]


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Cfg, {"stepz": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Cfg, {"optim": {"lr": 1.0, "momentum": 0.9}})


@pytest.mark.parametrize(
    "data",
    [{"steps": "3"}, {"steps": 1.5}, {"ema": 1}, {"widths": [1, "a"]}, {"optim": {"betas": [0.9]}}, {"name": 3}],
)
def test_wrong_types_are_errors(data):
    with pytest.raises(ConfigError):
        from_dict(Cfg, data)


def test_int_accepted_for_float_and_lists_become_tuples():
    c = from_dict(Cfg, {"optim": {"lr": 1, "betas": [0, 1]}})
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float) and c.optim.betas == (0.0, 1.0)


def test_overrides_are_type_checked():
    c = apply_overrides(Cfg(), ["optim.lr=3e-4", "steps=7", "name=hello", "widths=[8, 9]", "note=abc"])
    assert c.optim.lr == 3e-4 and c.steps == 7 and c.name == "hello" and c.widths == (8, 9) and c.note == "abc"
    with pytest.raises(ConfigError):
        apply_overrides(Cfg(), ["steps=abc"])
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(Cfg(), ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="no section"):
        apply_overrides(Cfg(), ["sched.x=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Cfg(), ["steps"])
