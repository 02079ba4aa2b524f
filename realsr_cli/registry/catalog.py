"""The weights catalog: ``weights.toml`` -> frozen dataclasses, strictly validated (STYLE §3, §4).

The package ships ``realsr_cli/weights.toml`` (the repository's top-level ``weights.toml``). Users
may add entries from their own files: ``REALSR_WEIGHTS_TOML`` holds one or more paths separated by
``os.pathsep``; their entries join the shipped ones (a duplicate id or alias is an error, never a
silent override). The schema is documented in docs/weights.md.

Entries are super-resolution checkpoints (``kind = "sr"``, the default) or auxiliary weights
(``kind = "aux"``): networks that training needs but that cannot upscale, e.g. torchvision's
ImageNet VGGs for the perceptual losses. Aux entries name an arch of :data:`AUX_ARCHS` (not
:data:`ARCHITECTURES`), have no scale, and are never picked by SR model resolution
(:meth:`Catalog.get` refuses them unless ``allow_aux``).

Community entries (``kind = "community"``) are well-known checkpoints of architectures realsr does
not implement (Real-ESRGAN, BSRGAN, SwinIR ...): their ``arch`` is a family of
:data:`COMMUNITY_ARCHS` (a spandrel architecture), their ids are the names the community uses
(``realesrgan-x4plus``), and their files are loaded as published through spandrel
(registry/community.py), never converted. An architecture name resolves only to our own entries:
``--model esrgan`` is not a model, ``--model realesrgan-x4plus`` (or an alias) is.

Size (over STYLE's ~300-line guide): the schema validation of every weights.toml field, with a plain-words error each, is most of it.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from realsr_cli.errors import ConfigError, UnknownModelError
from realsr_cli.registry.archs import ARCHITECTURES, DEPTH_ARCHITECTURES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["WeightsSource", "WeightsEntry", "Catalog", "load_catalog", "ENV_WEIGHTS_TOML", "SCHEMA", "AUX_ARCHS",
           "COMMUNITY_ARCHS"]

ENV_WEIGHTS_TOML = "REALSR_WEIGHTS_TOML"
SCHEMA = 1

_ID = re.compile(r"(?P<arch>[a-z0-9_]+)-x(?P<scale>[1-9][0-9]?)(?:-(?P<variant>[a-z0-9][a-z0-9._-]*))?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_ALIAS = re.compile(r"[a-z0-9][a-z0-9._-]*")
_AUX_ID = re.compile(r"(?P<arch>[a-z0-9_]+)-(?P<variant>[a-z0-9][a-z0-9._-]*)")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

_TOP_KEYS = {"schema", "default_model", "weights"}
_REQUIRED = {"id", "arch", "scale", "source", "format", "license"}
_OPTIONAL = {"sha256", "paper", "notes", "aliases", "default", "kind"}
_AUX_REQUIRED = _REQUIRED - {"scale"}
_AUX_OPTIONAL = {"sha256", "paper", "notes", "kind"}
_COMMUNITY_OPTIONAL = {"sha256", "paper", "notes", "aliases", "kind"}
_COMMUNITY_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")

#: auxiliary (non-SR) architectures an ``kind = "aux"`` entry may name: the ImageNet VGGs of the
#: training losses (loaded by realsr_cli.training.stages.reconstruction.read_vgg_state_dict), SSR's
#: depth estimators (archs.DEPTH_ARCHITECTURES, loaded by realsr_cli.engine.depth), the LPIPS
#: metric's learned layers (``realsr eval --lpips``, loaded by realsr_cli.evaluation.lpips) and the
#: DISTS metric's alpha/beta weights (``realsr eval --dists``, loaded by realsr_cli.evaluation.dists)
AUX_ARCHS: tuple[str, ...] = ("vgg16", "vgg19", "lpips", "dists", *DEPTH_ARCHITECTURES)
_HUB_KEYS = {"hub", "filename", "revision"}

#: architecture families of ``kind = "community"`` entries: our lowercase name -> the spandrel
#: architecture id its files must be detected as (registry/community.py checks it on load)
COMMUNITY_ARCHS: dict[str, str] = {
    "esrgan": "ESRGAN",  # RRDBNet: ESRGAN, Real-ESRGAN x4plus/x2plus/anime 6B, BSRGAN (old and new key layouts)
    "compact": "Compact",  # SRVGGNetCompact: Real-ESRGAN's realesr-general-x4v3, animevideov3
    "swinir": "SwinIR",  # SwinIR (classical, lightweight and real-world variants)
}


@dataclass(frozen=True)
class WeightsSource:
    """Where a file comes from: a Hugging Face Hub repo file pinned to a revision, a URL,
    (``manual``) a web page the user downloads ``files`` from by hand (e.g. a Google Drive folder
    without per-file links), then converts them with ``realsr convert``, or (``package``) a
    safetensors file shipped inside the realsr_cli package (``filename``: its path relative to
    the package folder; always available offline, checked against the entry's sha256)."""

    kind: Literal["hub", "url", "manual", "package"]
    repo: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None
    files: tuple[str, ...] = ()

    @property
    def basename(self) -> str:
        """File name of the source (last path component)."""
        if self.kind == "hub":
            return str(self.filename).rsplit("/", 1)[-1]
        if self.kind == "manual":
            return self.files[0]
        if self.kind == "package":
            return str(self.filename).rsplit("/", 1)[-1]
        if self.filename:  # hosts whose URL does not end in the file name (Google Drive)
            return self.filename
        return unquote(urlsplit(str(self.url)).path.rsplit("/", 1)[-1])

    def describe(self) -> str:
        """One-line, stable description (also the trust store's ``source`` field)."""
        if self.kind == "hub":
            return f"hf://{self.repo}/{self.filename}@{self.revision}"
        if self.kind == "manual":
            return f"{', '.join(self.files)} from {self.url} (manual download)"
        if self.kind == "package":
            return f"package:realsr_cli/{self.filename}"
        return str(self.url)

    def to_json(self) -> dict[str, str]:
        if self.kind == "hub":
            return {"hub": str(self.repo), "filename": str(self.filename), "revision": str(self.revision)}
        if self.kind == "manual":
            return {"manual": str(self.url), "files": list(self.files)}  # type: ignore[dict-item]
        if self.kind == "package":
            return {"package": str(self.filename)}
        out = {"url": str(self.url)}
        if self.filename:
            out["filename"] = self.filename
        return out


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint (a ``[[weights]]`` table of weights.toml)."""

    id: str
    arch: str
    scale: int
    source: WeightsSource
    format: Literal["safetensors", "pth"]
    license: str
    sha256: str | None = None
    paper: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()
    default: bool = False
    variant: str | None = None  # from the id: femasr-x4-<variant>
    origin: str = ""  # the TOML file it was read from
    #: aux: not an SR model (scale is 0), e.g. a VGG for losses; community: an SR model of a
    #: spandrel architecture (arch: a COMMUNITY_ARCHS family), loaded as published
    kind: Literal["sr", "aux", "community"] = "sr"

    @property
    def is_aux(self) -> bool:
        return self.kind == "aux"

    @property
    def is_community(self) -> bool:
        return self.kind == "community"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "arch": self.arch,
            "scale": None if self.is_aux else self.scale,
            "variant": self.variant,
            "aliases": list(self.aliases),
            "default": self.default,
            "format": self.format,
            "source": self.source.to_json(),
            "sha256": self.sha256,
            "license": self.license,
            "paper": self.paper,
            "notes": self.notes,
        }


def _fail(where: str, message: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{where}: {message}", hint=hint)


def _check_type(where: str, key: str, value: Any, tp: type | tuple[type, ...]) -> Any:
    if (isinstance(value, bool) and tp is int) or not isinstance(value, tp):
        raise _fail(where, f"{key!r} has the wrong type ({value!r})", "see docs/weights.md for the schema")
    return value


def _parse_source(where: str, raw: Any) -> WeightsSource:
    if not isinstance(raw, dict):
        raise _fail(where, "'source' must be a table: { hub = ..., filename = ..., revision = ... } or { url = ... }")
    if "manual" in raw:
        if set(raw) != {"manual", "files"}:
            raise _fail(where, "a manual source is { manual = 'https://page', files = ['a.pth', ...] }")
        page = _check_type(where, "source.manual", raw["manual"], str)
        files = _check_type(where, "source.files", raw["files"], list)
        if not page.startswith("https://") or not files or not all(
            isinstance(f, str) and f and "/" not in f for f in files
        ):
            raise _fail(where, "source.manual must be an https:// page and files plain file names")
        return WeightsSource(kind="manual", url=page, files=tuple(files))
    if "package" in raw:
        if set(raw) != {"package"}:
            raise _fail(where, "a package source is { package = 'weights/NAME.safetensors' }")
        rel = _check_type(where, "source.package", raw["package"], str)
        parts = rel.split("/")
        if not rel.endswith(".safetensors") or rel.startswith("/") or "\\" in rel or any(
            p in ("", ".", "..") for p in parts
        ):
            raise _fail(where, f"source.package {rel!r} must be a relative path to a .safetensors file in the package")
        return WeightsSource(kind="package", filename=rel)
    if ("hub" in raw) == ("url" in raw):
        raise _fail(where, "'source' needs exactly one of 'hub', 'url', 'manual' or 'package'")
    if "url" in raw:
        extra = set(raw) - {"url", "filename"}
        if extra:
            raise _fail(where, f"unknown key(s) in url source: {', '.join(sorted(extra))}")
        url = _check_type(where, "source.url", raw["url"], str)
        name = raw.get("filename")
        if name is not None:
            name = _check_type(where, "source.filename", name, str)
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise _fail(where, f"source.filename {name!r} must be a plain file name")
        parts = urlsplit(url)
        local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
        if not (parts.scheme in ("https", "file") or local) or not parts.path.rstrip("/"):
            raise _fail(where, f"source.url {url!r} must be an https:// (or file://) URL of a file")
        return WeightsSource(kind="url", url=url, filename=name)
    unknown = set(raw) - _HUB_KEYS
    missing = _HUB_KEYS - set(raw)
    if unknown or missing:
        what = [f"unknown key(s) {', '.join(sorted(unknown))}"] if unknown else []
        what += [f"missing key(s) {', '.join(sorted(missing))}"] if missing else []
        raise _fail(where, "hub source: " + "; ".join(what), "hub sources are { hub = 'owner/repo', filename, revision }")
    repo = _check_type(where, "source.hub", raw["hub"], str)
    filename = _check_type(where, "source.filename", raw["filename"], str)
    revision = _check_type(where, "source.revision", raw["revision"], str)
    if not _REPO.fullmatch(repo):
        raise _fail(where, f"source.hub {repo!r} is not an 'owner/repo' id")
    if not filename or filename.startswith("/") or ".." in filename.split("/"):
        raise _fail(where, f"source.filename {filename!r} must be a relative path inside the repo")
    if not revision.strip():
        raise _fail(where, "source.revision must name a commit or tag")
    return WeightsSource(kind="hub", repo=repo, filename=filename, revision=revision)


def _check_sha(where: str, sha: Any) -> None:
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise _fail(where, "sha256 must be 64 lowercase hex digits", "leave it out if unknown: trust-on-first-use")


def _parse_aux_entry(raw: dict[str, Any], where: str, origin: str) -> WeightsEntry:
    _check_keys(raw, where, _AUX_REQUIRED, _AUX_OPTIONAL, " for an aux entry")
    entry_id = _check_type(where, "id", raw["id"], str)
    arch = _check_type(where, "arch", raw["arch"], str)
    if arch not in AUX_ARCHS:
        raise _fail(where, f"unknown aux architecture {arch!r}", f"aux architectures: {', '.join(AUX_ARCHS)}")
    m = _AUX_ID.fullmatch(entry_id)
    if not m or m["arch"] != arch:
        raise _fail(where, f"id {entry_id!r} must read '{arch}-<variant>' (lowercase)")
    fmt, sha, source = _file_fields(raw, where)
    return WeightsEntry(
        id=entry_id, arch=arch, scale=0, source=source, format=fmt,  # type: ignore[arg-type]
        sha256=sha, variant=m["variant"], kind="aux", **_texts(raw, where, origin),
    )


def _parse_aliases(where: str, raw: dict[str, Any]) -> list[str]:
    aliases = _check_type(where, "aliases", raw.get("aliases", []), list)
    for alias in aliases:
        if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
            raise _fail(where, f"alias {alias!r} must be a lowercase name")
    return aliases


def _check_keys(raw: dict[str, Any], where: str, required: set[str], optional: set[str],
                what: str = "") -> None:
    """Unknown keys (neither ``required`` nor ``optional``) and missing required ones are errors."""
    allowed = required | optional
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s){what}: {', '.join(unknown)}", f"known keys: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(raw))
    if missing:
        raise _fail(where, f"missing required key(s) {', '.join(missing)}")


def _file_fields(raw: dict[str, Any], where: str) -> tuple[str, Any, WeightsSource]:
    """``format`` (safetensors | pth), ``sha256`` (checked) and ``source`` of an entry."""
    fmt = _check_type(where, "format", raw["format"], str)
    if fmt not in ("safetensors", "pth"):
        raise _fail(where, f"format {fmt!r} must be 'safetensors' or 'pth' (the file as published)")
    sha = raw.get("sha256")
    _check_sha(where, sha)
    return fmt, sha, _parse_source(where, raw["source"])


def _texts(raw: dict[str, Any], where: str, origin: str) -> dict[str, Any]:
    """The descriptive fields every entry has: licence, paper, notes (and where it was read)."""
    return {
        "license": _check_type(where, "license", raw["license"], str),
        "paper": _check_type(where, "paper", raw.get("paper", ""), str),
        "notes": _check_type(where, "notes", raw.get("notes", ""), str),
        "origin": origin,
    }


def _parse_community_entry(raw: dict[str, Any], where: str, origin: str) -> WeightsEntry:
    """A ``kind = "community"`` entry: a spandrel-loaded checkpoint named as its community names it."""
    _check_keys(raw, where, _REQUIRED, _COMMUNITY_OPTIONAL, " for a community entry")
    entry_id = _check_type(where, "id", raw["id"], str)
    arch = _check_type(where, "arch", raw["arch"], str)
    scale = _check_type(where, "scale", raw["scale"], int)
    if arch not in COMMUNITY_ARCHS:
        raise _fail(where, f"unknown community architecture {arch!r}",
                    f"community architectures (spandrel): {', '.join(COMMUNITY_ARCHS)}")
    if scale < 1:
        raise _fail(where, f"scale {scale} must be a positive integer")
    reserved = {*ARCHITECTURES, *COMMUNITY_ARCHS, *AUX_ARCHS}
    ours = _ID.fullmatch(entry_id)
    if not _COMMUNITY_ID.fullmatch(entry_id) or entry_id in reserved or not re.search(rf"-x{scale}(?![0-9])", entry_id):
        raise _fail(where, f"id {entry_id!r} must be a lowercase name that carries '-x{scale}' "
                    "(e.g. realesrgan-x4plus) and is not an architecture name")
    if ours and ours["arch"] in ARCHITECTURES:
        raise _fail(where, f"id {entry_id!r} reads as an id of realsr's own {ours['arch']!r} architecture")
    fmt, sha, source = _file_fields(raw, where)
    if source.kind not in ("url", "hub"):
        raise _fail(where, "a community entry's source is a url or a hub file (realsr downloads it)")
    aliases = _parse_aliases(where, raw)
    for alias in aliases:
        if alias in reserved:
            raise _fail(where, f"alias {alias!r} is an architecture name")
    return WeightsEntry(
        id=entry_id, arch=arch, scale=scale, source=source, format=fmt,  # type: ignore[arg-type]
        sha256=sha, aliases=tuple(aliases), kind="community", **_texts(raw, where, origin),
    )


def _parse_entry(raw: Any, where: str, origin: str) -> WeightsEntry:
    if not isinstance(raw, dict):
        raise _fail(where, "each [[weights]] item must be a table")
    entry_id = raw.get("id")
    if isinstance(entry_id, str):
        where = f"{where} ({entry_id})"
    kind = _check_type(where, "kind", raw.get("kind", "sr"), str)
    if kind not in ("sr", "aux", "community"):
        raise _fail(where, f"kind {kind!r} must be 'sr' (a super-resolution model, the default), 'aux' "
                    "or 'community'")
    if kind == "aux":
        return _parse_aux_entry(raw, where, origin)
    if kind == "community":
        return _parse_community_entry(raw, where, origin)
    _check_keys(raw, where, _REQUIRED, _OPTIONAL)
    entry_id = _check_type(where, "id", raw["id"], str)
    arch = _check_type(where, "arch", raw["arch"], str)
    scale = _check_type(where, "scale", raw["scale"], int)
    if arch not in ARCHITECTURES:
        raise _fail(where, f"unknown architecture {arch!r}", f"known architectures: {', '.join(sorted(ARCHITECTURES))}")
    m = _ID.fullmatch(entry_id)
    if not m or m["arch"] != arch or int(m["scale"]) != scale:
        raise _fail(where, f"id {entry_id!r} must read '{arch}-x{scale}[-variant]' (lowercase)")
    fmt, sha, source = _file_fields(raw, where)
    if source.kind == "package" and (sha is None or fmt != "safetensors"):
        raise _fail(where, "a package source needs format = 'safetensors' and its sha256")
    aliases = _parse_aliases(where, raw)
    return WeightsEntry(
        id=entry_id, arch=arch, scale=scale, source=source, format=fmt,  # type: ignore[arg-type]
        sha256=sha, aliases=tuple(aliases), variant=m["variant"],
        default=_check_type(where, "default", raw.get("default", False), bool),
        **_texts(raw, where, origin),
    )


def _read_file(path: Path) -> tuple[dict[str, Any], list[WeightsEntry]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"weights catalog not found: {path}", hint=f"check {ENV_WEIGHTS_TOML}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _fail(str(path), f"unknown top-level key(s) {', '.join(unknown)}", "entries go in [[weights]] tables")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise _fail(str(path), f"schema {schema!r} is not supported (this realsr reads schema {SCHEMA})")
    items = data.get("weights", [])
    if not isinstance(items, list):
        raise _fail(str(path), "'weights' must be an array of tables ([[weights]])")
    entries = [_parse_entry(raw, f"{path.name} [[weights]] #{i + 1}", str(path)) for i, raw in enumerate(items)]
    return data, entries


def _native(scale: float | None) -> int | None:
    """A requested scale as a native one: 2.0 -> 2; None or fractional (1.5) -> None."""
    if scale is None or not float(scale).is_integer():
        return None
    return int(scale)


@dataclass(frozen=True)
class Catalog:
    """Every known checkpoint, in file order. Look-ups by id, alias or architecture name."""

    entries: tuple[WeightsEntry, ...]
    default_model: str | None = None
    paths: tuple[Path, ...] = ()
    _by_id: dict[str, WeightsEntry] = field(default_factory=dict, init=False, repr=False, compare=False)
    _aliases: dict[str, WeightsEntry] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for e in self.entries:
            if e.id in self._by_id:
                raise ConfigError(f"duplicate weights id {e.id!r} ({self._by_id[e.id].origin} and {e.origin})")
            self._by_id[e.id] = e
        defaults: dict[str, WeightsEntry] = {}
        for e in self.entries:
            if e.default:
                if e.arch in defaults:
                    raise ConfigError(f"two defaults for {e.arch!r}: {defaults[e.arch].id} and {e.id}")
                defaults[e.arch] = e
            for alias in e.aliases:
                taken = self._by_id.get(alias) or self._aliases.get(alias)
                if taken is not None:
                    raise ConfigError(f"{e.id}: alias {alias!r} is already taken by {taken.id}")
                if alias in ARCHITECTURES and alias != e.arch:
                    raise ConfigError(f"{e.id}: alias {alias!r} names another architecture")
                self._aliases[alias] = e

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self._by_id or name in self._aliases

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    @property
    def sr_entries(self) -> tuple[WeightsEntry, ...]:
        """The super-resolution entries (``kind = "sr"`` and ``"community"``), in file order."""
        return tuple(e for e in self.entries if not e.is_aux)

    def _ours(self) -> list[WeightsEntry]:
        """SR entries of realsr's own architectures: the only ones an architecture name resolves to."""
        return [e for e in self.entries if e.kind == "sr"]

    def community(self, arch: str | None = None) -> tuple[WeightsEntry, ...]:
        """The community entries (``kind = "community"``), optionally only those of family ``arch``."""
        return tuple(e for e in self.entries if e.is_community and (arch is None or e.arch == arch))

    def aux(self, arch: str | None = None) -> tuple[WeightsEntry, ...]:
        """The auxiliary entries (``kind = "aux"``), optionally only those of ``arch``."""
        return tuple(e for e in self.entries if e.is_aux and (arch is None or e.arch == arch))

    def _aux_refused(self, e: WeightsEntry) -> UnknownModelError:
        if e.arch in DEPTH_ARCHITECTURES:
            return UnknownModelError(
                f"{e.id!r} is a depth estimator (auxiliary weights), not a super-resolution model",
                hint=f"use it with an SSR model: --model ssr --depth-estimator {e.id}",
            )
        if e.arch in ("lpips", "dists"):
            return UnknownModelError(
                f"{e.id!r} holds the {e.arch.upper()} metric's weights (auxiliary), "
                "not a super-resolution model",
                hint=f"`realsr eval SR_DIR HR_DIR --{e.arch}` uses it (with vgg16-imagenet)",
            )
        return UnknownModelError(
            f"{e.id!r} is an auxiliary weights entry ({e.arch}, used by training losses), "
            "not a super-resolution model",
            hint="pick an SR model from `realsr models list` (aux entries are marked 'aux'); "
            f"aux ids go in training configs, e.g. loss.{e.arch}_weights = \"{e.id}\"",
        )

    def _unknown(self, name: str) -> UnknownModelError:
        sr = self.sr_entries
        names = sorted({*(e.id for e in sr), *self._aliases, *(e.arch for e in self._ours())})
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        from realsr_cli.registry.archs import ARCHITECTURES

        if name in COMMUNITY_ARCHS:  # a family of several community models: name one
            ids = [e.id for e in self.community(name)]
            return UnknownModelError(
                f"{name!r} is a community architecture, not a model"
                + (f"; the catalog lists {', '.join(ids)}" if ids else ""),
                hint=(f"pick one, e.g. --model {ids[0]}" if ids else "see `realsr models list`")
                + "; any other checkpoint loads with --weights FILE",
            )
        if name in ARCHITECTURES:  # a method we implement, but no published/shipped weights
            return UnknownModelError(
                f"no weights are published for {name!r} (the architecture is built in, but "
                "there is no official checkpoint in the catalog)",
                hint="train your own (`realsr train stages`, docs/training.md), then "
                "`realsr upscale IMAGE --weights EXPORTED.safetensors`",
            )
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return UnknownModelError(f"unknown model {name!r}", hint=hint + "see `realsr models list`")

    def default_for(self, arch: str, scale: float | None = None) -> WeightsEntry:
        """The entry to use for an architecture: native ``scale`` if listed, else the default.

        Among entries of that scale the arch default wins, then ids without a variant, then file
        order. The arch default is the entry marked ``default = true`` (else its first entry).
        Weights shipped inside the package (small CPU-trained models) rank after every other
        entry of their architecture: a published or user-installed checkpoint of the same
        architecture (e.g. from ``$REALSR_WEIGHTS_TOML``) takes over the name.
        """
        pool = [e for e in self._ours() if e.arch == arch]
        if not pool:
            raise self._unknown(arch)
        pool.sort(key=lambda e: e.source.kind == "package")  # stable: file order otherwise
        ranked = sorted(pool, key=lambda e: (not e.default, e.variant is not None))
        scale = _native(scale)
        if scale is not None:
            same = [e for e in ranked if e.scale == scale]
            if same:
                return same[0]
        return ranked[0] if ranked[0].default else pool[0]

    def get(self, name: str, scale: float | None = None, *, allow_aux: bool = False) -> WeightsEntry:
        """Resolve an id (``femasr-x4``), alias or architecture name (``femasr``).

        An id is returned as is; the id of an aux entry only with ``allow_aux`` (``realsr models
        info/download/...``), else UnknownModelError saying it is not an SR model. An alias or architecture name with ``scale`` picks the entry of
        that native scale when one exists (``femasr`` + 2 -> ``femasr-x2``), else the default one
        (the engine then resizes). Unknown names raise UnknownModelError with close matches.
        """
        if name in self._by_id:
            found = self._by_id[name]
            if found.is_aux and not allow_aux:
                raise self._aux_refused(found)
            return found
        scale = _native(scale)
        target = self._aliases.get(name)
        if target is not None:
            if scale is None or target.scale == scale:
                return target
            if target.is_community:  # realesrgan-x4plus + 2 -> realesrgan-x2plus, when listed
                sibling = re.sub(rf"-x{target.scale}(?![0-9])", f"-x{scale}", target.id, count=1)
            else:
                sibling = f"{target.arch}-x{scale}" + (f"-{target.variant}" if target.variant else "")
            found = self._by_id.get(sibling, target)
            return found if found.kind == target.kind else target
        if any(e.arch == name for e in self._ours()):
            return self.default_for(name, scale)
        raise self._unknown(name)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is an id, alias or architecture name :meth:`get` resolves."""
        return name in self._by_id or name in self._aliases or any(e.arch == name for e in self._ours())

    def default(self, scale: float | None = None) -> WeightsEntry:
        """The model used when none is named: ``default_model`` (top-level key) or the first entry."""
        if not self.sr_entries:
            raise UnknownModelError("the weights catalog lists no SR model", hint=f"check weights.toml / {ENV_WEIGHTS_TOML}")
        first = self.sr_entries[0]
        return self.get(self.default_model or (first.id if first.is_community else first.arch), scale)


def package_catalog_path() -> Path:
    """The ``weights.toml`` shipped inside the package."""
    return Path(str(resources.files("realsr_cli").joinpath("weights.toml")))


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate the catalog.

    ``path`` given: that file only. Otherwise the packaged weights.toml plus every file listed in
    ``$REALSR_WEIGHTS_TOML`` (separated by ``os.pathsep``). Invalid files raise ConfigError naming
    the file and the entry.
    """
    if path is not None:
        paths = [Path(path)]
    else:
        extra = os.environ.get(ENV_WEIGHTS_TOML, "")
        paths = [package_catalog_path(), *(Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip())]
    entries: list[WeightsEntry] = []
    default_model: str | None = None
    for p in paths:
        data, found = _read_file(p)
        entries.extend(found)
        if "default_model" in data:
            dm = _check_type(str(p), "default_model", data["default_model"], str)
            default_model = default_model or dm  # the packaged file decides; extra files only fill in
    catalog = Catalog(entries=tuple(entries), default_model=default_model, paths=tuple(paths))
    if default_model is not None and default_model not in catalog and not any(
        e.kind == "sr" and e.arch == default_model for e in entries
    ):
        raise ConfigError(f"default_model {default_model!r} is neither an id, an alias nor an architecture")
    if default_model is not None and any(e.is_aux and default_model in (e.id, e.arch) for e in entries):
        raise ConfigError(f"default_model {default_model!r} names auxiliary weights, not an SR model")
    return catalog

