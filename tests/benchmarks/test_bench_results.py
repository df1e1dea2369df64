"""Results files: Markdown tables, the JSON + Markdown pair with its command and machine, and
the committed results re-rendered from their JSON by the report modules."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch

from benchmarks import machine, report, results_io

RESULTS = results_io.DEFAULT_OUT
# committed results → the module that renders them (accuracy_for_cost.json predates the
# per-arm summary its report reads, so it is not re-rendered here)
RENDERED_BY = {
    "features_throughput": "benchmarks.features_throughput",
    "figure4": "benchmarks.figure4",
    "gpu_h200": "benchmarks.gpu_h200_report",
    "gpu_h200_train": "benchmarks.gpu_h200_report",
    "llm_cost": "benchmarks.llm_cost_report",
    "merge_crossover": "benchmarks.merge_crossover_report",
    "serve_load": "benchmarks.serve_load_report",
    "train_throughput": "benchmarks.train_throughput_report",
}


def test_md_table_formats_numbers() -> None:
    text = report.md_table(["a", "b"], [["x", 1234.567], ["y", 12.345], ["z", 0.012345]])
    lines = text.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert lines[2:] == ["| x | 1235 |", "| y | 12.3 |", "| z | 0.0123 |"]
    assert "–" in report.md_table(["v"], [[float("nan")]])


def test_command_string_is_how_to_run_it_again_from_the_root(tmp_path) -> None:
    root = machine.REPO_ROOT
    # `python -m benchmarks.llm_cost …` has the module's file as argv[0]
    module = [str(root / "benchmarks" / "llm_cost.py"), "--wait-idle", "600"]
    assert machine.command_string(module) == "python -m benchmarks.llm_cost --wait-idle 600"
    script = [str(root / "scripts" / "tool.py"), "-v"]
    assert machine.command_string(script) == "python scripts/tool.py -v"
    outside = [str(tmp_path / "tool.py"), "x"]
    assert machine.command_string(outside) == f"python {tmp_path / 'tool.py'} x"
    spaced = [str(root / "benchmarks" / "serve_load.py"), "--case-name", "local (seed 0)"]
    assert machine.command_string(spaced) == (
        "python -m benchmarks.serve_load --case-name 'local (seed 0)'"
    )


def test_write_results_records_command_and_machine(tmp_path, monkeypatch) -> None:
    script = machine.REPO_ROOT / "benchmarks" / "demo.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--repeats", "3"])
    json_path, md_path = results_io.write_results(tmp_path, "demo", {"value": 1}, "| a |\n|---|")
    record = json.loads(json_path.read_text())
    assert record["command"] == "python -m benchmarks.demo --repeats 3"
    assert record["value"] == 1
    assert record["machine"]["torch_threads"] == torch.get_num_threads()
    assert record["machine"]["logical_cpus"] >= 1 and record["machine"]["cpu"]
    md = md_path.read_text()
    assert md.startswith("Command: `python -m benchmarks.demo --repeats 3`") and "| a |" in md
    assert md == results_io.results_markdown(record, "| a |\n|---|")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", sorted(RENDERED_BY))
def test_committed_results_re_render_from_their_json(name: str) -> None:
    """Rendering is apart from measuring: a committed JSON gives its committed Markdown."""
    record = json.loads((RESULTS / f"{name}.json").read_text())
    body = importlib.import_module(RENDERED_BY[name]).markdown(record)
    assert results_io.results_markdown(record, body) == (RESULTS / f"{name}.md").read_text()
