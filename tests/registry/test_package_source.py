"""``source = { package = ... }``: weights shipped inside the package (the embedded default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from realsr_cli.errors import ChecksumError, ConfigError, WeightsError
from realsr_cli.registry import hub
from realsr_cli.registry.catalog import load_catalog
from tests.registry.conftest import entry_dict, realsr_bytes, sha256, write_catalog

SHIPPED = {"package": "weights/tiny-x2-cpu.safetensors"}


def _catalog(tmp_path: Path, *extra: dict, **top):
    data = realsr_bytes(tmp_path)
    shipped = entry_dict(id="tiny-x2-cpu", source=SHIPPED, sha256=sha256(data))
    return load_catalog(write_catalog(tmp_path / "w.toml", [shipped, *extra], **top)), data


def test_package_source_parses_and_needs_sha_and_safetensors(tmp_path, tiny_arch):
    catalog, data = _catalog(tmp_path)
    e = catalog.get("tiny-x2-cpu")
    assert e.source.kind == "package" and e.source.basename == "tiny-x2-cpu.safetensors"
    assert e.source.to_json() == SHIPPED and e.source.describe().startswith("package:realsr_cli/")
    for bad, match in (
        ({"source": SHIPPED}, "sha256"),  # no sha256
        ({"source": SHIPPED, "sha256": sha256(data), "format": "pth"}, "safetensors"),
        ({"source": {"package": "../evil.safetensors"}, "sha256": sha256(data)}, "relative path"),
        ({"source": {"package": "weights/x.pth"}, "sha256": sha256(data)}, "relative path"),
        ({"source": {"package": "weights/x.safetensors", "url": "https://a/b"}}, "package source"),
    ):
        path = write_catalog(tmp_path / "bad.toml", [entry_dict(id="tiny-x2-cpu", **bad)])
        with pytest.raises(ConfigError, match=match):
            load_catalog(path)


def test_fetch_verifies_the_shipped_file_offline(tmp_path, tiny_arch, monkeypatch):
    catalog, data = _catalog(tmp_path)
    e = catalog.get("tiny-x2-cpu")
    shipped = tmp_path / "pkg" / "tiny-x2-cpu.safetensors"
    monkeypatch.setattr(hub, "package_file", lambda entry: shipped)
    with pytest.raises(WeightsError, match="missing"):
        hub.fetch(e, offline=True)
    assert hub.cached_path(e) is None
    shipped.parent.mkdir()
    shipped.write_bytes(data)
    assert hub.fetch(e, offline=True) == shipped  # no cache copy, no network, no trust store
    assert hub.cached_path(e) == shipped and hub.verify(e) == (True, sha256(data))
    shipped.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # a damaged install
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        hub.fetch(e, offline=True)
    assert hub.verify(e)[0] is False


def test_other_weights_of_the_arch_take_over_its_name(tmp_path, tiny_arch):
    """A published / user-installed checkpoint of the same architecture outranks the shipped one."""
    catalog, _ = _catalog(tmp_path)
    assert catalog.get("tiny").id == "tiny-x2-cpu"
    larger = entry_dict(id="tiny-x2-large")
    catalog, _ = _catalog(tmp_path, larger)
    assert catalog.get("tiny").id == "tiny-x2-large"
    assert catalog.get("tiny-x2-cpu").id == "tiny-x2-cpu"  # ids still resolve exactly


def test_shipped_default_model_is_a_package_entry():
    """The packaged catalog's default model ships inside the package and verifies (offline)."""
    catalog = load_catalog()
    e = catalog.default()
    assert e.source.kind == "package" and e.arch == "bicres" and e.scale == 4
    path = hub.fetch(e, offline=True)
    assert path.is_file() and path.stat().st_size <= 5 * 2**20  # issue 13: <= 5 MB
    assert catalog.get("bicres").id == e.id
    assert catalog.get("ugtsr").id == "ugtsr-x4-cpu"  # `--model ugtsr` keeps meaning our UGTSR


def test_every_shipped_weights_file_matches_its_recorded_sha256():
    """The real catalog's package entries (the default bicres-x4, ugtsr-x4-cpu, ssr-x4-cpu): the
    file in realsr_cli/weights/ hashes to weights.toml's sha256, and loads strictly."""
    from realsr_cli.registry.loader import file_sha256, load_weights

    shipped = [e for e in load_catalog().entries if e.source.kind == "package"]
    assert {"bicres-x4", "ugtsr-x4-cpu", "ssr-x4-cpu"} <= {e.id for e in shipped}
    for entry in shipped:
        path = hub.package_file(entry)
        assert file_sha256(path) == entry.sha256, entry.id
        spec, _config, _net = load_weights(path)
        assert spec.name == entry.arch
    assert load_catalog().default().id == "bicres-x4"
