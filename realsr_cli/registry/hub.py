"""Download, verify and cache the files of the weights catalog.

``fetch(entry)`` returns a local realsr safetensors path, ready for :func:`loader.load_weights`:

- hub sources go through ``huggingface_hub.hf_hub_download`` (revision-pinned; its cache under
  ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_ENDPOINT`` mirrors); url sources are streamed into
  ``<cache>/downloads/`` (``$REALSR_CACHE``, else ``$XDG_CACHE_HOME/realsr``, else
  ``~/.cache/realsr``) through a temporary file that is renamed only once verified;
- the cache is always consulted first, so a cached model never touches the network; offline
  (``offline=True`` or ``HF_HUB_OFFLINE=1``) only the cache is used;
- the published file's sha256 is checked against ``weights.toml`` or, for entries without one, the
  hash recorded on first use (``<cache>/trusted.toml``, written only with ``trust_on_first_use``);
  a mismatching file is removed from every cache before ChecksumError is raised;
- official checkpoints (``format = "pth"``, or safetensors without realsr metadata) are converted
  once into ``<cache>/converted/<id>-<sha12>.safetensors``; later calls return that file;
- auxiliary entries (``kind = "aux"``, e.g. torchvision's VGGs) are never converted: ``fetch``
  returns the verified published file itself. When its file name carries torch.hub's hash prefix
  (``vgg16-397923af.pth``: ``-<8+ hex>.<ext>``), the download's sha256 must also start with it;
- community entries (``kind = "community"``, e.g. ``realesrgan-x4plus``) are never converted either:
  ``fetch`` returns the verified published checkpoint, which registry/community.py loads through
  spandrel (``community.load_entry`` checks it is the architecture and scale the entry names).

Size (over STYLE's ~300-line guide): three source kinds (hub, URL, package), trust-on-first-use and converted-file records share one verify/cache path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from inspect import signature
from pathlib import Path
from typing import Any

from realsr_cli import __version__
from realsr_cli.errors import ChecksumError, ConfigError, DownloadError, RealSRError, WeightsError
from realsr_cli.registry.catalog import WeightsEntry
from realsr_cli.registry.loader import FORMAT, file_sha256, read_metadata

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = ["fetch", "verify", "cached_path", "cache_root", "hf_cache_dir", "expected_sha256", "trusted_sha256"]

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)
ENV_CACHE = "REALSR_CACHE"
TRUST_FILE = "trusted.toml"
#: sha256 of every converted file, recorded when realsr wrote it (outside the file, which must not
#: vouch for itself): converted file name -> {"sha256", "source_sha256"}
CONVERTED_INDEX = "converted.json"
URL_TIMEOUT_S = 30.0
#: torch.hub's naming convention: ``<name>-<first 8+ hex digits of the sha256>.<ext>``
_HASH_PREFIX = re.compile(r".+-(?P<prefix>[0-9a-f]{8,64})\.[A-Za-z0-9]+")


# --------------------------------------------------------------------------- locations
def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Our cache: ``cache_dir``, else ``$REALSR_CACHE``, ``$XDG_CACHE_HOME/realsr``, ``~/.cache/realsr``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "realsr"


def hf_cache_dir() -> Path:
    """huggingface_hub's file cache, read from the environment now (the library reads it at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    hf_constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def _url_dest(entry: WeightsEntry, root: Path) -> Path:
    key = hashlib.sha256(str(entry.source.url).encode()).hexdigest()[:12]
    return root / "downloads" / entry.id / key / entry.source.basename


def _converted(entry: WeightsEntry, sha256: str, root: Path) -> Path:
    return root / "converted" / f"{entry.id}-{sha256[:12]}.safetensors"


# --------------------------------------------------------------------------- trust store
def _read_trust(root: Path) -> dict[str, Any]:
    path = root / TRUST_FILE
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})", hint="fix the file or delete it (then re-run --trust)") from exc


