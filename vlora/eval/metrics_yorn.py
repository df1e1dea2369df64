"""Yes/no metrics: MME (acc + acc+ per subtask) and HallusionBench (aAcc, fAcc, qAcc).

Both read each prediction with ``YOrN_Extraction`` (or lmms-eval's parser); ``Unknown`` is wrong
unless a judge is configured. Answers must be exactly ``Yes`` or ``No``, as upstream compares them
verbatim with the extracted label.

MME (VLMEvalKit ``MME_rating``, docs/benchmark-scoring.md, "MME"): per subtask, ``acc`` = % of
questions right and ``acc+`` = % of images whose questions are all right (images keyed by
``image_path``, or by the image content when the file has no ``image_path``); subtask score =
acc + acc+ (max 200); ``perception`` sums the 10 perception subtasks, ``cognition`` (VLMEvalKit:
"reasoning") the 4 cognition ones. Upstream fails with a KeyError when a subtask is absent; we sum
the subtasks present and list the absent ones in ``missing_subtasks``.

HallusionBench (``Hallusion_rating``, docs/benchmark-scoring.md, "HallusionBench"): the index tokens
3, 4, 5 (split on ``_``) are set, figure and question ids. ``aAcc`` = % of rows right; ``fAcc`` = %
of figures (``l2-category, set, figure``) with all questions right; ``qAcc`` = % of questions
(``l2-category, set, question``) right on every figure; ``Overall`` = mean(aAcc, fAcc, qAcc), the
single number OpenCompass and VLoRA report.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from vlora.eval.benchmarks import MME_COGNITION_SUBTASKS, MME_PERCEPTION_SUBTASKS
from vlora.eval.errors import BenchmarkDataError
from vlora.eval.extraction import YesNo, extract_yes_no, extract_yes_no_lmms
from vlora.eval.judge import AnswerJudge
from vlora.eval.metrics_common import percent, require_predictions
from vlora.eval.tsv import TsvRecord

YesNoParser = Literal["vlmevalkit", "lmms-eval"]
_PARSERS: dict[str, Callable[[object], YesNo]] = {
    "vlmevalkit": extract_yes_no,
    "lmms-eval": extract_yes_no_lmms,
}


def _yes_no_hits(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    parser: YesNoParser,
    judge: AnswerJudge | None,
) -> tuple[list[int], int, int]:
    """Per-row correctness, number of ``Unknown`` extractions, number of judge calls."""
    parse = _PARSERS[parser]
    hits, unresolved, judge_calls = [], 0, 0
    for row in rows:
        truth = (row.get("answer") or "").strip()
        if truth not in ("Yes", "No"):
            raise BenchmarkDataError(f"{row.where}: answer must be 'Yes' or 'No', got {truth!r}")
        prediction = predictions.get(row.index, "")
        verdict = parse(prediction)
        if verdict == "Unknown":
            unresolved += 1
            if judge is not None:
                judge_calls += 1
                verdict = judge.yes_no(row.get("question") or "", prediction)
        hits.append(int(verdict == truth))
    return hits, unresolved, judge_calls


def _image_key(row: TsvRecord) -> str:
    if row.get("image_path") is not None:
        return str(row.get("image_path"))
    # No image_path column: the resolved image content identifies the image (both questions of an
    # image share it, whether through a back-reference or a repeated payload).
    return hashlib.sha1("".join(row.images).encode()).hexdigest()


def score_mme(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    *,
    strict_categories: bool = True,
    parser: YesNoParser = "vlmevalkit",
    judge: AnswerJudge | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """MME perception / cognition sums of acc + acc+ (percent points, max 2000 / 800)."""
    if not rows:
        raise BenchmarkDataError("no rows to score")
    known = (*MME_PERCEPTION_SUBTASKS, *MME_COGNITION_SUBTASKS)
    for row in rows:
        category = row.get("category")
        if category is None or (strict_categories and category not in known):
            raise BenchmarkDataError(
                f"{row.where}: category {category!r} is not an MME subtask; "
                f"valid: {', '.join(known)}"
            )
    missing = require_predictions(rows, predictions, allow_missing=allow_missing)
    hits, unresolved, judge_calls = _yes_no_hits(rows, predictions, parser, judge)
    by_category: dict[str, list[int]] = defaultdict(list)
    by_image: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row, hit in zip(rows, hits, strict=True):
        category = str(row.get("category"))
        by_category[category].append(hit)
        by_image[category][_image_key(row)].append(hit)
    subtasks: dict[str, dict[str, float]] = {}
    unpaired_images = 0
    for category in sorted(by_category):
        images = by_image[category].values()
        unpaired_images += sum(len(image_hits) != 2 for image_hits in images)
        acc = percent(by_category[category])
        acc_plus = percent([all(image_hits) for image_hits in images])
        subtasks[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    perception = sum(
        scores["score"] for name, scores in subtasks.items() if name not in MME_COGNITION_SUBTASKS
    )
    cognition = sum(
        scores["score"] for name, scores in subtasks.items() if name in MME_COGNITION_SUBTASKS
    )
    result: dict[str, Any] = {
        "perception": perception,
        "cognition": cognition,
        "total": perception + cognition,
        "subtasks": subtasks,
        "n_questions": len(rows),
        "unresolved": unresolved,
        "missing_predictions": missing,
    }
    if strict_categories:
        result["missing_subtasks"] = [name for name in known if name not in subtasks]
    if unpaired_images:
        result["images_without_two_questions"] = unpaired_images
    if judge is not None:
        result["judge_calls"] = judge_calls
    return result


def _hallusion_ids(row: TsvRecord) -> tuple[str, str, str]:
    tokens = row.index.split("_")
    if len(tokens) < 6:
        raise BenchmarkDataError(
            f"{row.where}: HallusionBench index must look like "
            "<prefix>_<cat>_<subcat>_<set_id>_<figure_id>_<question_id>"
        )
    return tokens[3], tokens[4], tokens[5]


def _hallusion_accuracies(rows: Sequence[TsvRecord], hits: Sequence[int]) -> dict[str, float]:
    figures: dict[str, list[int]] = defaultdict(list)
    questions: dict[str, list[int]] = defaultdict(list)
    for row, hit in zip(rows, hits, strict=True):
        set_id, figure_id, question_id = _hallusion_ids(row)
        l2 = row.get("l2-category")
        figures[f"{l2}_{set_id}_{figure_id}"].append(hit)
        questions[f"{l2}_{set_id}_{question_id}"].append(hit)
    a_acc = percent(hits)
    f_acc = percent([all(group) for group in figures.values()])
    q_acc = percent([all(group) for group in questions.values()])
    return {"aAcc": a_acc, "fAcc": f_acc, "qAcc": q_acc, "Overall": (a_acc + f_acc + q_acc) / 3}


def score_hallusion(
    rows: Sequence[TsvRecord],
    predictions: Mapping[str, str],
    *,
    parser: YesNoParser = "vlmevalkit",
    judge: AnswerJudge | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """HallusionBench aAcc / fAcc / qAcc and their mean, overall and per (l2-)category."""
    if not rows:
        raise BenchmarkDataError("no rows to score")
    missing = require_predictions(rows, predictions, allow_missing=allow_missing)
    hits, unresolved, judge_calls = _yes_no_hits(rows, predictions, parser, judge)
    result: dict[str, Any] = {**_hallusion_accuracies(rows, hits), "n_questions": len(rows)}
    for column in ("category", "l2-category"):
        groups: dict[str, list[int]] = defaultdict(list)
        for position, row in enumerate(rows):
            if row.get(column) is not None:
                groups[str(row.get(column))].append(position)
        if groups:
            result[column] = {
                name: _hallusion_accuracies(
                    [rows[i] for i in positions], [hits[i] for i in positions]
                )
                for name, positions in sorted(groups.items())
            }
    result["unresolved"] = unresolved
    result["missing_predictions"] = missing
    if judge is not None:
        result["judge_calls"] = judge_calls
    return result
