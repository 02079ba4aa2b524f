"""The layer rule (STYLE.md), checked on every module's imports — module level and inside
functions, absolute and relative, ``importlib.import_module``/``__import__`` with a literal name —
against one table, so a new violation anywhere fails. Plus two run-time checks: the engine loads
no CLI/training code, and ``import realsr_cli`` stays light."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "realsr_cli"

#: package -> the realsr_cli packages/modules it may import (itself always). Top-level modules:
#: ``errors`` and ``_noise`` (import nothing of ours), ``_config`` (errors), ``__init__`` (the
#: version, lazily the engine API).
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "_noise": set(),
    "_config": {"errors"},
    "__init__": {"errors", "engine"},
    "__main__": {"cli"},
    "diffusion": {"_noise", "errors"},
    "models": {"_noise", "diffusion", "errors", "_config"},
    "registry": {"_noise", "models", "diffusion", "errors", "_config", "__init__"},
    "engine": {"_noise", "registry", "errors", "_config", "__init__"},
    "evaluation": {"_noise", "engine", "registry", "errors", "_config", "__init__"},
    "training": {"_noise", "models", "diffusion", "registry", "engine", "evaluation", "errors", "_config", "__init__"},
    "cli": {"_noise", "engine", "evaluation", "registry", "training", "models", "diffusion", "errors", "_config", "__init__"},
}
#: third-party roots only some layers may import
ONLY = {"typer": {"cli"}, "rich": {"cli"}, "click": {"cli"}}
#: what model code may import at all (pure modules: torch, einops and the standard library's basics)
MODEL_ROOTS = {"torch", "einops", "math", "dataclasses", "typing", "collections", "functools", "itertools",
               "__future__", "numbers", "enum", "warnings", "zlib", "contextlib", "contextvars", "re", "realsr_cli"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_name(path: Path) -> list[str]:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(path: Path) -> set[str]:
    """Every module name ``path`` imports anywhere in its body (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "realsr_cli":  # `from realsr_cli import engine` names a package ...
                for a in node.names:
                    sub = (PKG / a.name).is_dir() or (PKG / f"{a.name}.py").is_file()
                    names.add(f"realsr_cli.{a.name}" if sub else "realsr_cli")  # ... or __version__
            else:
                names.add(mod)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


MODULES = sorted(PKG.rglob("*.py"))


def test_table_covers_every_layer():
    assert {_layer(p) for p in MODULES} <= set(LAYERS)


def test_noise_is_drawn_in_one_place():
    """STYLE §6: only realsr_cli/_noise.py calls torch.randn with a device (CPU draw, then move)."""
    call = re.compile(r"torch\.randn\((?:[^()]|\([^()]*\))*\bdevice=")  # one call naming a device
    offenders = [p for p in MODULES if p.name != "_noise.py" and call.search(p.read_text())]
    assert not offenders, offenders


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_layer_table(path):
    layer = _layer(path)
    allowed = LAYERS[layer] | {layer}
    for name in imports(path):
        parts = name.split(".")
        if parts[0] == "realsr_cli":
            target = parts[1] if len(parts) > 1 else "__init__"
            assert target in allowed, f"{path.relative_to(PKG)} ({layer}) imports {name}"
        elif parts[0] in ONLY:
            assert layer in ONLY[parts[0]], f"{path.relative_to(PKG)} ({layer}) imports {name}"
        if layer == "models":
            assert parts[0] in MODEL_ROOTS, f"{path.relative_to(PKG)} imports {name}"


def test_the_checker_sees_hidden_imports(tmp_path, monkeypatch):
    """Imports inside functions, relative ones and importlib calls are all found."""
    pkg = tmp_path / "realsr_cli" / "engine"
    pkg.mkdir(parents=True)
    mod = pkg / "sneaky.py"
    mod.write_text(
        "import importlib\n"
        "def f():\n"
        "    from ..models.femasr import net\n"
        "    from realsr_cli.training import run\n"
        "    importlib.import_module('realsr_cli.cli.app')\n"
        "    return __import__('typer')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path / "realsr_cli")
    found = imports(mod)
    assert {"realsr_cli.models.femasr", "realsr_cli.training", "realsr_cli.cli.app", "typer"} <= found
    with pytest.raises(AssertionError, match=r"engine/sneaky.py \(engine\) imports (realsr_cli|typer)"):
        test_imports_follow_the_layer_table(mod)


def _loaded_after(import_stmt: str) -> set[str]:
    code = f"import sys; {import_stmt}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_engine_does_not_load_cli_training_typer_rich():
    mods = _loaded_after("import realsr_cli.engine.api, realsr_cli.engine.batch")
    bad = {m for m in mods if m.split(".")[0] in {"typer", "rich"} or m.startswith(("realsr_cli.cli", "realsr_cli.training"))}
    assert not bad, f"engine pulled in {sorted(bad)}"


def test_package_import_is_light():
    mods = _loaded_after("import realsr_cli")
    assert "torch" not in mods and "typer" not in mods


def test_cli_help_and_version_do_not_import_torch():
    """Issue 18: `--version`, `--help` and each tab-completion press took ~3 s importing torch."""
    mods = _loaded_after("import realsr_cli.cli.app")
    assert "torch" not in mods, "the CLI's import chain pulls torch in (import it inside the command)"
