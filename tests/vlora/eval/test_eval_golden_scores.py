"""Every scorer gives the golden numbers on the synthetic benchmark files.

The numbers and how they were obtained: docs/benchmark-scoring.md, "Golden values in the tests".
They were stated as fractions (0.5); our results are on the percent scale (50.0). The predictions
each golden line assumes are written out next to it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vlora.eval import ScoringOptions, score_benchmark

# The synthetic files the golden numbers were computed on: editing one is deliberate, together
# with the numbers (docs/benchmark-scoring.md, "Golden values in the tests").
FIXTURE_SHA256 = {
    "CCBench_synthetic.tsv": "704bdcb1a2382694211b3808b26744027f13f8b153a8b4054c54510cc6a6c749",
    "HallusionBench_synthetic.tsv": (
        "578c6d4d15b936fd3f4a14e80b3df6b8b62990b79a89ebc7f04673eb3800516f"
    ),
    "MMBench_DEV_EN_synthetic.tsv": (
        "a5c8288a485c936174f7ee895e20d2a7c23509f7dd626f1b1dac0b2fd3177868"
    ),
    "MME_synthetic.tsv": "f3edc6b032da8bcd0a18d37d5c98470dd093ef628b7345657d72952bf7765bf9",
    "MMMU_DEV_VAL_synthetic.tsv": "a6d6622f649c59241e094c4ec280289eefef39b99946679a7f3e6db18b1cb984",
    "ScienceQA_TEST_synthetic.tsv": (
        "cfb94a6842359ae2783b53652d9286b36bca3846f5e9a4262ae755b6cb5d62ae"
    ),
}

# Question 0 right in all four rotations; question 1 right in rotations 0 and 1, wrong in rotation 2
# (answer C, predicted A).
MMBENCH_PREDICTIONS = {
    0: "A",
    1000000: "D",
    2000000: "C",
    3000000: "B",
    1: "B",
    1000001: "A",
    2000001: "A",
}
HALLUSION_PREDICTIONS = {
    "hallusion_VD_illusion_0_0_0": "Yes",
    "hallusion_VD_illusion_0_0_1": "No",
    "hallusion_VD_illusion_0_1_0": "Yes, they are the same size.",
    "hallusion_VD_illusion_0_1_1": "Yes",
}


def _score(formats_dir: Path, key: str, predictions: dict, **options: object) -> dict:
    return score_benchmark(
        key,
        formats_dir / f"{key}_synthetic.tsv",
        predictions,
        options=ScoringOptions(**options),
    )


def test_fixtures_are_the_files_the_golden_numbers_were_computed_on(formats_dir: Path) -> None:
    digests = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(formats_dir.glob("*.tsv"))
    }
    assert digests == FIXTURE_SHA256


def test_mmbench_circular(formats_dir: Path) -> None:
    """MMBench circular: Overall 0.5 (l2 coarse_perception 1.0, fine-grained cross-instance 0.0)."""
    result = _score(formats_dir, "MMBench_DEV_EN", MMBENCH_PREDICTIONS)
    assert result["mode"] == "circular"
    assert result["Overall"] == pytest.approx(50.0)
    assert result["l2-category"] == {
        "coarse_perception": pytest.approx(100.0),
        "finegrained_perception (cross-instance)": pytest.approx(0.0),
    }
    assert result["category"] == {"attribute_comparison": 0.0, "image_style": 100.0}
    assert result["n_questions"] == 2
    assert result["unresolved"] == 0
    assert result["vanilla_circ0"] == pytest.approx(100.0)


def test_mmbench_vanilla_circ0_only(formats_dir: Path) -> None:
    """MMBench vanilla (circ0 only): Overall 1.0. Copies need no predictions in this mode."""
    circ0_only = {0: "A", 1: "B"}
    result = _score(formats_dir, "MMBench_DEV_EN", circ0_only, circular=False)
    assert result["mode"] == "vanilla"
    assert result["Overall"] == pytest.approx(100.0)
    assert result["n_questions"] == 2


def test_mmbench_circular_unparseable_rotation(formats_dir: Path) -> None:
    """MMBench circular, unparseable rotation: Overall 0.5; the unresolved row is counted."""
    predictions = {**MMBENCH_PREDICTIONS, 2000001: "C", 1000000: "I cannot tell."}
    result = _score(formats_dir, "MMBench_DEV_EN", predictions)
    assert result["Overall"] == pytest.approx(50.0)
    assert result["unresolved"] == 1
    assert result["l2-category"]["coarse_perception"] == pytest.approx(0.0)


def test_ccbench_circular_all_right(formats_dir: Path) -> None:
    """CCBench circular (all right): Overall 1.0."""
    predictions = {0: "A", 1000000: "D", 2000000: "C", 3000000: "B"}
    result = _score(formats_dir, "CCBench", predictions)
    assert result["Overall"] == pytest.approx(100.0)
    assert result["category"] == {"scenery_building": 100.0}


def test_ccbench_one_wrong_rotation_fails_the_question(formats_dir: Path) -> None:
    predictions = {0: "A", 1000000: "D", 2000000: "C", 3000000: "A"}
    assert _score(formats_dir, "CCBench", predictions)["Overall"] == pytest.approx(0.0)


def test_scienceqa_option_text_of_wrong_option(formats_dir: Path) -> None:
    """ScienceQA: Overall 0.5 (prediction for Q1 = text of option B → B ≠ C)."""
    predictions = {0: "A", 1: "The magnitude of the magnetic force is smaller in Pair 1."}
    result = _score(formats_dir, "ScienceQA_TEST", predictions)
    assert result["Overall"] == pytest.approx(50.0)
    assert result["unresolved"] == 0  # resolved (to B), just wrong
    assert result["category"] == {"geography": 100.0, "physics": 0.0}


def test_mmmu_open_question_answered(formats_dir: Path) -> None:
    """MMMU: Overall 1.0 (open question answered "The area is 42.")."""
    predictions = {0: "B", 1: "The area is 42.", 2: "A"}
    result = _score(formats_dir, "MMMU_DEV_VAL", predictions)
    assert result["Overall"] == pytest.approx(100.0)
    assert result["overall_split"] == "validation"


def test_mmmu_open_wrong_and_two_image_wrong(formats_dir: Path) -> None:
    """MMMU open wrong: 0.333 (open "41" → unresolved → wrong; 2-image Q answered B ≠ A)."""
    predictions = {0: "B", 1: "41", 2: "B"}
    result = _score(formats_dir, "MMMU_DEV_VAL", predictions)
    assert result["Overall"] == pytest.approx(100.0 / 3)
    assert result["unresolved"] == 1
    assert result["category"] == {"Accounting": 100.0, "Art": 0.0, "Math": 0.0}


@pytest.mark.parametrize("answer", ["42", "The answer is 42.", "The area is 42 square meters"])
def test_mmmu_open_answers_containing_the_truth_are_right(formats_dir: Path, answer: str) -> None:
    result = _score(formats_dir, "MMMU_DEV_VAL", {0: "B", 1: answer, 2: "A"})
    assert result["Overall"] == pytest.approx(100.0)


def test_mmmu_official_parser_agrees_on_the_golden_predictions(formats_dir: Path) -> None:
    right = _score(
        formats_dir, "MMMU_DEV_VAL", {0: "B", 1: "The area is 42.", 2: "A"}, mmmu_parser="official"
    )
    wrong = _score(formats_dir, "MMMU_DEV_VAL", {0: "B", 1: "41", 2: "B"}, mmmu_parser="official")
    assert right["Overall"] == pytest.approx(100.0)
    assert wrong["Overall"] == pytest.approx(100.0 / 3)


def test_mme_perception_and_cognition(formats_dir: Path) -> None:
    """MME: perception 200, reasoning 50 (count 200; code_reasoning Yes ✓, No ✗ → 50 + 0)."""
    result = _score(formats_dir, "MME", {0: "Yes", 1: "No", 2: "Yes", 3: "Yes"})
    assert result["perception"] == pytest.approx(200.0)
    assert result["cognition"] == pytest.approx(50.0)
    assert result["subtasks"]["count"] == {"acc": 100.0, "acc_plus": 100.0, "score": 200.0}
    assert result["subtasks"]["code_reasoning"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert "existence" in result["missing_subtasks"]


def test_hallusionbench_a_f_q_and_mean(formats_dir: Path) -> None:
    """HallusionBench: aAcc 75, fAcc 50, qAcc 50, mean 58.33."""
    result = _score(formats_dir, "HallusionBench", HALLUSION_PREDICTIONS)
    assert result["aAcc"] == pytest.approx(75.0)
    assert result["fAcc"] == pytest.approx(50.0)
    assert result["qAcc"] == pytest.approx(50.0)
    assert result["Overall"] == pytest.approx(58.33, abs=0.005)
    assert result["l2-category"]["VD_illusion"]["Overall"] == pytest.approx(175.0 / 3)


def test_hallusionbench_figure_and_question_keys_differ(formats_dir: Path) -> None:
    """Figure 1 wrong on both questions: fAcc keeps figure 0 (50), qAcc loses both questions (0)."""
    predictions = {**HALLUSION_PREDICTIONS, "hallusion_VD_illusion_0_1_0": "Yes"}
    predictions["hallusion_VD_illusion_0_1_1"] = "No"
    result = _score(formats_dir, "HallusionBench", predictions)
    assert result["aAcc"] == pytest.approx(50.0)
    assert result["fAcc"] == pytest.approx(50.0)
    assert result["qAcc"] == pytest.approx(0.0)
    assert result["Overall"] == pytest.approx(100.0 / 3)
