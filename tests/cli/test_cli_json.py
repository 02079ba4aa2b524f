"""`--json` everywhere: each command's real output validates against its schema in
realsr_cli/cli/_schemas.py, and docs/cli.md documents exactly those keys and types."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from realsr_cli.cli import _schemas
from realsr_cli.cli._schemas import FRAGMENTS, SCHEMAS, stamp, tag, validate
from realsr_cli.training.stages import STAGES
from tests.cli.conftest import run_cli
from tests.parity import shared_dir
from tests.training.test_trainer import ToyFeMaSRStage, ToyStage, make_images

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
SECTION = "## Machine-readable output (--json)"


def _json(args: list[str], code: int = 0) -> dict:
    """Run the CLI, check the exit code, parse stdout (all of it) as one JSON document."""
    res = run_cli(args)
    assert res.code == code, res.stderr
    return json.loads(res.stdout)


def _valid(doc: dict, command: str) -> dict:
    problems = validate(doc, command)
    assert problems == [], f"{problems}\n{json.dumps(doc, indent=1)[:2000]}"
    return doc


def _png(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- the validator


def _upscale_doc() -> dict:
    body = {"input": "a.png", "output": "a_x4.png", "model": "femasr-x4", "arch": "femasr", "scale": 4.0,
            "input_size": [2, 3], "output_size": [8, 12], "tile": 0, "tiles": 1, "precision": "fp32",
            "seed": None, "seconds": 0.5, "fp32_fallbacks": 0}
    return stamp("upscale", body)


def test_stamp_puts_the_versioned_tag_first():
    doc = _upscale_doc()
    assert list(doc)[0] == "schema" and doc["schema"] == "realsr.upscale/1" == tag("upscale")
    assert tag("models.list") == f"realsr.models.list/{SCHEMAS['models.list'][0]}"
    assert validate(doc, "upscale") == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.pop("tiles"), "$.tiles: missing"),
        (lambda d: d.update(surprise=1), "$.surprise: not in the schema"),
        (lambda d: d.update(tiles="1"), "$.tiles: expected integer"),
        (lambda d: d.update(tiles=True), "$.tiles: expected integer"),  # bool is not a JSON number
        (lambda d: d.update(scale=None), "$.scale: expected number"),
        (lambda d: d.update(seed=1.5), "$.seed: expected integer|null"),
        (lambda d: d.update(input_size=[2, "3"]), "$.input_size[1]: expected integer"),
        (lambda d: d.update(aux={"depth": "d.png"}), "$.aux.kernel_var: missing"),
        (lambda d: d.update(schema="realsr.upscale/0"), "$.schema: expected 'realsr.upscale/1'"),
        (lambda d: d.update(schema=d.pop("schema")), "$: 'schema' is not the first key"),
    ],
)
def test_validator_reports_each_deviation(change, problem):
    doc = _upscale_doc()
    change(doc)
    problems = validate(doc, "upscale")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_validator_accepts_optional_keys_and_nested_lists():
    assert validate({**_upscale_doc(), "aux": {"depth": "d.png", "kernel_var": "k.png"}}, "upscale") == []
    report = {k: v for k, v in _upscale_doc().items() if k != "schema"}
    batch = stamp("batch", {"total": 2, "done": 1, "skipped": 0, "failed": [{"input": "b.png", "error": "x"}],
                            "seconds": 1, "images": [report], "interrupted": False,
                            "inputs": {"done": ["a.png"], "skipped": [], "failed": ["b.png"]},
                            "world_size": 1, "ranks": []})
    assert validate(batch, "batch") == []
    batch["images"][0]["tile"] = None
    batch["failed"][0]["oops"] = 1
    assert validate(batch, "batch") == [
        "$.failed[0].oops: not in the schema",
        "$.images[0].tile: expected integer, got NoneType None",
    ]
    assert validate([report], "batch") == ["$: expected an object, got list"]


def _types(expr: str) -> list[str]:
    return [alt[6:-1] if alt.startswith("array<") else alt for alt in expr.split("|")]


def test_every_type_in_the_registry_is_known():
    exprs = [t for _, keys in SCHEMAS.values() for t in keys.values()]
    exprs += [t for keys in FRAGMENTS.values() for t in keys.values()]
    for expr in exprs:
        for name in _types(expr):
            assert name in _schemas.ATOMS or name in FRAGMENTS, expr
    used = {n for e in exprs for n in _types(e)}
    assert set(FRAGMENTS) <= used, "a fragment no schema uses"


def _json_commands(group, prefix: str = "") -> set[str]:
    """Dotted names of every command that takes --json."""
    found = set()
    for name, cmd in group.commands.items():
        dotted = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            found |= _json_commands(cmd, dotted + ".")
        elif any("--json" in getattr(p, "opts", []) for p in cmd.params):
            found.add(dotted)
    return found


def test_every_command_with_json_has_a_schema_and_vice_versa():
    from realsr_cli.cli.app import app

    assert _json_commands(typer.main.get_command(app)) == {_schemas.FORMS.get(c, c) for c in SCHEMAS}


# ----------------------------------------------------------------------------- real output


def test_upscale(tmp_path, femasr_weights):
    src = _png(tmp_path / "in.png", 12, 10)
    doc = _valid(_json(["upscale", str(src), "--weights", str(femasr_weights), "-o", str(tmp_path / "o.png"),
                        "--tile", "0", "--json"]), "upscale")
    assert doc["output_size"] == [48, 40] and doc["tiles"] == 1


@pytest.mark.parametrize("args", [["IN", "-o", "-"], ["-"]])
def test_upscale_json_refused_when_stdout_is_the_image(tmp_path, femasr_weights, args):
    src = _png(tmp_path / "in.png", 8, 8)
    res = run_cli(["upscale", *[str(src) if a == "IN" else a for a in args], "--weights", str(femasr_weights),
                   "--json"])
    assert res.code == 2 and res.stdout == b"" and "--json" in res.stderr


def test_batch_with_a_failure(tmp_path, femasr_weights):
    src = tmp_path / "in"
    _png(src / "a.png", 8, 8)
    _png(src / "sub" / "b.png", 6, 8, seed=1)
    (src / "bad.png").write_bytes(b"not an image")
    doc = _valid(_json(["batch", str(src), str(tmp_path / "out"), "-r", "--weights", str(femasr_weights),
                        "--tile", "0", "--json"], code=6), "batch")
    assert (doc["total"], doc["done"], len(doc["images"])) == (3, 2, 2)
    assert doc["failed"][0]["input"].endswith("bad.png")


def test_convert(tmp_path):
    src = shared_dir() / "parity" / "femasr_x4_reduced" / "weights.safetensors"
    dst = tmp_path / "w.safetensors"
    doc = _valid(_json(["convert", str(src), "--arch", "femasr", "-o", str(dst), "--json"]), "convert")
    assert doc["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest() and doc["scale"] == "4"


def test_degrade_with_a_failure(tmp_path):
    hr = tmp_path / "hr"
    _png(hr / "a.png", 16, 12)
    (hr / "bad.png").write_bytes(b"nope")
    doc = _valid(_json(["degrade", str(hr), str(tmp_path / "lr"), "--scale", "2", "--json"], code=6), "degrade")
    assert doc["files"][0]["lr_size"] == [8, 6] and doc["failed"][0]["hr"] == "bad.png"
    again = _valid(_json(["degrade", str(hr), str(tmp_path / "lr"), "--scale", "2", "--skip-existing", "--json"],
                         code=6), "degrade")
    assert again["skipped"] == 1


def test_eval_with_missing_and_failed_pairs(tmp_path, femasr_weights):
    lq, hq = tmp_path / "lq", tmp_path / "hq"
    _png(lq / "x.png", 8, 8)
    _png(hq / "x.png", 32, 32, seed=1)
    _png(lq / "y.png", 8, 8, seed=2)
    _png(hq / "y.png", 40, 32, seed=3)  # SR 32x32: size mismatch, fails
    _png(lq / "orphan.png", 8, 8, seed=4)
    doc = _valid(_json(["eval", "--weights", str(femasr_weights), "--lq", str(lq), "--hq", str(hq),
                        "--device", "cpu", "--tile", "0", "--json"], code=6), "eval")
    assert doc["count"] == 1 and doc["images"][0]["name"] == "x.png" and doc["top_k"] is None
    assert [m["lq"] for m in doc["missing_hq"]] == ["orphan.png"] and doc["failed"][0]["lq"] == "y.png"


@pytest.fixture
def catalog(tmp_path, monkeypatch, femasr_weights):
    """An extra catalog entry served from a file:// URL, and an empty cache."""
    sha = hashlib.sha256(femasr_weights.read_bytes()).hexdigest()
    toml = tmp_path / "extra.toml"
    toml.write_text(
        '[[weights]]\nid = "femasr-x4-jsontest"\narch = "femasr"\nscale = 4\nformat = "safetensors"\n'
        f'license = "MIT"\nsha256 = "{sha}"\nsource = {{ url = "{femasr_weights.as_uri()}" }}\n'
    )
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(toml))
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "cache"))
    return "femasr-x4-jsontest", sha


