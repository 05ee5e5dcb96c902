"""The package's import seams, read from the source (no model, no backend needed): what may
import what, so that the layering the architecture describes stays true of the code."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bertqa"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_the_helper_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def late():\n    from bertqa.backends import get_backend\n")
    assert "bertqa.backends" in imported_modules(f)


@pytest.mark.parametrize("path", modules_under("quant"), ids=lambda p: p.name)
def test_quantization_never_imports_the_backends(path):
    bad = sorted(m for m in imported_modules(path) if m == "bertqa.backends" or m.startswith("bertqa.backends."))
    assert not bad, f"{path.name} imports {bad}: the quantization layer owns the node, backends depend on it"
