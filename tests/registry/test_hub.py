"""The download path against a real HTTP server on 127.0.0.1 (the fake hub in conftest.py)."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

from realsr_cli.errors import ChecksumError, DownloadError, WeightsError
from realsr_cli.registry import convert, hub
from realsr_cli.registry.loader import load_weights, read_metadata
from tests.registry.conftest import make_entry, pth_bytes, realsr_bytes, sha256, tiny_state_dict

REPO = "acme/tiny-sr"
FILE = "tiny-x2.safetensors"


def _hub_source(filename: str = FILE, revision: str = "v1", repo: str = REPO) -> dict:
    return {"hub": repo, "filename": filename, "revision": revision}


def _cached_blobs(tmp_path) -> list:
    root = tmp_path / "hf-home" / "hub"
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()] if root.exists() else []


def _content_files(tmp_path) -> list:
    """Blobs and snapshot links in the hf cache, files in our downloads folder (not refs/locks)."""
    hf = [p for p in _cached_blobs(tmp_path) if {"blobs", "snapshots"} & set(p.parts)]
    ours = tmp_path / "realsr-cache" / "downloads"
    return hf + ([p for p in ours.rglob("*") if p.is_file()] if ours.exists() else [])


@pytest.fixture
def served(tmp_path, tiny_arch, fake_hub):
    """A realsr x2 file on the fake hub and its catalog entry (with the true sha256)."""
    data = realsr_bytes(tmp_path)
    fake_hub.add_file(REPO, FILE, data, revision="v1")
    entry = make_entry(tmp_path, source=_hub_source(), sha256=sha256(data))
    return data, entry


def test_first_download_then_cache_hit_without_network(served, fake_hub, tmp_path):
    data, entry = served
    seen: list[tuple[int, int]] = []
    path = hub.fetch(entry, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == data
    assert (tmp_path / "hf-home" / "hub") in path.parents  # huggingface_hub's cache, from HF_HUB_CACHE
    assert seen and seen[-1] == (len(data), len(data))
    assert fake_hub.count("GET") == 1

    assert hub.fetch(entry) == path
    assert fake_hub.count() == 2  # HEAD + GET of the first call, nothing since
    fake_hub.stop()
    assert hub.fetch(entry) == path
    spec, config, net = load_weights(path)
    assert spec.name == "tiny" and config.scale == 2
    assert hub.cached_path(entry) == path
    assert hub.verify(entry) == (True, sha256(data))


@pytest.mark.parametrize("how", ["flag", "env", "import-time"])
def test_offline_uses_only_the_cache(served, fake_hub, monkeypatch, how):
    _, entry = served
    kwargs = {}
    if how == "flag":
        kwargs["offline"] = True
    elif how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # HF_HUB_OFFLINE was set when huggingface_hub was imported
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="not in the cache") as info:
        hub.fetch(entry, **kwargs)
    assert f"realsr models download {entry.id}" in info.value.hint
    assert fake_hub.count() == 0

    path = hub.fetch(entry, offline=False) if how == "flag" else None
    if path is not None:
        assert hub.fetch(entry, offline=True) == path


def test_checksum_mismatch_keeps_nothing_and_retries(tmp_path, tiny_arch, fake_hub):
    data = realsr_bytes(tmp_path)
    fake_hub.add_file(REPO, FILE, data, revision="v1")
    entry = make_entry(tmp_path, source=_hub_source(), sha256=sha256(b"another file"))
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        hub.fetch(entry)
    assert sha256(data) in info.value.message and "not kept" in info.value.message
    assert _content_files(tmp_path) == []
    assert hub.cached_path(entry) is None

    with pytest.raises(ChecksumError):
        hub.fetch(entry)
    assert fake_hub.count("GET") == 2  # downloaded again: nothing had been cached
    assert _content_files(tmp_path) == []


def test_tampered_cache_is_detected_and_evicted(served, fake_hub, tmp_path):
    _, entry = served
    path = hub.fetch(entry)
    path.resolve().write_bytes(b"tampered")
    ok, digest = hub.verify(entry)
    assert not ok and digest == sha256(b"tampered")
    with pytest.raises(ChecksumError):
        hub.fetch(entry)
    assert _content_files(tmp_path) == []
    assert hub.fetch(entry).read_bytes() != b"tampered"  # fetched again, verified


@pytest.mark.parametrize(
    "source, match",
    [
        (_hub_source(filename="missing.safetensors"), "has no file"),
        (_hub_source(revision="v9"), "has no revision"),
        (_hub_source(repo="acme/nothing"), "not found"),
    ],
)
def test_missing_remote_file_is_download_error(served, fake_hub, tmp_path, source, match):
    entry = make_entry(tmp_path, source=source, sha256="0" * 64)
    with pytest.raises(DownloadError, match=match):
        hub.fetch(entry)
    assert fake_hub.count() >= 1


def test_unreachable_hub_is_download_error(served, fake_hub, monkeypatch):
    _, entry = served
    fake_hub.stop()
    # huggingface_hub retries a dead endpoint 5 times with 1-8 s back-off: skip the waiting
    http = sys.modules["huggingface_hub.utils._http"]
    fast = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    fast.sleep = lambda seconds: None
    monkeypatch.setattr(http, "time", fast)
    with pytest.raises(DownloadError):
        hub.fetch(entry)


def test_url_source_streams_into_our_cache(tmp_path, tiny_arch, fake_hub):
    data = realsr_bytes(tmp_path)
    url = fake_hub.add_plain("tiny-x2.safetensors", data)
    entry = make_entry(tmp_path, source={"url": url}, sha256=sha256(data))
    seen: list[tuple[int, int]] = []
    path = hub.fetch(entry, progress=lambda d, t: seen.append((d, t)))
    assert (tmp_path / "realsr-cache" / "downloads") in path.parents and path.name == "tiny-x2.safetensors"
    assert path.read_bytes() == data and seen[-1] == (len(data), len(data))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    assert hub.fetch(entry) == path and fake_hub.count() == 1

    bad = make_entry(tmp_path, id="tiny-x2-bad", source={"url": url}, sha256=sha256(b"x"))
    with pytest.raises(ChecksumError):
        hub.fetch(bad)
    assert not (tmp_path / "realsr-cache" / "downloads" / "tiny-x2-bad").exists() or not [
        p for p in (tmp_path / "realsr-cache" / "downloads" / "tiny-x2-bad").rglob("*") if p.is_file()
    ]
    missing = make_entry(tmp_path, id="tiny-x2-gone", source={"url": fake_hub.url + "/files/gone.safetensors"},
                         sha256=sha256(data))
    with pytest.raises(DownloadError, match="HTTP 404"):
        hub.fetch(missing)


def test_file_url_works_offline(tmp_path, tiny_arch):
    data = realsr_bytes(tmp_path)
    src = tmp_path / "mirror" / "tiny-x2.safetensors"
    src.parent.mkdir()
    src.write_bytes(data)
    entry = make_entry(tmp_path, source={"url": src.as_uri()}, sha256=sha256(data))
    path = hub.fetch(entry, offline=True)
    assert path.read_bytes() == data and path != src


def test_trust_on_first_use_records_then_verifies(tmp_path, tiny_arch, fake_hub):
    data = realsr_bytes(tmp_path)
    fake_hub.add_file(REPO, FILE, data, revision="v1")
    entry = make_entry(tmp_path, source=_hub_source())
    with pytest.raises(WeightsError, match="no recorded sha256") as info:
        hub.fetch(entry)
    assert "--trust" in info.value.hint and fake_hub.count() == 0
    assert hub.cached_path(entry) is None

    path = hub.fetch(entry, trust_on_first_use=True)
    store = tmp_path / "realsr-cache" / "trusted.toml"
    text = store.read_text()
    assert sha256(data) in text and entry.source.describe() in text
    assert hub.trusted_sha256(entry) == sha256(data) == hub.expected_sha256(entry)
    assert hub.fetch(entry) == path  # no --trust needed any more
    assert hub.verify(entry) == (True, sha256(data))

    path.resolve().write_bytes(b"changed")  # later fetches verify against the trusted hash
    with pytest.raises(ChecksumError):
        hub.fetch(entry, trust_on_first_use=True)
    assert hub.trusted_sha256(entry) == sha256(data)  # a mismatch never re-records

    moved = make_entry(tmp_path, source=_hub_source(revision="v2"))  # same id, another source
    assert hub.trusted_sha256(moved) is None


def test_official_pth_is_converted_once(tmp_path, tiny_arch, fake_hub, monkeypatch):
    data = pth_bytes(tmp_path)
    fake_hub.add_file(REPO, "tiny_x2_official.pth", data, revision="v1")
    entry = make_entry(tmp_path, format="pth", source=_hub_source("tiny_x2_official.pth"), sha256=sha256(data))
    calls: list = []
    real = convert.convert_checkpoint
    monkeypatch.setattr(convert, "convert_checkpoint", lambda *a, **k: calls.append(a) or real(*a, **k))

    path = hub.fetch(entry)
    expected = tmp_path / "realsr-cache" / "converted" / f"tiny-x2-{sha256(data)[:12]}.safetensors"
    assert path == expected and len(calls) == 1
    meta = read_metadata(path)
    assert meta["source_sha256"] == sha256(data) and meta["source_files"] == "tiny_x2_official.pth"
    _, _, net = load_weights(path)
    assert torch.equal(net.state_dict()["head.weight"], tiny_state_dict()["head.weight"])

    fake_hub.stop()
    assert hub.fetch(entry, offline=True) == path and len(calls) == 1
    assert hub.cached_path(entry) == path
    assert hub.verify(entry) == (True, sha256(data))


def test_url_pth_with_trust_on_first_use(tmp_path, tiny_arch, fake_hub):
    data = pth_bytes(tmp_path)
    entry = make_entry(tmp_path, format="pth", source={"url": fake_hub.add_plain("official.pth", data)})
    path = hub.fetch(entry, trust_on_first_use=True)
    assert path.name == f"tiny-x2-{sha256(data)[:12]}.safetensors"
    assert hub.fetch(entry) == path and fake_hub.count() == 1


def test_entry_that_disagrees_with_its_file(tmp_path, tiny_arch, fake_hub):
    data = realsr_bytes(tmp_path, scale=2)
    fake_hub.add_file(REPO, "x.safetensors", data, revision="v1")
    entry = make_entry(tmp_path, id="tiny-x4", scale=4, source=_hub_source("x.safetensors"), sha256=sha256(data))
    with pytest.raises(WeightsError, match="weights.toml says tiny x4"):
        hub.fetch(entry)


def test_verify_and_path_of_uncached_entry(tmp_path, tiny_arch):
    entry = make_entry(tmp_path, sha256="a" * 64)
    assert hub.cached_path(entry) is None
    with pytest.raises(WeightsError, match="not in the cache"):
        hub.verify(entry)


def test_cache_root_resolution(monkeypatch, tmp_path):
    assert hub.cache_root(tmp_path / "x") == tmp_path / "x"
    assert hub.cache_root() == tmp_path / "realsr-cache"
    monkeypatch.delenv("REALSR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_root() == tmp_path / "xdg" / "realsr"
    assert hub.hf_cache_dir() == tmp_path / "hf-home" / "hub"


def test_a_tampered_converted_file_is_caught_by_verify_and_never_used(tmp_path, tiny_arch, fake_hub, monkeypatch, caplog):
    """Issue 18 (2): converted tensors x -3 (same keys and metadata) changed every output pixel and
    `models verify` still said ok, trusting the file's own source_sha256."""
    import logging

    from safetensors.torch import load_file, save_file

    data = pth_bytes(tmp_path)
    fake_hub.add_file(REPO, "tiny_x2_official.pth", data, revision="v1")
    entry = make_entry(tmp_path, format="pth", source=_hub_source("tiny_x2_official.pth"), sha256=sha256(data))
    path = hub.fetch(entry)
    good = load_file(str(path))
    save_file({k: v * -3 for k, v in good.items()}, str(path), metadata=read_metadata(path))
    assert read_metadata(path)["source_sha256"] == sha256(data)  # the file still vouches for itself
    ok, sha = hub.verify(entry)
    assert not ok
    calls: list = []
    real = convert.convert_checkpoint
    monkeypatch.setattr(convert, "convert_checkpoint", lambda *a, **k: calls.append(a) or real(*a, **k))
    with caplog.at_level(logging.WARNING):
        again = hub.fetch(entry, offline=True)  # the verified source is still cached
    assert again == path and len(calls) == 1 and "does not match the sha256 recorded" in caplog.text
    assert all(torch.equal(load_file(str(again))[k], good[k]) for k in good)
    assert hub.verify(entry) == (True, sha256(data))
