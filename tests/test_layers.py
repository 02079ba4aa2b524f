"""The layer rule (STYLE.md): the engine loads no CLI/training code; models load nothing above them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "realsr_cli"


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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_models_import_only_torch_einops_blocks_diffusion():
    allowed_roots = {"torch", "einops", "math", "dataclasses", "typing", "collections", "functools", "itertools",
                     "__future__", "numbers", "enum", "warnings", "zlib", "contextlib", "contextvars", "re"}
    for path in (PKG / "models").rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            if root == "realsr_cli":
                assert name.startswith(("realsr_cli.models", "realsr_cli.diffusion", "realsr_cli.errors")), (
                    f"{path.relative_to(PKG)} imports {name}"
                )
            else:
                assert root in allowed_roots, f"{path.relative_to(PKG)} imports {name}"


def test_nothing_imports_cli_and_only_cli_imports_typer_rich():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("cli",) or rel.name == "__main__.py":
            continue
        for name in _imports(path):
            assert not name.startswith("realsr_cli.cli"), f"{rel} imports {name}"
            assert name.split(".")[0] not in {"typer", "rich", "click"}, f"{rel} imports {name}"