def trusted_sha256(entry: WeightsEntry, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The sha256 recorded on first use for this entry and its current source, if any."""
    record = _read_trust(cache_root(cache_dir)).get(entry.id)
    if not isinstance(record, dict):
        return None
    if record.get("source") != entry.source.describe():
        log.info("%s: the trusted hash was recorded for %s, not %s; ignoring it",
                 entry.id, record.get("source"), entry.source.describe())
        return None
    sha = record.get("sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def expected_sha256(entry: WeightsEntry, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The hash a download must have: weights.toml's, else the one trusted on first use."""
    return entry.sha256 or trusted_sha256(entry, cache_dir)


def _record_trust(entry: WeightsEntry, sha256: str, root: Path) -> Path:
    data = _read_trust(root)
    data[entry.id] = {
        "sha256": sha256,
        "source": entry.source.describe(),
        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    lines = ["# sha256 of weights trusted on first use (`realsr models download ID --trust`).",
             "# Written by realsr; delete a table to forget that hash.", ""]
    for key in sorted(data):
        record = data[key]
        if isinstance(record, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{k} = {json.dumps(str(v))}" for k, v in record.items()]
            lines.append("")
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{TRUST_FILE}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, root / TRUST_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return root / TRUST_FILE


# --------------------------------------------------------------------------- converted files
def _read_index(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / CONVERTED_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_converted(path: Path, source_sha256: str, root: Path) -> None:
    """Record the converted file's own sha256 in the cache's index (atomic rewrite)."""
    data = _read_index(root)
    data[path.name] = {"sha256": file_sha256(path), "source_sha256": source_sha256}
    fd, tmp = tempfile.mkstemp(prefix=f".{CONVERTED_INDEX}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, root / CONVERTED_INDEX)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _converted_ok(path: Path, source_sha256: str, root: Path) -> tuple[bool, str]:
    """``(the converted file hashes to what was recorded at conversion, its sha256)``. Hashed on
    every use (about 1 s per GB): no size/mtime shortcut a tool could fake."""
    record = _read_index(root).get(path.name)
    sha = file_sha256(path)
    ok = isinstance(record, dict) and record.get("sha256") == sha and record.get("source_sha256") == source_sha256
    return ok, sha


# --------------------------------------------------------------------------- url sources
def _download_url(entry: WeightsEntry, dest: Path, expected: str | None, progress: Progress | None) -> str:
    """Stream the url into ``dest`` via a temporary file; returns its sha256. A file whose hash
    differs from ``expected`` never reaches ``dest``."""
    url = str(entry.source.url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"realsr/{__version__}"})
    log.info("downloading %s", url)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as resp:
            total, done = int(resp.headers.get("Content-Length") or 0), 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total and done != total:
            raise DownloadError(f"{entry.id}: download of {url} stopped at {done} of {total} bytes",
                                hint="check your connection and try again")
        sha = digest.hexdigest()
        if expected is not None and sha != expected:
            raise _mismatch(entry, sha, expected)
        os.replace(tmp, dest)
        return sha
    except RealSRError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{entry.id}: {url} answered HTTP {exc.code} {exc.reason}",
                            hint="the file may have moved; check weights.toml / try later") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{entry.id}: cannot download {url} ({reason})",
                            hint="check your connection, or use a cached model offline") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- hub sources
def _hub_cached(entry: WeightsEntry) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    s = entry.source
    found = try_to_load_from_cache(str(s.repo), str(s.filename), cache_dir=hf_cache_dir(), revision=s.revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _progress_class(progress: Progress | None) -> type:
    """A silent tqdm for huggingface_hub that reports bytes to ``progress`` (it never draws: only
    the CLI writes to the terminal)."""
    from tqdm import tqdm

    class _Bytes(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            if progress is not None:
                progress(int(self.n), int(self.total or 0))
            return None

        def update_transfer(self, n: float | None = 1) -> None:  # xet transfer bytes: not shown
            return None

        def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            return None

    return _Bytes


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Base errors of whichever HTTP client huggingface_hub is using (httpx2, httpx, requests)."""
    names = (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException"))
    return tuple(getattr(sys.modules[m], n) for m, n in names if m in sys.modules and hasattr(sys.modules[m], n))


def _download_hub(entry: WeightsEntry, progress: Progress | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    s = entry.source
    where = f"{s.repo}@{s.revision}"
    # older huggingface_hub releases draw their own bar: they have no tqdm_class parameter
    bar = {"tqdm_class": _progress_class(progress)} if "tqdm_class" in signature(hf_hub_download).parameters else {}
    log.info("downloading %s", s.describe())
    try:
        return Path(hf_hub_download(
            repo_id=str(s.repo), filename=str(s.filename), revision=s.revision, cache_dir=hf_cache_dir(),
            endpoint=os.environ.get("HF_ENDPOINT") or None, **bar,
        ))
    except LocalEntryNotFoundError as exc:
        raise DownloadError(f"{entry.id}: cannot reach the hub for {where} and it is not in the cache",
                            hint="check your connection, HF_ENDPOINT and HF_HUB_OFFLINE") from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"{entry.id}: {s.repo} has no file {s.filename!r} at revision {s.revision!r}",
                            hint="the entry in weights.toml is out of date") from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"{entry.id}: {s.repo} has no revision {s.revision!r}",
                            hint="the entry in weights.toml is out of date") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"{entry.id}: repository {s.repo} not found (or private/gated)",
                            hint="check weights.toml; for a private repo log in with `hf auth login`") from exc
    except (HfHubHTTPError, OSError, ValueError, *_transport_errors()) as exc:
        raise DownloadError(f"{entry.id}: download of {s.describe()} failed ({exc})",
                            hint="check your connection and try again") from exc


def _evict_hub(pointer: Path) -> None:
    """Remove a snapshot file and the blob it links to from huggingface_hub's cache."""
    blob = Path(os.path.normpath(pointer.parent / os.readlink(pointer))) if pointer.is_symlink() else None
    pointer.unlink(missing_ok=True)
    if blob is not None and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)
    try:
        pointer.parent.rmdir()  # an empty snapshot folder
    except OSError:
        pass


# --------------------------------------------------------------------------- fetch / verify
def _cached_source(entry: WeightsEntry, root: Path) -> Path | None:
    if entry.source.kind == "hub":
        return _hub_cached(entry)
    dest = _url_dest(entry, root)
    return dest if dest.is_file() else None


def _is_local(entry: WeightsEntry) -> bool:
    return entry.source.kind == "url" and str(entry.source.url).startswith("file:")


def _mismatch(entry: WeightsEntry, got: str, expected: str) -> ChecksumError:
    return ChecksumError(
        f"{entry.id}: sha256 mismatch for {entry.source.basename}: got {got}, expected {expected}; "
        "the file was not kept",
        hint=f"retry `realsr models download {entry.id}`; if it fails again the published file changed "
        f"(for a trusted hash, remove the {entry.id} table from {TRUST_FILE} only if you trust the new file)",
    )


def _check_name_prefix(entry: WeightsEntry, sha: str) -> None:
    """Aux entries: a file named ``name-<hex>.ext`` (torch.hub convention) must hash to ``<hex>...``."""
    m = _HASH_PREFIX.fullmatch(entry.source.basename)
    if entry.is_aux and m and not sha.startswith(m["prefix"]):
        raise ChecksumError(
            f"{entry.id}: sha256 {sha} of {entry.source.basename} does not start with the "
            f"{m['prefix']} its file name carries; the file was not kept",
            hint=f"retry `realsr models download {entry.id}`; if it fails again the published file changed",
        )


def _needs_conversion(entry: WeightsEntry, path: Path) -> bool:
    if entry.is_aux or entry.is_community:  # used as published (a VGG .pth, a spandrel model): never converted
        return False
    return entry.format == "pth" or read_metadata(path).get("format") != FORMAT


def _check_matches(entry: WeightsEntry, path: Path) -> None:
    meta = read_metadata(path)
    if meta.get("arch") != entry.arch or meta.get("scale") != str(entry.scale):
        raise WeightsError(
            f"{entry.id}: {path.name} holds {meta.get('arch')} x{meta.get('scale')}, "
            f"but weights.toml says {entry.arch} x{entry.scale}",
            hint="the catalog entry is wrong; report it",
        )


def fetch(
    entry: WeightsEntry,
    *,
    offline: bool | None = None,
    trust_on_first_use: bool = False,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """A verified local safetensors file for ``entry`` (downloaded and converted when needed);
    for an aux or community entry, the verified published file as is.

    Raises WeightsError (no hash to verify against and no ``trust_on_first_use``), DownloadError
    (network, missing file, offline and not cached), ChecksumError (hash mismatch; nothing kept).
    """
    if entry.source.kind == "manual":
        files = " ".join(entry.source.files)
        raise DownloadError(
            f"{entry.id} cannot be downloaded automatically: its authors publish "
            f"{', '.join(entry.source.files)} only on {entry.source.url}",
            hint=f"download them by hand, then `realsr convert {files} --arch {entry.arch} "
            f"-o {entry.id}.safetensors` and use `--weights {entry.id}.safetensors`",
        )
    if entry.source.kind == "package":
        return _packaged(entry)
    root = cache_root(cache_dir)
    expected = expected_sha256(entry, root)
    if expected is None and not trust_on_first_use:
        raise WeightsError(
            f"{entry.id} has no recorded sha256, so its download cannot be verified",
            hint=f"if you trust {entry.source.describe()}, run `realsr models download {entry.id} --trust` "
            "to record its hash on first use",
        )
    if expected is not None and _converted(entry, expected, root).is_file():
        converted = _converted(entry, expected, root)
        ok, _ = _converted_ok(converted, expected, root)
        if ok:
            return converted
        log.warning("%s: the converted file %s does not match the sha256 recorded when realsr wrote "
                    "it (changed, or written by an older realsr); converting the verified source again",
                    entry.id, converted.name)
        converted.unlink()

    src, sha = _cached_source(entry, root), None
    if src is None:
        if _offline(offline) and not _is_local(entry):
            raise DownloadError(f"{entry.id} is not in the cache (offline mode)",
                                hint=f"run `realsr models download {entry.id}` while online")
        if entry.source.kind == "hub":
            src = _download_hub(entry, progress)
        else:
            src = _url_dest(entry, root)
            sha = _download_url(entry, src, expected, progress)
    sha = sha or file_sha256(src)
    try:
        _check_name_prefix(entry, sha)
    except ChecksumError:
        if entry.source.kind == "hub":
            _evict_hub(src)
        else:
            src.unlink(missing_ok=True)
        raise
    if expected is None:
        where = _record_trust(entry, sha, root)
        log.warning("%s: trusted on first use, recorded sha256 %s in %s", entry.id, sha, where)
        expected = sha
    elif sha != expected:
        if entry.source.kind == "hub":
            _evict_hub(src)
        else:
            src.unlink(missing_ok=True)
        raise _mismatch(entry, sha, expected)

    if _needs_conversion(entry, src):
        from realsr_cli.registry import convert  # torch: only when something must be converted

        out = _converted(entry, expected, root)
        log.info("%s: converting %s -> %s", entry.id, src.name, out)
        path = convert.convert_checkpoint(src, out, arch=entry.arch, scale=entry.scale)
        _record_converted(path, expected, root)
        return path
    if entry.kind == "sr":  # community files are checked by what spandrel detects when loaded
        _check_matches(entry, src)
    return src


def package_file(entry: WeightsEntry) -> Path:
    """Where a ``package`` source lies inside the installed realsr_cli package (may be missing)."""
    return Path(str(resources.files("realsr_cli").joinpath(str(entry.source.filename))))


def _shipped(entry: WeightsEntry) -> Path:
    """:func:`package_file`, which must exist (a WeightsError otherwise)."""
    path = package_file(entry)
    if not path.is_file():
        raise WeightsError(
            f"{entry.id}: the shipped weights file {path} is missing (a broken or partial install)",
            hint="reinstall realsr (`pip install --force-reinstall realsr`)",
        )
    return path


def _packaged(entry: WeightsEntry) -> Path:
    """The shipped file of a ``package`` entry, verified against its sha256 (hashing a few MB)."""
    path = _shipped(entry)
    sha = file_sha256(path)
    if sha != entry.sha256:
        raise _mismatch(entry, sha, str(entry.sha256))
    _check_matches(entry, path)
    return path


def cached_path(entry: WeightsEntry, *, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The file :func:`fetch` would return from the cache (not re-hashed), or None."""
    if entry.source.kind == "package":
        path = package_file(entry)
        return path if path.is_file() else None
    root = cache_root(cache_dir)
    expected = expected_sha256(entry, root)
    if expected is None:
        return None
    if _converted(entry, expected, root).is_file():
        return _converted(entry, expected, root)
    src = _cached_source(entry, root)
    try:
        return src if src is not None and not _needs_conversion(entry, src) else None
    except WeightsError:  # an unreadable cached file: not usable as is (fetch/verify will say why)
        return None


def verify(entry: WeightsEntry, *, cache_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Re-hash the cached files: ``(all match, the sha256 reported)``.

    The published file must match the expected sha256 (its hash is reported); a converted file
    must match the sha256 recorded when realsr converted it (never the hash its own metadata
    claims); when only the converted file remains, its own hash is reported. A ``package`` entry
    re-hashes the shipped file.
    """
    if entry.source.kind == "package":
        sha = file_sha256(_shipped(entry))
        return sha == entry.sha256, sha
    root = cache_root(cache_dir)
    expected = expected_sha256(entry, root)
    if expected is None:
        raise WeightsError(f"{entry.id} has no recorded sha256 to verify against",
                           hint=f"run `realsr models download {entry.id} --trust` to record one")
    src = _cached_source(entry, root)
    converted = _converted(entry, expected, root)
    conv_ok, conv_sha = _converted_ok(converted, expected, root) if converted.is_file() else (True, "")
    if src is not None:
        sha = file_sha256(src)
        return sha == expected and conv_ok, sha
    if converted.is_file():
        return conv_ok, conv_sha
    raise WeightsError(f"{entry.id} is not in the cache", hint=f"run `realsr models download {entry.id}`")
