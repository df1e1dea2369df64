"""The local easy-vqa benchmarks: row counts, structure, reproducibility, scoring; the TSV writer."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from vlora.eval.local_benchmarks import (
    EasyVQAQuestion,
    build_easyvqa_test,
    build_easyvqa_yorn,
    build_local_benchmark,
    stated_facts,
)
from vlora.eval.scoring import score_benchmark
from vlora.eval.tsv import read_benchmark_tsv, write_benchmark_tsv


def test_easyvqa_test_rows_and_back_references(tmp_path: Path) -> None:
    build = build_easyvqa_test(tmp_path / "t.tsv", images=10)
    assert (build.rows, build.images) == (98, 10)  # the first 10 test images carry 98 questions
    table = read_benchmark_tsv(build.path, required_columns=("image", "question", "answer"))
    assert len(table) == 98
    sources = {row.image_source_index for row in table}
    assert len(sources) == 10  # one base64 payload per image, every other row refers to it
    raw_payload_rows = [row for row in table if len(row.get("image") or "") > 64]
    assert len(raw_payload_rows) == 10
    first = table.rows[0]
    assert (first.get("question"), first.get("answer")) == ("what is the red shape?", "triangle")
    assert {row.get("category") for row in table} == {"yes/no", "shape", "color"}


def test_easyvqa_test_full_split_counts(tmp_path: Path) -> None:
    build = build_local_benchmark("EasyVQA_TEST", tmp_path / "all.tsv")
    assert (build.rows, build.images) == (9673, 1000)


def test_easyvqa_test_scores_100_with_the_answers(tmp_path: Path) -> None:
    path = build_easyvqa_test(tmp_path / "t.tsv", images=5).path
    table = read_benchmark_tsv(path)
    truth = {row.index: str(row.get("answer")).capitalize() + "." for row in table}
    result = score_benchmark("EasyVQA_TEST", path, truth)
    assert result["Overall"] == 100.0
    wrong = {row.index: "circle" for row in table}
    expected = 100.0 * sum(row.get("answer") == "circle" for row in table) / len(table)
    assert score_benchmark("EasyVQA_TEST", path, wrong)["Overall"] == pytest.approx(expected)


def test_easyvqa_yorn_pairs_like_mme(tmp_path: Path) -> None:
    build = build_easyvqa_yorn(tmp_path / "y.tsv", images=20)
    # image 10 (among the first 20) never has its colour stated by a question: left out, counted.
    assert (build.rows, build.images) == (76, 19)
    assert build.skipped_images == {"no_color_stated": 1}
    table = read_benchmark_tsv(build.path, required_columns=("category", "image_path"))
    pairs: dict[str, list] = defaultdict(list)
    for row in table:
        pairs[str(row.get("image_path"))].append(row)
    assert len(pairs) == 38
    for path, rows in pairs.items():
        assert [row.get("answer") for row in rows] == ["Yes", "No"], path
        assert {row.get("category") for row in rows} == {path.split("/")[0]}
        assert all(row.get("question").endswith(" Please answer yes or no.") for row in rows)
        assert rows[0].get("question") != rows[1].get("question")
        assert rows[0].image_source_index == rows[1].image_source_index


def test_easyvqa_yorn_full_split_counts_and_reproducible(tmp_path: Path) -> None:
    first = build_easyvqa_yorn(tmp_path / "a.tsv")
    second = build_easyvqa_yorn(tmp_path / "b.tsv")
    assert (first.rows, first.images) == (3520, 880)
    assert first.skipped_images == {"no_color_stated": 80, "no_shape_stated": 40}
    assert first.path.read_bytes() == second.path.read_bytes()


def test_easyvqa_yorn_scores_with_the_mme_scorer(tmp_path: Path) -> None:
    path = build_easyvqa_yorn(tmp_path / "y.tsv", images=10).path
    table = read_benchmark_tsv(path)
    truth = {row.index: str(row.get("answer")) for row in table}
    perfect = score_benchmark("EasyVQA_YORN", path, truth)
    assert (perfect["perception"], perfect["cognition"]) == (400.0, 0)
    always_yes = score_benchmark("EasyVQA_YORN", path, dict.fromkeys(truth, "Yes"))
    # acc 50 and acc+ 0 in both subtasks: acc+ is what separates a yes-sayer from a reader.
    assert always_yes["perception"] == 100.0
    assert always_yes["subtasks"]["color"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}


@pytest.mark.parametrize(
    ("text", "answer", "facts"),
    [
        ("what is the red shape?", "triangle", {"shape": "triangle", "color": "red"}),
        ("what color is the shape?", "teal", {"color": "teal"}),
        ("is there a blue shape?", "yes", {"color": "blue"}),
        ("is there not a circle in the image?", "no", {"shape": "circle"}),
        ("does the image contain a circle?", "no", {}),
        ("is no gray shape present?", "yes", {}),
    ],
)
def test_stated_facts(text: str, answer: str, facts: dict[str, str]) -> None:
    assert stated_facts(EasyVQAQuestion(text, answer, 0)) == facts


def test_write_benchmark_tsv_round_trip(tmp_path: Path, png_b64: str) -> None:
    records = [
        {"index": 0, "image": png_b64, "question": 'two\nlines\tand "quotes"', "answer": "A"},
        {"index": 1, "image": "0", "question": "q", "answer": None},
    ]
    path = write_benchmark_tsv(
        tmp_path / "x.tsv", ["index", "image", "question", "answer"], records
    )
    table = read_benchmark_tsv(path)
    assert table.rows[0].get("question") == 'two\nlines\tand "quotes"'
    assert table.rows[1].get("answer") is None
    assert table.rows[1].images == table.rows[0].images
    assert oct(path.stat().st_mode & 0o777) == "0o644"
