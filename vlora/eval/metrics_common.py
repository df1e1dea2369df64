"""Helpers shared by the metric modules: percentages, per-group breakdowns, prediction lookup."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from vlora.eval.errors import PredictionsError
from vlora.eval.tsv import TsvRecord

# How many missing indices an error message lists before "…".
_MISSING_SHOWN = 10


def percent(hits: Sequence[bool | int | float]) -> float:
    """Mean of ``hits`` × 100. Empty input is a bug in the caller, not a score of 0."""
    if not hits:
        raise ValueError("cannot compute an accuracy over zero items")
    return 100.0 * sum(float(hit) for hit in hits) / len(hits)


def breakdown(keys: Iterable[str | None], hits: Iterable[bool | int | float]) -> dict[str, float]:
    """Percent accuracy per key (rows whose key is None are left out), keys sorted."""
    groups: dict[str, list[bool | int | float]] = defaultdict(list)
    for key, hit in zip(keys, hits, strict=True):
        if key is not None:
            groups[key].append(hit)
    return {key: percent(groups[key]) for key in sorted(groups)}


def column_breakdowns(
    rows: Sequence[TsvRecord], hits: Sequence[bool | int | float], columns: Iterable[str]
) -> dict[str, dict[str, float]]:
    """``{column: breakdown}`` for each grouping column that some row fills."""
    result = {}
    for column in columns:
        keys = [row.get(column) for row in rows]
        if any(key is not None for key in keys):
            result[column] = breakdown(keys, hits)
    return result


def require_predictions(
    rows: Iterable[TsvRecord], predictions: Mapping[str, str], *, allow_missing: bool
) -> int:
    """Raise unless every row has a prediction; return how many are missing when allowed."""
    missing = [row.index for row in rows if row.index not in predictions]
    if missing and not allow_missing:
        shown = ", ".join(missing[:_MISSING_SHOWN]) + (
            " …" if len(missing) > _MISSING_SHOWN else ""
        )
        raise PredictionsError(
            f"{len(missing)} row(s) being scored have no prediction (indices {shown}); "
            "pass allow_missing=True (CLI --allow-missing) to score them as unanswered"
        )
    return len(missing)


def report_split_rows(rows: Sequence[TsvRecord], report_split: str | None) -> tuple[list[int], str]:
    """Positions of rows counted in ``Overall`` and a label: the report split if present, else all."""
    if report_split is not None:
        chosen = [i for i, row in enumerate(rows) if row.get("split") == report_split]
        if chosen:
            return chosen, report_split
    return list(range(len(rows))), "all"
