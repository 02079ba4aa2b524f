"""The `--json` documents: one schema per command, the single source of truth for their keys.

Every document is a JSON object whose first key is ``"schema": "realsr.<command>/<version>"``.
``SCHEMAS`` maps each command to its version and its keys; ``FRAGMENTS`` are the objects nested in
them (list items, sub-objects). A key maps to its JSON type:

- an atom: ``string``, ``integer``, ``number`` (integer or not), ``boolean``, ``null``,
  ``object`` (any object: open-ended, e.g. metric names), ``array``;
- ``array<T>``: every item has type T (an atom or a fragment name);
- a fragment name: an object with exactly that fragment's keys;
- alternatives joined by ``|`` (not inside ``array<...>``), e.g. ``string|null``.

A key ending in ``?`` may be absent; every other key is always present; no other key may appear.
Adding a key is one line here plus one row in docs/cli.md ("Machine-readable output"); removing,
renaming or retyping a key bumps the command's version. tests/cli/test_cli_json.py validates every
command's real output against its schema and checks that docs/cli.md documents every key.

Size (over STYLE's ~300-line guide): it is data — every command's --json schema — plus a small validator.
"""

from __future__ import annotations

from typing import Any

#: JSON type of each atom name (bool is excluded from integer/number by the validator).
ATOMS: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "object": dict,
    "array": list,
}

_UPSCALE: dict[str, str] = {
    "input": "string",
    "output": "string",
    "model": "string",
    "arch": "string",
    "scale": "number",
    "input_size": "array<integer>",
    "output_size": "array<integer>",
    "tile": "integer",
    "tiles": "integer",
    "precision": "string",
    "seed": "integer|null",
    "seconds": "number",
    "fp32_fallbacks": "integer",
    "aux?": "aux_maps",
}

_MODEL_ENTRY: dict[str, str] = {
    "id": "string",
    "kind": "string",
    "arch": "string",
    "scale": "integer|null",
    "variant": "string|null",
    "aliases": "array<string>",
    "default": "boolean",
    "package_default": "boolean",
    "format": "string",
    "source": "object",
    "sha256": "string|null",
    "license": "string",
    "paper": "string",
    "notes": "string",
    "cached": "boolean",
    "path": "string|null",
}

FRAGMENTS: dict[str, dict[str, str]] = {
    "upscale_report": _UPSCALE,
    "aux_maps": {"depth": "string", "kernel_var": "string"},
    "batch_failure": {"input": "string", "error": "string"},
    "batch_inputs": {"done": "array<string>", "skipped": "array<string>", "failed": "array<string>"},
    "batch_rank": {
        "rank": "integer",
        "host": "string",
        "device": "string",
        "total": "integer",
        "done": "integer",
        "skipped": "integer",
        "failed": "integer",
        "seconds": "number",
        "interrupted": "boolean",
        "inputs": "batch_inputs",
    },
    "model_entry": _MODEL_ENTRY,
    "train_stage": {"stage": "string", "summary": "string", "configs": "array<string>"},
    "doctor_check": {
        "device": "string",
        "precision": "string",
        "tiled": "boolean",
        "max_abs_diff": "number|null",
        "tolerance": "number",
        "ok": "boolean",
        "seconds": "number",
        "error": "string|null",
    },
    "degrade_file": {
        "hr": "string",
        "lr": "string",
        "seed": "integer",
        "lr_size?": "array<integer>",
        "hr_size?": "array<integer>",
    },
    "degrade_failure": {"hr": "string", "error": "string"},
    "eval_image": {
        "name": "string",
        "lq": "string",
        "hq": "string",
        "output": "string|null",
        "size": "array<integer>",
        "psnr": "number|null",
        "ssim": "number",
        "codebook?": "object",
        "lpips?": "number",
        "dists?": "number",
        "niqe?": "number|null",
        "seconds": "number",
    },
    "eval_missing": {"lq": "string", "reason": "string"},
    "eval_failure": {"lq": "string", "error": "string"},
    "eval_dir_image": {
        "name": "string",
        "sr": "string",
        "hr": "string|null",
        "size": "array<integer>",
        "psnr?": "number|null",
        "ssim?": "number|null",
        "lpips?": "number|null",
        "dists?": "number|null",
        "niqe?": "number|null",
        "seconds": "number",
    },
    "eval_unpaired_sr": {"sr": "string", "reason": "string"},
    "eval_unpaired_hr": {"hr": "string"},
    "eval_dir_failure": {"sr": "string", "error": "string"},
    "size_requirements": {"minimum": "integer", "multiple_of": "integer", "square": "boolean"},
    "precision_support": {"fp32": "boolean", "fp16": "boolean", "bf16": "boolean"},
    "compare_image": {"path": "string", "label": "string", "size": "array<integer>", "resized": "boolean"},
    "compare_crop": {
        "x": "integer",
        "y": "integer",
        "w": "integer",
        "h": "integer",
        "auto": "boolean",
        "difference": "number",
    },
}

