"""Judge-free answer extraction with VLMEvalKit's exact-matching semantics.

Multiple choice (``can_infer`` = option letter first, then option text;
docs/benchmark-scoring.md, "Answer extraction"):

* ``rules="2024"`` (default): the VLoRA-era matcher (VLMEvalKit ``325df3bc``):

  1. an answer containing ``"Failed to obtain answer via API"`` is unresolved; one containing a
     known refusal string resolves to ``"Z"`` (wrong, but resolved);
  2. each of ``.()[],:;!*#{}`` becomes a space and the answer is split on whitespace;
  3. exactly one choice letter present as a standalone token → that letter (the article ``"A"``
     counts: ``"A cute teddy bear"`` → ``A``); no letter but a ``Z`` token → ``"Z"``;
  4. otherwise, exactly one option text (lower-cased) being a substring of the lower-cased answer →
     its letter; otherwise unresolved (``None``).

* ``rules="head"``: the later matcher (VLMEvalKit 2025-08 and 2026-06): the single letter must also
  satisfy ``position > len(tokens) - 5``; text matching is refused when the answer is longer than
  twice the summed option-text lengths; a last-resort regex ``answer is X`` (A–D) applies.

Edge cases as documented: ``"A"``, ``"(B)"``, ``"B. text"``, ``"Answer: C"`` resolve to their letter;
``"A or B"`` (two letters) and ``"b"`` (lower case) are unresolved; option text alone resolves by
substring; a Chinese answer resolves by option text (``"天坛"``), but a letter glued to CJK text
(``"答案是A"``, ``"A。"``) is one token and stays unresolved, exactly as upstream; empty → unresolved.

Yes/no: :func:`extract_yes_no` is VLMEvalKit's ``YOrN_Extraction`` (VQA punctuation processing, then
``yes`` xor ``no`` among the words); :func:`extract_yes_no_lmms` is lmms-eval's MME ``parse_pred_ans``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Literal

MatcherRules = Literal["2024", "head"]
YesNo = Literal["Yes", "No", "Unknown"]

API_FAILURE_MARKER = "Failed to obtain answer via API"
REFUSAL_STRINGS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_MCQ_PUNCTUATION = ".()[],:;!*#{}"
_MCQ_PUNCTUATION_TABLE = str.maketrans(dict.fromkeys(_MCQ_PUNCTUATION, " "))
_HEAD_ANSWER_IS_RE = re.compile(r"(?:correct\s+)?answer\s+is\s+\**([ABCD])\**", re.IGNORECASE)


def option_letters(choices: Mapping[str, object]) -> list[str]:
    """Choice letters in alphabetical order; every key must be a single upper-case letter."""
    for letter in choices:
        if len(letter) != 1 or letter not in string.ascii_uppercase:
            raise ValueError(f"choice keys must be single upper-case letters, got {letter!r}")
    return sorted(choices)


def can_infer_option(
    answer: str, choices: Mapping[str, object], rules: MatcherRules = "2024"
) -> str | None:
    """The option letter named in ``answer`` (or ``"Z"``), else None. See the module docstring."""
    if API_FAILURE_MARKER in answer:
        return None
    if any(refusal in answer for refusal in REFUSAL_STRINGS):
        return "Z"
    tokens = answer.translate(_MCQ_PUNCTUATION_TABLE).split()
    letters = option_letters(choices)
    present = [letter for letter in letters if letter in tokens]
    if len(present) == 1:
        letter = present[0]
        # HEAD only trusts a letter near the end ("…, so the answer is B"), not a leading article.
        if rules == "head" and tokens.index(letter) <= len(tokens) - 5:
            return None
        return letter
    if not present and "Z" in tokens:  # upstream counts distinct tokens, so "Z Z" is still Z
        return "Z"
    return None


def can_infer_text(
    answer: str, choices: Mapping[str, object], rules: MatcherRules = "2024"
) -> str | None:
    """The letter of the only option whose text occurs (case-insensitively) in ``answer``."""
    texts = {letter: str(choices[letter]).lower() for letter in option_letters(choices)}
    if rules == "head" and len(answer) > 2 * sum(len(text) for text in texts.values()):
        return None  # a long explanation mentions options in passing; do not guess from it
    lowered = answer.lower()
    hits = [letter for letter, text in texts.items() if text in lowered]
    return hits[0] if len(hits) == 1 else None


def can_infer(
    answer: object, choices: Mapping[str, object], rules: MatcherRules = "2024"
) -> str | None:
    """VLMEvalKit ``can_infer``: letter, ``"Z"`` (refusal / explicit Z) or None (unresolved)."""
    text = "" if answer is None else str(answer)
    letter = can_infer_option(text, choices, rules) or can_infer_text(text, choices, rules)
    if letter is None and rules == "head":
        match = _HEAD_ANSWER_IS_RE.search(text)
        if match and match.group(1).upper() in choices:
            letter = match.group(1).upper()
    return letter


# VQA-style punctuation handling used by YOrN_Extraction (docs/benchmark-scoring.md, "Yes/no").
_VQA_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<")
_VQA_PUNCTUATION += ("@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT_RE = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_BEFORE_DIGIT_RE = re.compile(r"\.(?!\d)")
# Upstream passes re.UNICODE (== 32) as the positional ``count`` of re.sub, so at most 32 periods
# are removed. Reproduced because it changes which words a very long answer splits into.
_UPSTREAM_PERIOD_REMOVAL_LIMIT = 32


def process_punctuation(text: str) -> str:
    """VQA-eval punctuation processing: drop or space out punctuation, drop sentence periods.

    A punctuation mark is deleted when it touches a space somewhere in the text (or the text has a
    digit,digit pattern), otherwise replaced by a space; periods not followed by a digit are removed.
    """
    has_digit_comma = _DIGIT_COMMA_DIGIT_RE.search(text) is not None
    result = text
    for mark in _VQA_PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or has_digit_comma:
            result = result.replace(mark, "")
        else:
            result = result.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT_RE.sub("", result, count=_UPSTREAM_PERIOD_REMOVAL_LIMIT)


def extract_yes_no(answer: object) -> YesNo:
    """VLMEvalKit ``YOrN_Extraction``: ``Yes``/``No`` when exactly one of the words is present."""
    words = process_punctuation(("" if answer is None else str(answer)).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return "Unknown"


def extract_yes_no_lmms(answer: object) -> YesNo:
    """lmms-eval MME ``parse_pred_ans``: exact yes/no, ``y``/``n``, else yes/no in the first 4 chars."""
    text = ("" if answer is None else str(answer)).lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return "Yes" if text == "yes" else "No"
    if len(text) == 1:
        return {"y": "Yes", "n": "No"}.get(text, "Unknown")  # type: ignore[return-value]
    prefix = text[:4]
    if "yes" in prefix:
        return "Yes"
    if "no" in prefix:
        return "No"
    return "Unknown"
