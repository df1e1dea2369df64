"""Preparing benchmarks: prompts identical to the library's, group-preserving limits, subsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config.eval import EvalConfig
from pipelines.eval.generation import make_jobs
from pipelines.eval.prepare import prepare_all, prompt_input, row_prompt
from vlora.eval.benchmarks import get_benchmark
from vlora.eval.prompts import build_prompt
from vlora.eval.scoring import score_benchmark
from vlora.eval.tsv import read_benchmark_tsv

FORMATS = Path(__file__).resolve().parents[2] / "vlora" / "eval" / "data" / "benchmark-formats"
SYNTHETIC = {
    "MMBench_DEV_EN": "MMBench_DEV_EN_synthetic.tsv",
    "CCBench": "CCBench_synthetic.tsv",
    "MME": "MME_synthetic.tsv",
    "ScienceQA_TEST": "ScienceQA_TEST_synthetic.tsv",
    "HallusionBench": "HallusionBench_synthetic.tsv",
    "MMMU_DEV_VAL": "MMMU_DEV_VAL_synthetic.tsv",
}


def entry(key: str, **fields) -> dict:
    return {"key": key, "data": str(FORMATS / SYNTHETIC[key]), **fields}


@pytest.mark.parametrize("key", sorted(SYNTHETIC))
@pytest.mark.parametrize(
    ("content", "wrapping"),
    [
        ("vlmevalkit", "model"),
        ("vlmevalkit", "vlmevalkit-2024"),
        ("vlmevalkit", "vlmevalkit-2024-07"),
        ("lmms-eval", "lmms-eval"),
    ],
)
def test_prompts_are_the_libraries(key: str, content: str, wrapping: str) -> None:
    config = EvalConfig(benchmarks=[entry(key)], prompt_content=content, prompt_wrapping=wrapping)
    spec = get_benchmark(key)
    for row in read_benchmark_tsv(FORMATS / SYNTHETIC[key]):
        text, dropped = row_prompt(spec, row, config)
        reference = build_prompt(
            spec,
            row,
            content=content,
            wrapping="vlmevalkit-2024" if wrapping == "model" else wrapping,
        )
        expected = reference.text if wrapping == "model" else reference.conversation
        assert text == expected
        assert dropped == reference.dropped_images
    assert prompt_input(config) == ("user" if wrapping == "model" else "conversation")


def test_multi_image_rows_keep_the_first_image(tmp_path: Path) -> None:
    [mmmu] = prepare_all(EvalConfig(benchmarks=[entry("MMMU_DEV_VAL")]), tmp_path)
    assert mmmu.counts["images_dropped_by_policy"] == 1  # the 2-image row keeps its first
    assert all(prompt.count("<image>") == 1 for prompt in mmmu.prompts)
    assert mmmu.max_new_tokens == 32  # MCQ budget
    assert mmmu.data_path == FORMATS / SYNTHETIC["MMMU_DEV_VAL"]  # unchanged file: scored as is


def test_limit_keeps_whole_circular_groups_and_mme_pairs(tmp_path: Path) -> None:
    config = EvalConfig(
        benchmarks=[entry("MMBench_DEV_EN"), entry("MME", limit=3), entry("HallusionBench")],
        limit=5,
    )
    mmbench, mme, hallusion = prepare_all(config, tmp_path)
    # question 0 has 4 rotations; question 1's 3 would make 7 > 5
    assert mmbench.indices == ["0", "1000000", "2000000", "3000000"]
    assert mmbench.counts["rows_left_out_by_limit"] == 3
    assert mme.indices == ["0", "1"]  # the first image's yes/no pair
    assert hallusion.counts["rows_left_out_by_limit"] == 0  # one set of 4 rows fits
    # the cut files are real benchmark files: the second MME row still refers to the first
    assert mme.data_path == tmp_path / "data" / "MME.tsv"
    table = read_benchmark_tsv(mme.data_path)
    assert table.rows[1].get("image") == "0"
    truth = {"0": "Yes", "1": "No"}
    assert score_benchmark("MME", mme.data_path, truth)["perception"] == 200.0


def test_cut_reference_becomes_the_image(tmp_path: Path) -> None:
    header, row0, row1, *rest = (FORMATS / SYNTHETIC["MME"]).read_text().splitlines()
    swapped = tmp_path / "swapped.tsv"  # row 1 (image = reference to row 0) comes first
    swapped.write_text("\n".join([header, row1, row0, *rest]) + "\n")
    # MME scoring groups the two questions of an image: both stay, in file order
    pairs = EvalConfig(benchmarks=[{"key": "EasyVQA_YORN", "data": str(swapped), "limit": 1}])
    [bench] = prepare_all(pairs, tmp_path / "a")
    assert bench.indices == ["1", "0"]
    # exact-match scoring has no groups: row 1 alone stays, its image written inline
    rows = EvalConfig(benchmarks=[{"key": "EasyVQA_TEST", "data": str(swapped), "limit": 1}])
    [bench] = prepare_all(rows, tmp_path / "b")
    assert bench.indices == ["1"]
    kept = read_benchmark_tsv(bench.data_path).rows[0]
    assert len(kept.get("image")) > 64
    assert kept.images == read_benchmark_tsv(swapped)["0"].images
    assert list(bench.images) == ["1"]


def test_local_builtins_and_jobs(tmp_path: Path) -> None:
    config = EvalConfig(
        benchmarks=[{"key": "EasyVQA_TEST", "images": 3}, {"key": "EasyVQA_YORN", "images": 3}],
        batch_size=8,
    )
    test, yorn = prepare_all(config, tmp_path)
    assert (len(test.prompts), len(yorn.prompts)) == (27, 12)
    assert test.counts["built"]["images"] == 3 and test.max_new_tokens == 16
    assert test.prompts[0] == (
        "<image>\nwhat is the red shape?\nAnswer the question using a single word or phrase."
    )
    assert yorn.prompts[0].endswith("Please answer yes or no.")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "EasyVQA_TEST.tsv",
        "EasyVQA_YORN.tsv",
    ]
    jobs = make_jobs([test, yorn], batch_size=8)
    assert [(j["benchmark"], j["start"], len(j["prompts"])) for j in jobs] == [
        ("EasyVQA_TEST", 0, 8),
        ("EasyVQA_TEST", 8, 8),
        ("EasyVQA_TEST", 16, 8),
        ("EasyVQA_TEST", 24, 3),
        ("EasyVQA_YORN", 0, 8),
        ("EasyVQA_YORN", 8, 4),
    ]
    assert jobs[0]["image_ids"][:2] == ["0", "0"]  # both questions of image 0 share its bytes


def test_remote_data_is_fetched_into_the_stage_folder(tmp_path: Path) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    source = (FORMATS / SYNTHETIC["MME"]).read_bytes()
    memory.pipe("/eval-test/MME.tsv", source)
    try:
        url = "memory://eval-test/MME.tsv"
        [whole] = prepare_all(EvalConfig(benchmarks=[{"key": "MME", "data": url}]), tmp_path / "a")
        assert whole.data_path == tmp_path / "a" / "data" / "MME.tsv"
        assert whole.data_path.read_bytes() == source  # the file itself, not a rewrite
        assert sorted(p.name for p in whole.data_path.parent.iterdir()) == ["MME.tsv"]
        config = EvalConfig(benchmarks=[{"key": "MME", "data": url, "limit": 2}])
        [cut] = prepare_all(config, tmp_path / "b")
        assert cut.indices == ["0", "1"] and cut.counts["rows_in_source"] == 4
    finally:
        memory.rm("/eval-test", recursive=True)