#: command (as typed, subcommands joined by ".") -> (version, keys besides "schema")
SCHEMAS: dict[str, tuple[int, dict[str, str]]] = {
    "upscale": (1, _UPSCALE),
    "batch": (1, {
        "total": "integer",
        "done": "integer",
        "skipped": "integer",
        "failed": "array<batch_failure>",
        "seconds": "number",
        "images": "array<upscale_report>",
        "interrupted": "boolean",
        "inputs": "batch_inputs",
        "world_size": "integer",
        "ranks": "array<batch_rank>",
    }),
    "convert": (1, {
        "output": "string",
        "sha256": "string",
        "format": "string",
        "format_version": "string",
        "arch": "string",
        "config": "string",
        "scale": "string",
        "realsr_version": "string",
        "source_sha256": "string",
        "source_files": "string",
    }),
    "degrade": (1, {
        "pipeline": "string",
        "scale": "integer",
        "seed": "integer",
        "version": "string",
        "files": "array<degrade_file>",
        "failed": "array<degrade_failure>",
        "done": "integer",
        "skipped": "integer",
        "seconds": "number",
        "manifest": "string",
    }),
    "eval": (1, {
        "model": "string",
        "arch": "string",
        "scale": "integer",
        "crop_border": "integer",
        "y_channel": "boolean",
        "hr_prior": "string|null",
        "top_k": "array<integer>|null",
        "count": "integer",
        "mean": "object",
        "images": "array<eval_image>",
        "missing_hq": "array<eval_missing>",
        "failed": "array<eval_failure>",
        "seconds": "number",
    }),
    "eval.dirs": (1, {
        "sr_dir": "string",
        "hr_dir": "string|null",
        "scale": "integer|null",
        "crop_border": "integer",
        "y_channel": "boolean",
        "metrics": "array<string>",
        "count": "integer",
        "mean": "object",
        "images": "array<eval_dir_image>",
        "unpaired_sr": "array<eval_unpaired_sr>",
        "unpaired_hr": "array<eval_unpaired_hr>",
        "failed": "array<eval_dir_failure>",
        "seconds": "number",
    }),
    "models.list": (1, {"models": "array<model_entry>"}),
    "models.info": (1, _MODEL_ENTRY),
    "models.download": (1, _MODEL_ENTRY),
    "models.verify": (1, {"id": "string", "ok": "boolean", "sha256": "string"}),
    "models.path": (1, {"id": "string", "path": "string"}),
    "models.inspect": (1, {
        "file": "string",
        "sha256": "string",
        "format": "string",
        "loader": "string",
        "arch": "string",
        "arch_id": "string",
        "arch_name": "string",
        "purpose": "string",
        "scale": "integer",
        "input_channels": "integer",
        "output_channels": "integer",
        "parameters": "integer",
        "size_requirements": "size_requirements",
        "tiling": "string",
        "default_tile": "integer",
        "default_overlap": "integer",
        "precision": "precision_support",
        "stochastic": "boolean",
        "tags": "array<string>",
        "config": "object|null",
        "metadata": "object",
        "spandrel_version": "string|null",
    }),
    "train.run": (1, {
        "run_dir": "string",
        "step": "integer",
        "checkpoint": "string|null",
        "train": "object|null",
        "val": "object|null",
    }),
    "train.export": (1, {
        "path": "string",
        "arch": "string",
        "stage": "string",
        "step": "integer",
        "ema": "boolean",
        "tensors": "integer",
    }),
    "train.stages": (1, {"stages": "array<train_stage>"}),
    "video": (1, {
        "input": "string",
        "output": "string",
        "model": "string",
        "arch": "string",
        "scale": "number",
        "frames": "integer",
        "resumed_frames": "integer",
        "fps": "number|null",
        "input_size": "array<integer>",
        "output_size": "array<integer>",
        "codec": "string",
        "pix_fmt": "string",
        "crf": "integer|null",
        "audio_streams": "integer",
        "audio_copied": "boolean",
        "precision": "string",
        "tile": "integer",
        "seed": "integer|null",
        "tta": "boolean",
        "seconds": "number",
    }),
    "compare": (1, {
        "output": "string",
        "format": "string",
        "size": "array<integer>",
        "grid_size": "array<integer>|null",
        "images": "array<compare_image>",
        "crops": "array<compare_crop>",
        "zoom": "integer",
        "seconds": "number",
    }),
    "doctor": (1, {
        "ok": "boolean",
        "environment": "object",
        "devices": "array<object>",
        "cache": "object",
        "weights": "array<object>",
        "extras": "object",
        "checks": "array<doctor_check>",
    }),
}


