"""Package boundaries: vlora never pulls in the orchestration stack; flows → pipelines → vlora."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import vlora

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_VLORA = ("prefect", "ray", "deepspeed", "img2dataset", "pipelines", "flows")


def imported_top_level_names(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_vlora_source_imports_no_orchestration_or_upper_layers() -> None:
    offenders = {
        path: names & set(FORBIDDEN_IN_VLORA)
        for path, names in imported_top_level_names("vlora").items()
        if names & set(FORBIDDEN_IN_VLORA)
    }
    assert not offenders


def test_pipelines_never_import_flows_or_prefect() -> None:
    offenders = {
        path: names & {"flows", "prefect"}
        for path, names in imported_top_level_names("pipelines").items()
        if names & {"flows", "prefect"}
    }
    assert not offenders


def test_importing_every_vlora_module_loads_none_of_them() -> None:
    modules = [m.name for m in pkgutil.walk_packages(vlora.__path__, "vlora.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_VLORA!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert len(modules) > 15
