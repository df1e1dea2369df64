"""Multiple-choice metrics: CircularEval (MMBench, CCBench), vanilla accuracy (ScienceQA, MMMU).

CircularEval (docs/benchmark-scoring.md, "CircularEval"): a question's circular copies have indices
``i + k·1_000_000``; the group of main row ``i`` is every row with ``index % 1_000_000 == i``. Each
row is compared with *its own* ``answer``. Any resolved row that is wrong → the question scores 0;
all rows resolved and right → 1; otherwise (some rows unresolved, none wrong) → 0 under exact
matching, or the judge decides the unresolved rows. ``Overall`` = mean over main questions.

Vanilla: each row on its own (unresolved → wrong, or judged). For a circular benchmark, vanilla
mode scores the main rows only (VLMEvalKit's ``PRINT_VANILLA`` "circ0" view).

MMMU in VLMEvalKit (``MMMU_preproc``): an open question (option ``A`` missing) becomes a 2-way MCQ
``A = <ground-truth text>``, ``B = "Other Answers"``; a ground truth that is not an upper-case letter
maps to ``A``. Open answers are thus right iff they contain the answer text (and not "other
answers") or the bare token ``A``.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlora.eval.errors import BenchmarkDataError
from vlora.eval.extraction import MatcherRules, can_infer
from vlora.eval.judge import AnswerJudge
from vlora.eval.metrics_common import (
    column_breakdowns,
    percent,
    report_split_rows,
    require_predictions,
)
from vlora.eval.prompts import row_options
from vlora.eval.tsv import TsvRecord

MMMU_OTHER_ANSWERS = "Other Answers"
GROUPING_COLUMNS = ("split", "category", "l2-category")

ChoicesFn = Callable[[TsvRecord], dict[str, str]]
TruthFn = Callable[[TsvRecord], str]


def standard_choices(row: TsvRecord) -> dict[str, str]:
    """Non-missing option columns of ``row``; an MCQ row needs at least one."""
    choices = row_options(row.fields)
    if not choices:
        raise BenchmarkDataError(f"{row.where}: no options (columns A, B, … are all empty)")
    return choices


def standard_truth(row: TsvRecord) -> str:
    """The row's ``answer`` letter; it must name one of the row's options."""
    answer = (row.get("answer") or "").strip()
    if not answer:
        raise BenchmarkDataError(f"{row.where}: empty answer; test splits cannot be scored")
    if answer not in row_options(row.fields):
        raise BenchmarkDataError(f"{row.where}: answer {answer!r} is not one of its options")
    return answer


def mmmu_choices(row: TsvRecord) -> dict[str, str]:
    """MMMU_preproc: an open question becomes ``{A: ground truth, B: "Other Answers"}``."""
    if row.get("A") is None:
        answer = row.get("answer")
        if answer is None:
            raise BenchmarkDataError(f"{row.where}: open question without an answer")
        return {"A": answer, "B": MMMU_OTHER_ANSWERS}
    return standard_choices(row)


def mmmu_truth(row: TsvRecord) -> str:
    """VLMEvalKit maps every answer that is not an upper-case letter to ``A``.

    Upstream tests ``answer in string.ascii_uppercase`` (substring of "ABC…Z"); we require one
    letter, which agrees on every real MMMU answer.
    """
    answer = (row.get("answer") or "").strip()
    if not answer:
        raise BenchmarkDataError(f"{row.where}: empty answer")
    return answer if len(answer) == 1 and answer in string.ascii_uppercase else "A"


def _is_main_row(row: TsvRecord) -> bool:
    """A question's own row (``index < 1_000_000``), not one of its circular copies."""
    return row.main_index == int(row.index)


@dataclass(frozen=True)
class McqOutcome:
    """Exact-matching result of one row: the letter read (None = unresolved) and the truth."""

    row: TsvRecord
    truth: str
    choices: dict[str, str]
    extracted: str | None

    @property
    def exact_correct(self) -> bool:
        return self.extracted == self.truth


def extract_rows(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    rules: MatcherRules,
    choices_fn: ChoicesFn,
    truth_fn: TruthFn,
) -> list[McqOutcome]:
    """Run ``can_infer`` on every row (a missing prediction reads as the empty answer)."""
    outcomes = []
    for row in rows:
        choices = choices_fn(row)
        prediction = predictions.get(row.index, "")
        outcomes.append(
            McqOutcome(row, truth_fn(row), choices, can_infer(prediction, choices, rules))
        )
    return outcomes


