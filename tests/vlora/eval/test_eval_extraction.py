"""Answer extraction: the golden vectors of docs/benchmark-scoring.md, edge cases, yes/no answers."""

from __future__ import annotations

import pytest

from vlora.eval.extraction import (
    can_infer,
    extract_yes_no,
    extract_yes_no_lmms,
    process_punctuation,
)

CHOICES = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
CCBENCH_CHOICES = {"A": "天坛", "B": "故宫", "C": "黄鹤楼", "D": "少林寺"}


@pytest.mark.parametrize(
    ("prediction", "expected_2024", "expected_head"),
    [
        ("A", "A", "A"),
        ("A.", "A", "A"),
        ("(B)", "B", "B"),
        ("B) rabbit", "B", "B"),
        ("Answer: C", "C", "C"),
        ("C. cat", "C", "C"),
        ("Option B", "B", "B"),
        ("The answer is C.", "C", "C"),
        ("The correct answer is **D**", "D", "D"),
        ("cat", "C", "C"),
        ("The image shows a rabbit.", "B", "B"),
        ("A cute teddy bear", "A", "A"),
        ("It is a cat, not a dog", None, None),
        ("A, because the image shows a teddy bear sitting on a bed near a window", "A", None),
        ("b", None, None),
        ("Z", "Z", "Z"),
    ],
)
def test_documented_golden_vectors(
    prediction: str, expected_2024: str | None, expected_head: str | None
) -> None:
    assert can_infer(prediction, CHOICES, "2024") == expected_2024
    assert can_infer(prediction, CHOICES, "head") == expected_head


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),  # bare letter
        ("(B)", "B"),
        ("B. rabbit", "B"),  # letter + text
        ("rabbit", "B"),  # option text only
        ("A or B", None),  # two letters → unresolved
        ("A B", None),
        ("b", None),  # lower case letter is not a choice token
        ("", None),  # empty
        ("   ", None),
        ("Failed to obtain answer via API. A", None),
        ("Cannot determine the answer", "Z"),  # refusal → resolved as Z (wrong)
    ],
)
def test_edge_cases(prediction: str, expected: str | None) -> None:
    assert can_infer(prediction, CHOICES) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("A", "A"),
        ("天坛", "A"),  # option text
        ("图中建筑是故宫。", "B"),  # option text inside a sentence
        ("答案是A", None),  # letter glued to CJK is one token: unresolved upstream too
        ("A。", None),  # full-width period is not in the punctuation list
        ("A. 天坛", "A"),
    ],
)
def test_chinese_answers(prediction: str, expected: str | None) -> None:
    assert can_infer(prediction, CCBENCH_CHOICES) == expected


def test_letter_outside_choices_is_not_read() -> None:
    assert can_infer("E", {"A": "x", "B": "y"}) is None


def test_head_regex_fallback_reads_answer_is() -> None:
    choices = {"A": "one", "B": "two", "C": "three", "D": "four"}
    long_answer = "Looking at it closely the answer is **C** as both A and B are excluded"
    assert can_infer(long_answer, choices, "2024") is None  # three letters as tokens
    assert can_infer(long_answer, choices, "head") == "C"


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Yes", "Yes"),
        ("No.", "No"),
        ("There is no dog", "No"),
        ("Yes and no", "Unknown"),
        ("Not really", "Unknown"),
        ("The answer is yes.", "Yes"),
        ("Yes, they are the same size.", "Yes"),
        ("", "Unknown"),
        ("YES!", "Yes"),
    ],
)
def test_yes_no_extraction(prediction: str, expected: str) -> None:
    assert extract_yes_no(prediction) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Yes", "Yes"),
        ("no.", "No"),
        ("y", "Yes"),
        ("n", "No"),
        ("x", "Unknown"),
        ("There is no dog", "Unknown"),  # lmms-eval only looks at the first 4 characters
        ("No, there is not", "No"),
    ],
)
def test_yes_no_extraction_lmms(prediction: str, expected: str) -> None:
    assert extract_yes_no_lmms(prediction) == expected


def test_punctuation_processing() -> None:
    assert process_punctuation("yes, it is.") == "yes it is"
    assert process_punctuation("a-b") == "a b"  # no space next to '-' → replaced by a space
    assert process_punctuation("3.5 apples.") == "3.5 apples"
