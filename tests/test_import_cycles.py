"""No import cycle hides behind a function-level import.

Python tolerates a cycle when one side imports inside a function, so nothing fails until the
order of first use changes. This test builds each package's import graph from the source (module-
and function-level `import`s of the project's own modules) and fails on any function-level
import whose target imports the importer back, directly or through other modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vlora", "pipelines", "flows")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(
    package: str, root: Path
) -> tuple[dict[str, dict[str, int | None]], dict[str, Path]]:
    """{module: {imported module: line of a function-level import, or None if module-level}}."""
    modules = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, dict[str, int | None]] = {m: {} for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        in_function = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                found = [m for m in submodules if m in modules]
                targets = found or ([node.module] if node.module in modules else [])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name in modules]
            else:
                continue
            for target in targets:
                if target != name:
                    line = node.lineno if id(node) in in_function else None
                    graph[name].setdefault(target, line)
    return graph, modules


def reaches(graph: dict[str, dict[str, int | None]], start: str, goal: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        module = stack.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            stack.extend(graph.get(module, {}))
    return False


def hidden_cycles(package: str, root: Path = ROOT) -> list[str]:
    graph, modules = import_graph(package, root)
    return [
        f"{modules[name].relative_to(root)}:{line} imports {target}, which imports {name} back"
        for name, edges in graph.items()
        for target, line in edges.items()
        # a package's __init__ importing its own submodule lazily is not a cycle
        if line is not None and not target.startswith(name + ".") and reaches(graph, target, name)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_level_import_hides_a_cycle(package: str) -> None:
    assert hidden_cycles(package) == []


def test_the_check_finds_a_hidden_cycle(tmp_path) -> None:
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from cyc.a import x\n")
    assert hidden_cycles("cyc", tmp_path) == ["cyc/b.py:2 imports cyc.a, which imports cyc.b back"]