class _JudgeCounter:
    """Calls the judge for an unresolved row and counts the calls."""

    def __init__(self, judge: AnswerJudge | None, predictions: Mapping[str, str]) -> None:
        self.judge = judge
        self.predictions = predictions
        self.calls = 0

    def letter(self, outcome: McqOutcome) -> str:
        if outcome.extracted is not None:
            return outcome.extracted
        if self.judge is None:
            return "Z"  # exact_matching: unresolved counts as the non-option Z, i.e. wrong
        self.calls += 1
        question = outcome.row.get("question") or ""
        return self.judge.choose_option(
            question, outcome.choices, self.predictions.get(outcome.row.index, "")
        )


def _summary(
    main_rows: Sequence[TsvRecord],
    hits: Sequence[int],
    report_split: str | None,
) -> dict[str, Any]:
    counted, overall_split = report_split_rows(main_rows, report_split)
    return {
        "Overall": percent([hits[i] for i in counted]),
        "overall_split": overall_split,
        "n_questions": len(counted),
        **column_breakdowns(main_rows, hits, GROUPING_COLUMNS),
    }


def score_mcq(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    *,
    circular: bool,
    rules: MatcherRules = "2024",
    judge: AnswerJudge | None = None,
    report_split: str | None = None,
    allow_missing: bool = False,
    vanilla_main_rows_only: bool = False,
    choices_fn: ChoicesFn = standard_choices,
    truth_fn: TruthFn = standard_truth,
) -> dict[str, Any]:
    """Score MCQ rows; percent scale. See the module docstring for the two modes."""
    if circular:
        return _score_circular(
            rows, predictions, rules, judge, report_split, allow_missing, choices_fn, truth_fn
        )
    if vanilla_main_rows_only:
        rows = [row for row in rows if _is_main_row(row)]
    if not rows:
        raise BenchmarkDataError("no rows to score")
    missing = require_predictions(rows, predictions, allow_missing=allow_missing)
    outcomes = extract_rows(rows, predictions, rules, choices_fn, truth_fn)
    judged = _JudgeCounter(judge, predictions)
    hits = [int(judged.letter(outcome) == outcome.truth) for outcome in outcomes]
    result = {
        "mode": "vanilla",
        "matcher": rules,
        **_summary(rows, hits, report_split),
        "unresolved": sum(outcome.extracted is None for outcome in outcomes),
        "missing_predictions": missing,
    }
    if judge is not None:
        result["judge_calls"] = judged.calls
    return result


def _score_circular(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    rules: MatcherRules,
    judge: AnswerJudge | None,
    report_split: str | None,
    allow_missing: bool,
    choices_fn: ChoicesFn,
    truth_fn: TruthFn,
) -> dict[str, Any]:
    groups: dict[int, list[TsvRecord]] = {}
    for row in rows:
        groups.setdefault(row.main_index, []).append(row)
    main_rows = [row for row in rows if _is_main_row(row)]
    if not main_rows:
        raise BenchmarkDataError("no main rows (index < 1000000) to score")
    main_ids = {row.main_index for row in main_rows}
    orphans = sum(len(group) for key, group in groups.items() if key not in main_ids)
    scored_rows = [row for row in rows if row.main_index in main_ids]
    missing = require_predictions(scored_rows, predictions, allow_missing=allow_missing)
    outcome_of = {
        outcome.row.index: outcome
        for outcome in extract_rows(scored_rows, predictions, rules, choices_fn, truth_fn)
    }
    judged = _JudgeCounter(judge, predictions)
    hits = []
    for main in main_rows:
        group = [outcome_of[row.index] for row in groups[main.main_index]]
        if any(o.extracted is not None and not o.exact_correct for o in group):
            hits.append(0)  # a resolved wrong rotation decides; the judge is not asked
            continue
        unresolved = [o for o in group if o.extracted is None]
        hits.append(int(all(judged.letter(o) == o.truth for o in unresolved)))
    all_outcomes = list(outcome_of.values())
    result = {
        "mode": "circular",
        "matcher": rules,
        **_summary(main_rows, hits, report_split),
        "unresolved": sum(o.extracted is None for o in all_outcomes),
        "missing_predictions": missing,
        # Exact-matching vanilla views (VLMEvalKit PRINT_VANILLA): circ0 rows only, and all rows.
        "vanilla_circ0": percent([outcome_of[row.index].exact_correct for row in main_rows]),
        "vanilla_all": percent([o.exact_correct for o in all_outcomes]),
    }
    if orphans:
        result["rows_without_main_question"] = orphans
    if judge is not None:
        result["judge_calls"] = judged.calls
    return result
