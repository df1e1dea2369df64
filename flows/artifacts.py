"""Markdown artifacts for the Prefect UI: per-stage summaries, links, the eval table, plots."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from pipelines.core.stage import StageResult

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_EMBEDDED_IMAGE_BYTES = 2_000_000


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    elif isinstance(value, list) and len(value) > 8:
        rows.append((prefix, f"{len(value)} items: {json.dumps(value[:8], default=str)} …"))
    else:
        rows.append(
            (prefix, json.dumps(value, default=str) if not isinstance(value, str) else value)
        )


def _image_markdown(name: str, path: str) -> str:
    file = Path(path)
    if not file.is_file() or file.stat().st_size > MAX_EMBEDDED_IMAGE_BYTES:
        return f"- {name}: `{path}`"
    encoded = base64.b64encode(file.read_bytes()).decode()
    return f"**{name}**\n\n![{name}](data:image/png;base64,{encoded})"


def stage_markdown(result: StageResult) -> str:
    lines = [
        f"# {result.stage}",
        "",
        f"- output: `{result.output_dir}`",
        f"- {'reused a finished result (cached)' if result.cached else f'ran in {result.seconds:.1f} s'}",
        f"- key `{result.key}`, fingerprint `{result.fingerprint}`",
    ]
    rows: list[tuple[str, str]] = []
    _flatten("", result.summary, rows)
    if rows:
        lines += ["", "| summary | value |", "|---|---|"]
        lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]
    if result.metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(result.metrics.items())]
    images = []
    if result.artifacts:
        lines += ["", "Artifacts:"]
        for name, path in sorted(result.artifacts.items()):
            if str(path).lower().endswith(IMAGE_SUFFIXES):
                images.append(_image_markdown(name, str(path)))
            else:
                lines.append(f"- {name}: `{path}`")
    return "\n".join([*lines, "", *images]) + "\n"


def resume_note(result: dict[str, Any]) -> str:
    """'resumed from step 40' for a training stage that restarted from a checkpoint, else ''."""
    steps = result.get("summary", {}).get("resumed_from_steps") or []
    return f"resumed from step {', '.join(str(s) for s in steps)}" if steps else ""


def artifact_key(stage: str, run_name: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    raw = f"{run_name}-{stage}".lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")
