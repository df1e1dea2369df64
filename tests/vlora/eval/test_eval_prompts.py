"""Prompts exactly as VLMEvalKit / lmms-eval build them for LLaVA-style models.

The rules: docs/benchmark-scoring.md, "Prompts".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlora.eval import build_prompt, get_benchmark, read_benchmark_tsv
from vlora.eval.prompts import VICUNA_V1_SYSTEM, wrap_prompt

MMBENCH_Q1 = (
    "The diagram below is a model of two solutions.\n"
    "Which solution has a higher concentration of green particles?\n"
    "A. neither; their concentrations are the same\n"
    "B. Solution B\n"
    "C. Solution A\n"
    "Answer with the option's letter from the given choices directly."
)


def _row(formats_dir: Path, key: str, index: object):
    return read_benchmark_tsv(formats_dir / f"{key}_synthetic.tsv")[index]


def test_mmbench_prompt_matches_the_documented_example(formats_dir: Path) -> None:
    spec = get_benchmark("MMBench_DEV_EN")
    prompt = build_prompt(spec, _row(formats_dir, "MMBench_DEV_EN", 1))
    assert prompt.content == MMBENCH_Q1
    assert prompt.text == "<image>\n" + MMBENCH_Q1
    assert prompt.conversation == f"{VICUNA_V1_SYSTEM} USER: <image>\n{MMBENCH_Q1} ASSISTANT:"
    assert len(prompt.images) == 1
    assert prompt.dropped_images == 0


def test_later_wrapping_behind_a_switch(formats_dir: Path) -> None:
    spec = get_benchmark("MMBench_DEV_EN")
    prompt = build_prompt(
        spec, _row(formats_dir, "MMBench_DEV_EN", 1), wrapping="vlmevalkit-2024-07"
    )
    assert prompt.conversation == f"{VICUNA_V1_SYSTEM} USER:  <image> {MMBENCH_Q1} ASSISTANT: "


def test_ccbench_gets_the_chinese_suffix(formats_dir: Path) -> None:
    prompt = build_prompt(get_benchmark("CCBench"), _row(formats_dir, "CCBench", 0))
    assert prompt.content == (
        "图中所示建筑名称为？\nA. 天坛\nB. 故宫\nC. 黄鹤楼\nD. 少林寺\n请直接回答选项字母。"
    )


def test_scienceqa_without_hint_has_no_leading_line(formats_dir: Path) -> None:
    prompt = build_prompt(get_benchmark("ScienceQA_TEST"), _row(formats_dir, "ScienceQA_TEST", 0))
    assert prompt.content.startswith("Which of these states is farthest north?\nA. West Virginia\n")
    assert prompt.content.endswith(
        "\nD. Oklahoma\nAnswer with the option's letter from the given choices directly."
    )


def test_yes_no_prompts_keep_the_question(formats_dir: Path) -> None:
    mme = build_prompt(get_benchmark("MME"), _row(formats_dir, "MME", 1))
    assert mme.content == "Is there a total of three dogs in the image? Please answer yes or no."
    assert len(mme.images) == 1  # resolved through the back-reference to row 0
    hallusion = build_prompt(
        get_benchmark("HallusionBench"),
        _row(formats_dir, "HallusionBench", "hallusion_VD_illusion_0_0_1"),
    )
    assert hallusion.content == "Is the right orange circle larger than the left orange circle?"


def test_mmmu_open_question_and_one_image_policy(formats_dir: Path) -> None:
    spec = get_benchmark("MMMU_DEV_VAL")
    open_prompt = build_prompt(spec, _row(formats_dir, "MMMU_DEV_VAL", 1))
    assert open_prompt.content == (
        "Compute the area of the shaded region in <image 1>.\nAnswer the question directly."
    )
    two = build_prompt(spec, _row(formats_dir, "MMMU_DEV_VAL", 2))
    assert two.content.startswith(
        "Which painting was made earlier, <image 1> or <image 2>?\nA. <image 1>"
    )
    assert len(two.images) == 1
    assert two.dropped_images == 1
    assert two.text.count("<image>") == 1
    every = build_prompt(spec, _row(formats_dir, "MMMU_DEV_VAL", 2), max_images=None)
    assert len(every.images) == 2
    assert every.text.startswith("<image>\n<image>\n")


@pytest.mark.parametrize(
    ("key", "index", "expected"),
    [
        (
            "MMBench_DEV_EN",
            1,
            "The diagram below is a model of two solutions. Which solution has a higher concentration"
            " of green particles? There are several options:\nA. neither; their concentrations are"
            " the same\nB. Solution B\nC. Solution A\nAnswer with the option's letter from the given"
            " choices directly.",
        ),
        (
            "CCBench",
            0,
            "图中所示建筑名称为？ There are several options:\nA. 天坛\nB. 故宫\nC. 黄鹤楼\nD. 少林寺"
            "\n请直接使用所提供的选项字母作为答案回答。",
        ),
        (
            "MME",
            0,
            "Is there a total of two dogs in the image?\nAnswer the question using a single word or"
            " phrase.",
        ),
        (
            "MMMU_DEV_VAL",
            1,
            "Compute the area of the shaded region in <image 1>.\n\nAnswer the question using a"
            " single word or phrase.",
        ),
        (
            "MMMU_DEV_VAL",
            0,
            "<image 1> Baxter Company has a relevant range of production between 15,000 and 30,000"
            " units. ... what are the per unit manufacturing overhead costs incurred?\nA. $6\nB. $7"
            "\nC. $8\nD. $9\n\nAnswer with the option's letter from the given choices directly.",
        ),
    ],
)
def test_lmms_eval_content(formats_dir: Path, key: str, index: object, expected: str) -> None:
    prompt = build_prompt(
        get_benchmark(key), _row(formats_dir, key, index), content="lmms-eval", wrapping="lmms-eval"
    )
    assert prompt.content == expected
    assert prompt.text == "<image>\n" + expected


def test_lmms_scienceqa_context_prefix(formats_dir: Path) -> None:
    prompt = build_prompt(
        get_benchmark("ScienceQA_TEST"), _row(formats_dir, "ScienceQA_TEST", 1), content="lmms-eval"
    )
    assert prompt.content.startswith("Context: The images below show two pairs of magnets.")
    assert "\nThink about the magnetic force" in prompt.content


def test_wrappings_without_image() -> None:
    assert wrap_prompt("Q", 0, "vlmevalkit-2024") == ("Q", f"{VICUNA_V1_SYSTEM} USER: Q ASSISTANT:")
    assert wrap_prompt("Q", 2, "lmms-eval")[0] == "<image> <image>\nQ"
    assert wrap_prompt("<image>\nQ", 1, "lmms-eval")[0] == "<image>\nQ"
