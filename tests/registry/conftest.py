"""Registry test fixtures: a tiny fake architecture, catalog writers and a fake Hugging Face Hub.

The fake hub is a real HTTP server on 127.0.0.1 (random port, one thread) that answers what
``huggingface_hub.hf_hub_download`` asks through ``HF_ENDPOINT``: ``HEAD``/``GET
/{owner}/{repo}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``Content-Length``/``X-Linked-Size``, and hub-style 404s (``X-Error-Code``). It also serves plain
files under ``/files/NAME`` for url sources. Every request is logged for the tests to count.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import torch
from torch import nn

from realsr_cli.registry.archs import ARCHITECTURES, ArchSpec

# --------------------------------------------------------------------------- tiny fake arch


@dataclass(frozen=True)
class TinyConfig:
    scale: int = 2
    width: int = 4


class TinyNet(nn.Module):
    """conv -> conv -> pixel shuffle: (B,3,H,W) -> (B,3,sH,sW)."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(3, config.width, 3, padding=1)
        self.tail = nn.Conv2d(config.width, 3 * config.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(config.scale)

    def upscale(self, lq, *, generator=None, steps=None, noise=None):
        return self.shuffle(self.tail(torch.relu(self.head(lq))))


TRAINING_ONLY = "disc."


def tiny_convert(sd):
    return {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY)}


def tiny_infer(sd, scale):
    width = sd["head.weight"].shape[0]
    native = int(round(math.sqrt(sd["tail.weight"].shape[0] / 3)))
    return TinyConfig(scale=native, width=width)


TINY_SPEC = ArchSpec(
    name="tiny",
    title="Tiny",
    paper="none",
    config_cls=TinyConfig,
    build=TinyNet,
    infer_config=tiny_infer,
    convert_official=tiny_convert,
    scale_of=lambda cfg: cfg.scale,
)


@pytest.fixture
def tiny_arch(monkeypatch):
    """Register the ``tiny`` architecture for one test."""
    monkeypatch.setitem(ARCHITECTURES, "tiny", lambda: TINY_SPEC)
    return TINY_SPEC


def tiny_state_dict(scale: int = 2, width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in TinyNet(TinyConfig(scale, width)).state_dict().items()}


def official_state_dict(scale: int = 2, width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """What an 'official' tiny checkpoint holds: our keys plus training-only ones."""
    sd = tiny_state_dict(scale, width, seed)
    sd["disc.weight"] = torch.ones(2, 2)
    return sd


def realsr_bytes(tmp_path: Path, scale: int = 2, seed: int = 0) -> bytes:
    """A realsr safetensors file for the tiny arch, as bytes."""
    from realsr_cli.registry.loader import save_weights

    path = tmp_path / f"made-{scale}-{seed}.safetensors"
    save_weights(path, arch="tiny", config=TinyConfig(scale=scale), state_dict=tiny_state_dict(scale, seed=seed))
    return path.read_bytes()


def pth_bytes(tmp_path: Path, scale: int = 2, seed: int = 0) -> bytes:
    """An official-style BasicSR ``.pth`` ({'params': ...}) for the tiny arch, as bytes."""
    path = tmp_path / f"official-{scale}-{seed}.pth"
    torch.save({"params": official_state_dict(scale, seed=seed), "iter": 7}, path)
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- catalogs


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def write_catalog(path: Path, entries: list[dict[str, Any]], **top: Any) -> Path:
    """Write a weights.toml with ``[[weights]]`` tables (values as given: invalid ones too)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for entry in entries:
        lines += ["", "[[weights]]"] + [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def entry_dict(**overrides: Any) -> dict[str, Any]:
    """A valid tiny catalog entry (a url source unless overridden)."""
    base: dict[str, Any] = {
        "id": "tiny-x2",
        "arch": "tiny",
        "scale": 2,
        "format": "safetensors",
        "source": {"url": "https://example.invalid/tiny-x2.safetensors"},
        "license": "MIT",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def make_entry(tmp_path: Path, **overrides: Any):
    """One parsed WeightsEntry built through the real catalog parser."""
    from realsr_cli.registry.catalog import load_catalog

    path = write_catalog(tmp_path / f"cat-{len(list(tmp_path.glob('cat-*')))}.toml", [entry_dict(**overrides)])
    return load_catalog(path).entries[0]


# --------------------------------------------------------------------------- isolation


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Caches in tmp_path, no offline flags, no tokens, no telemetry: nothing leaves the machine."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf-home"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HUGGINGFACE_HUB_CACHE",
                "REALSR_WEIGHTS_TOML", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "realsr-cache"))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub reads its environment once, at import: patch the values it already holds
    patched = {
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / "agents.json"),
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    return tmp_path


# --------------------------------------------------------------------------- fake hub

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class FakeHub:
    """Files by (repo, revision, filename) and by plain name; counts every request."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, str]] = {}  # repo -> revision -> commit
        self.files: dict[tuple[str, str, str], bytes] = {}  # (repo, commit, filename) -> data
        self.plain: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def add_file(self, repo: str, filename: str, data: bytes, revision: str = "main") -> str:
        commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
        self.repos.setdefault(repo, {})[revision] = commit
        self.repos[repo][commit] = commit
        self.files[(repo, commit, filename)] = data
        return commit

    def add_plain(self, name: str, data: bytes) -> str:
        self.plain[name] = data
        return f"{self.url}/files/{name}"

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _lookup(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/files/"):
            data = self.plain.get(path[len("/files/") :])
            return (404, {}, b"") if data is None else (200, {"ETag": f'"{sha256(data)}"'}, data)
        m = _RESOLVE.match(path)
        if m is None:
            return 404, {}, b""
        repo, rev, filename = m["repo"], unquote(m["rev"]), m["file"]
        if repo not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = self.repos[repo].get(rev)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        data = self.files.get((repo, commit, filename))
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b""
        digest = sha256(data)
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                     "X-Linked-Size": str(len(data))}, data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                with hub.lock:
                    hub.requests.append((self.command, path))
                status, headers, data = hub._lookup(path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        return Handler


@pytest.fixture
def fake_hub(monkeypatch):
    """A running FakeHub; HF_ENDPOINT points at it; stopped after the test.

    Only the environment variable is set: realsr passes it to ``hf_hub_download(endpoint=...)`` at
    call time (huggingface_hub's own ``constants.ENDPOINT`` was fixed at import and must keep
    matching its URL template, so it is left alone).
    """
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        yield hub
    finally:
        hub.stop()
