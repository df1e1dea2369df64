"""``report.md``, ``scores.json`` and the flat metrics of the eval stage.

The comparison table puts our numbers next to the VLoRA paper's Table 1 rows for LLaVA-v1.5-7B
and VLoRA-7B (docs/method.md, "Results to compare with"; their sources:
docs/benchmark-scoring.md, "Where the Table 1 numbers come from"). Its MME number is
**perception only** (the LLaVA-1.5 paper's 1510.7 is the sum of the 10 perception subtasks), so our
MME row is perception too; cognition and their total are listed separately. Benchmarks that were
not run still show the paper's rows, with "not run" in our column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReportRow:
    """One line of the report: which benchmark, which score key, and the paper's numbers."""

    key: str
    label: str
    metric: str
    description: str
    llava_paper: float | None = None
    vlora_paper: float | None = None
    note: str = ""


# The paper's Table 1 (docs/method.md, "Results to compare with"): LLaVA-v1.5-7B / VLoRA-7B.
PAPER_ROWS: tuple[ReportRow, ...] = (
    ReportRow("MMBench_DEV_EN", "MMBench (dev, en)", "Overall", "CircularEval acc %", 64.3, 63.4),
    ReportRow(
        "MME",
        "MME",
        "perception",
        "perception, sum of 10 subtasks (acc + acc+)",
        1510.7,
        1311.3,
        "Table 1's MME is perception only",
    ),
    ReportRow("ScienceQA_TEST", "ScienceQA-IMG (test)", "Overall", "acc %", 66.8, 66.4),
    ReportRow(
        "HallusionBench", "HallusionBench", "Overall", "mean of aAcc, fAcc, qAcc", 27.6, 26.4
    ),
    ReportRow(
        "MMMU_DEV_VAL",
        "MMMU (val)",
        "Overall",
        "acc % (validation split)",
        35.7,
        36.0,
        "the VLoRA release README lists 33.7",
    ),
    ReportRow("CCBench", "CCBench", "Overall", "CircularEval acc %", 27.5, 28.6),
)

OTHER_ROWS: tuple[ReportRow, ...] = (
    ReportRow("MME", "MME", "cognition", "cognition, sum of 4 subtasks (not in Table 1)"),
    ReportRow("MME", "MME", "total", "perception + cognition (VLMEvalKit leaderboard)"),
    ReportRow("HallusionBench", "HallusionBench", "aAcc", "aAcc %"),
    ReportRow("HallusionBench", "HallusionBench", "fAcc", "fAcc %"),
    ReportRow("HallusionBench", "HallusionBench", "qAcc", "qAcc %"),
    ReportRow("ScienceQA_VAL", "ScienceQA-IMG (val)", "Overall", "acc %"),
    ReportRow("EasyVQA_TEST", "EasyVQA test (local)", "Overall", "exact-match acc %"),
    ReportRow(
        "EasyVQA_YORN",
        "EasyVQA yes/no (local)",
        "perception",
        "MME-style acc + acc+, color + shape (max 400)",
    ),
)

# Top-level score keys that are provenance or bookkeeping, not metrics (kept in scores.json).
_NOT_METRICS = {
    "data_md5",
    "data_version",
    "benchmark",
    "rows_in_file",
    "rows_dropped_without_image",
    "predictions_not_in_file",
    "missing_predictions",
}


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def flat_metrics(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"<KEY>/<metric>": number}`` for every numeric top-level score and generation rate."""
    metrics: dict[str, float] = {}
    for key, record in records.items():
        for name, value in record["scores"].items():
            if name in _NOT_METRICS or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                metrics[f"{key}/{name}"] = float(value)
        rate = record.get("generation", {}).get("prompts_per_s_actor")
        if rate:
            metrics[f"{key}/prompts_per_s_actor"] = float(rate)
    return metrics


def _score(records: dict[str, dict[str, Any]], row: ReportRow) -> str:
    record = records.get(row.key)
    if record is None:
        return "not run"
    value = record["scores"].get(row.metric)
    text = fmt(value)
    if record["counts"].get("rows_left_out_by_limit"):
        text += " (subset)"
    return text


def _questions(records: dict[str, dict[str, Any]], key: str) -> tuple[str, str]:
    record = records.get(key)
    if record is None:
        return "", ""
    scores = record["scores"]
    return fmt(scores.get("n_questions")), fmt(scores.get("unresolved"))


def render_report(
    records: dict[str, dict[str, Any]], header: dict[str, Any], order: list[str]
) -> str:
    """The Markdown report (see module docstring). ``order``: benchmark keys as configured."""
    lines = [f"# Evaluation report: {header.get('name', '')}", ""]
    for label, value in header.items():
        if label != "name":
            lines.append(f"- **{label}**: {value}")
    lines += [
        "",
        "## Paper comparison (VLoRA paper, Table 1)",
        "",
        "| Benchmark | Metric | This run | LLaVA-v1.5-7B (paper) | VLoRA-7B (paper) "
        "| Questions | Unresolved | Note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in PAPER_ROWS:
        questions, unresolved = _questions(records, row.key)
        lines.append(
            f"| {row.label} | {row.description} | {_score(records, row)} | "
            f"{fmt(row.llava_paper)} | {fmt(row.vlora_paper)} | {questions} | {unresolved} | "
            f"{row.note} |"
        )
    other = [row for row in OTHER_ROWS if row.key in records]
    if other:
        lines += [
            "",
            "## Other scores",
            "",
            "| Benchmark | Metric | This run | Questions | Unresolved |",
            "|---|---|---|---|---|",
        ]
        for row in other:
            questions, unresolved = _questions(records, row.key)
            lines.append(
                f"| {row.label} | {row.description} | {_score(records, row)} | {questions} | "
                f"{unresolved} |"
            )
    lines += [
        "",
        "## Counts",
        "",
        "| Benchmark | Rows evaluated | Left out by limit | Dropped (no image) "
        "| Extra images dropped (one-image policy) | Unresolved | Prompts/s (actors) | Data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in order:
        record = records.get(key)
        if record is None:
            continue
        counts, generation = record["counts"], record.get("generation", {})
        lines.append(
            f"| {key} | {counts.get('rows_evaluated')} | {counts.get('rows_left_out_by_limit')} | "
            f"{counts.get('rows_dropped_without_image')} | "
            f"{counts.get('images_dropped_by_policy')} | {fmt(record['scores'].get('unresolved'))} "
            f"| {fmt(generation.get('prompts_per_s_actor'))} | `{record['data']}` |"
        )
    lines += [
        "",
        "Scores use exact matching without a judge (VLMEvalKit's behaviour without an API key): "
        "answers the extractor cannot read count as wrong and are listed as unresolved. "
        "'(subset)' marks a benchmark cut to a row limit: not comparable with the paper. "
        "The LLaVA-v1.5 row of Table 1 mixes sources (docs/benchmark-scoring.md, "
        "'Where the Table 1 numbers come from').",
        "",
    ]
    return "\n".join(lines)
