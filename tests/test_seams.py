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


def test_only_bertqa_native_imports_the_extension():
    """bertqa/native.py owns bertqa._native; the backends and the host kernels import it from there."""
    importers = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                       if "bertqa._native" in imported_modules(p))
    assert importers == ["native.py"]


@pytest.mark.parametrize("name", ["attention.py", "backends/cpu_reference.py", "backends/aie.py"])
def test_native_users_do_not_go_through_the_customcpu_backend(name):
    imports = imported_modules(PACKAGE / name)
    assert "bertqa.native" in imports
    assert not any(m.startswith("bertqa.backends.customcpu") for m in imports), imports


def test_no_backend_capability_is_read_with_getattr():
    """Every capability of a backend is declared by LinearBackend, so nothing probes for one."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and node.args:
                subject = ast.unparse(node.args[0])
                if "backend" in subject or "chosen" in subject:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


def test_the_base_contract_says_what_a_backend_lacks():
    from bertqa.backends.base import LinearBackend
    from bertqa.errors import TargetUnavailable

    class Bare(LinearBackend):
        name = "bare"
    bare = Bare()
    with pytest.raises(NotImplementedError, match="backend 'bare' does not expose its integers"):
        bare.run_debug(None, None)
    with pytest.raises(TargetUnavailable, match="backend 'bare' has no variant 'fast'"):
        bare.set_variant("fast")
    with pytest.raises(TargetUnavailable, match="option gelu does not apply to backend 'bare'"):
        bare.configure(gelu="native")
    assert bare.variants() == [] and bare.layer_report(None, None) is None
    assert (bare.device, bare.fp_compute, bare.emulated) == ("cpu", "fp32", False)
    assert bare.kernel_name(None) == "bare" and bare.finish_model("model") == "model"
