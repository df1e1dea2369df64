"""Optional answer-judge plug-in. Off by default: scoring never calls a judge unless one is passed.

VLMEvalKit falls back to an LLM judge (GPT-3.5 in 2024) when exact matching cannot read an answer.
We never call a network service; a user who wants judge-assisted numbers passes an object satisfying
:class:`AnswerJudge` (for example :class:`CompletionJudge` around a local model) to
``ScoringOptions(judge=...)``. Results then carry ``judge_resolved`` so judged numbers are never
mistaken for exact-matching ones.

How the judge is used (docs/benchmark-scoring.md, "The judge"):

* MCQ: only rows ``can_infer`` left unresolved; in CircularEval only when no resolved row of the
  group is already wrong.
* Yes/no: only rows extracted as ``Unknown``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from vlora.eval.extraction import YesNo, can_infer, extract_yes_no


@runtime_checkable
class AnswerJudge(Protocol):
    """What scoring needs from a judge."""

    def choose_option(self, question: str, options: Mapping[str, str], prediction: str) -> str:
        """Return the option letter the prediction means, or ``"Z"`` when it matches none."""
        ...

    def yes_no(self, question: str, prediction: str) -> YesNo:
        """Return ``Yes``, ``No`` or ``Unknown`` for a free-form answer to a yes/no question."""
        ...


def mcq_judge_prompt(question: str, options: Mapping[str, str], prediction: str) -> str:
    """Our judge prompt for MCQ (same task as VLMEvalKit's, in our own words; zero-shot)."""
    option_lines = "".join(f"{letter}. {text}\n" for letter, text in options.items())
    return (
        "You are helping to grade a multiple-choice answer. Given the question, the options and a "
        "free-form answer, reply with the single letter of the option that the answer means. If "
        "the answer matches none of the options, reply with Z.\n"
        f"Question: {question}\nOptions:\n{option_lines}Answer: {prediction}\nYour reply:"
    )


def yes_no_judge_prompt(question: str, prediction: str) -> str:
    """Our judge prompt for yes/no questions: classify the answer as Yes, No or Unknown."""
    return (
        "You are helping to grade an answer to a yes/no question. Reply with exactly one word: "
        "Yes if the answer means yes, No if it means no, Unknown otherwise.\n"
        f"Question: {question}\nAnswer: {prediction}\nYour reply:"
    )


class CompletionJudge:
    """An :class:`AnswerJudge` around any text-completion callable (e.g. a local LLM).

    Mirrors VLMEvalKit's retry policy: the reply is parsed with the same extractors, up to
    ``retries`` attempts; for MCQ, when no attempt parses, a seeded random letter among the options
    and ``Z`` is returned (VLMEvalKit 2024 used ``random.seed(2680)``), so runs are repeatable.
    """

    def __init__(
        self,
        complete: Callable[[str], str],
        *,
        retries: int = 3,
        seed: int = 2680,
        random_fallback: bool = True,
    ) -> None:
        self.complete = complete
        self.retries = retries
        self.random_fallback = random_fallback
        self._rng = random.Random(seed)

    def choose_option(self, question: str, options: Mapping[str, str], prediction: str) -> str:
        prompt = mcq_judge_prompt(question, options, prediction)
        for _ in range(self.retries):
            letter = can_infer(self.complete(prompt), options)
            if letter is not None:
                return letter
        return self._rng.choice([*options, "Z"]) if self.random_fallback else "Z"

    def yes_no(self, question: str, prediction: str) -> YesNo:
        prompt = yes_no_judge_prompt(question, prediction)
        for _ in range(self.retries):
            reply = self.complete(prompt).strip().lower()
            if reply.startswith("unknown"):
                return "Unknown"
            verdict = extract_yes_no(reply)
            if verdict != "Unknown":
                return verdict
        return "Unknown"
