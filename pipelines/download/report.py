"""The download stage's human-readable report (Markdown) and its failure threshold."""

from __future__ import annotations

from typing import Any


class DownloadFailedError(RuntimeError):
    """More pre-training samples failed than `download.max_failed_fraction` allows."""


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def format_report(summary: dict[str, Any]) -> str:
    source, pretrain, sft = summary["source"], summary["pretrain"], summary["sft"]
    total = max(1, pretrain["total"])
    lines = [
        f"## download: {pretrain['success']} of {pretrain['total']} pre-training samples "
        f"({pretrain['success'] / total:.1%}) in {pretrain['shards']} shards",
        "",
        f"Source `{source['kind']}` (caption: `{source['caption_column']}`): "
        f"{source['rows_available']} rows available, {source['rows_selected']} selected, "
        f"{source['rows_kept']} kept in {source['chunks']} input chunks.",
    ]
    if source["skipped"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in source["skipped"].items())
        lines.append(f"Skipped before download: {skipped}.")
    lines += ["", *_table(("status", "samples"), list(pretrain["by_status"].items()))]
    if pretrain["failed_by_reason"]:
        rows = [
            (reason, count, "<br>".join(pretrain["failure_examples"].get(reason, [])))
            for reason, count in pretrain["failed_by_reason"].items()
        ]
        lines += ["", *_table(("failure reason", "samples", "examples"), rows)]
    lines += ["", f"SFT (`{sft['kind']}`):", ""]
    sft_rows = [
        (name, sft[name])
        for name in (
            "records",
            "image_records",
            "text_only_records",
            "answer_turns",
            "images",
            "missing_images",
        )
        if name in sft
    ]
    sft_rows += [(f"malformed: {k}", v) for k, v in sft.get("malformed", {}).items()]
    lines += _table(("", "count"), sft_rows)
    if sft.get("missing_image_ids"):
        lines.append(f"Records with a missing image (first ids): {sft['missing_image_ids']}")
    return "\n".join(lines) + "\n"


def check_failures(pretrain: dict[str, Any], max_failed_fraction: float, shards_dir: str) -> None:
    if not pretrain["total"]:
        return
    fraction = pretrain["failed"] / pretrain["total"]
    if fraction <= max_failed_fraction:
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in pretrain["failed_by_reason"].items())
    examples = "; ".join(f"{k}: {', '.join(v)}" for k, v in pretrain["failure_examples"].items())
    raise DownloadFailedError(
        f"download: {pretrain['failed']} of {pretrain['total']} samples failed ({fraction:.1%}), "
        f"above download.max_failed_fraction={max_failed_fraction}. By reason: {reasons}. "
        f"Examples: {examples}. The finished shards stay in {shards_dir}: rerunning with a "
        "higher download.max_failed_fraction reuses them."
    )
