"""STYLE §14 (size): no module over 800 lines; an engine, registry, evaluation or cli module over
the ~300-line guide says why in its docstring (a line starting "Size (over STYLE's ~300-line
guide):"), so a module that grows past it without a reason fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "realsr_cli"
GUIDED = ("engine", "registry", "evaluation", "cli")
GUIDE, SLACK, HARD = 300, 30, 800
REASON = "Size (over STYLE's ~300-line guide):"
MODULES = sorted(PKG.rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_is_over_800_lines(path):
    assert _lines(path) <= HARD


@pytest.mark.parametrize(
    "path", [p for p in MODULES if p.relative_to(PKG).parts[0] in GUIDED], ids=lambda p: str(p.relative_to(PKG))
)
def test_a_long_engine_registry_evaluation_or_cli_module_says_why(path):
    if _lines(path) <= GUIDE + SLACK:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert any(line.startswith(REASON) for line in doc.splitlines()), (
        f"{path.relative_to(PKG)}: {_lines(path)} lines; split it or add a '{REASON} ...' line to its docstring"
    )
