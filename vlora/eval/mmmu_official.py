"""MMMU scoring in the official / lmms-eval way (``--mmmu-parser official``), with a fixed seed.

Semantics of MMMU-Benchmark ``eval_utils.py`` as used by lmms-eval ``mmmu_val``
(docs/benchmark-scoring.md, "The official MMMU parser"), re-implemented:

Multiple choice (:func:`parse_multi_choice`): strip ``, . ! ? ; : '`` from both ends (one mark after
the other), pad with spaces, then collect candidate letters from ``(A)``; failing that ``"A "``;
failing that ``"A."``; failing that, when the answer has more than 5 words, from option texts found
in it. No candidate → a **random** letter (seeded ``random.Random``; lmms-eval's default seed is 0).
Several → the one occurring last.

Open (:func:`parse_open`): lower-case, split into lines, keep the tail after the last indicator word
(``could be, so, is, thus, therefore, final, answer, result``, and ``=`` in the last line), add every
number found, normalise (numbers → float rounded to 2 dp; one-character strings padded with a space
on either side). Correct iff a normalised gold string is a substring of a string prediction, or a
numeric prediction equals a normalised gold number. A gold answer written as a list literal counts
each element as a gold answer.

Accuracy is instance-weighted (the plain mean over questions), reported on the ``validation`` split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vlora.eval.errors import BenchmarkDataError
from vlora.eval.metrics_common import (
    column_breakdowns,
    percent,
    report_split_rows,
    require_predictions,
)
from vlora.eval.prompts import row_options
from vlora.eval.tsv import TsvRecord, parse_list_literal

DEFAULT_SEED = 0
_EDGE_MARKS = (",", ".", "!", "?", ";", ":", "'")
_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL_TAILS = frozenset({":", ",", ".", "!", "?", ";", "'"})
_NUMBER_WITH_COMMAS_RE = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_SCIENTIFIC_RE = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUMBER_SIMPLE_RE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])")
# Upstream splits *after* lower-casing, so the "sentence end before a capital" branch never fires
# and only newlines separate parts; reproduced as is.
_PART_SPLIT_RE = re.compile(r"\.\s(?=[A-Z])|\n")

Normalised = str | float


def parse_multi_choice(
    response: str, options: Mapping[str, str], rng: random.Random
) -> tuple[str, bool]:
    """The predicted letter and whether it was a random guess."""
    letters = list(options)
    for mark in _EDGE_MARKS:
        response = response.strip(mark)
    padded = f" {response} "
    bracketed = [c for c in letters if f"({c})" in padded]
    candidates = bracketed or [c for c in letters if f"{c} " in padded]
    candidates = candidates or [c for c in letters if f"{c}." in padded]
    by_text = False
    if not candidates and len(padded.split()) > 5:
        candidates = [c for c in letters if options[c].lower() in padded.lower()]
        by_text = bool(candidates)
    if not candidates:
        return rng.choice(letters), True
    if len(candidates) == 1:
        return candidates[0], False
    if by_text:
        positions = [padded.lower().rfind(options[c].lower()) for c in candidates]
    elif bracketed:
        positions = [padded.rfind(f"({c})") for c in candidates]
    else:
        positions = [padded.rfind(f" {c} ") for c in candidates]
    return candidates[positions.index(max(positions))], False  # first maximum, like np.argmax


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalise_answer(text: str) -> list[Normalised]:
    """Numbers → [float rounded to 2 dp]; one-char strings → [" x", "x "]; else [lower-cased]."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
    """Numbers with thousands separators, in scientific notation, and plain ones."""
    return (
        _NUMBER_WITH_COMMAS_RE.findall(text)
        + _NUMBER_SCIENTIFIC_RE.findall(text)
        + _NUMBER_SIMPLE_RE.findall(text)
    )


def _key_parts(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    parts = _PART_SPLIT_RE.split(response)
    keys = []
    for position, part in enumerate(parts):
        indicators = (*_INDICATORS, "=") if position == len(parts) - 1 else _INDICATORS
        shortest: str | None = None
        for indicator in indicators:
            if indicator in part:
                tail = part.split(indicator)[-1].strip()
                # Upstream tests truthiness, so an empty tail is replaced by the next one found.
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL_TAILS:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[Normalised]:
    """Normalised candidate answers read from a free-form response."""
    keys = _key_parts(response)
    candidates = list(keys)
    for key in keys:
        candidates.extend(extract_numbers(key))
    normalised: list[Normalised] = []
    for candidate in candidates:
        for value in normalise_answer(candidate):
            if value not in normalised:
                normalised.append(value)
    return normalised


def gold_answers(answer: str) -> list[str]:
    """Gold answers of an open question: a list literal counts each element."""
    try:
        listed = parse_list_literal(answer)
    except ValueError:
        listed = None
    return listed if listed is not None else [answer]


def open_answer_correct(golds: Sequence[str], predicted: Sequence[Normalised]) -> bool:
    """``eval_open``: gold string inside a string prediction, or numeric prediction equal to gold."""
    norm_golds = [value for gold in golds for value in normalise_answer(gold)]
    for value in predicted:
        if isinstance(value, str):
            if any(isinstance(gold, str) and gold in value for gold in norm_golds):
                return True
        elif value in norm_golds:
            return True
    return False


def score_mmmu_official(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    *,
    seed: int = DEFAULT_SEED,
    report_split: str | None = "validation",
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Score MMMU rows with the official parser; percent scale."""
    if not rows:
        raise BenchmarkDataError("no rows to score")
    missing = require_predictions(rows, predictions, allow_missing=allow_missing)
    rng = random.Random(seed)
    hits: list[int] = []
    random_guesses = 0
    for row in rows:
        response = predictions.get(row.index, "")
        answer = (row.get("answer") or "").strip()
        if not answer:
            raise BenchmarkDataError(f"{row.where}: empty answer")
        options = row_options(row.fields)
        if options:
            letter, guessed = parse_multi_choice(response, options, rng)
            random_guesses += guessed
            hits.append(int(letter == answer))
        else:
            hits.append(int(open_answer_correct(gold_answers(answer), parse_open(response))))
    counted, overall_split = report_split_rows(rows, report_split)
    return {
        "mode": "official",
        "seed": seed,
        "Overall": percent([hits[i] for i in counted]),
        "overall_split": overall_split,
        "n_questions": len(counted),
        **column_breakdowns(rows, hits, ("split", "category", "l2-category")),
        "unresolved": random_guesses,
        "random_guesses": random_guesses,
        "missing_predictions": missing,
    }
