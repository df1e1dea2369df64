"""CapsFusion-style Parquet: local / file:// / memory:// reads, seeded subsets, chunks, skips."""

from __future__ import annotations

import io
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config.download import CapsFusionSource
from pipelines.download.capsfusion import (
    list_parquet_files,
    prepare_capsfusion,
    read_chunks,
    select_rows,
)


def capsfusion_table(n: int, start: int = 0) -> pa.Table:
    ids = range(start, start + n)
    return pa.table(
        {
            "image_url": [f"https://img.example/{i}.jpg" for i in ids],
            "laion_2b": [f"alt {i}" for i in ids],
            "laion_coco": [f"coco {i}" for i in ids],
            "capsfusion": [f"fused {i}" for i in ids],
        }
    )


def write(table: pa.Table, path) -> None:
    pq.write_table(table, path, row_group_size=7)  # several row groups per file


def prepared_rows(prepared) -> pa.Table:
    return pa.concat_tables(list(read_chunks(prepared)))


def test_reads_local_file_with_caption_selection_and_chunks(tmp_path) -> None:
    write(capsfusion_table(30), tmp_path / "caps.parquet")
    source = CapsFusionSource(url_list=str(tmp_path / "caps.parquet"), caption_column="laion_coco")
    prepared = prepare_capsfusion(source, None, 0, 8, str(tmp_path / "out"))
    assert prepared.chunk_rows == [8, 8, 8, 6]
    assert prepared.summary() == {
        "rows_available": 30,
        "rows_selected": 30,
        "rows_kept": 30,
        "skipped": {},
        "chunks": 4,
    }
    rows = prepared_rows(prepared)
    assert rows.column_names == [
        "url",
        "caption",
        "laion_2b",
        "laion_coco",
        "capsfusion",
        "source_index",
    ]
    assert rows.column("caption").to_pylist() == [f"coco {i}" for i in range(30)]
    assert rows.column("capsfusion").to_pylist()[5] == "fused 5"
    assert rows.column("source_index").to_pylist() == list(range(30))
    assert prepared.shard_rows(4) == {i: 4 for i in range(7)} | {7: 2}


def test_seeded_subset_is_stable_and_the_same_through_fsspec_urls(tmp_path) -> None:
    write(capsfusion_table(40), tmp_path / "caps.parquet")
    memory_url = f"memory://caps-{uuid.uuid4().hex[:8]}/caps.parquet"
    buffer = io.BytesIO()
    pq.write_table(capsfusion_table(40), buffer, row_group_size=7)
    with fsspec.open(memory_url, "wb") as handle:
        handle.write(buffer.getvalue())

    def subset(url: str, seed: int, folder: str) -> list[int]:
        prepared = prepare_capsfusion(CapsFusionSource(url_list=url), 12, seed, 100, folder)
        assert prepared.rows == 12
        rows = prepared_rows(prepared)
        indices = rows.column("source_index").to_pylist()
        assert rows.column("url").to_pylist() == [f"https://img.example/{i}.jpg" for i in indices]
        assert rows.column("caption").to_pylist() == [f"fused {i}" for i in indices]
        return indices

    local = subset(str(tmp_path / "caps.parquet"), 7, str(tmp_path / "a"))
    assert local == sorted(local) and len(set(local)) == 12
    assert subset(str(tmp_path / "caps.parquet"), 7, str(tmp_path / "b")) == local
    assert subset((tmp_path / "caps.parquet").as_uri(), 7, str(tmp_path / "c")) == local
    assert subset(memory_url, 7, str(tmp_path / "d")) == local
    assert subset(str(tmp_path / "caps.parquet"), 8, str(tmp_path / "e")) != local
    assert select_rows(40, 12, 7).tolist() == local


def test_folder_of_files_counts_rows_across_files_and_skips_bad_rows(tmp_path) -> None:
    folder = tmp_path / "caps"
    folder.mkdir()
    write(capsfusion_table(10), folder / "part-0.parquet")
    second = capsfusion_table(10, start=10).to_pylist()
    second[0]["image_url"] = None  # source_index 10
    second[1]["capsfusion"] = "  "  # 11
    second[2]["image_url"] = "https://img.example/0.jpg"  # 12 repeats row 0
    second[3]["laion_2b"] = None  # 13: a missing *other* caption is kept
    write(pa.Table.from_pylist(second), folder / "part-1.parquet")
    assert [p.rsplit("/", 1)[-1] for p in list_parquet_files(str(folder))] == [
        "part-0.parquet",
        "part-1.parquet",
    ]
    prepared = prepare_capsfusion(
        CapsFusionSource(url_list=str(folder)), None, 0, 50, str(tmp_path / "out")
    )
    assert prepared.skipped == {"missing_url": 1, "missing_caption": 1, "duplicate_url": 1}
    rows = prepared_rows(prepared)
    assert rows.column("source_index").to_pylist() == [*range(10), *range(13, 20)]
    assert rows.column("laion_2b").to_pylist()[10] is None


def test_finished_chunks_are_reused(tmp_path) -> None:
    write(capsfusion_table(10), tmp_path / "caps.parquet")
    source = CapsFusionSource(url_list=str(tmp_path / "caps.parquet"))
    first = prepare_capsfusion(source, 5, 1, 100, str(tmp_path / "out"))
    mtime = (tmp_path / "out" / "chunk-00000.parquet").stat().st_mtime_ns
    (tmp_path / "caps.parquet").unlink()  # the source is not read again
    again = prepare_capsfusion(source, 5, 1, 100, str(tmp_path / "out"))
    assert again.chunks == first.chunks and again.rows == 5
    assert (tmp_path / "out" / "chunk-00000.parquet").stat().st_mtime_ns == mtime


def test_missing_columns_and_files_fail_naming_the_field(tmp_path) -> None:
    write(capsfusion_table(5).drop(["laion_coco"]), tmp_path / "caps.parquet")
    source = CapsFusionSource(url_list=str(tmp_path / "caps.parquet"))
    with pytest.raises(ValueError, match=r"download\.pretrain\.caption_columns.*laion_coco"):
        prepare_capsfusion(source, None, 0, 10, str(tmp_path / "out"))
    wrong_url = CapsFusionSource(url_list=str(tmp_path / "caps.parquet"), url_column="url_x")
    with pytest.raises(ValueError, match=r"download\.pretrain\.url_column"):
        prepare_capsfusion(wrong_url, None, 0, 10, str(tmp_path / "out2"))
    with pytest.raises(FileNotFoundError, match=r"download\.pretrain\.url_list"):
        list_parquet_files(str(tmp_path / "nope.parquet"))
