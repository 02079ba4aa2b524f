"""`realsr models list | info ID | download ID | verify ID | path ID | inspect FILE`."""

from __future__ import annotations

from typing import Annotated

import typer

from realsr_cli.cli import _output, _schemas
from realsr_cli.cli._options import JsonOpt
from realsr_cli.errors import ChecksumError, ModelError

app = typer.Typer(
    help="Browse, download and check the models in the registry (weights.toml).\n\n"
    "Examples:\n\n  realsr models list\n\n  realsr models download femasr-x4 --trust\n\n"
    "  realsr models download realesrgan-x4plus\n\n"
    "  realsr models info femasr-x4 --json",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="Model id or alias, e.g. femasr-x4.", show_default=False)]


def _catalog():
    from realsr_cli.registry.catalog import load_catalog

    return load_catalog()


def _entry_json(entry, cached, catalog) -> dict:
    from realsr_cli.registry.describe import entry_document, package_default_id

    return entry_document(entry, cached, package_default_id(catalog))


def _kind(entry) -> str:
    """The list's kind column: realsr's own model, a community model (spandrel) or aux weights."""
    return {"sr": "realsr", "community": "community", "aux": "aux"}[entry.kind]


@app.command("list")
def list_models(json_out: JsonOpt = False) -> None:
    """List every model in the registry and whether it is cached.

    The kind column says whose model it is: "realsr" (our architectures), "community" (a widely
    used checkpoint of another architecture, e.g. realesrgan-x4plus, run through spandrel) or
    "aux" (training-only networks such as the ImageNet VGGs, which also show "aux" as their scale).
    --json: the "kind" field ("sr", "community", "aux").

    Example: realsr models list --json
    """
    from realsr_cli.registry import hub

    cat = _catalog()
    from realsr_cli.registry.describe import package_default_id

    rows = [(e, hub.cached_path(e)) for e in cat.entries]
    default = package_default_id(cat)
    if json_out:
        models = [_entry_json(e, c, cat) for e, c in rows]
        _output.emit_json(_schemas.stamp("models.list", {"models": models}))
        return
    _output.table(
        "realsr models (* = the default model)",
        ["id", "kind", "arch", "scale", "aliases", "cached", "license"],
        [[e.id + (" *" if e.id == default else ""), _kind(e), e.arch, "aux" if e.is_aux else f"x{e.scale}",
          ", ".join(e.aliases), "yes" if c else "no", e.license] for e, c in rows],
        keep=("id", "kind"),
    )


@app.command("info")
def info(model_id: IdArg, json_out: JsonOpt = False) -> None:
    """Show everything the registry knows about one model: source, licence, sha256 and its origin.

    Examples:

      realsr models info femasr-x4

      realsr models info realesrgan-x4plus --json
    """
    from realsr_cli.registry import hub
    from realsr_cli.registry.describe import sha256_status

    cat = _catalog()
    e = cat.get(model_id, allow_aux=True)
    doc = _entry_json(e, hub.cached_path(e), cat)
    if json_out:
        _output.emit_json(_schemas.stamp("models.info", doc))
        return
    rows = [(k, v) for k, v in doc.items() if v not in (None, "", [])]
    rows.append(("sha256 status", sha256_status(e)))
    if e.is_community:
        rows.append(("runs via", "spandrel (pip install 'realsr[community]'); scale, tiling and precision "
                     "come from the checkpoint, as for --weights FILE"))
    _output.key_values(e.id, rows)


@app.command("download")
def download(
    model_id: IdArg,
    trust: Annotated[
        bool,
        typer.Option("--trust", help="Trust on first use: record the sha256 of a file the registry has no hash for."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Download (and convert, for official .pth files) a model into the cache.

    Example: realsr models download femasr-x4 --trust
    """
    from realsr_cli.registry import hub

    cat = _catalog()
    e = cat.get(model_id, allow_aux=True)
    with _output.progress() as view:
        path = hub.fetch(e, trust_on_first_use=trust, progress=view.bytes)
    if json_out:
        _output.emit_json(_schemas.stamp("models.download", _entry_json(e, path, cat)))
    else:
        _output.success(f"{e.id} ready at {path}")


@app.command("verify")
def verify(model_id: IdArg, json_out: JsonOpt = False) -> None:
    """Re-hash the cached file and compare it with the recorded sha256 (exit 3 on mismatch).

    Example: realsr models verify femasr-x4
    """
    from realsr_cli.registry import hub

    e = _catalog().get(model_id, allow_aux=True)
    ok, digest = hub.verify(e)
    if json_out:
        _output.emit_json(_schemas.stamp("models.verify", {"id": e.id, "ok": ok, "sha256": digest}))
    if not ok:
        raise ChecksumError(f"{e.id}: cached file does not match its recorded sha256 ({digest})",
                            hint=f"delete it and run `realsr models download {e.id}`")
    if not json_out:
        _output.success(f"{e.id}: sha256 {digest} ok")


@app.command("path")
def path(model_id: IdArg, json_out: JsonOpt = False) -> None:
    """Print the cached weights path on stdout (exit 3 if not downloaded).

    Examples:

      realsr upscale x.png --weights "$(realsr models path femasr-x4)"

      realsr models path femasr-x4 --json
    """
    from realsr_cli.registry import hub

    e = _catalog().get(model_id, allow_aux=True)
    p = hub.cached_path(e)
    if p is None:
        raise ModelError(f"{e.id} is not in the cache", hint=f"run `realsr models download {e.id}`")
    if json_out:
        _output.emit_json(_schemas.stamp("models.path", {"id": e.id, "path": str(p)}))
    else:
        typer.echo(str(p))


@app.command("inspect")
def inspect_file(
    file: Annotated[str, typer.Argument(help="A weights file: ours (.safetensors) or a community .pth/.safetensors.",
                                        show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Show what a weights file holds and how realsr will run it (exit 3 if it cannot be loaded).

    Our safetensors: architecture and config from its metadata. Any other checkpoint: what
    spandrel detects (needs `pip install 'realsr[community]'`): architecture, scale, channels,
    parameters, size requirements, tiling and fp16/bf16 support.

    Examples:

      realsr models inspect 4x-UltraSharp.pth

      realsr models inspect my-femasr-x4.safetensors --json
    """
    from realsr_cli.registry.describe import inspect_weights

    doc = inspect_weights(file)
    if json_out:
        _output.emit_json(_schemas.stamp("models.inspect", doc))
        return
    size = doc["size_requirements"]
    precision = ", ".join(k for k, ok in doc["precision"].items() if ok)
    rows = [
        ("loader", doc["loader"] + (f" {doc['spandrel_version']}" if doc["spandrel_version"] else "")),
        ("arch", f"{doc['arch']} ({doc['arch_name']})"),
        ("purpose", doc["purpose"]),
        ("scale", f"x{doc['scale']}"),
        ("channels", f"{doc['input_channels']} in, {doc['output_channels']} out"),
        ("parameters", f"{doc['parameters']:,}"),
        ("size", f"min {size['minimum']}, multiple of {size['multiple_of']}" + (", square" if size["square"] else "")),
        ("tiling", f"{doc['tiling']} (default tile {doc['default_tile']}, overlap {doc['default_overlap']})"),
        ("precision", precision),
        ("tags", ", ".join(doc["tags"])),
        ("config", doc["config"]),
        ("sha256", doc["sha256"]),
    ]
    _output.key_values(doc["file"], [(k, v) for k, v in rows if v not in (None, "")])
