"""Every registered stage is importable, named as its table key, and ships a full + tiny config."""

from __future__ import annotations

import pytest

from realsr_cli._config import from_dict, load_toml
from realsr_cli.training.run import (
    PACKAGED_CONFIGS,
    config_stage,
    find_config_file,
    packaged_configs,
)
from realsr_cli.training.stage import Stage
from realsr_cli.training.stages import STAGES, get_stage


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_class_and_configs(name):
    cls = get_stage(name)
    assert issubclass(cls, Stage) and cls.name == name and cls.summary
    for config in (name, f"{name}-tiny"):
        path = PACKAGED_CONFIGS / f"{config}.toml"
        assert path.is_file(), f"stage {name} ships no {path.name}"
        from_dict(cls.config_cls, load_toml(str(path)))  # closed, typed: raises on any drift


def test_every_shipped_config_belongs_to_a_stage():
    for config in packaged_configs():
        stage = config_stage(config)
        assert stage in STAGES, f"configs/{config}.toml names no registered stage"


def test_config_names_resolve_to_packaged_files(tmp_path):
    assert find_config_file("femasr-tiny") == PACKAGED_CONFIGS / "femasr-tiny.toml"
    assert find_config_file("femasr-tiny.toml") == PACKAGED_CONFIGS / "femasr-tiny.toml"
    local = tmp_path / "femasr-tiny.toml"
    local.write_text("")
    assert find_config_file(local) == local  # an existing path wins over a shipped name