def test_models_every_subcommand(catalog):
    model_id, sha = catalog
    listed = _valid(_json(["models", "list", "--json"]), "models.list")
    entry = next(m for m in listed["models"] if m["id"] == model_id)
    assert entry["cached"] is False and entry["source"]["url"].startswith("file:")
    assert _valid(_json(["models", "info", model_id, "--json"]), "models.info")["path"] is None
    res = run_cli(["models", "path", model_id, "--json"])
    assert res.code == 3 and res.stdout == b""  # errors print nothing on stdout

    got = _valid(_json(["models", "download", model_id, "--json"]), "models.download")
    assert got["cached"] is True and Path(got["path"]).is_file() and got["sha256"] == sha
    assert _valid(_json(["models", "path", model_id, "--json"]), "models.path")["path"] == got["path"]
    assert run_cli(["models", "path", model_id]).stdout.decode().strip() == got["path"]  # plain: the bare path
    assert _valid(_json(["models", "info", model_id, "--json"]), "models.info")["cached"] is True
    assert _valid(_json(["models", "verify", model_id, "--json"]), "models.verify") == {
        "schema": "realsr.models.verify/1", "id": model_id, "ok": True, "sha256": sha}

    Path(got["path"]).write_bytes(b"tampered")
    bad = _valid(_json(["models", "verify", model_id, "--json"], code=3), "models.verify")
    assert bad["ok"] is False and bad["sha256"] != sha


