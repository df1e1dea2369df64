"""Exact-match accuracy for short-answer VQA (the local easy-vqa benchmark).

The model is asked for a single word or phrase; a prediction is right when, after lower-casing and
trimming whitespace, quotes and trailing sentence punctuation, it equals the answer normalised the
same way (``"Circle."`` = ``"circle"``; ``"It is a circle"`` is wrong: the task is to answer with the
word). An empty prediction is counted as unresolved (and wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlora.eval.errors import BenchmarkDataError
from vlora.eval.metrics_common import column_breakdowns, percent, require_predictions
from vlora.eval.tsv import TsvRecord

_TRIM = " \t\r\n\"'`.,!?;:"


def normalise_short_answer(text: str) -> str:
    """Lower-case and strip whitespace, quotes and sentence punctuation at both ends."""
    return text.strip().strip(_TRIM).lower()


def score_exact_match(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    *,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Percent of rows whose normalised prediction equals the normalised answer."""
    if not rows:
        raise BenchmarkDataError("no rows to score")
    missing = require_predictions(rows, predictions, allow_missing=allow_missing)
    hits, unresolved = [], 0
    for row in rows:
        answer = normalise_short_answer(row.get("answer") or "")
        if not answer:
            raise BenchmarkDataError(f"{row.where}: empty answer")
        predicted = normalise_short_answer(predictions.get(row.index, ""))
        unresolved += not predicted
        hits.append(int(predicted == answer))
    return {
        "Overall": percent(hits),
        "n_questions": len(rows),
        **column_breakdowns(rows, hits, ("split", "category")),
        "unresolved": unresolved,
        "missing_predictions": missing,
    }
