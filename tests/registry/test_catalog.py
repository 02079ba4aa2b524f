"""weights.toml: the shipped catalog, strict validation, id/alias/scale resolution."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realsr_cli.errors import ConfigError, UnknownModelError
from realsr_cli.registry.archs import ARCHITECTURES, get_arch
from realsr_cli.registry.catalog import (
    AUX_ARCHS,
    COMMUNITY_ARCHS,
    load_catalog,
    package_catalog_path,
)
from tests.registry.conftest import entry_dict, write_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the shipped file


def test_shipped_catalog_is_valid_and_names_known_archs():
    catalog = load_catalog()
    assert catalog.entries, "weights.toml lists no weights"
    for e in catalog.entries:
        if e.is_aux:  # auxiliary weights (training-only VGGs): their own small arch set
            assert e.arch in AUX_ARCHS and e.arch not in ARCHITECTURES and e.license and e.paper
            continue
        if e.is_community:  # spandrel-loaded: checked in test_community_catalog.py
            assert e.arch in COMMUNITY_ARCHS and e.arch not in ARCHITECTURES and e.license and e.paper
            continue
        assert e.arch in ARCHITECTURES
        spec = get_arch(e.arch)  # the factory works: the model package imports
        assert spec.name == e.arch and isinstance(spec.config_cls, type)
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert e.license and e.paper


def test_shipped_femasr_entries():
    catalog = load_catalog()
    x4, x2 = catalog.get("femasr-x4"), catalog.get("femasr-x2")
    for e, name in ((x4, "FeMaSR_SRX4_model_g.pth"), (x2, "FeMaSR_SRX2_model_g.pth")):
        assert e.format == "pth" and e.source.kind == "url"
        assert e.source.url == f"https://github.com/chaofengc/FeMaSR/releases/download/v0.1-pretrain_models/{name}"
        assert e.sha256 is None  # not recorded yet: trust on first use, never an invented hash
    assert x4.default and not x2.default and "femasr" in x4.aliases
    assert catalog.get("femasr") is x4 and catalog.get("femasr", scale=2) is x2
    assert catalog.get("femasr", scale=3) is x4  # no x3: the default, the engine resizes
    assert catalog.default_for("femasr") is x4 and catalog.default_for("femasr", 2) is x2


def test_package_file_is_the_top_level_file():
    """realsr_cli/weights.toml (shipped in the wheel) has the content of the top-level weights.toml."""
    assert package_catalog_path().read_bytes() == (REPO_ROOT / "weights.toml").read_bytes()


def test_to_json_is_plain_data():
    data = load_catalog().get("femasr-x4").to_json()
    assert data["id"] == "femasr-x4" and data["source"]["url"].endswith(".pth")
    assert data["aliases"] == ["femasr"] and data["sha256"] is None


# --------------------------------------------------------------------------- validation


BAD_ENTRIES = [
    ({"colour": "red"}, "unknown key"),
    ({"config": {"width": 8}}, "unknown key"),
    ({"arch": "nosuch", "id": "nosuch-x2"}, "unknown architecture"),
    ({"id": "tiny_x2"}, "must read 'tiny-x2"),
    ({"id": "tiny-x4"}, "must read 'tiny-x2"),
    ({"id": "Tiny-x2"}, "must read"),
    ({"scale": "2"}, "'scale' has the wrong type"),
    ({"scale": True}, "'scale' has the wrong type"),
    ({"sha256": "ABC"}, "sha256 must be 64"),
    ({"sha256": "A" * 64}, "sha256 must be 64"),
    ({"format": "ckpt"}, "format 'ckpt'"),
    ({"license": None}, "missing required key"),
    ({"source": {"url": "https://x/a.pth", "hub": "a/b"}}, "exactly one of"),
    ({"source": {}}, "exactly one of"),
    ({"source": "https://x/a.pth"}, "must be a table"),
    ({"source": {"url": "http://example.com/a.pth"}}, "https://"),
    ({"source": {"url": "https://example.com/"}}, "https://"),
    ({"source": {"url": "https://x/a.pth", "sha": "1"}}, "unknown key"),
    ({"source": {"url": "https://x/dl?id=1", "filename": "a/b.pth"}}, "plain file name"),
    ({"source": {"manual": "https://x/folder"}}, "manual source"),
    ({"source": {"manual": "http://x/folder", "files": ["a.pth"]}}, "https:// page"),
    ({"source": {"manual": "https://x/folder", "files": []}}, "https:// page"),
    ({"source": {"hub": "a/b", "filename": "f.safetensors"}}, "missing key"),
    ({"source": {"hub": "a/b", "filename": "f", "revision": "v1", "branch": "x"}}, "unknown key"),
    ({"source": {"hub": "not a repo", "filename": "f", "revision": "v1"}}, "owner/repo"),
    ({"source": {"hub": "a/b", "filename": "../f", "revision": "v1"}}, "relative path"),
    ({"aliases": "tiny"}, "'aliases' has the wrong type"),
    ({"aliases": ["Tiny!"]}, "alias"),
    ({"default": "yes"}, "'default' has the wrong type"),
]


@pytest.mark.parametrize("overrides, match", BAD_ENTRIES)
def test_invalid_entries_name_the_entry(tmp_path, tiny_arch, overrides, match):
    path = write_catalog(tmp_path / "w.toml", [entry_dict(), entry_dict(**{"id": "tiny-x2-b", **overrides})])
    with pytest.raises(ConfigError, match=match) as info:
        load_catalog(path)
    assert "w.toml" in info.value.message and "#2" in info.value.message


@pytest.mark.parametrize(
    "entries, top, match",
    [
        ([entry_dict(), entry_dict()], {}, "duplicate weights id 'tiny-x2'"),
        ([entry_dict(aliases=["t"]), entry_dict(id="tiny-x3", scale=3, aliases=["t"])], {}, "alias 't' is already"),
        ([entry_dict(aliases=["tiny-x2"])], {}, "already taken"),
        ([entry_dict(default=True), entry_dict(id="tiny-x3", scale=3, default=True)], {}, "two defaults"),
        ([entry_dict()], {"models": 1}, "unknown top-level key"),
        ([entry_dict()], {"schema": 2}, "schema 2"),
        ([entry_dict()], {"default_model": "nothing"}, "default_model 'nothing'"),
    ],
)
def test_invalid_catalogs(tmp_path, tiny_arch, entries, top, match):
    with pytest.raises(ConfigError, match=match):
        load_catalog(write_catalog(tmp_path / "w.toml", entries, **top))


def test_alias_naming_another_arch_is_refused(tmp_path, tiny_arch):
    with pytest.raises(ConfigError, match="names another architecture"):
        load_catalog(write_catalog(tmp_path / "w.toml", [entry_dict(aliases=["femasr"])]))


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[weights]\nid = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_catalog(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(tmp_path / "none.toml")


def test_local_http_and_file_urls_are_allowed(tmp_path, tiny_arch):
    entries = [
        entry_dict(source={"url": "http://127.0.0.1:8000/a.safetensors"}),
        entry_dict(id="tiny-x2-file", source={"url": "file:///srv/models/a.safetensors"}),
    ]
    assert len(load_catalog(write_catalog(tmp_path / "w.toml", entries))) == 2


def test_url_filename_and_manual_sources(tmp_path, tiny_arch):
    entries = [
        entry_dict(source={"url": "https://host/download?id=XYZ&confirm=t", "filename": "g.pth"}),
        entry_dict(id="tiny-x2-manual", source={"manual": "https://host/folder",
                                                "files": ["a.pth", "b.pth"]}),
    ]
    cat = load_catalog(write_catalog(tmp_path / "w.toml", entries))
    url, manual = cat.get("tiny-x2"), cat.get("tiny-x2-manual")
    assert url.source.basename == "g.pth" and url.source.to_json()["filename"] == "g.pth"
    assert manual.source.kind == "manual" and manual.source.files == ("a.pth", "b.pth")
    assert "manual download" in manual.source.describe()

    from realsr_cli.errors import DownloadError
    from realsr_cli.registry.hub import fetch

    with pytest.raises(DownloadError) as err:  # never touches the network or the cache
        fetch(manual, cache_dir=tmp_path / "cache", trust_on_first_use=True)
    assert "realsr convert a.pth b.pth --arch tiny" in err.value.hint
    assert not (tmp_path / "cache").exists()


def test_shipped_realsrt_and_upsr_entries():
    cat = load_catalog(package_catalog_path())
    realsrt, upsr = cat.get("realsrt"), cat.get("upsr")
    assert realsrt.id == "realsrt-x4" and realsrt.source.basename == "net_g_80000.pth"
    assert upsr.id == "upsr-x4" and upsr.source.files == ("upsr.pth", "atd_real.pth")
    assert realsrt.sha256 is None and upsr.sha256 is None  # never invented


# --------------------------------------------------------------------------- resolution


@pytest.fixture
def tiny_catalog(tmp_path, tiny_arch):
    entries = [
        entry_dict(id="tiny-x4", scale=4, default=True, aliases=["tiny-best"]),
        entry_dict(id="tiny-x2"),
        entry_dict(id="tiny-x2-sharp"),
        entry_dict(id="tiny-x4-sharp", scale=4, aliases=["sharp"]),
    ]
    return load_catalog(write_catalog(tmp_path / "w.toml", entries, default_model="tiny"))


def test_resolution(tiny_catalog):
    c = tiny_catalog
    assert c.get("tiny-x2-sharp").id == "tiny-x2-sharp"
    assert c.get("tiny-x2", scale=4).id == "tiny-x2"  # an explicit id is never swapped
    assert c.get("tiny").id == "tiny-x4"
    assert c.get("tiny", scale=2).id == "tiny-x2"  # same scale: no-variant first
    assert c.get("tiny-best", scale=2).id == "tiny-x2"
    assert c.get("sharp").id == "tiny-x4-sharp" and c.get("sharp", scale=2).id == "tiny-x2-sharp"
    assert c.get("sharp", scale=8).id == "tiny-x4-sharp"
    assert c.get("tiny", scale=2.0).id == "tiny-x2" and c.get("tiny", scale=1.5).id == "tiny-x4"
    assert c.default().id == "tiny-x4" and c.default(2).id == "tiny-x2"
    assert "sharp" in c and "tiny-x2" in c and "nothing" not in c
    assert c.ids == ("tiny-x4", "tiny-x2", "tiny-x2-sharp", "tiny-x4-sharp") and len(c) == 4


def test_unknown_model_suggests_close_matches(tiny_catalog):
    with pytest.raises(UnknownModelError) as info:
        tiny_catalog.get("tiny-x3")
    assert isinstance(info.value, KeyError) and "did you mean" in info.value.hint and "tiny-x2" in info.value.hint
    with pytest.raises(UnknownModelError, match="unknown model 'zzz'"):
        tiny_catalog.default_for("zzz")


def test_default_without_a_marked_default_is_the_first(tmp_path, tiny_arch):
    c = load_catalog(write_catalog(tmp_path / "w.toml", [entry_dict(id="tiny-x3", scale=3), entry_dict()]))
    assert c.default().id == "tiny-x3" and c.default_for("tiny", 2).id == "tiny-x2"


def test_extra_catalogs_from_the_environment(tmp_path, tiny_arch, monkeypatch):
    extra = write_catalog(tmp_path / "mine.toml", [entry_dict()])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(extra))
    c = load_catalog()
    assert "tiny-x2" in c and "femasr-x4" in c and c.default().id == "bicres-x4"  # the packaged default stays
    assert c.get("tiny-x2").origin == str(extra)

    clash = write_catalog(tmp_path / "clash.toml", [entry_dict(id="femasr-x4", arch="femasr", scale=4)])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", f"{extra}:{clash}")
    with pytest.raises(ConfigError, match="duplicate weights id 'femasr-x4'"):
        load_catalog()
