"""Community entries of weights.toml (``kind = "community"``): the shipped ones, validation, name
resolution, and the download -> spandrel path with tiny checkpoints of the same key layouts."""

from __future__ import annotations

import re

import pytest

from realsr_cli.errors import ChecksumError, ConfigError, UnknownModelError, WeightsError
from realsr_cli.registry import community, hub
from realsr_cli.registry.archs import ARCHITECTURES
from realsr_cli.registry.catalog import AUX_ARCHS, COMMUNITY_ARCHS, load_catalog
from tests.registry.community_checkpoints import PUBLISHED
from tests.registry.community_fixtures import spandrel_or_skip
from tests.registry.conftest import sha256, write_catalog

#: licences a shipped community entry may carry (permissive: commercial use, no share-alike)
PERMISSIVE = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "ISC", "CC0-1.0", "Unlicense"}
#: a GitHub release asset: owner/repo, a fixed tag (never "latest"), a file name
RELEASE_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/releases/download/(?P<tag>[^/]+)/[^/]+\.pth")

SHIPPED = {
    "realesrgan-x4plus": ("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                          "BSD-3-Clause"),
    "realesrgan-x2plus": ("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                          "BSD-3-Clause"),
    "realesr-general-x4v3": (
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth", "BSD-3-Clause"),
    "realesrgan-x4plus-anime-6b": (
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        "BSD-3-Clause"),
    "bsrgan-x4": ("https://github.com/cszn/KAIR/releases/download/v1.0/BSRGAN.pth", "Apache-2.0"),
    "swinir-x4-realsr": (
        "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
        "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth", "Apache-2.0"),
}


# --------------------------------------------------------------------------- the shipped entries


def test_community_families_are_not_our_architecture_names():
    assert COMMUNITY_ARCHS and not set(COMMUNITY_ARCHS) & (set(ARCHITECTURES) | set(AUX_ARCHS))


def test_community_families_name_spandrel_architectures():
    spandrel = spandrel_or_skip()
    for arch_id in COMMUNITY_ARCHS.values():
        assert arch_id in spandrel.MAIN_REGISTRY, f"spandrel {spandrel.__version__} has no {arch_id}"


def test_shipped_community_entries_are_well_formed():
    catalog = load_catalog()
    entries = {e.id: e for e in catalog.community()}
    assert set(entries) == set(SHIPPED)
    taken = {*ARCHITECTURES, *COMMUNITY_ARCHS, *AUX_ARCHS, *(e.id for e in catalog.entries if not e.is_community)}
    for entry_id, (url, licence) in SHIPPED.items():
        e = entries[entry_id]
        assert (e.kind, e.format, e.source.kind, e.source.url, e.license) == ("community", "pth", "url", url, licence)
        m = RELEASE_URL.fullmatch(str(e.source.url))
        assert m and m["tag"] != "latest", f"{e.id}: not a release asset pinned to a tag"
        assert e.license in PERMISSIVE and e.arch in COMMUNITY_ARCHS and e.paper
        assert f"-x{e.scale}" in e.id and e.id not in taken and not set(e.aliases) & taken
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        if e.sha256:  # a published hash: where it was published is written down
            assert "OpenModelDB" in e.notes, f"{e.id}: sha256 without its provenance in notes"
        assert not e.default and e.to_json()["kind"] == "community" and e.to_json()["scale"] == e.scale


def test_shipped_families_match_the_published_architectures():
    catalog = load_catalog()
    for entry_id, stand_in in PUBLISHED.items():
        e = catalog.get(entry_id)
        assert (e.arch, e.scale, e.source.basename) == (stand_in.family, stand_in.scale, stand_in.filename)


def test_names_resolve_like_our_ids():
    catalog = load_catalog()
    assert catalog.get("realesrgan").id == "realesrgan-x4plus"
    assert catalog.get("realesrgan", scale=2).id == "realesrgan-x2plus"  # the sibling of that scale
    assert catalog.get("realesrgan", scale=3).id == "realesrgan-x4plus"  # none: the engine resizes
    assert catalog.get("bsrgan").id == "bsrgan-x4" and catalog.get("swinir-realsr").id == "swinir-x4-realsr"
    assert catalog.get("realesrgan-x4plus", scale=2).id == "realesrgan-x4plus"  # an id is used as written
    assert catalog.knows("realesr-general-x4v3") and not catalog.knows("esrgan")
    assert catalog.get("femasr").id == "femasr-x4" and catalog.default().id == "bicres-x4"  # ours unchanged


def test_a_family_name_is_not_a_model():
    with pytest.raises(UnknownModelError, match="community architecture") as info:
        load_catalog().get("esrgan")
    assert "realesrgan-x4plus" in str(info.value) and "--model" in info.value.hint


def test_close_matches_include_community_ids():
    with pytest.raises(UnknownModelError) as info:
        load_catalog().get("realesrgan-x4")
    assert "realesrgan-x4plus" in (info.value.hint or "")


# --------------------------------------------------------------------------- validation


def community_dict(**overrides):
    base = {"id": "tiny-esrgan-x4", "kind": "community", "arch": "esrgan", "scale": 4, "format": "pth",
            "source": {"url": "https://example.invalid/v1/tiny.pth"}, "license": "MIT"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_valid_community_entry_parses(tmp_path):
    path = write_catalog(tmp_path / "c.toml", [community_dict(aliases=["tiny-esrgan"], sha256="ab" * 32)])
    (e,) = load_catalog(path).entries
    assert (e.id, e.kind, e.arch, e.scale, e.aliases, e.variant) == (
        "tiny-esrgan-x4", "community", "esrgan", 4, ("tiny-esrgan",), None)
    assert e.is_community and not e.is_aux


BAD = [
    ({"arch": "hat"}, "unknown community architecture 'hat'"),
    ({"arch": "femasr"}, "unknown community architecture 'femasr'"),
    ({"id": "tiny-esrgan"}, "must be a lowercase name that carries '-x4'"),
    ({"id": "tiny-esrgan-x41"}, "carries '-x4'"),
    ({"id": "Tiny-x4"}, "lowercase"),
    ({"id": "femasr-x4-community"}, "reads as an id of realsr's own 'femasr'"),
    ({"scale": 0, "id": "tiny-x0"}, "positive"),
    ({"default": True}, "unknown key(s) for a community entry: default"),
    ({"aliases": ["esrgan"]}, "alias 'esrgan' is an architecture name"),
    ({"aliases": ["femasr"]}, "alias 'femasr' is an architecture name"),
    ({"source": {"manual": "https://example.invalid/page", "files": ["a.pth"]}}, "url or a hub file"),
    ({"source": {"package": "weights/x.safetensors"}}, "url or a hub file"),
    ({"sha256": "XYZ"}, "sha256 must be 64 lowercase hex"),
    ({"format": "onnx"}, "format 'onnx'"),
    ({"kind": "plugin"}, "kind 'plugin' must be"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m for _, m in BAD])
def test_bad_community_entries_are_refused(tmp_path, overrides, message):
    path = write_catalog(tmp_path / "bad.toml", [community_dict(**overrides)])
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert message in str(info.value)


def test_an_extra_catalog_may_not_reuse_a_shipped_community_id(tmp_path, monkeypatch):
    path = write_catalog(tmp_path / "extra.toml", [community_dict(id="realesrgan-x4plus")])
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(path))
    with pytest.raises(ConfigError, match="duplicate weights id 'realesrgan-x4plus'"):
        load_catalog()


# --------------------------------------------------------------------------- fetch + spandrel


@pytest.fixture
def spandrel():
    return spandrel_or_skip()


def _serve(tmp_path, fake_hub, shipped_id, *, data=None, **overrides):
    """Serve a stand-in of ``shipped_id`` from the fake hub; an extra catalog lists it as
    ``test-<shipped_id>`` (a url source with its true sha256 unless overridden)."""
    stand_in = PUBLISHED[shipped_id]
    body = stand_in.make()
    url = fake_hub.add_plain(stand_in.filename, body if data is None else data)
    entry = community_dict(id=f"test-{shipped_id}", arch=stand_in.family, scale=stand_in.scale,
                           source={"url": url}, sha256=sha256(body))
    entry.update(overrides)
    path = write_catalog(tmp_path / f"{shipped_id}.toml", [{k: v for k, v in entry.items() if v is not None}])
    return load_catalog(path).entries[0], body


@pytest.mark.parametrize("shipped_id", sorted(PUBLISHED))
def test_fetch_keeps_the_published_file_and_spandrel_detects_the_listed_family(
    tmp_path, fake_hub, spandrel, shipped_id
):
    entry, body = _serve(tmp_path, fake_hub, shipped_id)
    path = hub.fetch(entry)
    assert path.read_bytes() == body and path.name == PUBLISHED[shipped_id].filename
    assert not (tmp_path / "realsr-cache" / "converted").exists()  # never converted
    assert hub.cached_path(entry) == path and hub.verify(entry) == (True, sha256(body))
    spec, config, net = community.load_entry(entry, path)
    assert (config.arch_id, config.scale) == (PUBLISHED[shipped_id].spandrel_id, entry.scale)
    assert spec.name == f"spandrel:{config.arch_id}"
    fake_hub.stop()
    assert hub.fetch(entry, offline=True) == path  # the cache, no network


def test_a_file_of_another_family_is_refused_on_load(tmp_path, fake_hub, spandrel):
    entry, _ = _serve(tmp_path, fake_hub, "realesr-general-x4v3", arch="swinir")
    with pytest.raises(WeightsError, match=r"detects realesr-general-x4v3.pth as Compact x4, but weights.toml says SwinIR x4"):
        community.load_entry(entry, hub.fetch(entry))


def test_a_file_of_another_scale_is_refused_on_load(tmp_path, fake_hub, spandrel):
    entry, _ = _serve(tmp_path, fake_hub, "realesrgan-x2plus", scale=4, id="test-realesrgan-x4plus")
    with pytest.raises(WeightsError, match="as ESRGAN x2, but weights.toml says ESRGAN x4"):
        community.load_entry(entry, hub.fetch(entry))


def test_a_tampered_download_is_not_kept(tmp_path, fake_hub):
    good = PUBLISHED["bsrgan-x4"].make()
    entry, _ = _serve(tmp_path, fake_hub, "bsrgan-x4", data=good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ChecksumError, match="sha256 mismatch for BSRGAN.pth"):
        hub.fetch(entry)
    downloads = tmp_path / "realsr-cache" / "downloads"
    assert not [p for p in downloads.rglob("*") if p.is_file()]
    assert hub.cached_path(entry) is None


def test_without_a_published_hash_it_is_trusted_on_first_use_only_when_asked(tmp_path, fake_hub):
    entry, body = _serve(tmp_path, fake_hub, "realesrgan-x4plus", sha256=None)
    with pytest.raises(WeightsError, match="has no recorded sha256"):
        hub.fetch(entry)
    assert fake_hub.count("GET") == 0
    path = hub.fetch(entry, trust_on_first_use=True)
    assert hub.trusted_sha256(entry) == sha256(body) and hub.fetch(entry) == path


def test_a_hub_source_downloads_through_huggingface_hub(tmp_path, fake_hub, spandrel):
    stand_in = PUBLISHED["swinir-x4-realsr"]
    body = stand_in.make()
    fake_hub.add_file("acme/swinir-realsr", stand_in.filename, body, revision="v0.0")
    source = {"hub": "acme/swinir-realsr", "filename": stand_in.filename, "revision": "v0.0"}
    path = write_catalog(tmp_path / "h.toml", [community_dict(id="test-swinir-x4", arch="swinir", source=source,
                                                              sha256=sha256(body))])
    entry = load_catalog(path).entries[0]
    got = hub.fetch(entry)
    assert (tmp_path / "hf-home" / "hub") in got.parents and got.read_bytes() == body
    assert community.load_entry(entry, got)[1].arch_id == "SwinIR"


def test_require_spandrel_names_the_entry(monkeypatch):
    def missing():
        raise WeightsError("spandrel extra is not installed", hint=community.INSTALL_HINT)

    monkeypatch.setattr(community, "import_spandrel", missing)
    with pytest.raises(WeightsError, match="realesrgan-x4plus is a community model \\(ESRGAN\\)") as info:
        community.require_spandrel(load_catalog().get("realesrgan-x4plus"))
    assert info.value.hint == community.INSTALL_HINT
