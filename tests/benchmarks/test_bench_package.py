"""`benchmarks` is a package run as `python -m benchmarks.<name>` from the repository root."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from benchmarks import machine

ROOT = machine.REPO_ROOT
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
# the scripts, each with its parser's entry point
SCRIPTS = {
    "accuracy_for_cost": "parse_args",
    "data_sft": "main",
    "features_throughput": "parse_args",
    "figure4": "parse_args",
    "gpu_h200": "parse_args",
    "llm_cost": "parse_args",
    "merge_crossover": "parse_args",
    "serve_load": "parse_args",
    "train_throughput": "parse_args",
}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_from_the_package(name: str) -> None:
    importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_shows_the_module_command(name: str, monkeypatch, capsys) -> None:
    entry = getattr(importlib.import_module(f"benchmarks.{name}"), SCRIPTS[name])
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / f"{name}.py"), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        entry(["--help"]) if SCRIPTS[name] == "parse_args" else entry()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m benchmarks.{name} ")


def test_a_script_runs_as_a_module_and_records_that_command(tmp_path) -> None:
    argv = ["-m", "benchmarks.figure4", "--out", str(tmp_path), "--step", "256", "--no-plot"]
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, capture_output=True)
    record = json.loads((tmp_path / "figure4.json").read_text())
    assert record["command"] == " ".join(["python", *argv])