#: documents that are a second form of a command: schema name -> the command that prints it
FORMS: dict[str, str] = {"eval.dirs": "eval"}  # `realsr eval SR_DIR [HR_DIR]`


def tag(command: str) -> str:
    """The ``schema`` value of ``command``'s document, e.g. ``realsr.models.list/1``."""
    version, _ = SCHEMAS[command]
    return f"realsr.{command}/{version}"


def stamp(command: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``"schema"`` as its first key: what ``--json`` prints."""
    return {"schema": tag(command), **body}


# ----------------------------------------------------------------------------- validation


def _atom_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, ATOMS[name])


def _check(value: Any, typ: str, where: str, problems: list[str]) -> None:
    for alt in typ.split("|"):
        if alt.startswith("array<") and alt.endswith(">"):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check(item, alt[6:-1], f"{where}[{i}]", problems)
                return
        elif alt in FRAGMENTS:
            if isinstance(value, dict):
                _check_keys(value, FRAGMENTS[alt], where, problems)
                return
        elif alt in ATOMS:
            if _atom_ok(value, alt):
                return
        else:
            raise KeyError(f"{where}: unknown type {alt!r} in schema")
    problems.append(f"{where}: expected {typ}, got {type(value).__name__} {value!r:.60}")


def _check_keys(obj: dict[str, Any], keys: dict[str, str], where: str, problems: list[str]) -> None:
    names = {k.rstrip("?") for k in keys}
    problems += [f"{where}.{k}: not in the schema" for k in obj if k not in names]
    for key, typ in keys.items():
        name = key.rstrip("?")
        if name in obj:
            _check(obj[name], typ, f"{where}.{name}", problems)
        elif not key.endswith("?"):
            problems.append(f"{where}.{name}: missing")


def validate(doc: Any, command: str) -> list[str]:
    """Every way ``doc`` differs from ``command``'s schema (empty: it conforms)."""
    if not isinstance(doc, dict):
        return [f"$: expected an object, got {type(doc).__name__}"]
    problems = []
    if doc.get("schema") != tag(command):
        problems.append(f"$.schema: expected {tag(command)!r}, got {doc.get('schema')!r}")
    if next(iter(doc), None) != "schema":
        problems.append("$: 'schema' is not the first key")
    _check_keys({k: v for k, v in doc.items() if k != "schema"}, SCHEMAS[command][1], "$", problems)
    return problems
