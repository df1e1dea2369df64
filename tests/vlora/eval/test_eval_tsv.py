"""The VLMEvalKit TSV reader: its conventions and errors that name the row.

The conventions: docs/benchmark-scoring.md, "VLMEvalKit TSV files".
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from vlora.eval import BenchmarkDataError, read_benchmark_tsv
from vlora.eval.tsv import canonical_index

HEADER = ["index", "question", "A", "B", "answer", "image"]
TsvWriter = Callable[..., Path]


def test_reads_embedded_newlines_tabs_and_back_references(
    write_tsv: TsvWriter, png_b64: str
) -> None:
    question = 'Line one\nline two\twith a tab and "quotes"'
    path = write_tsv(
        "t.tsv",
        HEADER,
        [[0, question, "x", "y", "A", png_b64], [1000000, question, "y", "x", "B", "0"]],
    )
    table = read_benchmark_tsv(path)
    assert [row.index for row in table] == ["0", "1000000"]
    assert table["0"].get("question") == question
    copy = table[1000000]
    assert copy.images == (png_b64,)
    assert copy.image_source_index == "0"
    assert copy.main_index == 0
    assert copy.first_line == 4
    assert copy.last_line == 5
    image = copy.decode_images()[0]
    assert image.size == (4, 4)
    assert image.mode == "RGB"


def test_multi_image_list_literals(formats_dir: Path) -> None:
    table = read_benchmark_tsv(formats_dir / "MMMU_DEV_VAL_synthetic.tsv")
    two_images = table[2]
    assert len(two_images.images) == 2
    assert two_images.image_paths == ("validation_Art_2_1.png", "validation_Art_2_2.png")
    assert len(two_images.decode_images()) == 2
    assert table[1].get("A") is None  # open question: every option cell is empty


def test_single_quoted_python_list_literal(
    write_tsv: TsvWriter, make_png_b64: Callable[..., str]
) -> None:
    red, blue = make_png_b64((255, 0, 0)), make_png_b64((0, 0, 255))
    path = write_tsv("t.tsv", HEADER, [[0, "q", "x", "y", "A", f"['{red}', '{blue}']"]])
    assert read_benchmark_tsv(path)[0].images == (red, blue)


def test_pandas_na_strings_become_missing_unless_disabled(
    write_tsv: TsvWriter, png_b64: str
) -> None:
    path = write_tsv("t.tsv", [*HEADER, "C"], [[0, "q", "x", "None", "A", png_b64, ""]])
    assert read_benchmark_tsv(path)[0].get("B") is None  # VLMEvalKit saw NaN here (#677)
    assert read_benchmark_tsv(path, na_mode="empty")[0].get("B") == "None"
    assert read_benchmark_tsv(path, na_mode="empty")[0].get("C") is None


def test_rows_without_image_are_dropped_and_counted(write_tsv: TsvWriter, png_b64: str) -> None:
    path = write_tsv(
        "t.tsv", HEADER, [[0, "q", "x", "y", "A", png_b64], [1, "q", "x", "y", "A", ""]]
    )
    table = read_benchmark_tsv(path)
    assert [row.index for row in table] == ["0"]
    assert table.dropped_without_image == ["1"]


def test_optional_columns_may_be_absent(write_tsv: TsvWriter, png_b64: str) -> None:
    path = write_tsv("t.tsv", HEADER, [[0, "q", "x", "y", "A", png_b64]])
    row = read_benchmark_tsv(path)[0]
    assert row.get("hint") is None
    assert row.get("category") is None
    assert row.image_paths == ()


def test_canonical_index() -> None:
    assert canonical_index(7) == canonical_index("007") == canonical_index(" 7 ") == "7"
    assert canonical_index("hallusion_VD_0_0_0") == "hallusion_VD_0_0_0"


# --- malformed input: each error names the row --------------------------------------------------


def test_missing_required_column_is_named(write_tsv: TsvWriter, png_b64: str) -> None:
    path = write_tsv(
        "t.tsv", ["index", "question", "A", "B", "image"], [[0, "q", "x", "y", png_b64]]
    )
    with pytest.raises(BenchmarkDataError, match=r"missing required column\(s\) \['answer'\]"):
        read_benchmark_tsv(path, required_columns=("answer",))


def test_row_missing_a_column_names_the_row(tmp_path: Path, png_b64: str) -> None:
    path = tmp_path / "t.tsv"
    path.write_text(
        "index\tquestion\tA\tB\tanswer\timage\n"
        f"0\tq\tx\ty\tA\t{png_b64}\n"
        f"5\tq\tx\tA\t{png_b64}\n",  # the B cell is missing
        encoding="utf-8",
    )
    with pytest.raises(BenchmarkDataError, match=r"row index=5 \(line 3\) has 5 fields"):
        read_benchmark_tsv(path)


def test_bad_base64_names_the_row(write_tsv: TsvWriter, png_b64: str) -> None:
    bad = "not*base64!" * 10
    path = write_tsv(
        "t.tsv", HEADER, [[0, "q", "x", "y", "A", png_b64], [3, "q", "x", "y", "A", bad]]
    )
    with pytest.raises(BenchmarkDataError, match=r"row index=3 .*not valid base64"):
        read_benchmark_tsv(path)


def test_base64_that_is_not_an_image_names_the_row(write_tsv: TsvWriter) -> None:
    not_an_image = base64.b64encode(b"hello world, definitely not a PNG file " * 3).decode()
    path = write_tsv("t.tsv", HEADER, [[8, "q", "x", "y", "A", not_an_image]])
    with pytest.raises(BenchmarkDataError, match=r"row index=8 .*not an image"):
        read_benchmark_tsv(path)


def test_dangling_image_reference_names_the_row(write_tsv: TsvWriter, png_b64: str) -> None:
    path = write_tsv(
        "t.tsv", HEADER, [[0, "q", "x", "y", "A", png_b64], [1000000, "q", "y", "x", "B", "7"]]
    )
    with pytest.raises(
        BenchmarkDataError, match=r"row index=1000000 .*index 7, which is not in the file"
    ):
        read_benchmark_tsv(path)


def test_chained_image_reference_is_rejected(write_tsv: TsvWriter, png_b64: str) -> None:
    rows = [
        [0, "q", "x", "y", "A", png_b64],
        [1, "q", "x", "y", "A", "0"],
        [2, "q", "x", "y", "A", "1"],
    ]
    with pytest.raises(BenchmarkDataError, match=r"row index=2 .*itself"):
        read_benchmark_tsv(write_tsv("t.tsv", HEADER, rows))


def test_duplicate_index_is_rejected(write_tsv: TsvWriter, png_b64: str) -> None:
    rows = [[4, "q", "x", "y", "A", png_b64], ["04", "q", "x", "y", "A", png_b64]]
    with pytest.raises(BenchmarkDataError, match=r"row index=04 .*repeats index 4"):
        read_benchmark_tsv(write_tsv("t.tsv", HEADER, rows))


def test_malformed_list_literal_names_the_row(write_tsv: TsvWriter, png_b64: str) -> None:
    rows = [[6, "q", "x", "y", "A", f"['{png_b64}', 3]"]]
    with pytest.raises(BenchmarkDataError, match=r"row index=6 .*only strings"):
        read_benchmark_tsv(write_tsv("t.tsv", HEADER, rows))


def test_undecodable_image_fails_at_decode_time_when_validation_is_off(
    write_tsv: TsvWriter,
) -> None:
    bad = base64.b64encode(b"x" * 80).decode()
    table = read_benchmark_tsv(
        write_tsv("t.tsv", HEADER, [[9, "q", "x", "y", "A", bad]]), validate_images=False
    )
    with pytest.raises(BenchmarkDataError, match=r"row index=9 .*cannot be decoded"):
        table[9].decode_images()
