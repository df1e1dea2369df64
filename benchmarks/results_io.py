"""The results files of a benchmark: `<out>/<name>.json` and `<out>/<name>.md`.

`write_results` writes both with the machine and the exact command, so every committed number
says how to regenerate it; `results_markdown` is the Markdown file's text for a record, which
re-renders a committed JSON's Markdown from it alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import REPO_ROOT, command_string, machine_info

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def machine_line(machine: dict[str, Any]) -> str:
    """The `Machine:` line of a Markdown results file."""
    parts = [
        machine.get("gpu") or machine["cpu"],
        f"{machine['logical_cpus']} logical CPUs",
        f"{machine['torch_threads']} torch threads",
        f"torch {machine['torch']}",
        f"load average {machine['load_average_1_5_15']}",
    ]
    return ", ".join(str(p) for p in parts)


def results_markdown(record: dict[str, Any], markdown: str) -> str:
    """The Markdown file of a results record: its command and machine, then `markdown`."""
    header = f"Command: `{record['command']}`\n\nMachine: {machine_line(record['machine'])}\n\n"
    return header + markdown.rstrip() + "\n"


def write_results(
    out_dir: str | Path, name: str, payload: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """`<out>/<name>.json` (payload + command + machine) and `<out>/<name>.md`; atomic writes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command_string(), "machine": machine_info(), **payload}
    record.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    for path, text in (
        (json_path, json.dumps(record, indent=2, default=_json_default) + "\n"),
        (md_path, results_markdown(record, markdown)),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path