def test_models_inspect_our_file(femasr_weights):
    doc = _valid(_json(["models", "inspect", str(femasr_weights), "--json"]), "models.inspect")
    assert (doc["loader"], doc["arch"], doc["spandrel_version"]) == ("realsr", "femasr", None)


@pytest.fixture
def toy_stages(monkeypatch):
    monkeypatch.setitem(STAGES, "toy", lambda: ToyStage)
    monkeypatch.setitem(STAGES, "toy-femasr", lambda: ToyFeMaSRStage)


def test_train_stages_run_and_export(tmp_path, toy_stages):
    stages = _valid(_json(["train", "stages", "--json"]), "train.stages")["stages"]
    assert {"stage": "toy", "summary": ToyStage.summary, "configs": []} in stages

    hr = make_images(tmp_path / "hr", n=2, size=32)
    (hr / "tiny.png").unlink()  # too small to validate on
    out = tmp_path / "run"
    run = _valid(_json(["train", "toy", "--data", str(hr), "--out", str(out), "--max-steps", "2",
                        "--set", "run.checkpoint_every=0", "--set", f"val.lq_dir={hr}",
                        "--set", f"val.hq_dir={hr}", "--set", "data.scale=1", "--json"]), "train.run")
    assert run["step"] == 2 and Path(run["checkpoint"]).is_file()
    assert isinstance(run["train"]["l1"], float) and run["val"] is not None

    femasr_run = tmp_path / "femasr"
    _json(["train", "toy-femasr", "--data", str(hr), "--out", str(femasr_run), "--json"])
    exported = _valid(_json(["train", "export", str(femasr_run), "-o", str(tmp_path / "w.safetensors"),
                             "--json"]), "train.export")
    assert exported["arch"] == "femasr" and exported["ema"] is True and exported["tensors"] > 0


# ----------------------------------------------------------------------------- docs/cli.md


def _doc_blocks() -> dict[str, tuple[dict[str, str], list[str]]]:
    """Per heading name in the JSON section (a schema tag or a fragment name, in backticks):
    its table as {key: type} and its ```json examples."""
    text = DOCS.read_text()
    assert SECTION in text, f"docs/cli.md lacks the section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, tuple[dict[str, str], list[str]]] = {}
    for part in re.split(r"\n#{3,4} ", section)[1:]:
        heading, _, body = part.partition("\n")
        names = re.findall(r"`([^`]+)`", heading)
        assert names, f"heading without a `name`: {heading}"
        rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", body, flags=re.M)
        examples = re.findall(r"```json\n(.*?)```", body, flags=re.S)
        blocks[names[-1]] = ({k: t.replace("\\|", "|") for k, t in rows}, examples)
    return blocks


def test_docs_table_per_schema_matches_the_registry():
    blocks = _doc_blocks()
    for command, (_, keys) in SCHEMAS.items():
        assert tag(command) in blocks, f"docs/cli.md: no heading naming `{tag(command)}`"
        table, _ = blocks[tag(command)]
        assert table == {"schema": "string", **keys}, f"docs/cli.md table of {tag(command)} differs"
    for name, keys in FRAGMENTS.items():
        assert name in blocks, f"docs/cli.md: no heading naming `{name}`"
        assert blocks[name][0] == keys, f"docs/cli.md table of {name} differs"
    assert set(blocks) == {tag(c) for c in SCHEMAS} | set(FRAGMENTS), "docs name a schema that does not exist"


def test_docs_examples_validate():
    by_tag = {tag(c): c for c in SCHEMAS}
    for name, (_, examples) in _doc_blocks().items():
        if name not in by_tag:
            continue
        assert examples, f"docs/cli.md: no example for {name}"
        for example in examples:
            doc = json.loads(example)
            assert validate(doc, by_tag[name]) == [], f"docs/cli.md example of {name}"
