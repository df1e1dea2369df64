"""Scoring beyond the golden numbers: judge plug-in, missing predictions, full MME, local keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from vlora.eval import (
    PredictionsError,
    ScoringOptions,
    UnknownBenchmarkError,
    get_benchmark,
    score_benchmark,
)
from vlora.eval.benchmarks import MME_COGNITION_SUBTASKS, MME_PERCEPTION_SUBTASKS
from vlora.eval.errors import BenchmarkDataError
from vlora.eval.judge import AnswerJudge, CompletionJudge

TsvWriter = Callable[..., Path]
MMBENCH_RIGHT = {
    0: "A",
    1000000: "D",
    2000000: "C",
    3000000: "B",
    1: "B",
    1000001: "A",
    2000001: "C",
}


class RecordingJudge:
    """A judge that answers from a table and records every call."""

    def __init__(self, letter: str = "A", verdict: str = "Yes") -> None:
        self.letter, self.verdict = letter, verdict
        self.calls: list[str] = []

    def choose_option(self, question: str, options: Mapping[str, str], prediction: str) -> str:
        self.calls.append(prediction)
        return self.letter

    def yes_no(self, question: str, prediction: str) -> str:
        self.calls.append(prediction)
        return self.verdict


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(UnknownBenchmarkError) as error:
        get_benchmark("MMBench")
    message = str(error.value)
    for key in (
        "MMBench_DEV_EN",
        "CCBench",
        "MME",
        "ScienceQA_TEST",
        "HallusionBench",
        "MMMU_DEV_VAL",
        "EasyVQA_TEST",
    ):
        assert key in message


def test_judge_is_off_by_default_and_used_only_for_unresolved_rows(formats_dir: Path) -> None:
    path = formats_dir / "MMBench_DEV_EN_synthetic.tsv"
    predictions = {**MMBENCH_RIGHT, 1000001: "no idea"}  # row answer is A
    assert score_benchmark("MMBench_DEV_EN", path, predictions)["Overall"] == pytest.approx(50.0)
    judge = RecordingJudge(letter="A")
    assert isinstance(judge, AnswerJudge)
    result = score_benchmark(
        "MMBench_DEV_EN", path, predictions, options=ScoringOptions(judge=judge)
    )
    assert result["Overall"] == pytest.approx(100.0)
    assert judge.calls == ["no idea"]
    assert result["judge_calls"] == 1


def test_judge_not_asked_when_a_resolved_rotation_is_wrong(formats_dir: Path) -> None:
    predictions = {**MMBENCH_RIGHT, 1000001: "no idea", 2000001: "A"}
    judge = RecordingJudge()
    score_benchmark(
        "MMBench_DEV_EN",
        formats_dir / "MMBench_DEV_EN_synthetic.tsv",
        predictions,
        options=ScoringOptions(judge=judge),
    )
    assert judge.calls == []


def test_yes_no_judge_resolves_unknown(formats_dir: Path) -> None:
    path = formats_dir / "MME_synthetic.tsv"
    predictions = {0: "Yes", 1: "No", 2: "Maybe", 3: "No"}
    assert score_benchmark("MME", path, predictions)["cognition"] == pytest.approx(50.0)
    judged = score_benchmark(
        "MME", path, predictions, options=ScoringOptions(judge=RecordingJudge())
    )
    assert judged["cognition"] == pytest.approx(200.0)


def test_completion_judge_parses_replies_and_falls_back_deterministically() -> None:
    replies = iter(["I think it is option B.", "unknown"])
    judge = CompletionJudge(lambda prompt: next(replies))
    assert judge.choose_option("q", {"A": "x", "B": "y"}, "it is y-ish") == "B"
    assert judge.yes_no("q", "hmm") == "Unknown"
    first = [
        CompletionJudge(lambda p: "??").choose_option("q", {"A": "x", "B": "y"}, "?")
        for _ in range(3)
    ]
    assert len(set(first)) == 1
    assert first[0] in {"A", "B", "Z"}


def test_options_reject_a_non_judge() -> None:
    with pytest.raises(ValueError, match="judge must implement"):
        ScoringOptions(judge=object())
    with pytest.raises(ValueError, match="extra"):
        ScoringOptions(unknown_field=1)


def test_missing_predictions_fail_unless_allowed(formats_dir: Path) -> None:
    path = formats_dir / "ScienceQA_TEST_synthetic.tsv"
    with pytest.raises(PredictionsError, match=r"1 row\(s\) .*\(indices 1\)"):
        score_benchmark("ScienceQA_TEST", path, {0: "A"})
    result = score_benchmark(
        "ScienceQA_TEST", path, {0: "A"}, options=ScoringOptions(allow_missing=True)
    )
    assert result["Overall"] == pytest.approx(50.0)
    assert result["missing_predictions"] == 1
    assert result["unresolved"] == 1


def test_string_and_int_prediction_keys_are_equivalent(formats_dir: Path) -> None:
    path = formats_dir / "ScienceQA_TEST_synthetic.tsv"
    assert score_benchmark("ScienceQA_TEST", path, {"0": "A", "1": "C"})[
        "Overall"
    ] == pytest.approx(100.0)


def test_head_matcher_switch(formats_dir: Path) -> None:
    path = formats_dir / "ScienceQA_TEST_synthetic.tsv"
    verbose = "A, because West Virginia lies further north than all of the other listed states here"
    predictions = {0: verbose, 1: "C"}
    assert score_benchmark("ScienceQA_TEST", path, predictions)["Overall"] == pytest.approx(100.0)
    head = score_benchmark(
        "ScienceQA_TEST", path, predictions, options=ScoringOptions(matcher="head")
    )
    assert head["Overall"] == pytest.approx(50.0)


def _mme_rows(png: Callable[..., str]) -> list[list[object]]:
    rows, index = [], 0
    for number, category in enumerate((*MME_PERCEPTION_SUBTASKS, *MME_COGNITION_SUBTASKS)):
        image = png((number * 10, 0, 0))
        rows.append(
            [
                index,
                image,
                f"{category} yes? Please answer yes or no.",
                "Yes",
                category,
                f"{category}/1.png",
            ]
        )
        rows.append(
            [
                index + 1,
                str(index),
                f"{category} no? Please answer yes or no.",
                "No",
                category,
                f"{category}/1.png",
            ]
        )
        index += 2
    return rows


def test_mme_all_fourteen_subtasks(write_tsv: TsvWriter, make_png_b64: Callable[..., str]) -> None:
    header = ["index", "image", "question", "answer", "category", "image_path"]
    rows = _mme_rows(make_png_b64)
    path = write_tsv("MME.tsv", header, rows)
    perfect = {row[0]: row[3] for row in rows}
    result = score_benchmark("MME", path, perfect)
    assert result["perception"] == pytest.approx(2000.0)
    assert result["cognition"] == pytest.approx(800.0)
    assert result["missing_subtasks"] == []
    # Everything answered "Yes": acc 50, acc+ 0 in every subtask.
    all_yes = score_benchmark("MME", path, dict.fromkeys(perfect, "Yes"))
    assert all_yes["perception"] == pytest.approx(500.0)
    assert all_yes["cognition"] == pytest.approx(200.0)


def test_mme_unknown_category_names_the_row(write_tsv: TsvWriter, png_b64: str) -> None:
    header = ["index", "image", "question", "answer", "category"]
    path = write_tsv("MME.tsv", header, [[0, png_b64, "q", "Yes", "shape"]])
    with pytest.raises(BenchmarkDataError, match=r"row index=0 .*'shape' is not an MME subtask"):
        score_benchmark("MME", path, {0: "Yes"})


def test_local_yes_no_file_scored_by_the_mme_scorer(
    write_tsv: TsvWriter, png_b64: str, make_png_b64
) -> None:
    header = ["index", "image", "question", "answer", "category"]
    other = make_png_b64((0, 255, 0))
    rows = [
        [0, png_b64, "Is the shape a circle?", "Yes", "shape"],
        [1, "0", "Is the shape a square?", "No", "shape"],
        [2, other, "Is the color green?", "Yes", "color"],
        [3, "2", "Is the color red?", "No", "color"],
    ]
    result = score_benchmark(
        "EasyVQA_YORN", write_tsv("y.tsv", header, rows), {0: "Yes", 1: "No", 2: "Yes", 3: "Yes"}
    )
    assert result["subtasks"]["shape"]["score"] == pytest.approx(200.0)  # paired by image content
    assert result["subtasks"]["color"]["score"] == pytest.approx(50.0)
    assert result["perception"] == pytest.approx(250.0)
    assert result["cognition"] == 0.0


def test_easy_vqa_exact_match(write_tsv: TsvWriter, png_b64: str) -> None:
    header = ["index", "image", "question", "answer", "category"]
    rows = [
        [0, png_b64, "What shape is in the image?", "circle", "shape"],
        [1, "0", "What color is the shape?", "blue", "color"],
        [2, "0", "What color is the shape?", "red", "color"],
        [3, "0", "Is there a triangle?", "no", "yes_no"],
    ]
    predictions = {0: " Circle.", 1: "It is blue", 2: "", 3: "No"}
    result = score_benchmark("EasyVQA_TEST", write_tsv("e.tsv", header, rows), predictions)
    assert result["Overall"] == pytest.approx(50.0)
    assert result["category"] == {"color": 0.0, "shape": 100.0, "yes_no": 100.0}
    assert result["unresolved"] == 1


def test_provenance_keys(formats_dir: Path) -> None:
    result = score_benchmark(
        "ScienceQA_TEST", formats_dir / "ScienceQA_TEST_synthetic.tsv", {0: "A", 1: "C", 99: "x"}
    )
    assert result["benchmark"] == "ScienceQA_TEST"
    assert result["data_version"] == "unknown"
    assert len(result["data_md5"]) == 32
    assert result["predictions_not_in_file"] == 1


def test_test_split_without_answers_cannot_be_scored(write_tsv: TsvWriter, png_b64: str) -> None:
    header = ["index", "question", "A", "B", "answer", "image"]
    path = write_tsv("t.tsv", header, [[0, "q", "x", "y", "", png_b64]])
    with pytest.raises(BenchmarkDataError, match=r"row index=0 .*empty answer"):
        score_benchmark("ScienceQA_TEST", path, {0: "A"})
